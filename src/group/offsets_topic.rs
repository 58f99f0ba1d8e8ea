//! The records of `__consumer_offsets`, in Kafka's own formats, so that what ringlog
//! writes there reads like Kafka's: committed offsets (key version 1, value version 3),
//! classic group metadata (key version 2, value version 3: generation, protocol,
//! leader, members with subscriptions and assignments) and tombstones (null value)
//! that delete either. The placement of a group on a
//! partition is Kafka's: `abs(groupId.hashCode()) % partitions`.

use bytes::{Buf, BufMut};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Key version of an offset commit record (group, topic, partition).
const OFFSET_KEY_VERSION: i16 = 1;
/// Key version of a group metadata record.
const GROUP_KEY_VERSION: i16 = 2;
/// Value version of an offset commit record with a leader epoch and no expiry.
const OFFSET_VALUE_VERSION: i16 = 3;
/// Value version of a group metadata record with static member ids.
const GROUP_VALUE_VERSION: i16 = 3;

/// Java's `String.hashCode` over UTF-16 code units, as Kafka computes it.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32))
}

/// The `__consumer_offsets` partition that holds `group`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    (java_string_hash(group) & 0x7fff_ffff) % partitions.max(1)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// A record of `__consumer_offsets`, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// A committed offset, or its deletion (`None`).
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    /// A classic group's membership after a rebalance, or its deletion (`None`).
    Group {
        group: String,
        value: Option<StoredGroup>,
    },
}

/// A classic group as stored after each completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<StoredMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

fn put_string(b: &mut Vec<u8>, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_string(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

fn get_nullable_string(b: &mut &[u8]) -> Option<Option<String>> {
    if b.remaining() >= 2 && i16::from_be_bytes([b[0], b[1]]) == -1 {
        b.advance(2);
        return Some(None);
    }
    get_string(b).map(Some)
}

fn get_bytes(b: &mut &[u8]) -> Option<Vec<u8>> {
    let len = get_i32(b)?;
    if len < 0 {
        return Some(Vec::new());
    }
    if b.remaining() < len as usize {
        return None;
    }
    let v = b[..len as usize].to_vec();
    b.advance(len as usize);
    Some(v)
}

fn get_i16(b: &mut &[u8]) -> Option<i16> {
    (b.remaining() >= 2).then(|| b.get_i16())
}

fn get_i32(b: &mut &[u8]) -> Option<i32> {
    (b.remaining() >= 4).then(|| b.get_i32())
}

fn get_i64(b: &mut &[u8]) -> Option<i64> {
    (b.remaining() >= 8).then(|| b.get_i64())
}

pub fn group_key(group: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + group.len());
    b.put_i16(GROUP_KEY_VERSION);
    put_string(&mut b, group);
    b
}

pub fn group_value(g: &StoredGroup) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut b, &g.protocol_type);
    b.put_i32(g.generation);
    put_nullable_string(&mut b, g.protocol.as_deref());
    put_nullable_string(&mut b, g.leader.as_deref());
    b.put_i64(g.state_timestamp);
    b.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_string(&mut b, &m.member_id);
        put_nullable_string(&mut b, m.instance_id.as_deref());
        put_string(&mut b, &m.client_id);
        put_string(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b
}

/// Kafka's group metadata value, versions 0 to 3.
fn decode_group_value(mut v: &[u8]) -> Option<StoredGroup> {
    let version = get_i16(&mut v)?;
    if !(0..=3).contains(&version) {
        return None;
    }
    let protocol_type = get_string(&mut v)?;
    let generation = get_i32(&mut v)?;
    let protocol = get_nullable_string(&mut v)?;
    let leader = get_nullable_string(&mut v)?;
    let state_timestamp = if version >= 2 { get_i64(&mut v)? } else { -1 };
    let count = get_i32(&mut v)?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = get_string(&mut v)?;
        let instance_id = if version >= 3 {
            get_nullable_string(&mut v)?
        } else {
            None
        };
        let client_id = get_string(&mut v)?;
        let client_host = get_string(&mut v)?;
        let rebalance_timeout_ms = if version >= 1 { get_i32(&mut v)? } else { -1 };
        let session_timeout_ms = get_i32(&mut v)?;
        let subscription = get_bytes(&mut v)?;
        let assignment = get_bytes(&mut v)?;
        members.push(StoredMember {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(StoredGroup {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

fn get_string(b: &mut &[u8]) -> Option<String> {
    let len = get_i16(b)?;
    if len < 0 || b.remaining() < len as usize {
        return None;
    }
    let s = String::from_utf8(b[..len as usize].to_vec()).ok()?;
    b.advance(len as usize);
    Some(s)
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut b = Vec::with_capacity(10 + group.len() + topic.len());
    b.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut b, group);
    put_string(&mut b, topic);
    b.put_i32(partition);
    b
}

pub fn offset_value(c: &CommittedOffset) -> Vec<u8> {
    let mut b = Vec::with_capacity(26 + c.metadata.len());
    b.put_i16(OFFSET_VALUE_VERSION);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_string(&mut b, &c.metadata);
    b.put_i64(c.commit_timestamp);
    b
}

fn decode_offset_value(mut v: &[u8]) -> Option<CommittedOffset> {
    let version = get_i16(&mut v)?;
    let offset = get_i64(&mut v)?;
    let leader_epoch = if version >= 3 { get_i32(&mut v)? } else { -1 };
    let metadata = get_string(&mut v)?;
    let commit_timestamp = get_i64(&mut v)?;
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

/// Decodes a record; `None` for keys it does not know (skipped on replay).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<OffsetsRecord> {
    let mut k = key;
    match get_i16(&mut k)? {
        0 | OFFSET_KEY_VERSION => {
            let group = get_string(&mut k)?;
            let topic = get_string(&mut k)?;
            let partition = get_i32(&mut k)?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_offset_value(v)?),
            };
            Some(OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        GROUP_KEY_VERSION => {
            let group = get_string(&mut k)?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_group_value(v)?),
            };
            Some(OffsetsRecord::Group { group, value })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_matches_kafka() {
        // Values computed by the JDK's String.hashCode.
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(java_string_hash("ünïcödé"), -609_221_899);
        assert_eq!(
            partition_for("my-group", 50),
            (-1_906_497_762i32 & 0x7fff_ffff) % 50
        );
        assert_eq!(java_string_hash(""), 0);
        // abs() keeps the low 31 bits, so negative hashes land in range too.
        for g in [
            "a",
            "consumer-group-with-a-long-name",
            "ünïcödé",
            "x".repeat(300).as_str(),
        ] {
            let p = partition_for(g, 50);
            assert!((0..50).contains(&p), "{g}: {p}");
        }
    }

    #[test]
    fn offset_records_round_trip_and_tombstones_decode() {
        let c = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        let key = offset_key("g", "orders", 7);
        assert_eq!(
            decode(&key, Some(&offset_value(&c))),
            Some(OffsetsRecord::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
                value: Some(c),
            })
        );
        assert_eq!(
            decode(&key, None),
            Some(OffsetsRecord::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
                value: None,
            })
        );
        assert_eq!(decode(&[0, 9, 1], None), None);
        let g = StoredGroup {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp: 99,
            members: vec![StoredMember {
                member_id: "m-1".into(),
                instance_id: Some("static-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30_000,
                session_timeout_ms: 10_000,
                subscription: vec![1, 2],
                assignment: vec![3],
            }],
        };
        assert_eq!(
            decode(&group_key("grp"), Some(&group_value(&g))),
            Some(OffsetsRecord::Group {
                group: "grp".into(),
                value: Some(g),
            })
        );
        assert_eq!(decode(&key[..5], None), None);
    }
}

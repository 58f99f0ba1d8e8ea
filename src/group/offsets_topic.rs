//! The records of `__consumer_offsets`, in Kafka's own formats, so that what ringlog
//! writes there reads like Kafka's: committed offsets (key version 1, value version 3)
//! and tombstones (null value) that delete them. The placement of a group on a
//! partition is Kafka's: `abs(groupId.hashCode()) % partitions`.

use bytes::{Buf, BufMut};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Key version of an offset commit record (group, topic, partition).
const OFFSET_KEY_VERSION: i16 = 1;
/// Key version of a group metadata record.
const GROUP_KEY_VERSION: i16 = 2;
/// Value version of an offset commit record with a leader epoch and no expiry.
const OFFSET_VALUE_VERSION: i16 = 3;

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
    /// Group metadata: ringlog does not write it yet, but reads past Kafka's.
    Group { group: String },
}

fn put_string(b: &mut Vec<u8>, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn get_string(b: &mut &[u8]) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let len = b.get_i16();
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
    if v.remaining() < 2 {
        return None;
    }
    let version = v.get_i16();
    if v.remaining() < 8 {
        return None;
    }
    let offset = v.get_i64();
    let leader_epoch = if version >= 3 {
        if v.remaining() < 4 {
            return None;
        }
        v.get_i32()
    } else {
        -1
    };
    let metadata = get_string(&mut v)?;
    if v.remaining() < 8 {
        return None;
    }
    let commit_timestamp = v.get_i64();
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
    if k.remaining() < 2 {
        return None;
    }
    match k.get_i16() {
        0 | OFFSET_KEY_VERSION => {
            let group = get_string(&mut k)?;
            let topic = get_string(&mut k)?;
            if k.remaining() < 4 {
                return None;
            }
            let partition = k.get_i32();
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
        GROUP_KEY_VERSION => Some(OffsetsRecord::Group {
            group: get_string(&mut k)?,
        }),
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
        assert_eq!(decode(&key[..5], None), None);
    }
}

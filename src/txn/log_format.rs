//! The records of `__transaction_state`, in Kafka's formats, so that what ringlog
//! writes there reads like Kafka's: key version 0 (the transactional id) and value
//! version 0 (producer id and epoch, timeout, state, partitions, timestamps), which
//! is what a Kafka cluster without `transaction.version` 1 writes. Version 1 values
//! (flexible, with tagged fields) are read too. A null value is a tombstone: the id
//! expired. Placement is Kafka's: `abs(transactionalId.hashCode()) % partitions`.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut};

use super::state::{TxnMetadata, TxnState};
use crate::protocol::wire::read_unsigned_varint;

pub const TRANSACTION_TOPIC: &str = "__transaction_state";

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// The `__transaction_state` partition that holds `transactional_id`.
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    crate::group::offsets_topic::partition_for(transactional_id, partitions)
}

pub fn key(transactional_id: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + transactional_id.len());
    b.put_i16(KEY_VERSION);
    b.put_i16(transactional_id.len() as i16);
    b.put_slice(transactional_id.as_bytes());
    b
}

/// The value of a transaction's state as stored (version 0).
pub fn value(t: &TxnMetadata) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.put_i16(VALUE_VERSION);
    b.put_i64(t.producer_id);
    b.put_i16(t.producer_epoch);
    b.put_i32(t.timeout_ms);
    b.put_i8(t.state.code());
    if t.state == TxnState::Empty {
        b.put_i32(-1);
    } else {
        let by_topic = t.partitions_by_topic();
        b.put_i32(by_topic.len() as i32);
        for (topic, partitions) in by_topic {
            b.put_i16(topic.len() as i16);
            b.put_slice(topic.as_bytes());
            b.put_i32(partitions.len() as i32);
            for p in partitions {
                b.put_i32(p);
            }
        }
    }
    b.put_i64(t.last_update_ms);
    b.put_i64(t.start_ms);
    b
}

/// A `__transaction_state` record, decoded: the id and its state, or `None` for a
/// tombstone. `None` overall for a record of an unknown key version or unreadable.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<(String, Option<TxnMetadata>)> {
    let mut k = key;
    if get_i16(&mut k)? != KEY_VERSION {
        return None;
    }
    let id = get_string(&mut k, false)?;
    let Some(mut v) = value else {
        return Some((id, None));
    };
    let version = get_i16(&mut v)?;
    if !(0..=1).contains(&version) {
        return None;
    }
    let flexible = version >= 1;
    let producer_id = get_i64(&mut v)?;
    let producer_epoch = get_i16(&mut v)?;
    let timeout_ms = get_i32(&mut v)?;
    let state = TxnState::from_code((v.remaining() >= 1).then(|| v.get_i8())?)?;
    let count = if flexible {
        read_unsigned_varint(&mut v).ok()? as i64 - 1
    } else {
        get_i32(&mut v)? as i64
    };
    let mut partitions = BTreeSet::new();
    for _ in 0..count.max(0) {
        let topic = get_string(&mut v, flexible)?;
        let n = if flexible {
            read_unsigned_varint(&mut v).ok()? as i64 - 1
        } else {
            get_i32(&mut v)? as i64
        };
        for _ in 0..n.max(0) {
            partitions.insert((topic.clone(), get_i32(&mut v)?));
        }
        if flexible {
            skip_tagged_fields(&mut v)?;
        }
    }
    let last_update_ms = get_i64(&mut v)?;
    let start_ms = get_i64(&mut v)?;
    Some((
        id,
        Some(TxnMetadata {
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms,
            start_ms,
            ..TxnMetadata::new(producer_id, timeout_ms, last_update_ms)
        }),
    ))
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

fn get_string(b: &mut &[u8], compact: bool) -> Option<String> {
    let len = if compact {
        read_unsigned_varint(b).ok()? as i64 - 1
    } else {
        get_i16(b)? as i64
    };
    if len < 0 || b.remaining() < len as usize {
        return None;
    }
    let s = String::from_utf8(b[..len as usize].to_vec()).ok()?;
    b.advance(len as usize);
    Some(s)
}

fn skip_tagged_fields(b: &mut &[u8]) -> Option<()> {
    let n = read_unsigned_varint(b).ok()?;
    for _ in 0..n {
        read_unsigned_varint(b).ok()?;
        let size = read_unsigned_varint(b).ok()? as usize;
        if b.remaining() < size {
            return None;
        }
        b.advance(size);
    }
    Some(())
}

/// Writes a version 1 value (tests: Kafka clusters at `transaction.version` 1 write
/// these, and a log may hold them).
#[cfg(test)]
fn value_v1(t: &TxnMetadata) -> Vec<u8> {
    use crate::protocol::wire::put_unsigned_varint;
    let mut b = Vec::new();
    b.put_i16(1);
    b.put_i64(t.producer_id);
    b.put_i16(t.producer_epoch);
    b.put_i32(t.timeout_ms);
    b.put_i8(t.state.code());
    let by_topic = t.partitions_by_topic();
    put_unsigned_varint(&mut b, by_topic.len() as u32 + 1);
    for (topic, partitions) in by_topic {
        put_unsigned_varint(&mut b, topic.len() as u32 + 1);
        b.put_slice(topic.as_bytes());
        put_unsigned_varint(&mut b, partitions.len() as u32 + 1);
        for p in partitions {
            b.put_i32(p);
        }
        b.put_u8(0);
    }
    b.put_i64(t.last_update_ms);
    b.put_i64(t.start_ms);
    // One tagged field: ClientTransactionVersion (tag 2) = 0, two bytes.
    b.put_u8(1);
    b.put_u8(2);
    b.put_u8(2);
    b.put_i16(0);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(state: TxnState) -> TxnMetadata {
        let mut t = TxnMetadata::new(4000, 60_000, 1_700_000_000_000);
        t.producer_epoch = 3;
        t.state = state;
        t.start_ms = 1_699_999_999_000;
        if state != TxnState::Empty {
            t.partitions.insert(("orders".into(), 2));
            t.partitions.insert(("orders".into(), 0));
            t.partitions.insert(("audit".into(), 1));
        }
        t
    }

    fn same(a: &TxnMetadata, b: &TxnMetadata) -> bool {
        (
            a.producer_id,
            a.producer_epoch,
            a.timeout_ms,
            a.state,
            &a.partitions,
            a.last_update_ms,
            a.start_ms,
        ) == (
            b.producer_id,
            b.producer_epoch,
            b.timeout_ms,
            b.state,
            &b.partitions,
            b.last_update_ms,
            b.start_ms,
        )
    }

    #[test]
    fn values_round_trip_in_both_versions() {
        for state in [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::CompleteAbort,
        ] {
            let t = sample(state);
            for v in [value(&t), value_v1(&t)] {
                let (id, got) = decode(&key("tx-1"), Some(&v)).expect("decodes");
                assert_eq!(id, "tx-1");
                assert!(same(&got.expect("a state"), &t), "{state:?}");
            }
        }
    }

    #[test]
    fn kafka_layout_of_a_version_0_value() {
        let t = sample(TxnState::Ongoing);
        let v = value(&t);
        // version, pid, epoch, timeout, status 1 (Ongoing), 2 topics sorted by name.
        assert_eq!(&v[..2], &[0, 0]);
        assert_eq!(&v[2..10], &4000i64.to_be_bytes());
        assert_eq!(&v[10..12], &3i16.to_be_bytes());
        assert_eq!(&v[12..16], &60_000i32.to_be_bytes());
        assert_eq!(v[16], 1);
        assert_eq!(&v[17..21], &2i32.to_be_bytes());
        assert_eq!(&v[21..23], &5i16.to_be_bytes());
        assert_eq!(&v[23..28], b"audit");
        // An Empty state stores null partitions.
        let empty = value(&sample(TxnState::Empty));
        assert_eq!(&empty[17..21], &(-1i32).to_be_bytes());
    }

    #[test]
    fn a_tombstone_and_foreign_keys() {
        assert_eq!(decode(&key("x"), None), Some(("x".to_string(), None)));
        let mut other = key("x");
        other[1] = 1;
        assert!(decode(&other, None).is_none());
    }
}

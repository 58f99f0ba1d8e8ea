//! Transaction markers: the control batches (COMMIT or ABORT) a transaction
//! coordinator has each partition leader append to end a producer's transaction.
//!
//! Kafka's layout: a batch with the transactional and control attribute bits, the
//! producer's id and epoch, sequence -1, and one record whose key is (version 0,
//! type) with type 0 = ABORT, 1 = COMMIT, and whose value is Kafka's
//! EndTransactionMarker (version 0, coordinator epoch). Consumers never hand control
//! records to applications; read_committed ones use the markers to end a producer's
//! transaction while filtering.

use bytes::BufMut;

use super::batch::{self, BatchHeader};
use super::records::for_each_record;

const MARKER_KEY_VERSION: i16 = 0;
const MARKER_VALUE_VERSION: i16 = 0;
const TYPE_ABORT: i16 = 0;
const TYPE_COMMIT: i16 = 1;
/// The attribute bits of a marker batch: transactional (4) and control (5).
const MARKER_ATTRIBUTES: i16 = (1 << 4) | (1 << 5);

/// What a transaction marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    pub commit: bool,
    /// The coordinator's epoch (its `__transaction_state` partition's leader epoch):
    /// a marker from an older coordinator is refused.
    pub coordinator_epoch: i32,
}

/// Encodes a marker batch for `producer` (id, epoch), stamped `timestamp`; its base
/// offset is assigned on append.
pub fn encode_marker(producer: (i64, i16), marker: Marker, timestamp: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.put_i16(MARKER_KEY_VERSION);
    key.put_i16(if marker.commit {
        TYPE_COMMIT
    } else {
        TYPE_ABORT
    });
    let mut value = Vec::with_capacity(6);
    value.put_i16(MARKER_VALUE_VERSION);
    value.put_i32(marker.coordinator_epoch);
    let record = batch::build::Record {
        key: Some(&key),
        value: Some(&value),
        headers: &[],
        timestamp,
    };
    let mut b = batch::build::encode(&[record], Some((producer.0, producer.1, -1)));
    batch::set_attributes(&mut b, MARKER_ATTRIBUTES);
    b
}

/// The marker a whole control batch carries; `None` if `bytes` is not a control
/// batch or its record is not a transaction marker (other control types, or
/// unreadable).
pub fn parse_marker(bytes: &[u8]) -> Option<Marker> {
    let header = BatchHeader::new(bytes)?;
    if !header.is_control() {
        return None;
    }
    let mut found = None;
    for_each_record(bytes, |r| {
        if found.is_some() {
            return;
        }
        let (Some(key), Some(value)) = (r.key, r.value) else {
            return;
        };
        if key.len() < 4 || value.len() < 6 {
            return;
        }
        let kind = i16::from_be_bytes([key[2], key[3]]);
        let commit = match kind {
            TYPE_COMMIT => true,
            TYPE_ABORT => false,
            _ => return,
        };
        let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
        found = Some(Marker {
            commit,
            coordinator_epoch,
        });
    })
    .ok()?;
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_as_a_valid_control_batch() {
        for commit in [true, false] {
            let marker = Marker {
                commit,
                coordinator_epoch: 7,
            };
            let mut b = encode_marker((42, 3), marker, 1_000);
            batch::assign(&mut b, 100, 2);
            let h = batch::validate(&b, usize::MAX).expect("valid batch");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id(), h.producer_epoch()), (42, 3));
            assert_eq!(h.base_sequence(), -1);
            assert_eq!(h.record_count(), 1);
            assert_eq!(parse_marker(&b), Some(marker));
        }
    }

    #[test]
    fn a_data_batch_is_no_marker() {
        let b = batch::build::encode(
            &[batch::build::Record {
                key: None,
                value: Some(b"v"),
                headers: &[],
                timestamp: 0,
            }],
            Some((1, 0, 0)),
        );
        assert_eq!(parse_marker(&b), None);
    }
}

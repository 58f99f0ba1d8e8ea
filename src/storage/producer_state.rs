//! Idempotent-producer state of one partition: per producer id, its epoch, last
//! sequence and the last few batches (for duplicate detection), as Kafka keeps it.
//! Rebuilt from batch headers during recovery, so it survives restarts.

use std::collections::{HashMap, VecDeque};

use crate::protocol::batch::{BatchHeader, NO_PRODUCER_ID};

/// Kafka remembers the last five batches of each producer (max.in.flight = 5).
pub const RECENT_BATCHES_MAX: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct BatchSeq {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<BatchSeq>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, or in sequence: append it.
    Append,
    /// Already in the log at this base offset: answer as if appended, write nothing.
    Duplicate {
        base_offset: i64,
    },
    Reject(SequenceError),
}

/// Why a producer's batch is refused (the broker answers INVALID_PRODUCER_EPOCH and
/// OUT_OF_ORDER_SEQUENCE_NUMBER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceError {
    /// An epoch older than the producer's newest.
    StaleEpoch,
    /// A sequence that does not follow the producer's last one.
    OutOfOrder,
}

/// A producer's state before a write, to put back if the write fails.
pub struct SavedProducer {
    pid: i64,
    entry: Option<ProducerEntry>,
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStates {
    /// Checks a batch against the producer's state, as Kafka's ProducerAppendInfo does.
    pub fn check(&self, batch: &BatchHeader<'_>) -> SequenceCheck {
        let pid = batch.producer_id();
        if pid == NO_PRODUCER_ID {
            return SequenceCheck::Append;
        }
        let Some(entry) = self.producers.get(&pid) else {
            // Unknown producer (new, or its state expired): any sequence starts it.
            return SequenceCheck::Append;
        };
        let epoch = batch.producer_epoch();
        if epoch < entry.epoch {
            return SequenceCheck::Reject(SequenceError::StaleEpoch);
        }
        if epoch > entry.epoch {
            return if batch.base_sequence() == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(SequenceError::OutOfOrder)
            };
        }
        let first = batch.base_sequence();
        let last = batch.last_sequence();
        if let Some(dup) = entry
            .recent
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
            };
        }
        match entry.recent.back() {
            Some(prev) if next_seq(prev.last_seq) != first => {
                SequenceCheck::Reject(SequenceError::OutOfOrder)
            }
            _ => SequenceCheck::Append,
        }
    }

    /// Records an appended batch (whose base offset is now assigned).
    /// Saves (into `saved`) the state of `batch`'s producer as it is before `update`,
    /// unless it is saved already: `restore` puts it back if the batches that updated
    /// it did not land.
    pub fn save_once(&self, batch: &BatchHeader<'_>, saved: &mut Vec<SavedProducer>) {
        let pid = batch.producer_id();
        if pid != NO_PRODUCER_ID && !saved.iter().any(|s| s.pid == pid) {
            saved.push(SavedProducer {
                pid,
                entry: self.producers.get(&pid).cloned(),
            });
        }
    }

    pub fn restore(&mut self, saved: Vec<SavedProducer>) {
        for s in saved {
            match s.entry {
                Some(entry) => self.producers.insert(s.pid, entry),
                None => self.producers.remove(&s.pid),
            };
        }
    }

    /// The log was cut at `offset`: batches at or past it are forgotten, and so is a
    /// producer none of whose remembered batches is left (it is then unknown, as a
    /// producer whose state expired: its next sequence starts it again).
    pub fn truncate(&mut self, offset: i64) {
        self.producers.retain(|_, entry| {
            entry.recent.retain(|b| b.base_offset < offset);
            !entry.recent.is_empty()
        });
    }

    pub fn update(&mut self, batch: &BatchHeader<'_>) {
        let pid = batch.producer_id();
        if pid == NO_PRODUCER_ID {
            return;
        }
        let entry = self.producers.entry(pid).or_default();
        if batch.producer_epoch() != entry.epoch {
            entry.epoch = batch.producer_epoch();
            entry.recent.clear();
        }
        if entry.recent.len() == RECENT_BATCHES_MAX {
            entry.recent.pop_front();
        }
        entry.recent.push_back(BatchSeq {
            first_seq: batch.base_sequence(),
            last_seq: batch.last_sequence(),
            base_offset: batch.base_offset(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{assign, build, BatchHeader};

    fn batch(pid: i64, epoch: i16, seq: i32, n: usize, offset: i64) -> Vec<u8> {
        let recs: Vec<build::Record> = (0..n)
            .map(|_| build::Record {
                key: None,
                value: Some(b"v"),
                headers: &[],
                timestamp: 0,
            })
            .collect();
        let mut b = build::encode(&recs, Some((pid, epoch, seq)));
        assign(&mut b, offset, 0);
        b
    }

    fn check(s: &ProducerStates, b: &[u8]) -> SequenceCheck {
        s.check(&BatchHeader::new(b).unwrap())
    }

    #[test]
    fn in_order_duplicate_gap_and_fencing() {
        let mut s = ProducerStates::default();
        let b0 = batch(1, 0, 0, 3, 0);
        assert_eq!(check(&s, &b0), SequenceCheck::Append);
        s.update(&BatchHeader::new(&b0).unwrap());
        let b1 = batch(1, 0, 3, 2, 3);
        assert_eq!(check(&s, &b1), SequenceCheck::Append);
        s.update(&BatchHeader::new(&b1).unwrap());
        assert_eq!(
            check(&s, &batch(1, 0, 0, 3, 99)),
            SequenceCheck::Duplicate { base_offset: 0 }
        );
        assert_eq!(
            check(&s, &batch(1, 0, 3, 2, 99)),
            SequenceCheck::Duplicate { base_offset: 3 }
        );
        assert_eq!(
            check(&s, &batch(1, 0, 7, 1, 99)),
            SequenceCheck::Reject(SequenceError::OutOfOrder)
        );
        assert_eq!(
            check(&s, &batch(1, 1, 5, 1, 99)),
            SequenceCheck::Reject(SequenceError::OutOfOrder)
        );
        assert_eq!(check(&s, &batch(1, 1, 0, 1, 99)), SequenceCheck::Append);
        s.update(&BatchHeader::new(&batch(1, 1, 0, 1, 5)).unwrap());
        assert_eq!(
            check(&s, &batch(1, 0, 5, 1, 99)),
            SequenceCheck::Reject(SequenceError::StaleEpoch)
        );
        assert_eq!(
            check(&s, &batch(2, 0, 42, 1, 99)),
            SequenceCheck::Append,
            "unknown producer"
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.update(&BatchHeader::new(&batch(1, 0, i, 1, i as i64)).unwrap());
        }
        assert_eq!(
            check(&s, &batch(1, 0, 2, 1, 99)),
            SequenceCheck::Duplicate { base_offset: 2 }
        );
        assert_eq!(
            check(&s, &batch(1, 0, 1, 1, 99)),
            SequenceCheck::Reject(SequenceError::OutOfOrder)
        );
    }

    #[test]
    fn truncation_forgets_the_batches_cut_and_producers_left_with_none() {
        let mut s = ProducerStates::default();
        for (pid, seq, offset) in [(1, 0, 0), (1, 1, 1), (2, 0, 2), (1, 2, 3)] {
            s.update(&BatchHeader::new(&batch(pid, 0, seq, 1, offset)).unwrap());
        }
        s.truncate(2);
        // Producer 1 goes on from sequence 1 (its batch at offset 3 is gone): its
        // retried sequence 2 is appended again, not a duplicate.
        assert_eq!(
            check(&s, &batch(1, 0, 1, 1, 9)),
            SequenceCheck::Duplicate { base_offset: 1 }
        );
        assert_eq!(check(&s, &batch(1, 0, 2, 1, 9)), SequenceCheck::Append);
        // Producer 2 has nothing left: unknown, any sequence starts it.
        assert_eq!(check(&s, &batch(2, 0, 7, 1, 9)), SequenceCheck::Append);
    }
}

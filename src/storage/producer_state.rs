//! Producer state of one partition, as Kafka keeps it: per producer id, its epoch,
//! last sequence and the last few batches (for duplicate detection), and its open
//! transaction; and the partition's transactions not yet stable (open, or ended by a
//! marker the high watermark has not passed), from which the last stable offset
//! follows. Rebuilt from batches during recovery, so it survives restarts.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::protocol::batch::{BatchHeader, NO_PRODUCER_ID};
use crate::protocol::control::Marker;

/// A batch's base sequence when it has none.
const NO_SEQUENCE: i32 = -1;

/// Kafka remembers the last five batches of each producer (max.in.flight = 5).
pub const RECENT_BATCHES_MAX: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct BatchSeq {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<BatchSeq>,
    /// First offset of the producer's open transaction on this partition.
    #[serde(default)]
    txn_first_offset: Option<i64>,
    /// The coordinator epoch of the newest marker (-1: none yet).
    #[serde(default = "no_coordinator_epoch")]
    coordinator_epoch: i32,
    /// The newest batch's max timestamp (DescribeProducers, expiry).
    #[serde(default)]
    last_timestamp: i64,
}

fn no_coordinator_epoch() -> i32 {
    -1
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            recent: VecDeque::new(),
            txn_first_offset: None,
            coordinator_epoch: no_coordinator_epoch(),
            last_timestamp: -1,
        }
    }
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

/// Why a producer's batch is refused (the broker answers INVALID_PRODUCER_EPOCH,
/// OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_TXN_STATE, TRANSACTION_COORDINATOR_FENCED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceError {
    /// An epoch older than the producer's newest.
    StaleEpoch,
    /// A sequence that does not follow the producer's last one.
    OutOfOrder,
    /// A non-transactional batch from a producer with an open transaction.
    InvalidTxnState,
    /// A marker from a coordinator older than the one that wrote the last.
    CoordinatorFenced,
}

/// A transaction a marker ended: its producer, first offset and the marker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub aborted: bool,
}

/// A producer as DescribeProducers shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i16,
    /// -1: none remembered.
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// -1: no open transaction.
    pub txn_start_offset: i64,
}

/// Producer states as they were before a write, to put back if it fails.
#[derive(Default)]
pub struct SavedProducers {
    entries: Vec<(i64, Option<ProducerEntry>)>,
    ending_len: Option<usize>,
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset, producer.
    #[serde(default)]
    open: BTreeMap<i64, i64>,
    /// Transactions ended by a marker the high watermark may not have passed yet:
    /// (first offset, marker offset, producer), in marker order.
    #[serde(default)]
    ending: VecDeque<(i64, i64, i64)>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStates {
    /// Checks a batch against the producer's state, as Kafka's ProducerAppendInfo does;
    /// `marker` is what a control batch says.
    pub fn check(&self, batch: &BatchHeader<'_>, marker: Option<Marker>) -> SequenceCheck {
        let pid = batch.producer_id();
        if pid == NO_PRODUCER_ID {
            return SequenceCheck::Append;
        }
        let entry = self.producers.get(&pid);
        if batch.is_control() {
            return match (entry, marker) {
                (Some(e), _) if batch.producer_epoch() < e.epoch => {
                    SequenceCheck::Reject(SequenceError::StaleEpoch)
                }
                (Some(e), Some(m)) if m.coordinator_epoch < e.coordinator_epoch => {
                    SequenceCheck::Reject(SequenceError::CoordinatorFenced)
                }
                _ => SequenceCheck::Append,
            };
        }
        let Some(entry) = entry else {
            // Unknown producer (new, or its state expired): any sequence starts it.
            return SequenceCheck::Append;
        };
        let epoch = batch.producer_epoch();
        if epoch < entry.epoch {
            return SequenceCheck::Reject(SequenceError::StaleEpoch);
        }
        // No sequence (-1): a coordinator's write for the producer (its transactional
        // offsets), which Kafka does not sequence-check.
        let in_sequence = if batch.base_sequence() == NO_SEQUENCE {
            true
        } else if epoch > entry.epoch {
            batch.base_sequence() == 0
        } else {
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
            entry
                .recent
                .back()
                .is_none_or(|prev| next_seq(prev.last_seq) == first)
        };
        if !in_sequence {
            return SequenceCheck::Reject(SequenceError::OutOfOrder);
        }
        if !batch.is_transactional() && entry.txn_first_offset.is_some() {
            return SequenceCheck::Reject(SequenceError::InvalidTxnState);
        }
        SequenceCheck::Append
    }

    /// Saves (into `saved`) the state of `batch`'s producer as it is before `update`,
    /// unless it is saved already: `restore` puts it back if the batches that updated
    /// it did not land.
    pub fn save_once(&self, batch: &BatchHeader<'_>, saved: &mut SavedProducers) {
        saved.ending_len.get_or_insert(self.ending.len());
        let pid = batch.producer_id();
        if pid != NO_PRODUCER_ID && !saved.entries.iter().any(|s| s.0 == pid) {
            saved.entries.push((pid, self.producers.get(&pid).cloned()));
        }
    }

    pub fn restore(&mut self, saved: SavedProducers) {
        if let Some(len) = saved.ending_len {
            self.ending.truncate(len);
        }
        for (pid, entry) in saved.entries {
            self.open.retain(|_, p| *p != pid);
            match entry {
                Some(entry) => {
                    if let Some(first) = entry.txn_first_offset {
                        self.open.insert(first, pid);
                    }
                    self.producers.insert(pid, entry)
                }
                None => self.producers.remove(&pid),
            };
        }
    }

    /// The log was cut at `offset`: batches at or past it are forgotten, and so is a
    /// producer none of whose remembered batches is left and that has no open
    /// transaction (it is then unknown, as a producer whose state expired: its next
    /// sequence starts it again). A transaction opened past the cut is forgotten; one
    /// whose marker was cut is open again (its coordinator writes the marker again).
    pub fn truncate(&mut self, offset: i64) {
        while let Some(&(first, marker, pid)) = self.ending.back() {
            if marker < offset {
                break;
            }
            self.ending.pop_back();
            if first < offset {
                if let Some(entry) = self.producers.get_mut(&pid) {
                    entry.txn_first_offset = Some(first);
                    self.open.insert(first, pid);
                }
            }
        }
        let cut: Vec<(i64, i64)> = self
            .open
            .range(offset..)
            .map(|(&first, &pid)| (first, pid))
            .collect();
        for (first, pid) in cut {
            self.open.remove(&first);
            if let Some(entry) = self.producers.get_mut(&pid) {
                entry.txn_first_offset = None;
            }
        }
        // A producer none of whose batches was cut stays (one fenced by a marker has
        // none remembered, and must stay fenced).
        self.producers.retain(|_, entry| {
            let had = entry.recent.len();
            entry.recent.retain(|b| b.base_offset < offset);
            had == 0 || !entry.recent.is_empty() || entry.txn_first_offset.is_some()
        });
    }

    /// Records an appended batch (whose base offset is now assigned); `marker` is what
    /// a control batch says. Returns the transaction a marker ended.
    pub fn update(
        &mut self,
        batch: &BatchHeader<'_>,
        marker: Option<Marker>,
    ) -> Option<CompletedTxn> {
        let pid = batch.producer_id();
        if pid == NO_PRODUCER_ID {
            return None;
        }
        let entry = self.producers.entry(pid).or_default();
        entry.last_timestamp = entry.last_timestamp.max(batch.max_timestamp());
        if batch.producer_epoch() != entry.epoch {
            entry.epoch = batch.producer_epoch();
            entry.recent.clear();
        }
        if batch.is_control() {
            let marker = marker?;
            entry.coordinator_epoch = marker.coordinator_epoch;
            let last_offset = batch.base_offset();
            let first_offset = match entry.txn_first_offset.take() {
                Some(first) => {
                    self.open.remove(&first);
                    first
                }
                None => last_offset,
            };
            self.ending.push_back((first_offset, last_offset, pid));
            return Some(CompletedTxn {
                producer_id: pid,
                first_offset,
                last_offset,
                aborted: !marker.commit,
            });
        }
        if batch.base_sequence() == NO_SEQUENCE {
            // Nothing to remember for duplicate detection.
        } else {
            if entry.recent.len() == RECENT_BATCHES_MAX {
                entry.recent.pop_front();
            }
            entry.recent.push_back(BatchSeq {
                first_seq: batch.base_sequence(),
                last_seq: batch.last_sequence(),
                base_offset: batch.base_offset(),
            });
        }
        if batch.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(batch.base_offset());
            self.open.insert(batch.base_offset(), pid);
        }
        None
    }

    /// The first offset of a transaction that is not stable below `high_watermark`:
    /// open, or ended by a marker at or past it. The last stable offset is the lower
    /// of this and the high watermark.
    pub fn first_unstable_offset(&self, high_watermark: i64) -> Option<i64> {
        let open = self.open.keys().next().copied();
        let ending = self
            .ending
            .iter()
            .filter(|e| e.1 >= high_watermark)
            .map(|e| e.0)
            .min();
        match (open, ending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets ended transactions whose marker lies below `high_watermark`: stable.
    pub fn forget_stable(&mut self, high_watermark: i64) {
        while self.ending.front().is_some_and(|e| e.1 < high_watermark) {
            self.ending.pop_front();
        }
    }

    /// Forgets producers with no open transaction whose newest batch is older than
    /// `expiration_ms` (`producer.id.expiration.ms`), as Kafka expires them.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Every producer, as DescribeProducers shows them.
    pub fn describe(&self) -> Vec<ProducerView> {
        let mut out: Vec<ProducerView> = self
            .producers
            .iter()
            .map(|(&pid, e)| ProducerView {
                producer_id: pid,
                epoch: e.epoch,
                last_sequence: e.recent.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
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
        s.check(&BatchHeader::new(b).unwrap(), None)
    }

    #[test]
    fn in_order_duplicate_gap_and_fencing() {
        let mut s = ProducerStates::default();
        let b0 = batch(1, 0, 0, 3, 0);
        assert_eq!(check(&s, &b0), SequenceCheck::Append);
        s.update(&BatchHeader::new(&b0).unwrap(), None);
        let b1 = batch(1, 0, 3, 2, 3);
        assert_eq!(check(&s, &b1), SequenceCheck::Append);
        s.update(&BatchHeader::new(&b1).unwrap(), None);
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
        s.update(&BatchHeader::new(&batch(1, 1, 0, 1, 5)).unwrap(), None);
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
    fn idle_producers_expire_unless_a_transaction_is_open() {
        let mut s = ProducerStates::default();
        let mut idle = batch(1, 0, 0, 1, 0);
        let mut open = batch(2, 0, 0, 1, 1);
        crate::protocol::batch::set_attributes(&mut open, 1 << 4);
        for b in [&mut idle, &mut open] {
            // Both written at time 1000.
            b[35..43].copy_from_slice(&1000i64.to_be_bytes());
            s.update(&BatchHeader::new(b).unwrap(), None);
        }
        assert_eq!(s.expire(1500, 1000), 0, "not idle long enough");
        assert_eq!(s.expire(2000, 1000), 1);
        let left: Vec<i64> = s.describe().iter().map(|p| p.producer_id).collect();
        assert_eq!(left, vec![2], "the producer with an open transaction stays");
        assert_eq!(s.first_unstable_offset(10), Some(1));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.update(
                &BatchHeader::new(&batch(1, 0, i, 1, i as i64)).unwrap(),
                None,
            );
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
            s.update(
                &BatchHeader::new(&batch(pid, 0, seq, 1, offset)).unwrap(),
                None,
            );
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

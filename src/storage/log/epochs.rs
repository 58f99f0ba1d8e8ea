//! The leader epoch cache (Kafka's `LeaderEpochFileCache`): for each leader epoch
//! found in the log, the offset of its first batch. A follower whose log diverged
//! from its leader's finds where with it (KIP-101, KIP-279, and the diverging epoch
//! of Fetch v12+, KIP-320). Kept in memory, rebuilt from batch headers by a recovery
//! scan and carried by the clean-shutdown snapshot.

use serde::{Deserialize, Serialize};

/// Epoch and offset answered when there is none (Kafka's UNDEFINED_EPOCH and
/// UNDEFINED_EPOCH_OFFSET).
pub const UNDEFINED: (i32, i64) = (-1, -1);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochCache {
    /// (epoch, start offset), both increasing.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    /// Notes a batch of leader epoch `epoch` starting at `base_offset`: a new entry if
    /// the epoch is newer than the last. Batches of an older epoch (a follower copies
    /// what its leader holds, in order) change nothing.
    pub fn note(&mut self, epoch: i32, base_offset: i64) {
        if epoch >= 0 && self.entries.last().is_none_or(|&(last, _)| epoch > last) {
            self.entries.push((epoch, base_offset));
        }
    }

    /// The newest epoch in the log, if any.
    pub fn latest(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Where epoch `requested` ends, as Kafka's `endOffsetFor` answers: for the
    /// latest epoch, the log end; for an older one, the largest epoch at or below it
    /// and the start of the next; for one below every epoch, itself and the first
    /// start; `UNDEFINED` for an unknown newer epoch, -1, or an empty cache.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        if requested < 0 {
            return UNDEFINED;
        }
        if self.latest() == Some(requested) {
            return (requested, log_end);
        }
        let higher = self.entries.iter().find(|&&(e, _)| e > requested);
        let floor = self.entries.iter().rev().find(|&&(e, _)| e <= requested);
        match (higher, floor) {
            (None, _) => UNDEFINED,
            (Some(&(_, next_start)), None) => (requested, next_start),
            (Some(&(_, next_start)), Some(&(e, _))) => (e, next_start),
        }
    }

    /// Forgets epochs that start at or after `offset` (the log was cut there).
    pub fn truncate_from_end(&mut self, offset: i64) {
        self.entries.retain(|&(_, start)| start < offset);
    }

    /// The log now starts at `offset`: epochs that end before it go; the one holding
    /// it starts there.
    pub fn truncate_from_start(&mut self, offset: i64) {
        let keep_from = self
            .entries
            .iter()
            .rposition(|&(_, start)| start <= offset)
            .unwrap_or(0);
        self.entries.drain(..keep_from);
        if let Some(first) = self.entries.first_mut() {
            first.1 = first.1.max(offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_as_kafka_answers_them() {
        let mut c = EpochCache::default();
        assert_eq!(c.end_offset_for(0, 0), UNDEFINED);
        for (epoch, offset) in [(1, 0), (1, 5), (3, 10), (2, 12), (5, 20)] {
            c.note(epoch, offset);
        }
        assert_eq!(c.latest(), Some(5));
        assert_eq!(c.end_offset_for(5, 30), (5, 30), "the latest: the log end");
        assert_eq!(c.end_offset_for(3, 30), (3, 20));
        assert_eq!(
            c.end_offset_for(4, 30),
            (3, 20),
            "the floor epoch, the next start"
        );
        assert_eq!(c.end_offset_for(0, 30), (0, 0), "below every epoch");
        assert_eq!(c.end_offset_for(6, 30), UNDEFINED, "newer than any");
        assert_eq!(c.end_offset_for(-1, 30), UNDEFINED);

        c.truncate_from_end(20);
        assert_eq!(c.latest(), Some(3));
        c.truncate_from_start(12);
        assert_eq!(c.entries, vec![(3, 12)]);
        c.truncate_from_start(15);
        assert_eq!(c.entries, vec![(3, 15)]);
    }
}

//! A leader's view of its followers (Kafka's `Partition` and its replica states):
//! each follower's log end, as its latest fetch said, and from those the high
//! watermark, the smallest log end among the in-sync replicas.

use std::collections::HashMap;

use crate::ids::{BrokerId, LeaderEpoch};

#[derive(Debug)]
pub struct LeaderState {
    pub leader_epoch: LeaderEpoch,
    /// The in-sync followers (the ISR without this broker).
    isr_followers: Vec<BrokerId>,
    /// Each follower's log end, from its latest fetch in this leadership.
    follower_ends: HashMap<BrokerId, i64>,
    /// What followers not heard from yet are taken to hold: the high watermark when
    /// this leadership began (everything below it was on every in-sync replica).
    start_high_watermark: i64,
}

impl LeaderState {
    /// A leadership of `epoch` over `isr`, beginning at `high_watermark`.
    pub fn new(me: BrokerId, epoch: LeaderEpoch, isr: &[BrokerId], high_watermark: i64) -> Self {
        let mut state = LeaderState {
            leader_epoch: epoch,
            isr_followers: Vec::new(),
            follower_ends: HashMap::new(),
            start_high_watermark: high_watermark,
        };
        state.set_isr(me, isr);
        state
    }

    /// The ISR changed (in the metadata).
    pub fn set_isr(&mut self, me: BrokerId, isr: &[BrokerId]) {
        self.isr_followers = isr.iter().copied().filter(|b| *b != me).collect();
    }

    /// A follower fetched from `fetch_offset`: it holds everything below it.
    pub fn note_fetch(&mut self, follower: BrokerId, fetch_offset: i64) {
        self.follower_ends.insert(follower, fetch_offset);
    }

    /// The follower's log end as its latest fetch said, if it fetched.
    pub fn follower_end(&self, follower: BrokerId) -> Option<i64> {
        self.follower_ends.get(&follower).copied()
    }

    /// The cap on the high watermark: how far every in-sync follower holds the log,
    /// never below `high_watermark` (the one in effect: it does not go back); with no
    /// in-sync follower, none (`i64::MAX`: the leader's own log end limits).
    pub fn replicated_end(&self, high_watermark: i64) -> i64 {
        let held = self
            .isr_followers
            .iter()
            .map(|f| {
                self.follower_ends
                    .get(f)
                    .copied()
                    .unwrap_or(self.start_high_watermark)
            })
            .min();
        held.map_or(i64::MAX, |h| h.max(high_watermark))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_watermark_is_the_least_an_in_sync_replica_holds() {
        let (me, a, b) = (BrokerId(1), BrokerId(2), BrokerId(3));
        let mut l = LeaderState::new(me, LeaderEpoch(4), &[me, a, b], 10);
        assert_eq!(
            l.replicated_end(10),
            10,
            "followers not heard from hold the start"
        );
        l.note_fetch(a, 15);
        assert_eq!(l.replicated_end(10), 10);
        l.note_fetch(b, 12);
        assert_eq!(l.replicated_end(10), 12);
        l.note_fetch(b, 20);
        assert_eq!(l.replicated_end(12), 15);
        // b leaves the ISR: a alone limits; the high watermark never goes back.
        l.set_isr(me, &[me, a]);
        l.note_fetch(a, 11);
        assert_eq!(l.replicated_end(15), 15);
        l.set_isr(me, &[me]);
        assert_eq!(l.replicated_end(15), i64::MAX, "alone: the log end limits");
    }
}

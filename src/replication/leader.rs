//! A leader's view of its followers (Kafka's `Partition` and its replica states):
//! each follower's log end, as its latest fetch said, and when it was last caught up;
//! from those the high watermark (the least log end among the in-sync replicas) and
//! the ISR the leader should ask for (KIP-497: the leader proposes, the controller
//! decides).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ids::{BrokerId, LeaderEpoch};

#[derive(Debug, Clone, Copy)]
struct Follower {
    /// Its log end: the offset of its latest fetch.
    end: i64,
    last_fetch: Instant,
    /// The leader's log end when that fetch came.
    leader_end_at_last_fetch: i64,
    /// When it last held everything the leader held (Kafka's lastCaughtUpTime).
    last_caught_up: Instant,
}

#[derive(Debug)]
pub struct LeaderState {
    me: BrokerId,
    pub leader_epoch: LeaderEpoch,
    /// The partition's state this leadership saw last (AlterPartition names it).
    pub partition_epoch: i32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    followers: HashMap<BrokerId, Follower>,
    /// What followers not heard from yet are taken to hold: the high watermark when
    /// this leadership began (everything below it was on every in-sync replica).
    start_high_watermark: i64,
    started: Instant,
    /// An ISR change is with the controller: no other is asked for meanwhile.
    pub alter_in_flight: bool,
}

impl LeaderState {
    /// A leadership of `epoch`, beginning at `high_watermark`.
    pub fn new(
        me: BrokerId,
        epoch: LeaderEpoch,
        partition_epoch: i32,
        replicas: &[BrokerId],
        isr: &[BrokerId],
        high_watermark: i64,
    ) -> Self {
        LeaderState {
            me,
            leader_epoch: epoch,
            partition_epoch,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            followers: HashMap::new(),
            start_high_watermark: high_watermark,
            started: Instant::now(),
            alter_in_flight: false,
        }
    }

    /// The partition changed in the metadata (same leadership).
    pub fn update(&mut self, partition_epoch: i32, replicas: &[BrokerId], isr: &[BrokerId]) {
        self.partition_epoch = partition_epoch;
        self.replicas = replicas.to_vec();
        self.isr = isr.to_vec();
    }

    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    /// A follower fetched from `fetch_offset` (it holds everything below it) while
    /// the leader's log ended at `leader_end`. Caught up, as Kafka reckons it: it
    /// reached the leader's end now, or the end the leader had at its previous fetch.
    pub fn note_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        leader_end: i64,
        now: Instant,
    ) {
        let started = self.started;
        let f = self.followers.entry(follower).or_insert(Follower {
            end: -1,
            last_fetch: started,
            leader_end_at_last_fetch: i64::MAX,
            last_caught_up: started,
        });
        if fetch_offset >= leader_end {
            f.last_caught_up = now;
        } else if fetch_offset >= f.leader_end_at_last_fetch {
            f.last_caught_up = f.last_caught_up.max(f.last_fetch);
        }
        f.end = fetch_offset;
        f.last_fetch = now;
        f.leader_end_at_last_fetch = leader_end;
    }

    /// The cap on the high watermark: how far every in-sync follower holds the log,
    /// never below `high_watermark` (the one in effect: it does not go back); with no
    /// in-sync follower, none (`i64::MAX`: the leader's own log end limits).
    pub fn replicated_end(&self, high_watermark: i64) -> i64 {
        let held = self
            .isr
            .iter()
            .filter(|b| **b != self.me)
            .map(|b| {
                self.followers
                    .get(b)
                    .map_or(self.start_high_watermark, |f| f.end)
            })
            .min();
        held.map_or(i64::MAX, |h| h.max(high_watermark))
    }

    /// The ISR to ask for, if it should change: in-sync followers that have not been
    /// caught up for `lag_max` leave (Kafka's `replica.lag.time.max.ms`); replicas
    /// whose log reaches the high watermark join. Replica order is kept.
    pub fn wanted_isr(
        &self,
        now: Instant,
        lag_max: Duration,
        leader_end: i64,
        high_watermark: i64,
    ) -> Option<Vec<BrokerId>> {
        let in_sync = |b: &BrokerId| {
            if *b == self.me {
                return true;
            }
            let f = self.followers.get(b);
            if self.isr.contains(b) {
                let caught_up = f.map_or(self.started, |f| f.last_caught_up);
                f.is_some_and(|f| f.end >= leader_end) || now.duration_since(caught_up) <= lag_max
            } else {
                f.is_some_and(|f| f.end >= high_watermark && f.end >= self.start_high_watermark)
            }
        };
        let wanted: Vec<BrokerId> = self.replicas.iter().copied().filter(in_sync).collect();
        let same = wanted.len() == self.isr.len() && wanted.iter().all(|b| self.isr.contains(b));
        (!same).then_some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().map(|b| BrokerId(*b)).collect()
    }

    #[test]
    fn the_high_watermark_is_the_least_an_in_sync_replica_holds() {
        let (me, a, b) = (BrokerId(1), BrokerId(2), BrokerId(3));
        let now = Instant::now();
        let all = ids(&[1, 2, 3]);
        let mut l = LeaderState::new(me, LeaderEpoch(4), 0, &all, &all, 10);
        assert_eq!(
            l.replicated_end(10),
            10,
            "followers not heard from hold the start"
        );
        l.note_fetch(a, 15, 20, now);
        assert_eq!(l.replicated_end(10), 10);
        l.note_fetch(b, 12, 20, now);
        assert_eq!(l.replicated_end(10), 12);
        l.note_fetch(b, 20, 20, now);
        assert_eq!(l.replicated_end(12), 15);
        // b leaves the ISR: a alone limits; the high watermark never goes back.
        l.update(1, &all, &ids(&[1, 2]));
        l.note_fetch(a, 11, 20, now);
        assert_eq!(l.replicated_end(15), 15);
        l.update(2, &all, &ids(&[1]));
        assert_eq!(l.replicated_end(15), i64::MAX, "alone: the log end limits");
    }

    #[test]
    fn a_follower_behind_too_long_leaves_and_one_caught_up_joins() {
        let (me, a, b) = (BrokerId(1), BrokerId(2), BrokerId(3));
        let lag = Duration::from_secs(10);
        let t0 = Instant::now();
        let all = ids(&[1, 2, 3]);
        let mut l = LeaderState::new(me, LeaderEpoch(0), 0, &all, &all, 0);
        l.note_fetch(a, 100, 100, t0);
        l.note_fetch(b, 40, 100, t0);
        assert_eq!(l.wanted_isr(t0, lag, 100, 40), None, "both within the lag");
        // b keeps fetching but never reaches where the leader was at its last fetch.
        let t1 = t0 + Duration::from_secs(6);
        l.note_fetch(a, 130, 130, t1);
        l.note_fetch(b, 60, 130, t1);
        let t2 = t0 + Duration::from_secs(11);
        l.note_fetch(a, 150, 150, t2);
        assert_eq!(l.wanted_isr(t2, lag, 150, 60), Some(ids(&[1, 2])));
        l.update(1, &all, &ids(&[1, 2]));
        // b catches up to the high watermark: it joins again.
        l.note_fetch(b, 150, 150, t2);
        assert_eq!(l.wanted_isr(t2, lag, 150, 150), Some(all.clone()));
        // A follower that never fetched in this leadership leaves after the lag.
        let l = LeaderState::new(me, LeaderEpoch(1), 0, &all, &all, 0);
        assert_eq!(
            l.wanted_isr(Instant::now() + lag * 2, lag, 0, 0),
            Some(ids(&[1]))
        );
    }
}

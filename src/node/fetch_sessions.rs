//! Incremental fetch sessions (KIP-227), one cache per shard.
//!
//! A client that fetches many partitions creates a session with a full fetch (session
//! id 0, epoch 0); the broker remembers each partition's fetch parameters and the high
//! watermark and log start it last answered with. The client's next fetches name only
//! what changed (and what to forget), and the answer holds only partitions with
//! records or with a changed high watermark, log start or error. Semantics and limits
//! are Kafka's (`FetchSession.scala`): epochs start at 1 and wrap to 1; partitions
//! that returned records move to the back of the session's order, so that a response
//! size limit does not starve the same partitions every time; a full cache evicts one
//! session that has been idle for two minutes, else one smaller or less privileged
//! (a follower's session is privileged) than the newcomer, else refuses it.
//!
//! Each shard holds `max.incremental.fetch.session.cache.slots / shards` sessions and
//! makes ids congruent to its index modulo the shard count, so any shard can tell
//! which one holds a session (as Kafka's cache shards split the id range).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::ErrorCode;

/// Kafka's `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`: a session idle longer than
/// this may be evicted for any newcomer.
pub const EVICTION_IDLE: Duration = Duration::from_secs(120);

/// What identifies a partition in a session: its topic's id from Fetch v13 on, its
/// name before (a session is one or the other, as the request that created it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionKey {
    Id(uuid::Uuid, i32),
    Name(Arc<str>, i32),
}

/// A partition's fetch parameters, as a request gives them.
#[derive(Debug, Clone)]
pub struct FetchParams {
    pub key: SessionKey,
    /// Shared: every fetch on a session copies its partitions' parameters.
    pub topic_name: Arc<str>,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    /// The fetcher's own log start (followers).
    pub log_start_offset: i64,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
}

/// What a fetch answered for one partition, as far as a session cares.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answered {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub has_records: bool,
    /// An error, or a diverging epoch: always sent.
    pub must_send: bool,
}

struct CachedPartition {
    params: FetchParams,
    high_watermark: i64,
    log_start_offset: i64,
}

impl CachedPartition {
    fn new(params: FetchParams) -> CachedPartition {
        CachedPartition {
            params,
            high_watermark: -1,
            log_start_offset: -1,
        }
    }

    /// Kafka's `maybeUpdateResponseData`: whether the partition goes into the
    /// response, remembering what it is told.
    fn answer(&mut self, a: &Answered) -> bool {
        let mut send = a.has_records || a.must_send;
        if a.high_watermark != self.high_watermark {
            send = true;
            self.high_watermark = a.high_watermark;
        }
        if a.log_start_offset != self.log_start_offset {
            send = true;
            self.log_start_offset = a.log_start_offset;
        }
        if a.must_send {
            // Sent again once the error is gone.
            self.high_watermark = -1;
        }
        send
    }
}

struct Session {
    /// The epoch the next request must carry.
    epoch: i32,
    uses_topic_ids: bool,
    privileged: bool,
    created: Instant,
    last_used: Instant,
    /// Its partitions, where `index` finds them by key (a forgotten one leaves a
    /// hole that `free` lists for the next newcomer).
    slots: Vec<Option<CachedPartition>>,
    free: Vec<u32>,
    index: HashMap<SessionKey, u32>,
    /// The order partitions are read and answered in: indexes into `slots`.
    order: Vec<u32>,
    /// The key it is filed under for eviction, as of its last use.
    evictable: Option<EvictionKey>,
}

impl Session {
    fn new(privileged: bool, uses_topic_ids: bool, now: Instant) -> Session {
        Session {
            epoch: next_epoch(0),
            uses_topic_ids,
            privileged,
            created: now,
            last_used: now,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            order: Vec::new(),
            evictable: None,
        }
    }

    fn slot(&mut self, i: u32) -> &mut CachedPartition {
        self.slots[i as usize]
            .as_mut()
            .expect("order and index name filled slots")
    }

    /// A new partition, or new parameters for one it has (which keeps its place).
    fn upsert(&mut self, params: FetchParams) -> &mut CachedPartition {
        if let Some(&i) = self.index.get(&params.key) {
            let cached = self.slot(i);
            cached.params = params;
            return cached;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(params.key.clone(), i);
        self.order.push(i);
        self.slots[i as usize].insert(CachedPartition::new(params))
    }

    fn forget(&mut self, forgotten: &[SessionKey]) {
        let before = self.order.len();
        for key in forgotten {
            if let Some(i) = self.index.remove(key) {
                self.slots[i as usize] = None;
                self.free.push(i);
            }
        }
        if self.index.len() != before {
            let slots = &self.slots;
            self.order.retain(|&i| slots[i as usize].is_some());
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

/// Kafka's `EvictableKey`: consumers before followers, then smaller first, then id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EvictionKey {
    privileged: bool,
    size: usize,
    id: i32,
}

/// Kafka's `nextEpoch`.
pub fn next_epoch(epoch: i32) -> i32 {
    match epoch {
        e if e < 0 => -1,
        i32::MAX => 1,
        e => e + 1,
    }
}

/// An incremental fetch, opened: the partitions to read, in the session's order.
pub enum Opened {
    Fetch {
        partitions: Vec<FetchParams>,
        /// The epoch the session expects next: the answer is the session's only if it
        /// still does then.
        next_epoch: i32,
    },
    /// The request forgot every partition: the session is gone, and the request is
    /// answered as a sessionless fetch of what it named.
    Emptied,
}

/// The fetch sessions one shard holds.
pub struct FetchSessions {
    shard: usize,
    shard_count: usize,
    max_sessions: usize,
    sessions: HashMap<i32, Session>,
    by_last_use: BTreeSet<(Instant, i32)>,
    /// Sessions past their first two minutes, for any newcomer to evict.
    evictable_by_all: BTreeSet<EvictionKey>,
    /// Consumers' sessions, and followers' past their first two minutes, for a
    /// follower to evict.
    evictable_by_privileged: BTreeSet<EvictionKey>,
    next_id_seed: u64,
    evictions: u64,
}

impl FetchSessions {
    pub fn new(shard: usize, shard_count: usize, slots: usize) -> FetchSessions {
        FetchSessions {
            shard,
            shard_count: shard_count.max(1),
            max_sessions: slots / shard_count.max(1),
            sessions: HashMap::new(),
            by_last_use: BTreeSet::new(),
            evictable_by_all: BTreeSet::new(),
            evictable_by_privileged: BTreeSet::new(),
            next_id_seed: 0x9e37_79b9_7f4a_7c15 ^ (shard as u64) ^ rough_nanos(),
            evictions: 0,
        }
    }

    /// The shard that holds session `id`, if it could be one.
    pub fn owner(id: i32, shard_count: usize) -> Option<usize> {
        (id > 0).then(|| id as usize % shard_count.max(1))
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Sessions evicted to make room for others, since the start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Closes session `id` (a full fetch naming it does).
    pub fn remove(&mut self, id: i32) -> bool {
        let Some(s) = self.sessions.remove(&id) else {
            return false;
        };
        self.by_last_use.remove(&(s.last_used, id));
        if let Some(k) = s.evictable {
            self.evictable_by_all.remove(&k);
            self.evictable_by_privileged.remove(&k);
        }
        true
    }

    /// An incremental fetch (epoch other than 0 and -1) on session `id`: checks it,
    /// applies its changes (new or updated partitions, then forgotten ones) and moves
    /// the session to its next epoch, as Kafka's `FetchManager.newContext`.
    pub fn open(
        &mut self,
        id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        changed: Vec<FetchParams>,
        forgotten: &[SessionKey],
        now: Instant,
    ) -> Result<Opened, ErrorCode> {
        let Some(s) = self.sessions.get_mut(&id) else {
            return Err(ErrorCode::FetchSessionIdNotFound);
        };
        if s.epoch != epoch {
            return Err(ErrorCode::InvalidFetchSessionEpoch);
        }
        if s.uses_topic_ids != uses_topic_ids {
            return Err(ErrorCode::FetchSessionTopicIdError);
        }
        for params in changed {
            s.upsert(params);
        }
        s.forget(forgotten);
        if s.len() == 0 {
            self.remove(id);
            return Ok(Opened::Emptied);
        }
        s.epoch = next_epoch(s.epoch);
        let slots = &s.slots;
        let partitions = s
            .order
            .iter()
            .map(|&i| slots[i as usize].as_ref().expect("filled").params.clone())
            .collect();
        let opened = Opened::Fetch {
            partitions,
            next_epoch: s.epoch,
        };
        self.touch(id, now);
        Ok(opened)
    }

    /// After an incremental fetch's reads: which of the partitions `open` gave go
    /// into the answer (`answered` is in the order `open` gave them: the session's,
    /// unchanged while its epoch is). Those with records move to the back of the
    /// session's order. `Err` if another fetch moved the session on meanwhile (the
    /// answer is then INVALID_FETCH_SESSION_EPOCH), or it is gone.
    pub fn answer(
        &mut self,
        id: i32,
        next_epoch: i32,
        answered: &[Answered],
    ) -> Result<Vec<bool>, ErrorCode> {
        let Some(s) = self.sessions.get_mut(&id) else {
            return Err(ErrorCode::FetchSessionIdNotFound);
        };
        if s.epoch != next_epoch || answered.len() != s.order.len() {
            return Err(ErrorCode::InvalidFetchSessionEpoch);
        }
        let mut sent = Vec::with_capacity(answered.len());
        let mut rotate = false;
        for (pos, a) in answered.iter().enumerate() {
            let slot = s.order[pos];
            let send = s.slot(slot).answer(a);
            rotate |= send && a.has_records;
            sent.push(send);
        }
        if rotate {
            // Those that returned records go last, in the order they were answered.
            let (mut front, mut back) = (Vec::with_capacity(s.order.len()), Vec::new());
            for (pos, &slot) in s.order.iter().enumerate() {
                if sent[pos] && answered[pos].has_records {
                    back.push(slot);
                } else {
                    front.push(slot);
                }
            }
            front.append(&mut back);
            s.order = front;
        }
        Ok(sent)
    }

    /// After a full fetch that asked for a session (epoch 0): a new session holding
    /// every partition it named, with what it answered. Its id, or 0 if the cache
    /// has no room (Kafka's `maybeCreateSession`).
    pub fn create(
        &mut self,
        privileged: bool,
        uses_topic_ids: bool,
        partitions: Vec<(FetchParams, Answered)>,
        now: Instant,
    ) -> i32 {
        if self.sessions.len() >= self.max_sessions
            && !self.try_evict(privileged, partitions.len(), now)
        {
            return 0;
        }
        let id = self.new_id();
        let mut session = Session::new(privileged, uses_topic_ids, now);
        for (params, a) in partitions {
            let cached = session.upsert(params);
            cached.high_watermark = a.high_watermark;
            cached.log_start_offset = a.log_start_offset;
        }
        self.by_last_use.insert((now, id));
        self.sessions.insert(id, session);
        self.touch(id, now);
        id
    }

    /// Kafka's `touch`: last use, and the eviction sets as of now.
    fn touch(&mut self, id: i32, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        self.by_last_use.remove(&(s.last_used, id));
        s.last_used = now;
        self.by_last_use.insert((now, id));
        if let Some(k) = s.evictable.take() {
            self.evictable_by_all.remove(&k);
            self.evictable_by_privileged.remove(&k);
        }
        let key = EvictionKey {
            privileged: s.privileged,
            size: s.len(),
            id,
        };
        let old = now.duration_since(s.created) > EVICTION_IDLE;
        if !s.privileged || old {
            self.evictable_by_privileged.insert(key);
        }
        if old {
            self.evictable_by_all.insert(key);
        }
        s.evictable = Some(key);
    }

    /// Kafka's `tryEvict`: at most one session goes for a newcomer.
    fn try_evict(&mut self, privileged: bool, size: usize, now: Instant) -> bool {
        if let Some(&(used, id)) = self.by_last_use.first() {
            if now.duration_since(used) > EVICTION_IDLE {
                self.remove(id);
                self.evictions += 1;
                return true;
            }
        }
        let candidates = if privileged {
            &self.evictable_by_privileged
        } else {
            &self.evictable_by_all
        };
        let Some(&first) = candidates.first() else {
            return false;
        };
        let newcomer = EvictionKey {
            privileged,
            size,
            id: 0,
        };
        if newcomer < first {
            return false;
        }
        self.remove(first.id);
        self.evictions += 1;
        true
    }

    /// A new id, congruent to this shard modulo the shard count, not in use.
    fn new_id(&mut self) -> i32 {
        let per_shard = (i32::MAX as u64) / self.shard_count as u64;
        loop {
            // xorshift64*: ids need not be secret, only hard to collide with.
            let mut x = self.next_id_seed;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.next_id_seed = x;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
            let id = ((r % per_shard) * self.shard_count as u64 + self.shard as u64) as i32;
            if id > 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

fn rough_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
#[path = "fetch_sessions_tests.rs"]
mod tests;

//! A transactional id's state and the transitions Kafka's transaction coordinator
//! makes (TransactionMetadata, transactions V1), without I/O: each request's checks
//! give either an error code or the state to write; the coordinator writes it to
//! `__transaction_state` and only then takes it on.

use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::ErrorCode;

/// An epoch at which a producer id is used up: the next one rotates to a new id.
pub const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's TransactionStatus byte in `__transaction_state`.
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    pub fn from_code(code: i8) -> Option<TxnState> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// No transaction is open or ending: a new one may start, the id may expire.
    pub fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }

    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    /// The id before the last rotation (-1: none); not stored, as in Kafka 4.2.
    pub prev_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, so that a retried InitProducerId gets the same
    /// answer (-1: none; not stored).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    /// When the open transaction began (-1: none).
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// A transition is being written: requests meanwhile get CONCURRENT_TRANSACTIONS.
    /// (A fencing abort that fails to be written leaves the epoch as it was, so the
    /// next one bumps it from there: Kafka's `hasFailedEpochFence` is not needed.)
    pub pending: bool,
}

/// What InitProducerId does for an id that exists.
#[derive(Debug, PartialEq, Eq)]
pub enum InitPlan {
    /// Write this (Empty) state and answer its producer id and epoch.
    Write(TxnMetadata),
    /// The epoch is used up: write Empty with a new producer id at epoch 0
    /// (`rotated`), keeping the last epoch if the client named one.
    Rotate {
        record_last_epoch: bool,
    },
    /// A transaction is open: abort it with this (PrepareAbort) state, whose epoch
    /// is bumped, and answer CONCURRENT_TRANSACTIONS (the client retries).
    Fence(TxnMetadata),
    Refuse(ErrorCode),
}

impl TxnMetadata {
    /// A new id's state before its first InitProducerId is written: epoch -1, so the
    /// first bump gives 0.
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            prev_producer_id: -1,
            producer_epoch: -1,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            pending: false,
        }
    }

    pub fn partitions_by_topic(&self) -> BTreeMap<&str, Vec<i32>> {
        let mut out: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &self.partitions {
            out.entry(t.as_str()).or_default().push(*p);
        }
        out
    }

    /// InitProducerId's checks, in Kafka's order (`handleInitProducerId`), for an id
    /// whose state is loaded; `expected` is the (id, epoch) a KIP-360 client names.
    pub fn plan_init(
        &self,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now_ms: i64,
    ) -> InitPlan {
        if self.pending {
            return InitPlan::Refuse(ErrorCode::ConcurrentTransactions);
        }
        if let Some((pid, epoch)) = expected {
            let valid = self.producer_epoch == -1
                || pid == self.producer_id
                || (pid == self.prev_producer_id && epoch >= EPOCH_EXHAUSTED);
            if !valid {
                return InitPlan::Refuse(ErrorCode::ProducerFenced);
            }
        }
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                InitPlan::Refuse(ErrorCode::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                let mut next = self.clone();
                next.producer_epoch = self.producer_epoch.saturating_add(1);
                next.last_producer_epoch = -1;
                next.state = TxnState::PrepareAbort;
                next.last_update_ms = now_ms;
                InitPlan::Fence(next)
            }
            _ => {
                let expected_epoch = expected.map(|e| e.1);
                if self.producer_epoch >= EPOCH_EXHAUSTED
                    && expected_epoch.is_none_or(|e| e == self.producer_epoch)
                {
                    return InitPlan::Rotate {
                        record_last_epoch: expected.is_some(),
                    };
                }
                let mut next = self.clone();
                match expected_epoch {
                    None => {
                        next.producer_epoch = self.producer_epoch + 1;
                        next.last_producer_epoch = -1;
                    }
                    Some(e) if self.producer_epoch == -1 || e == self.producer_epoch => {
                        next.producer_epoch = self.producer_epoch + 1;
                        next.last_producer_epoch = self.producer_epoch;
                    }
                    // A retry of a bump that was answered: the same answer again.
                    Some(e) if e == self.last_producer_epoch => {}
                    Some(_) => return InitPlan::Refuse(ErrorCode::ProducerFenced),
                }
                next.reset_to_empty(timeout_ms, now_ms);
                InitPlan::Write(next)
            }
        }
    }

    /// The Empty state of an id rotated to `new_pid` at epoch 0.
    pub fn rotated(
        &self,
        new_pid: i64,
        record_last_epoch: bool,
        timeout_ms: i32,
        now_ms: i64,
    ) -> TxnMetadata {
        let mut next = self.clone();
        next.prev_producer_id = self.producer_id;
        next.producer_id = new_pid;
        next.producer_epoch = 0;
        next.last_producer_epoch = if record_last_epoch {
            self.producer_epoch
        } else {
            -1
        };
        next.reset_to_empty(timeout_ms, now_ms);
        next
    }

    fn reset_to_empty(&mut self, timeout_ms: i32, now_ms: i64) {
        self.timeout_ms = timeout_ms;
        self.state = TxnState::Empty;
        self.partitions.clear();
        self.start_ms = -1;
        self.last_update_ms = now_ms;
    }

    /// The producer checks AddPartitionsToTxn and its verify_only form share: no
    /// transition under way (unless `even_pending`), its id and epoch, and no ending.
    fn check_producer(&self, pid: i64, epoch: i16, even_pending: bool) -> Result<(), ErrorCode> {
        if self.pending && !even_pending {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        if pid != self.producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if epoch != self.producer_epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        if self.state.is_preparing() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        Ok(())
    }

    /// AddPartitionsToTxn (v0–v3) and AddOffsetsToTxn: `Ok(None)` if every partition
    /// is in the open transaction already (nothing to write), else the Ongoing state
    /// to write.
    pub fn plan_add(
        &self,
        pid: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, ErrorCode> {
        self.check_producer(pid, epoch, false)?;
        if self.state == TxnState::Ongoing && partitions.iter().all(|p| self.partitions.contains(p))
        {
            return Ok(None);
        }
        let mut next = self.clone();
        if self.state.is_idle() {
            next.start_ms = now_ms;
            next.partitions.clear();
        }
        next.partitions.extend(partitions.iter().cloned());
        next.state = TxnState::Ongoing;
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// AddPartitionsToTxn v4+ with verify_only (KIP-890 part 1): whether each
    /// partition is in the producer's open transaction (NONE) or not
    /// (TRANSACTION_ABORTABLE); an error for all of them otherwise.
    pub fn verify(&self, pid: i64, epoch: i16) -> Result<(), ErrorCode> {
        self.check_producer(pid, epoch, true)
    }

    /// EndTxn (v0–v4, transactions V1): `Ok(None)` for a retry of an ending already
    /// done (nothing to write), else the PrepareCommit or PrepareAbort state to write.
    /// `from_client` false: the coordinator's own abort (timeout), with a bumped epoch.
    pub fn plan_end(
        &self,
        pid: i64,
        epoch: i16,
        commit: bool,
        from_client: bool,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, ErrorCode> {
        if pid != self.producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if (from_client && epoch != self.producer_epoch) || epoch < self.producer_epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        if self.pending {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        let prepare = |state| {
            let mut next = self.clone();
            next.producer_epoch = epoch;
            next.state = state;
            next.last_update_ms = now_ms;
            Ok(Some(next))
        };
        match (self.state, commit) {
            (TxnState::Ongoing, true) => prepare(TxnState::PrepareCommit),
            (TxnState::Ongoing, false) => prepare(TxnState::PrepareAbort),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ErrorCode::ConcurrentTransactions)
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(None),
            _ => Err(ErrorCode::InvalidTxnState),
        }
    }

    /// The state after a PrepareCommit/PrepareAbort whose markers are all written.
    pub fn completed(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.state = if self.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        next.partitions.clear();
        next.last_update_ms = now_ms;
        next
    }

    /// The coordinator's abort of an open transaction past its timeout: PrepareAbort
    /// with the epoch bumped, so the producer is fenced.
    pub fn timed_out_abort(&self, now_ms: i64) -> Option<TxnMetadata> {
        if self.pending
            || self.state != TxnState::Ongoing
            || self.start_ms + self.timeout_ms as i64 >= now_ms
        {
            return None;
        }
        let mut next = self.clone();
        next.producer_epoch = self.producer_epoch.saturating_add(1);
        next.last_producer_epoch = -1;
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now_ms;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ongoing() -> TxnMetadata {
        let mut t = TxnMetadata::new(10, 60_000, 0);
        t.producer_epoch = 2;
        t.state = TxnState::Ongoing;
        t.start_ms = 5;
        t.partitions.insert(("t".into(), 0));
        t
    }

    #[test]
    fn a_new_id_starts_at_epoch_0_and_each_init_bumps_it() {
        let t = TxnMetadata::new(10, 60_000, 0);
        let InitPlan::Write(t) = t.plan_init(30_000, None, 1) else {
            panic!("write")
        };
        assert_eq!(
            (t.producer_epoch, t.state, t.timeout_ms),
            (0, TxnState::Empty, 30_000)
        );
        let InitPlan::Write(t2) = t.plan_init(30_000, None, 2) else {
            panic!("write")
        };
        assert_eq!(t2.producer_epoch, 1);
    }

    #[test]
    fn init_during_a_transaction_fences_and_aborts_it() {
        let t = ongoing();
        let InitPlan::Fence(next) = t.plan_init(60_000, None, 9) else {
            panic!("fence")
        };
        assert_eq!(
            (next.producer_epoch, next.state),
            (3, TxnState::PrepareAbort)
        );
        assert_eq!(next.partitions, t.partitions);
        let mut preparing = next.clone();
        preparing.state = TxnState::PrepareCommit;
        assert_eq!(
            preparing.plan_init(60_000, None, 9),
            InitPlan::Refuse(ErrorCode::ConcurrentTransactions)
        );
    }

    #[test]
    fn kip_360_expected_epochs() {
        let mut t = TxnMetadata::new(10, 60_000, 0);
        t.producer_epoch = 4;
        t.state = TxnState::CompleteCommit;
        let InitPlan::Write(bumped) = t.plan_init(60_000, Some((10, 4)), 1) else {
            panic!("write")
        };
        assert_eq!((bumped.producer_epoch, bumped.last_producer_epoch), (5, 4));
        // The same request again (its answer lost): the same answer, no new bump.
        let InitPlan::Write(again) = bumped.plan_init(60_000, Some((10, 4)), 2) else {
            panic!("write")
        };
        assert_eq!(again.producer_epoch, 5);
        assert_eq!(
            bumped.plan_init(60_000, Some((10, 1)), 2),
            InitPlan::Refuse(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            bumped.plan_init(60_000, Some((99, 5)), 2),
            InitPlan::Refuse(ErrorCode::ProducerFenced)
        );
        t.producer_epoch = EPOCH_EXHAUSTED;
        assert_eq!(
            t.plan_init(60_000, None, 1),
            InitPlan::Rotate {
                record_last_epoch: false
            }
        );
        let r = t.rotated(11, false, 60_000, 1);
        assert_eq!(
            (r.producer_id, r.producer_epoch, r.prev_producer_id),
            (11, 0, 10)
        );
    }

    #[test]
    fn end_txn_table() {
        let t = ongoing();
        let c = t.plan_end(10, 2, true, true, 1).unwrap().unwrap();
        assert_eq!(c.state, TxnState::PrepareCommit);
        assert_eq!(
            t.plan_end(10, 1, true, true, 1),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            t.plan_end(11, 2, true, true, 1),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
        assert_eq!(
            c.plan_end(10, 2, true, true, 1),
            Err(ErrorCode::ConcurrentTransactions)
        );
        assert_eq!(
            c.plan_end(10, 2, false, true, 1),
            Err(ErrorCode::InvalidTxnState)
        );
        let done = c.completed(2);
        assert_eq!(
            (done.state, done.partitions.len()),
            (TxnState::CompleteCommit, 0)
        );
        assert_eq!(done.plan_end(10, 2, true, true, 3), Ok(None));
        assert_eq!(
            done.plan_end(10, 2, false, true, 3),
            Err(ErrorCode::InvalidTxnState)
        );
        let mut empty = done.clone();
        empty.state = TxnState::Empty;
        assert_eq!(
            empty.plan_end(10, 2, true, true, 3),
            Err(ErrorCode::InvalidTxnState)
        );
    }

    #[test]
    fn add_partitions_starts_or_extends_a_transaction() {
        let mut t = TxnMetadata::new(10, 60_000, 0);
        t.producer_epoch = 0;
        let parts = vec![("t".to_string(), 0), ("t".to_string(), 1)];
        let next = t.plan_add(10, 0, &parts, 7).unwrap().unwrap();
        assert_eq!(
            (next.state, next.start_ms, next.partitions.len()),
            (TxnState::Ongoing, 7, 2)
        );
        assert_eq!(next.plan_add(10, 0, &parts[..1], 8), Ok(None));
        assert_eq!(
            next.plan_add(10, 1, &parts, 8),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(next.verify(10, 0), Ok(()));
    }

    #[test]
    fn only_an_open_transaction_past_its_timeout_is_aborted() {
        let t = ongoing();
        assert!(t.timed_out_abort(t.start_ms + 60_000).is_none());
        let a = t.timed_out_abort(t.start_ms + 60_001).expect("timed out");
        assert_eq!((a.state, a.producer_epoch), (TxnState::PrepareAbort, 3));
        assert!(a.timed_out_abort(i64::MAX).is_none());
    }
}

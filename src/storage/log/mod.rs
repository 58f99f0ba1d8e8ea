//! A partition's log: its segments, offsets, idempotent-producer state and the readers
//! waiting for appends. Owned by exactly one shard (see `shard`); never shared across
//! threads, so interior state is a `RefCell`. Appends are queued in the order they are
//! made and written by one writer task per partition, which writes the batches that
//! queued while its last write was under way together, in one write.
//!
//! What `append` promises: when it returns `Ok`, the batch is written to the segment
//! file through the page cache (it survives a crash of the process), its offsets are
//! assigned and it is visible to readers. It is also durable (fdatasync'd, so it
//! survives a crash of the host) if this append reached `flush.messages` records since
//! the last flush: then `append` returns only after the shard's group commit has synced
//! every file the log wrote since its last flush. With `flush.messages=1` every
//! acknowledged batch is durable. `flush.ms` is left to the shard's periodic flusher
//! (`flush_if_due`), which no acknowledgement waits for.
//!
//! Readers see the log up to its high watermark. An append that must flush becomes
//! visible only once its sync is done, and so does every append after it: as in
//! Kafka, where the flush runs inside the append and the high watermark moves after
//! it, a consumer never reads a batch the flush policy has not yet made durable.
//!
//! One type, `PartitionLog`, whose methods are split by concern: `append` (the
//! writer, flushes, rolls), `read` (fetch reads, the tail cache, timestamp lookups),
//! `recovery` (open, the clean-shutdown snapshot), `retention` (retention,
//! DeleteRecords, deleting the log, and the reaper that removes retired files).

mod append;
mod append_watch;
mod epochs;
mod read;
mod recovery;
mod recovery_point;
#[cfg(test)]
mod recovery_point_tests;
mod replica;
mod retention;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod txn_tests;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::channel::oneshot;

use super::file::{LogFile, WriteMode};
use super::producer_state::{ProducerStates, SequenceError};
use super::segment::{self, Segment, SegmentSpec};
use super::sync_group::SyncGroup;
use crate::ids::LeaderEpoch;
use crate::protocol::batch::BatchError;
use append::PendingAppend;
use append_watch::AppendWatch;
pub use append_watch::AppendWatcher;
pub use epochs::EpochCache;
pub use read::ReadBound;
use read::TailCache;
pub use recovery::OpenedBy;
use recovery_point::{RecoveryPoints, SegmentFiles};
pub use retention::{start_reaper, RETIRED_SUFFIX};

/// The log start offset set by DeleteRecords, when it lies inside the first segment.
const LOG_START_CHECKPOINT: &str = "log-start-offset";

#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    pub segment_size_max_bytes: u64,
    pub segment: SegmentSpec,
    pub batch_size_max_bytes: usize,
    /// Recent batches kept in memory per partition and served to fetches from there
    /// (0: none; reads go to the file).
    pub tail_cache_bytes: usize,
    /// Flush (fdatasync) once this many records are unflushed; `u64::MAX`: never.
    pub flush_interval_messages: u64,
    /// Flush data older than this; `None`: never by time.
    pub flush_interval_ms: Option<u64>,
    /// Roll the active segment once its batches span this long (`segment.ms`).
    pub roll_ms: Option<u64>,
    /// Delete old segments whose newest record is older than this; `None`: never.
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while the log is larger than this; `None`: never.
    pub retention_bytes: Option<u64>,
    /// Create-time bounds against the broker's clock (`message.timestamp.*.max.ms`).
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// Walk every record (inflating compressed batches) before append, as Kafka.
    pub check_records: bool,
}

impl LogConfig {
    /// 1 GiB segments indexed every 4 KiB, 1 MiB batches, and nothing else: no tail
    /// cache, flush, time roll, retention or timestamp bounds. A starting point for
    /// benches, fuzzing and tests; brokers build theirs from the topic's configs
    /// (`node::reconciler::log_config`).
    pub fn plain(write_mode: WriteMode) -> LogConfig {
        LogConfig {
            segment_size_max_bytes: 1 << 30,
            segment: SegmentSpec {
                write_mode,
                index_interval_bytes: 4096,
                index_size_max_bytes: 1 << 20,
            },
            batch_size_max_bytes: 1 << 20,
            tail_cache_bytes: 0,
            flush_interval_messages: u64::MAX,
            flush_interval_ms: None,
            roll_ms: None,
            retention_ms: None,
            retention_bytes: None,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            check_records: true,
        }
    }
}

/// Why an append failed. Storage names no Kafka error codes: the broker maps these
/// (`broker::storage_errors`), and so does each internal writer for itself.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    #[error("invalid records: {0}")]
    Records(#[from] crate::protocol::records::RecordsError),
    #[error("producer sequence check failed: {0:?}")]
    Sequence(SequenceError),
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    #[error("partition is offline after an earlier I/O error")]
    Offline,
    #[error("partition is closed (the broker is shutting down, or the topic was deleted)")]
    Closed,
    #[error("a replicated batch at offset {found} does not follow the log end {expected}")]
    NotContiguous { expected: i64, found: i64 },
    #[error("control batches are written by the transaction coordinator, not by clients")]
    ControlBatchFromClient,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is outside [{log_start}, {log_end}]")]
    OutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    pub base_offset: i64,
    /// After the batch's last offset.
    pub end_offset: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Offsets {
    pub log_start: i64,
    /// Next offset to be assigned.
    pub log_end: i64,
    /// End of what consumers see: the log end, except while appends that must be
    /// flushed wait for their sync (see the module comment), and, for a replicated
    /// partition, no further than its replicas hold (`set_replicated_end`).
    pub high_watermark: i64,
    /// End of what read_committed consumers see: the high watermark, or the first
    /// offset of an earlier transaction not yet stable.
    pub last_stable: i64,
}

/// An aborted transaction, as Kafka's transaction index holds it: read_committed
/// fetches name those overlapping what they return, so consumers drop its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The ABORT marker's offset.
    pub last_offset: i64,
    /// The last stable offset when it was aborted.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn new(t: &super::producer_state::CompletedTxn, last_stable_offset: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: t.producer_id,
            first_offset: t.first_offset,
            last_offset: t.last_offset,
            last_stable_offset,
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct MaxTimestampBatch {
    timestamp: i64,
    segment_base: i64,
    position: u64,
    size: usize,
}

struct LogState {
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    /// End of what the flush policy lets readers see: the log end, except while
    /// appends that must be flushed wait for their sync.
    flushed_visible_end: i64,
    /// How far the partition's replicas hold the log, set from outside by
    /// replication (the leader's minimum over its in-sync replicas; a follower's
    /// leader's high watermark); `i64::MAX` for a log nobody replicates.
    replicated_end: i64,
    /// Appends whose sync is under way; the high watermark waits for them.
    syncs_pending: u32,
    producers: ProducerStates,
    /// Aborted transactions whose marker lies in the log, in marker order (the
    /// partition's transaction index; retention and truncation trim it).
    aborted: VecDeque<AbortedTxn>,
    max_timestamp: Option<MaxTimestampBatch>,
    offline: bool,
    /// Shut down or deleted: appends are refused (NOT_LEADER_OR_FOLLOWER), reads go on.
    closed: bool,
    /// Records written since the last flush, and the files they went to.
    unflushed_records: u64,
    unflushed_files: Vec<Rc<LogFile>>,
    last_flush: std::time::Instant,
    tail_cache: TailCache,
    /// The leader epochs of the log's batches and where each starts (Kafka's leader
    /// epoch cache).
    epochs: EpochCache,
    /// What is known to be replicated after a restart: the high watermark a clean
    /// shutdown recorded for a replicated log, else the log start (after a crash
    /// nothing past it is known to be on the other replicas).
    recovered_high_watermark: i64,
    /// Files written since the last recovery point was taken, besides the active
    /// segment's: the next one syncs them before it is stored.
    unsynced_segments: Vec<SegmentFiles>,
}

impl LogState {
    /// End of what consumers see (see `Offsets::high_watermark`).
    fn high_watermark(&self) -> i64 {
        self.flushed_visible_end.min(self.replicated_end)
    }

    /// End of what read_committed consumers see (see `Offsets::last_stable`).
    fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        // Never below the log start (retention or DeleteRecords may pass an open
        // transaction's first offset), as Kafka's.
        self.producers
            .first_unstable_offset(hw)
            .map_or(hw, |first| first.max(self.log_start_offset).min(hw))
    }

    /// Drops aborted transactions whose marker lies before the log start.
    fn trim_aborted(&mut self) {
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset < self.log_start_offset)
        {
            self.aborted.pop_front();
        }
    }
}

pub struct PartitionLog {
    dir: PathBuf,
    /// Replaced when the topic's configs change (`set_config`).
    config: Cell<LogConfig>,
    state: RefCell<LogState>,
    /// Validated appends waiting for the writer, in the order they were made.
    pending: RefCell<VecDeque<PendingAppend>>,
    /// The writer task runs (it exits once `pending` is empty), and who waits for it
    /// to.
    writing: Cell<bool>,
    writer_idle: Wakers,
    /// Shutting down or deleted: new appends are refused.
    refusing: Cell<bool>,
    /// Tasks waiting on this log alone for its next append (an append waiting for
    /// its flush to become visible, a follower's append); fetches watch many logs
    /// at once through `append_watches`.
    appended: Wakers,
    /// Long-polling fetches watching this log among others.
    append_watches: RefCell<Vec<Rc<AppendWatch>>>,
    sync_group: Rc<SyncGroup>,
    /// Index entry writes under way (made by the appends once the writer has moved on, so that
    /// the next append need not wait for them), and who waits for none to be.
    index_writes: Cell<usize>,
    index_writes_idle: Wakers,
    /// Written into every batch this log appends (the leadership's epoch, set by the
    /// broker from cluster metadata).
    leader_epoch: Cell<LeaderEpoch>,
    recovery_points: RecoveryPoints,
    /// How `open` found the log's state.
    opened_by: OpenedBy,
}

/// Tasks waiting for something to happen: each `wait` is answered by the next
/// `wake_all`. (One shard's, like the log itself.)
#[derive(Default)]
struct Wakers(RefCell<Vec<oneshot::Sender<()>>>);

impl Wakers {
    fn wait(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.0.borrow_mut();
        // Waiters that gave up (a fetch whose wait timed out) are dropped here, so a
        // quiet log does not collect them.
        waiting.retain(|w| !w.is_canceled());
        waiting.push(tx);
        rx
    }

    fn wake_all(&self) {
        for w in self.0.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }
}

impl PartitionLog {
    /// The topic's configs changed: appends, rolls, flushes and retention from now on
    /// follow `config` (segments already written keep their index size).
    pub fn set_config(&self, config: LogConfig) {
        self.config.set(config);
    }

    /// The epoch written into batches appended from now on.
    pub fn set_leader_epoch(&self, epoch: LeaderEpoch) {
        self.leader_epoch.set(epoch);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How the last start found the log's state.
    pub fn opened_by(&self) -> OpenedBy {
        self.opened_by
    }

    /// True once the partition can no longer serve: damaged at recovery, a failed
    /// write or sync, or shut down.
    pub fn is_offline(&self) -> bool {
        self.state.borrow().offline
    }

    /// Each segment's base offset and its log file's last modification time (ms since
    /// the epoch; 0 if the file cannot be read), oldest first: what Kafka's ListOffsets
    /// v0 answers from. One `stat` per segment, on the calling shard.
    pub fn segment_modification_times(&self) -> Vec<(i64, i64)> {
        let s = self.state.borrow();
        s.segments
            .keys()
            .map(|&base| {
                let modified = std::fs::metadata(segment::log_path(&self.dir, base))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64);
                (base, modified)
            })
            .collect()
    }

    /// `offsets().high_watermark`, without working out the rest.
    pub fn high_watermark(&self) -> i64 {
        self.state.borrow().high_watermark()
    }

    pub fn offsets(&self) -> Offsets {
        let s = self.state.borrow();
        Offsets {
            log_start: s.log_start_offset,
            log_end: s.log_end_offset,
            high_watermark: s.high_watermark(),
            last_stable: s.last_stable_offset(),
        }
    }

    /// The aborted transactions a read_committed fetch returning offsets from `from`
    /// up to (not including) `to` must name (producer id, first offset): those whose
    /// marker is at or past `from` and that begin before `to`, as Kafka collects
    /// them from its transaction index. Read from the index, not from the records.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        let s = self.state.borrow();
        let first = s.aborted.partition_point(|a| a.last_offset < from);
        s.aborted
            .iter()
            .skip(first)
            .filter(|a| a.first_offset < to)
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// The partition's producers, as DescribeProducers shows them.
    pub fn producers(&self) -> Vec<super::producer_state::ProducerView> {
        self.state.borrow().producers.describe()
    }

    /// Forgets producers idle past `producer.id.expiration.ms` with no open
    /// transaction; returns how many.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.state
            .borrow_mut()
            .producers
            .expire(now_ms, expiration_ms)
    }

    /// The partition can no longer serve. Waiters are woken to see it: fetches, and
    /// duplicates waiting for their original (`visible`), which would wait forever.
    fn go_offline(&self) {
        self.state.borrow_mut().offline = true;
        self.wake_waiters();
    }

    fn wake_waiters(&self) {
        self.appended.wake_all();
        for w in self.append_watches.borrow_mut().drain(..) {
            w.fire();
        }
    }

    /// `watcher` fires at the next append (or when the log goes offline).
    pub fn watch_appends(&self, watcher: &AppendWatcher) {
        let mut watches = self.append_watches.borrow_mut();
        // Watchers that gave up (a fetch answered by another log) go here, so a
        // quiet log does not collect them.
        watches.retain(|w| !w.is_spent());
        watches.push(watcher.watch());
    }

    /// A receiver completed by the next append.
    pub fn wait_for_append(&self) -> oneshot::Receiver<()> {
        self.appended.wait()
    }
}

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

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use tracing::{error, info, warn};

use super::atomic_file::write_atomic;
use super::file::{LogFile, WriteMode};
use super::producer_state::{ProducerStates, SequenceCheck};
use super::segment::{self, IndexEntries, IndexFiles, Segment, SegmentSnapshot, SegmentSpec};
use super::sync_group::SyncGroup;
use crate::ids::LeaderEpoch;
use crate::protocol::batch::{self, BatchError, BatchHeader};
use crate::protocol::chunk::{Chunk, FileRange};
use crate::protocol::records;
use crate::protocol::ErrorCode;

/// The log start offset set by DeleteRecords, when it lies inside the first segment.
const LOG_START_CHECKPOINT: &str = "log-start-offset";

/// What a clean shutdown writes about the partition, read by the next start instead
/// of scanning (trusted only while the broker's clean-shutdown marker exists).
const SHUTDOWN_SNAPSHOT: &str = "clean-shutdown.json";

/// Reads for fetch go in blocks at least this large, to limit I/Os per fetch.
const READ_BLOCK_BYTES: usize = 64 << 10;
/// Added to a retired segment's file names, and a deleted partition's directory name,
/// until they are removed (Kafka's `.deleted`): the rename takes them out of the log
/// at once, even across a crash; the start-up scan removes any left behind.
pub const RETIRED_SUFFIX: &str = ".deleted";
/// How long retired files wait before they are removed: time for glommio to close
/// the shard's descriptors, dropped with the segments (it closes on its next I/O
/// cycle), so that the removal, not a close on the shard, frees the file's pages.
const UNLINK_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

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

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    #[error("invalid records: {0}")]
    Records(#[from] crate::protocol::records::RecordsError),
    #[error("producer sequence check failed: {0:?}")]
    Sequence(ErrorCode),
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    #[error("partition is offline after an earlier I/O error")]
    Offline,
    #[error("partition is closed (the broker is shutting down, or the topic was deleted)")]
    Closed,
}

impl AppendError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AppendError::Batch(e) => e.error_code(),
            AppendError::Records(e) => e.error_code(),
            AppendError::Sequence(code) => *code,
            AppendError::Io(_) | AppendError::Offline => ErrorCode::KafkaStorageError,
            // As Kafka answers while a partition moves away: retriable, after a
            // metadata refresh.
            AppendError::Closed => ErrorCode::NotLeaderOrFollower,
        }
    }
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

impl ReadError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ReadError::OutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            ReadError::Io(_) => ErrorCode::KafkaStorageError,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Offsets {
    pub log_start: i64,
    /// Next offset to be assigned.
    pub log_end: i64,
    /// End of what readers see: the log end, except while appends that must be
    /// flushed wait for their sync (see the module comment).
    pub high_watermark: i64,
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
    high_watermark: i64,
    /// Appends whose sync is under way; the high watermark waits for them.
    syncs_pending: u32,
    producers: ProducerStates,
    max_timestamp: Option<MaxTimestampBatch>,
    offline: bool,
    /// Shut down or deleted: appends are refused (NOT_LEADER_OR_FOLLOWER), reads go on.
    closed: bool,
    /// Records written since the last flush, and the files they went to.
    unflushed_records: u64,
    unflushed_files: Vec<Rc<LogFile>>,
    last_flush: std::time::Instant,
    tail_cache: TailCache,
}

/// The newest batches of the log, as stored, so that consumers reading at the tail are
/// served from memory. With direct writes the page cache holds nothing fresh, so this
/// is what keeps a caught-up consumer off the disk. Always a contiguous run of batches
/// ending at the log end. A batch is kept as its header (with the broker's fields
/// written in) and its body, a slice of the produce request: caching costs no copy of
/// record data.
#[derive(Default)]
struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
}

struct CachedBatch {
    base_offset: i64,
    last_offset: i64,
    head: Bytes,
    body: Bytes,
}

impl CachedBatch {
    fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

impl TailCache {
    fn push(&mut self, batch: CachedBatch, cap: usize) {
        self.bytes += batch.len();
        self.batches.push_back(batch);
        while self.bytes > cap {
            let Some(old) = self.batches.pop_front() else {
                break;
            };
            self.bytes -= old.len();
        }
    }

    fn holds(&self, offset: i64) -> bool {
        self.batches
            .front()
            .is_some_and(|b| offset >= b.base_offset)
    }

    /// Whole batches from the one holding `offset` and ending before `visible_end`,
    /// up to `max_bytes` (at least one if `min_one_batch`); `None` if `offset` is
    /// older than the cache.
    fn read(
        &self,
        offset: i64,
        visible_end: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Option<Vec<Bytes>> {
        if !self.holds(offset) {
            return None;
        }
        let first = self.batches.partition_point(|b| b.last_offset < offset);
        let mut out = Vec::new();
        let mut taken = 0;
        for batch in self.batches.iter().skip(first) {
            if batch.last_offset >= visible_end
                || (taken + batch.len() > max_bytes && !(out.is_empty() && min_one_batch))
            {
                break;
            }
            taken += batch.len();
            out.push(batch.head.clone());
            out.push(batch.body.clone());
        }
        Some(out)
    }
}

/// What `quiesce` writes for the next start.
#[derive(serde::Serialize, serde::Deserialize)]
struct ShutdownSnapshot {
    segments: Vec<SegmentSnapshot>,
    producers: ProducerStates,
    max_timestamp: Option<MaxTimestampBatch>,
}

/// Index entries an append took to write, and the files they go to.
type IndexWrite = (IndexFiles, IndexEntries);

/// What a written append waits for before it is acknowledged.
enum Durability {
    /// Nothing (no flush was due).
    Done,
    /// Its flush: sync `files` (every file written since the last flush), then the
    /// log is durable up to `end_offset`.
    Sync {
        files: Vec<Rc<LogFile>>,
        end_offset: i64,
    },
    /// A duplicate is answered as its original would be: once the high watermark
    /// (held back while the original's flush is under way) reaches the offset, or
    /// with an error if the partition goes offline first (the original's flush
    /// failed).
    Visible(i64),
}

/// The writer's answer to an append: its offsets, and what the append still has to
/// do before it is acknowledged.
type Written = Result<(AppendInfo, Durability, Option<IndexWrite>), AppendError>;

/// A validated batch queued for the partition's writer.
struct PendingAppend {
    batch: Bytes,
    done: oneshot::Sender<Written>,
}

/// Queued batches written together by one write, at most (a larger batch goes alone).
/// 1 MiB wrote a lone partition 11 % faster, but at the bench's 50 % e2e rate (direct)
/// its p99 was 2.2–15 ms and max 13–47 ms against 1.9–2.7 and 8–11 ms (tuning/README).
const GROUP_BYTES_MAX: usize = 512 << 10;

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
    /// Fetches waiting for the next append.
    appended: Wakers,
    sync_group: Rc<SyncGroup>,
    /// Index entry writes under way (made by the appends once the writer has moved on, so that
    /// the next append need not wait for them), and who waits for none to be.
    index_writes: Cell<usize>,
    index_writes_idle: Wakers,
    /// Written into every batch this log appends (the leadership's epoch, set by the
    /// broker from cluster metadata).
    leader_epoch: Cell<LeaderEpoch>,
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

fn segment_bases(dir: &Path) -> io::Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(RETIRED_SUFFIX) {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                warn!(path = %entry.path().display(), error = %e, "removing a retired segment file failed");
            }
            continue;
        }
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Renames `path` to `path` + `tag` + `RETIRED_SUFFIX`; returns the new name.
fn rename_retired(path: &Path, tag: &str) -> io::Result<PathBuf> {
    let mut to = path.as_os_str().to_owned();
    to.push(format!("{tag}{RETIRED_SUFFIX}"));
    std::fs::rename(path, &to)?;
    Ok(PathBuf::from(to))
}

/// When to remove what.
type Retired = (std::time::Instant, Vec<PathBuf>);

/// Removes retired segment files and deleted partitions' directories, `UNLINK_DELAY`
/// after they were renamed, on a thread of its own: unlinking a file's last name
/// frees its page cache and extents (some 27 ms per 512 MiB here; seconds for a
/// whole topic), which must stall neither a shard nor glommio's blocking thread (a
/// roll's directory fsync waits for that one).
///
/// Nobody waits for the removal: the reaper is a plain thread, and completing a
/// shard's future from it would wake a glommio task from a foreign thread (see
/// `shard::submit_to`). Files are renamed, and closed, before they get here.
fn remove_later(paths: Vec<PathBuf>) {
    let due = std::time::Instant::now() + UNLINK_DELAY;
    if let Err(std::sync::mpsc::SendError((_, paths))) = reaper().send((due, paths)) {
        // No reaper thread: remove them here rather than never.
        paths.iter().for_each(|p| remove_retired(p));
    }
}

/// Starts the thread that removes retired files, if it is not running yet. The broker
/// starts it before its shards, so that it runs on any of the process's CPUs: started
/// by a shard, it would inherit that shard's pinning and take its CPU while it unlinks.
pub fn start_reaper() {
    reaper();
}

fn reaper() -> &'static std::sync::mpsc::Sender<Retired> {
    static REAPER: std::sync::OnceLock<std::sync::mpsc::Sender<Retired>> =
        std::sync::OnceLock::new();
    REAPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Retired>();
        let spawned = std::thread::Builder::new()
            .name("ringlog-reaper".into())
            .spawn(move || {
                for (due, paths) in rx {
                    std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
                    paths.iter().for_each(|p| remove_retired(p));
                }
            });
        if let Err(e) = spawned {
            error!(error = %e, "starting the thread that removes retired files failed");
        }
        tx
    })
}

fn remove_retired(path: &Path) {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        // The partition was deleted meanwhile, files and all.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!(path = %path.display(), error = %e, "removing a retired file failed"),
        Ok(()) => {}
    }
}

/// A partition's state as found on disk at startup.
struct Recovered {
    segments: BTreeMap<i64, Segment>,
    producers: ProducerStates,
    max_timestamp: Option<MaxTimestampBatch>,
    /// Why the partition cannot be served, if it cannot.
    offline: Option<String>,
}

impl Recovered {
    /// Takes what a clean shutdown recorded, if it matches the files; `None` otherwise.
    async fn from_snapshot(dir: &Path, spec: &SegmentSpec) -> io::Result<Option<Recovered>> {
        let Ok(text) = std::fs::read(dir.join(SHUTDOWN_SNAPSHOT)) else {
            return Ok(None);
        };
        let Ok(snapshot) = serde_json::from_slice::<ShutdownSnapshot>(&text) else {
            warn!(dir = %dir.display(), "unreadable clean-shutdown snapshot; scanning instead");
            return Ok(None);
        };
        let bases = segment_bases(dir)?;
        if bases
            != snapshot
                .segments
                .iter()
                .map(|g| g.base_offset)
                .collect::<Vec<_>>()
        {
            warn!(dir = %dir.display(), "segment files differ from the clean-shutdown snapshot; scanning instead");
            return Ok(None);
        }
        let mut segments = BTreeMap::new();
        for g in &snapshot.segments {
            match Segment::load(dir, g, spec).await? {
                Some(seg) => segments.insert(g.base_offset, seg),
                None => {
                    warn!(dir = %dir.display(), segment = g.base_offset, "segment differs from the clean-shutdown snapshot; scanning instead");
                    return Ok(None);
                }
            };
        }
        Ok(Some(Recovered {
            segments,
            producers: snapshot.producers,
            max_timestamp: snapshot.max_timestamp,
            offline: None,
        }))
    }

    /// Validates every batch of every segment; truncates a torn or corrupt tail of the
    /// active segment; damage anywhere else takes the partition offline.
    async fn by_scanning(dir: &Path, spec: &SegmentSpec) -> io::Result<Recovered> {
        let bases = segment_bases(dir)?;
        let mut producers = ProducerStates::default();
        let mut segments = BTreeMap::new();
        let mut max_timestamp: Option<MaxTimestampBatch> = None;
        let mut expected = bases.first().copied().unwrap_or(0);
        let mut offline = None;
        for (i, &base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            if base < expected {
                offline = Some(format!(
                    "segment {base} overlaps its predecessor, which ends at {expected}"
                ));
                break;
            }
            let (mut seg, torn) = Segment::recover(dir, base, spec, &mut producers, |h, pos| {
                if max_timestamp.is_none_or(|m| h.max_timestamp() > m.timestamp) {
                    max_timestamp = Some(MaxTimestampBatch {
                        timestamp: h.max_timestamp(),
                        segment_base: base,
                        position: pos,
                        size: h.total_size() as usize,
                    });
                }
            })
            .await?;
            expected = seg.next_offset;
            match torn {
                // Zeros past the data: a direct write's block padding or space never
                // written. Nothing was lost, whichever segment it is in.
                Some(t) if t.zeros_only => {
                    info!(
                        dir = %dir.display(), segment = base, position = t.position,
                        zero_bytes = t.file_size - t.position,
                        "recovery trimmed zero padding after the last batch"
                    );
                    seg.commit_recovery().await?;
                }
                // Damage before the active segment is not a torn write: cutting there
                // would drop acknowledged data in every later segment.
                Some(t) if !is_active => {
                    offline = Some(format!(
                        "segment {base} is damaged at byte {}: {}",
                        t.position, t.reason
                    ));
                    segments.insert(base, seg);
                    break;
                }
                Some(t) => {
                    warn!(
                        dir = %dir.display(), segment = base, position = t.position,
                        truncated_bytes = t.file_size - t.position, reason = %t.reason,
                        "recovery truncated a torn or corrupt tail"
                    );
                    seg.commit_recovery().await?;
                }
                None => seg.commit_recovery().await?,
            }
            segments.insert(base, seg);
        }
        Ok(Recovered {
            segments,
            producers,
            max_timestamp,
            offline,
        })
    }
}

/// A batch header whose length no batch can have, found where a batch should start.
fn corrupt_header(position: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt batch header at position {position}: impossible length"),
    )
}

impl PartitionLog {
    /// Opens the log in `dir`, creating it if empty. After a clean shutdown
    /// (`clean_shutdown`: the broker's marker was found) the state it recorded is
    /// loaded; otherwise every existing batch is validated, and a torn or corrupt tail
    /// is truncated and reported in the log.
    pub async fn open(
        dir: PathBuf,
        config: LogConfig,
        sync_group: Rc<SyncGroup>,
        clean_shutdown: bool,
    ) -> io::Result<Rc<PartitionLog>> {
        std::fs::create_dir_all(&dir)?;
        let loaded = if clean_shutdown {
            Recovered::from_snapshot(&dir, &config.segment).await?
        } else {
            None
        };
        let scanned = loaded.is_none();
        // A snapshot describes one shutdown; it must never be trusted after this start.
        match std::fs::remove_file(dir.join(SHUTDOWN_SNAPSHOT)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let Recovered {
            mut segments,
            producers,
            max_timestamp,
            offline,
        } = match loaded {
            Some(r) => r,
            None => Recovered::by_scanning(&dir, &config.segment).await?,
        };
        if let Some(reason) = &offline {
            error!(
                dir = %dir.display(), %reason,
                "partition is OFFLINE (KAFKA_STORAGE_ERROR to clients); its files are left untouched for inspection"
            );
        }
        if segments.is_empty() {
            segments.insert(0, Segment::create(&dir, 0, &config.segment).await?);
        }
        let log_end_offset = segments
            .values()
            .next_back()
            .expect("at least one segment")
            .next_offset;
        // DeleteRecords may have moved the start inside the first segment.
        let checkpoint = std::fs::read_to_string(dir.join(LOG_START_CHECKPOINT))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let first_base = *segments.keys().next().expect("at least one segment");
        let log_start_offset = first_base.max(checkpoint.min(log_end_offset));
        if log_end_offset > 0 {
            info!(dir = %dir.display(), log_start_offset, log_end_offset, segments = segments.len(), scanned, "recovered partition log");
        }
        Ok(Rc::new(PartitionLog {
            dir,
            config: Cell::new(config),
            state: RefCell::new(LogState {
                segments,
                log_start_offset,
                log_end_offset,
                high_watermark: log_end_offset,
                syncs_pending: 0,
                producers,
                max_timestamp,
                offline: offline.is_some(),
                closed: false,
                unflushed_records: 0,
                unflushed_files: Vec::new(),
                last_flush: std::time::Instant::now(),
                tail_cache: TailCache::default(),
            }),
            pending: RefCell::new(VecDeque::new()),
            leader_epoch: Cell::new(LeaderEpoch(0)),
            writing: Cell::new(false),
            writer_idle: Wakers::default(),
            refusing: Cell::new(false),
            appended: Wakers::default(),
            index_writes: Cell::new(0),
            index_writes_idle: Wakers::default(),
            sync_group,
        }))
    }

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

    pub fn offsets(&self) -> Offsets {
        let s = self.state.borrow();
        Offsets {
            log_start: s.log_start_offset,
            log_end: s.log_end_offset,
            high_watermark: s.high_watermark,
        }
    }

    /// Validates and appends one batch (exactly one, as Produce v3+ carries), assigning
    /// its offsets. Appends take effect in the order this function was *called*: the
    /// batch is validated and queued for the partition's writer before the returned
    /// future is first polled.
    pub fn append(
        self: &Rc<Self>,
        batch: Bytes,
    ) -> impl std::future::Future<Output = Result<AppendInfo, AppendError>> + 'static {
        // Validating (CRC-32C included) before queueing keeps it off the writer's path.
        let queued = self.check_batch(&batch).map(|()| self.enqueue(batch));
        let this = self.clone();
        async move {
            let written = queued?.await.map_err(|_| AppendError::Closed)?;
            let (info, durability, index_write) = written?;
            // The writer goes on with later appends while this one writes its index
            // entries and waits for its sync: that is what lets appends share a round.
            if let Some((files, due)) = index_write {
                this.write_index_entries(files, due).await;
            }
            match durability {
                Durability::Done => {}
                Durability::Sync { files, end_offset } => {
                    if let Err(e) = this.sync_group.sync(files).await {
                        warn!(dir = %this.dir.display(), error = %e, "fdatasync failed; partition goes offline");
                        this.go_offline();
                        return Err(AppendError::Io(e));
                    }
                    this.synced(end_offset);
                }
                Durability::Visible(end_offset) => this.visible(end_offset).await?,
            }
            Ok(info)
        }
    }

    /// The partition can no longer serve. Waiters are woken to see it: fetches, and
    /// duplicates waiting for their original (`visible`), which would wait forever.
    fn go_offline(&self) {
        self.state.borrow_mut().offline = true;
        self.wake_waiters();
    }

    /// Returns once the high watermark reaches `end_offset`; fails if the partition
    /// goes offline first (`go_offline` wakes it).
    async fn visible(&self, end_offset: i64) -> Result<(), AppendError> {
        loop {
            {
                let s = self.state.borrow();
                if s.high_watermark >= end_offset {
                    return Ok(());
                }
                if s.offline {
                    return Err(AppendError::Offline);
                }
            }
            let _ = self.wait_for_append().await;
        }
    }

    /// What can be checked of a batch without the log's state.
    fn check_batch(&self, batch: &Bytes) -> Result<(), AppendError> {
        batch::validate_single(batch, self.config.get().batch_size_max_bytes)?;
        batch::check_timestamps(
            &BatchHeader::new(batch).expect("validated"),
            crate::storage::segment::now_ms(),
            self.config.get().timestamp_before_max_ms,
            self.config.get().timestamp_after_max_ms,
        )?;
        if self.config.get().check_records {
            crate::protocol::records::check_records(batch)?;
        }
        Ok(())
    }

    /// Queues a validated batch for the partition's writer, starting the writer if
    /// none runs. The writer is a task of its own, so an append whose future is
    /// dropped cannot leave a write half done.
    fn enqueue(self: &Rc<Self>, batch: Bytes) -> oneshot::Receiver<Written> {
        let (done, written) = oneshot::channel();
        if self.refusing.get() {
            let _ = done.send(Err(AppendError::Closed));
            return written;
        }
        self.pending
            .borrow_mut()
            .push_back(PendingAppend { batch, done });
        if !self.writing.replace(true) {
            let this = self.clone();
            glommio::spawn_local(async move { this.write_pending().await }).detach();
        }
        written
    }

    /// The writer: appends what is queued, in order, several batches to a write, until
    /// nothing is. With the device's latency on every write, one batch per write held
    /// a partition to one batch per write latency however many were waiting (direct
    /// mode: 8 partitions moved 1.2 GB/s with the device a third idle); batches that
    /// queued meanwhile now go together in the next write.
    async fn write_pending(self: Rc<Self>) {
        loop {
            let group = self.take_group();
            if group.is_empty() {
                break;
            }
            let mut outcomes = Vec::with_capacity(group.len());
            while outcomes.len() < group.len() {
                self.append_run(&group[outcomes.len()..], &mut outcomes)
                    .await;
            }
            for (append, outcome) in group.into_iter().zip(outcomes) {
                let _ = append.done.send(outcome);
            }
        }
        self.writing.set(false);
        self.writer_idle.wake_all();
    }

    /// The next appends to write together: the oldest, and those behind it up to
    /// `GROUP_BYTES_MAX`.
    fn take_group(&self) -> Vec<PendingAppend> {
        let mut pending = self.pending.borrow_mut();
        let mut bytes = 0;
        let mut group = Vec::new();
        while let Some(next) = pending.front() {
            if !group.is_empty() && bytes + next.batch.len() > GROUP_BYTES_MAX {
                break;
            }
            bytes += next.batch.len();
            group.extend(pending.pop_front());
        }
        group
    }

    /// Waits until the writer has nothing queued or under way.
    async fn writer_done(&self) {
        while self.writing.get() {
            let _ = self.writer_idle.wait().await;
        }
    }

    /// An append's sync is done: everything up to `end_offset` is durable. Rounds
    /// complete in the order they were asked for, so when none is pending any more,
    /// the appends made meanwhile (which did not have to flush) are visible too.
    fn synced(&self, end_offset: i64) {
        {
            let mut s = self.state.borrow_mut();
            s.syncs_pending -= 1;
            s.high_watermark = if s.syncs_pending == 0 {
                s.log_end_offset
            } else {
                s.high_watermark.max(end_offset)
            };
        }
        self.wake_waiters();
    }

    /// Takes the files to flush if the policy says a flush is due now: by count, and
    /// with `by_time` by age too. Appends look at the count only: as in Kafka, whose
    /// append flushes on `flush.messages` and leaves `flush.ms` to the periodic
    /// flusher, an acknowledgement never waits for a flush by time.
    fn take_due_flush(&self, s: &mut LogState, by_time: bool) -> Option<Vec<Rc<LogFile>>> {
        let by_count = s.unflushed_records >= self.config.get().flush_interval_messages;
        let by_time = by_time
            && self
                .config
                .get()
                .flush_interval_ms
                .is_some_and(|ms| s.last_flush.elapsed().as_millis() as u64 >= ms);
        if s.unflushed_records == 0 || !(by_count || by_time) {
            return None;
        }
        s.unflushed_records = 0;
        s.last_flush = std::time::Instant::now();
        Some(std::mem::take(&mut s.unflushed_files))
    }

    /// Flushes unflushed data if `flush.ms` has passed since the last flush (run
    /// periodically by the shard; acknowledgements do not wait for it).
    pub async fn flush_if_due(&self) -> io::Result<()> {
        let due = {
            let mut s = self.state.borrow_mut();
            self.take_due_flush(&mut s, true)
        };
        match due {
            Some(files) => self.sync_group.sync(files).await,
            None => Ok(()),
        }
    }

    /// Appends the longest prefix of `batches` that goes into one file with one write
    /// (rolling first if the first batch needs a new segment), pushing an outcome per
    /// batch it took. A batch that needs a roll, or would fill the index, ends the run:
    /// it starts the next one.
    async fn append_run(&self, batches: &[PendingAppend], outcomes: &mut Vec<Written>) {
        let first = BatchHeader::new(&batches[0].batch).expect("validated");
        let (position, log_file, roll) = {
            let s = self.state.borrow();
            // Closed first: a deleted partition is offline too, and its appends get
            // the retriable answer.
            let refused = if s.closed {
                Some(AppendError::Closed)
            } else if s.offline {
                Some(AppendError::Offline)
            } else {
                None
            };
            if let Some(e) = refused {
                outcomes.push(Err(e));
                return;
            }
            // A duplicate or refused first batch is answered without a roll.
            if let Some(answer) = self.answer_without_write(&s, &first) {
                outcomes.push(answer);
                return;
            }
            let active = s
                .segments
                .values()
                .next_back()
                .expect("at least one segment");
            let roll = active.size > 0 && self.must_roll(active, active.size, &first, 0);
            (active.size, active.log.clone(), roll)
        };
        let (position, log_file) = if roll {
            let base_offset = self.state.borrow().log_end_offset;
            match self.roll(base_offset).await {
                Ok(rolled) => rolled,
                Err(e) => {
                    outcomes.push(Err(e.into()));
                    return;
                }
            }
        } else {
            (position, log_file)
        };
        // Plan the write: offsets assigned in order, producer state advanced as each
        // batch is taken (so the next batch of the same producer checks against it),
        // and saved so that a failed write can put it back.
        let mut heads: Vec<[u8; batch::HEADER_SIZE]> = Vec::with_capacity(batches.len());
        let mut taken = Vec::with_capacity(batches.len());
        let mut saved = Vec::new();
        {
            let mut s = self.state.borrow_mut();
            let mut next_offset = s.log_end_offset;
            let mut end = position;
            for (i, append) in batches.iter().enumerate() {
                let header = BatchHeader::new(&append.batch).expect("validated");
                if i > 0 {
                    let active = s.segments.values().next_back().expect("segment");
                    if self.must_roll(active, end, &header, heads.len()) {
                        break;
                    }
                }
                let answer = self.answer_without_write(&s, &header);
                if answer.is_none() {
                    // The broker's fields (base offset, leader epoch) go into the header
                    // as it is copied into the buffer handed to the kernel: the one copy
                    // on this path.
                    let mut head = [0u8; batch::HEADER_SIZE];
                    head.copy_from_slice(&append.batch[..batch::HEADER_SIZE]);
                    batch::assign(&mut head, next_offset, self.leader_epoch.get().0);
                    let assigned = BatchHeader::new(&head).expect("validated");
                    s.producers.save_once(&assigned, &mut saved);
                    s.producers.update(&assigned);
                    next_offset = assigned.last_offset() + 1;
                    end += append.batch.len() as u64;
                    heads.push(head);
                }
                taken.push(answer);
            }
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * heads.len());
        let mut written = heads.iter();
        for (append, answer) in batches.iter().zip(&taken) {
            if answer.is_none() {
                parts.push(written.next().expect("a head per write"));
                parts.push(&append.batch[batch::HEADER_SIZE..]);
            }
        }
        if !parts.is_empty() {
            if let Err(e) = log_file.append(position, &parts).await {
                warn!(dir = %self.dir.display(), position, error = %e, "append failed; cutting the file back");
                // Whatever reached the file past `position` is not part of the log;
                // cut it so that the next append and recovery see a clean tail.
                if log_file.truncate(position).await.is_err() {
                    self.go_offline();
                }
                self.state.borrow_mut().producers.restore(saved);
                // Every batch taken fails, duplicates too (their original may be one
                // of those that did not land); sequence errors stand.
                outcomes.extend(taken.into_iter().map(|answer| match answer {
                    Some(Err(AppendError::Sequence(code))) => Err(AppendError::Sequence(code)),
                    _ => Err(AppendError::Io(io::Error::new(e.kind(), e.to_string()))),
                }));
                return;
            }
        }
        let mut position = position;
        let mut written = heads.iter();
        for (append, answer) in batches.iter().zip(taken) {
            outcomes.push(match answer {
                Some(answer) => answer,
                None => {
                    let head = written.next().expect("a head per write");
                    let landed = self.landed(head, &append.batch, position, &log_file);
                    position += append.batch.len() as u64;
                    Ok(landed)
                }
            });
        }
    }

    /// The answer to a batch that is not to be written: a duplicate's original
    /// offsets, or why the producer's sequence refuses it.
    fn answer_without_write(&self, s: &LogState, header: &BatchHeader<'_>) -> Option<Written> {
        match s.producers.check(header) {
            SequenceCheck::Append => None,
            SequenceCheck::Duplicate { base_offset } => Some(Ok((
                AppendInfo {
                    base_offset,
                    log_start_offset: s.log_start_offset,
                },
                Durability::Visible(base_offset + header.last_offset_delta() as i64 + 1),
                None,
            ))),
            SequenceCheck::Reject(code) => Some(Err(AppendError::Sequence(code))),
        }
    }

    /// Whether a batch of `header` at `position` in `active`, after `planned` batches
    /// not yet noted in its index, must go to a new segment: it would pass the size
    /// limit, `segment.ms` has passed, or the index could be full.
    fn must_roll(
        &self,
        active: &Segment,
        position: u64,
        header: &BatchHeader<'_>,
        planned: usize,
    ) -> bool {
        let by_time = self.config.get().roll_ms.is_some_and(|ms| {
            active.size > 0
                && segment::waited_for_roll_ms(active, header.max_timestamp()) > ms as i64
        });
        position + header.total_size() as u64 > self.config.get().segment_size_max_bytes
            || by_time
            || !active.index_has_room(&self.config.get().segment, planned + 1)
    }

    /// Bookkeeping for a batch that landed at `position` with the broker's `head`:
    /// the log end, what flushing is due, the tail cache, the segment's index. Returns
    /// the append's answer and what it still has to do.
    fn landed(
        &self,
        head: &[u8; batch::HEADER_SIZE],
        batch_bytes: &Bytes,
        position: u64,
        log_file: &Rc<LogFile>,
    ) -> (AppendInfo, Durability, Option<IndexWrite>) {
        let header = BatchHeader::new(head).expect("validated");
        let base_offset = header.base_offset();
        let (index_write, log_start_offset, flush, visible) = {
            let mut s = self.state.borrow_mut();
            s.unflushed_records += header.record_count() as u64;
            if !s.unflushed_files.iter().any(|f| Rc::ptr_eq(f, log_file)) {
                s.unflushed_files.push(log_file.clone());
            }
            let flush = self.take_due_flush(&mut s, false);
            s.log_end_offset = header.last_offset() + 1;
            if flush.is_some() {
                s.syncs_pending += 1;
            } else if s.syncs_pending == 0 {
                s.high_watermark = s.log_end_offset;
            }
            if s.max_timestamp
                .is_none_or(|m| header.max_timestamp() > m.timestamp)
            {
                let segment_base = *s.segments.keys().next_back().expect("segment");
                s.max_timestamp = Some(MaxTimestampBatch {
                    timestamp: header.max_timestamp(),
                    segment_base,
                    position,
                    size: batch_bytes.len(),
                });
            }
            if self.config.get().tail_cache_bytes > 0 {
                let cached = CachedBatch {
                    base_offset,
                    last_offset: header.last_offset(),
                    head: Bytes::copy_from_slice(head),
                    body: batch_bytes.slice(batch::HEADER_SIZE..),
                };
                s.tail_cache
                    .push(cached, self.config.get().tail_cache_bytes);
            }
            let active = s.segments.values_mut().next_back().expect("segment");
            active.note_append(
                &header,
                position,
                self.config.get().segment.index_interval_bytes,
            );
            let index_write = active
                .take_unwritten_index(segment::INDEX_ENTRIES_PER_WRITE)
                .map(|entries| (active.index_files(), entries));
            let visible = s.high_watermark == s.log_end_offset;
            let flush = flush.map_or(Durability::Done, |files| Durability::Sync {
                files,
                end_offset: s.log_end_offset,
            });
            (index_write, s.log_start_offset, flush, visible)
        };
        if visible {
            self.wake_waiters();
        }
        (
            AppendInfo {
                base_offset,
                log_start_offset,
            },
            flush,
            index_write,
        )
    }

    /// Writes index entries an append took. Indexes are rebuilt by recovery, so a
    /// failed write loses nothing; a clean shutdown waits for every write under way
    /// (`quiesce`) before it seals the index files and records them as complete.
    async fn write_index_entries(&self, files: IndexFiles, entries: IndexEntries) {
        self.index_writes.set(self.index_writes.get() + 1);
        if let Err(e) = Segment::write_index_entries(files, entries).await {
            warn!(dir = %self.dir.display(), error = %e, "index write failed");
        }
        self.index_writes.set(self.index_writes.get() - 1);
        if self.index_writes.get() == 0 {
            self.index_writes_idle.wake_all();
        }
    }

    /// Returns once no index write is under way.
    async fn index_writes_done(&self) {
        while self.index_writes.get() > 0 {
            let _ = self.index_writes_idle.wait().await;
        }
    }

    async fn roll(&self, base_offset: i64) -> io::Result<(u64, Rc<LogFile>)> {
        let seg = Segment::create(&self.dir, base_offset, &self.config.get().segment).await?;
        // The new file's directory entry must be durable before data in it can be.
        let dir = self.dir.clone();
        let started = std::time::Instant::now();
        glommio::executor()
            .spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await?;
        let dir_sync_ms = started.elapsed().as_millis() as u64;
        let log = seg.log.clone();
        let sealed = {
            let mut s = self.state.borrow_mut();
            let previous = s
                .segments
                .values_mut()
                .next_back()
                .map(Segment::seal_handle);
            s.segments.insert(base_offset, seg);
            previous
        };
        // The previous segment is final: trim its index files (and a direct file's
        // padding). Readers never read past a segment's size, so this is safe under
        // them; a failure only leaves spare bytes, which recovery ignores.
        if let Some(previous) = sealed {
            if let Err(e) = previous.seal().await {
                warn!(dir = %self.dir.display(), error = %e, "trimming a rolled segment failed");
            }
        }
        info!(dir = %self.dir.display(), base_offset, dir_sync_ms, "rolled to a new segment");
        Ok((0, log))
    }

    fn wake_waiters(&self) {
        self.appended.wake_all();
    }

    /// A receiver completed by the next append.
    pub fn wait_for_append(&self) -> oneshot::Receiver<()> {
        self.appended.wait()
    }

    /// As `read`, for a fetch response: with `zero_copy`, batches in the page cache
    /// come back as a file range, which the connection sendfiles; otherwise (or when a
    /// part of them is not cached, or the file is direct) as bytes read into memory.
    pub async fn read_chunks(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        zero_copy: bool,
    ) -> Result<Vec<Chunk>, ReadError> {
        if zero_copy {
            if let Some(range) = self.cached_range(offset, max_bytes, min_one_batch)? {
                return Ok(vec![Chunk::File(range)]);
            }
        }
        let pieces = self.read(offset, max_bytes, min_one_batch).await?;
        Ok(pieces.into_iter().map(Chunk::Bytes).collect())
    }

    /// The file range of the batches `read` would return, found without waiting for
    /// the device: batch headers are read only if cached (`read_cached`), and so is
    /// the range's last byte. `None` whenever that is not so, or the case is one
    /// `read` handles (the tail cache, the log end, errors): the caller then reads.
    fn cached_range(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Option<FileRange>, ReadError> {
        let s = self.state.borrow();
        if s.offline || offset < s.log_start_offset || offset >= s.high_watermark {
            return Ok(None);
        }
        let visible_end = s.high_watermark;
        if s.tail_cache.holds(offset) {
            return Ok(None);
        }
        let Some((_, seg)) = s.segments.range(..=offset).next_back() else {
            return Ok(None);
        };
        let Some(file) = seg.log.shared_handle() else {
            return Ok(None);
        };
        let mut head = [0u8; batch::HEADER_SIZE];
        let mut header_at = |pos: u64| -> io::Result<Option<(i64, u64)>> {
            if pos + batch::HEADER_SIZE as u64 > seg.size || !seg.log.read_cached(pos, &mut head)? {
                return Ok(None);
            }
            Ok(BatchHeader::new(&head).and_then(|h| Some((h.last_offset(), h.span()?))))
        };
        // The batch holding `offset`.
        let mut start = seg.position_for(offset);
        loop {
            let Some((last_offset, size)) = header_at(start)? else {
                return Ok(None);
            };
            if last_offset >= offset {
                break;
            }
            start += size;
        }
        // Whole batches while they fit: every batch before the last indexed batch
        // start within the limit fits, so start walking there (unless some of the
        // segment is past the high watermark: then walk every batch, checking each).
        let limit = start + max_bytes as u64;
        let mut end = if visible_end == s.log_end_offset {
            start.max(seg.batch_start_at_or_below(limit.min(seg.size)))
        } else {
            start
        };
        loop {
            if end >= seg.size {
                break;
            }
            let Some((last_offset, size)) = header_at(end)? else {
                return Ok(None);
            };
            if last_offset >= visible_end
                || end + size > seg.size
                || (end + size > limit && !(end == start && min_one_batch))
            {
                break;
            }
            end += size;
        }
        if end == start {
            return Ok(None);
        }
        if !seg.log.read_cached(end - 1, &mut head[..1])? {
            return Ok(None);
        }
        Ok(Some(FileRange {
            file,
            offset: start,
            len: (end - start) as usize,
        }))
    }

    /// Reads whole batches starting with the one containing `offset`, up to
    /// `max_bytes` (but at least one batch when `min_one_batch`), as one or more
    /// contiguous pieces, below the high watermark. Returns nothing at or past it.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Vec<Bytes>, ReadError> {
        let (file, mut position, segment_end, visible_end) = {
            let s = self.state.borrow();
            if s.offline {
                return Err(ReadError::Io(io::Error::other("partition is offline")));
            }
            if offset < s.log_start_offset || offset > s.log_end_offset {
                return Err(ReadError::OutOfRange {
                    offset,
                    log_start: s.log_start_offset,
                    log_end: s.log_end_offset,
                });
            }
            if offset >= s.high_watermark {
                return Ok(Vec::new());
            }
            let visible_end = s.high_watermark;
            if let Some(hit) = s
                .tail_cache
                .read(offset, visible_end, max_bytes, min_one_batch)
            {
                return Ok(hit);
            }
            let (_, seg) = s
                .segments
                .range(..=offset)
                .next_back()
                .expect("offset within the log");
            (
                seg.log.clone(),
                seg.position_for(offset),
                seg.size,
                visible_end,
            )
        };
        // Skip batches that end before `offset`, reading headers block by block.
        let mut block_start = position;
        let mut block = file
            .read_at(
                position,
                (segment_end - position).min(READ_BLOCK_BYTES.max(max_bytes) as u64) as usize,
            )
            .await?;
        loop {
            let at = (position - block_start) as usize;
            let Some(h) = BatchHeader::new(&block[at.min(block.len())..]) else {
                if position >= segment_end {
                    return Ok(Vec::new());
                }
                block_start = position;
                block = file
                    .read_at(
                        position,
                        (segment_end - position).min(READ_BLOCK_BYTES.max(max_bytes) as u64)
                            as usize,
                    )
                    .await?;
                if block.len() < batch::HEADER_SIZE {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read").into());
                }
                continue;
            };
            if h.last_offset() >= offset {
                break;
            }
            position += h.span().ok_or_else(|| corrupt_header(position))?;
        }
        // Take whole batches from `position` while they fit.
        let mut end = position;
        loop {
            let at = (end - block_start) as usize;
            let Some(h) = BatchHeader::new(&block[at.min(block.len())..]) else {
                break;
            };
            let size = h.span().ok_or_else(|| corrupt_header(end))?;
            let taken = end - position;
            if h.last_offset() >= visible_end
                || end + size > segment_end
                || (taken + size > max_bytes as u64 && !(taken == 0 && min_one_batch))
            {
                break;
            }
            end += size;
        }
        if end == position {
            return Ok(Vec::new());
        }
        let (from, len) = ((position - block_start) as usize, (end - position) as usize);
        if from + len <= block.len() {
            return Ok(vec![Bytes::copy_from_slice(&block[from..from + len])]);
        }
        // The range runs past the block we read: read it whole.
        let whole = file.read_at(position, len).await?;
        if whole.len() < len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read").into());
        }
        Ok(vec![Bytes::copy_from_slice(&whole[..len])])
    }

    /// The earliest offset whose record timestamp is >= `timestamp`, with that
    /// timestamp; `None` if every record is older. The time index of the first segment
    /// that can hold it gives where to start walking batch headers.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(i64, i64)>> {
        let candidates: Vec<(Rc<LogFile>, u64, u64)> = {
            let s = self.state.borrow();
            s.segments
                .values()
                .filter(|seg| seg.max_timestamp >= timestamp)
                .map(|seg| {
                    (
                        seg.log.clone(),
                        seg.position_for_timestamp(timestamp),
                        seg.size,
                    )
                })
                .collect()
        };
        for (file, start, size) in candidates {
            let mut pos = start;
            while pos < size {
                let head = file.read_at(pos, batch::HEADER_SIZE).await?;
                let Some(h) = BatchHeader::new(&head) else {
                    break;
                };
                let total = h.span().ok_or_else(|| corrupt_header(pos))?;
                if h.max_timestamp() >= timestamp {
                    let whole = file.read_at(pos, total as usize).await?;
                    let found = records::offsets_and_timestamps(&whole)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                        .into_iter()
                        .find(|(_, ts)| *ts >= timestamp);
                    if let Some(found) = found {
                        return Ok(Some(found));
                    }
                }
                pos += total;
            }
        }
        Ok(None)
    }

    /// Offset and timestamp of the record with the largest timestamp (the first such
    /// record if several share it); `None` on an empty log.
    pub async fn offset_of_max_timestamp(&self) -> io::Result<Option<(i64, i64)>> {
        let located = {
            let s = self.state.borrow();
            s.max_timestamp.and_then(|m| {
                s.segments
                    .get(&m.segment_base)
                    .map(|seg| (seg.log.clone(), m))
            })
        };
        let Some((file, m)) = located else {
            return Ok(None);
        };
        let whole = file.read_at(m.position, m.size).await?;
        let records = records::offsets_and_timestamps(&whole)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(records
            .into_iter()
            .find(|(_, ts)| *ts == m.timestamp)
            .or(Some((
                BatchHeader::new(&whole).map_or(0, |h| h.base_offset()),
                m.timestamp,
            ))))
    }

    /// Deletes whole segments past `retention.ms` (their newest timestamp is older) or
    /// beyond `retention.bytes` (oldest first), never the active segment, and moves the
    /// log start to the first remaining segment. Returns how many were deleted.
    ///
    /// Readers already holding a deleted segment's file keep reading it: the file is
    /// unlinked, and closed when the last reader drops it.
    pub fn apply_retention(&self, now_ms: i64) -> usize {
        let retention_ms = self.config.get().retention_ms;
        let retention_bytes = self.config.get().retention_bytes;
        self.retire_oldest(|oldest, log_bytes| {
            let expired = retention_ms.is_some_and(|ms| {
                oldest.max_timestamp >= 0 && oldest.max_timestamp < now_ms.saturating_sub(ms as i64)
            });
            let oversized = retention_bytes.is_some_and(|limit| log_bytes - oldest.size >= limit);
            expired || oversized
        })
    }

    /// DeleteRecords: moves the log start up to `offset` (-1: the high watermark) and
    /// deletes the segments wholly below it. The new start is persisted before it takes
    /// effect, so after a crash it holds. Returns the new log start (low watermark).
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, ReadError> {
        let Offsets {
            log_start,
            high_watermark,
            ..
        } = self.offsets();
        if self.is_offline() {
            return Err(ReadError::Io(io::Error::other("partition is offline")));
        }
        // As Kafka: nothing at or past the high watermark may be deleted.
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            return Err(ReadError::OutOfRange {
                offset,
                log_start,
                log_end: high_watermark,
            });
        }
        if target <= log_start {
            return Ok(log_start);
        }
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || {
                write_atomic(&dir, LOG_START_CHECKPOINT, target.to_string().as_bytes())
            })
            .await?;
        {
            let mut s = self.state.borrow_mut();
            s.log_start_offset = s.log_start_offset.max(target);
        }
        self.retire_oldest(|oldest, _| oldest.next_offset <= target);
        Ok(self.offsets().log_start)
    }

    /// Deletes the oldest segments while `should_go(oldest, log_bytes)` says so, never
    /// the active one; the log start moves to at least the first remaining segment.
    ///
    /// Readers already holding a deleted segment's file keep reading it: the file is
    /// unlinked, and closed when the last reader drops it.
    fn retire_oldest(&self, mut should_go: impl FnMut(&Segment, u64) -> bool) -> usize {
        let doomed: Vec<Segment> = {
            let mut s = self.state.borrow_mut();
            if s.offline {
                return 0;
            }
            let mut log_bytes: u64 = s.segments.values().map(|g| g.size).sum();
            let mut doomed = Vec::new();
            while s.segments.len() > 1 {
                let oldest = s.segments.values().next().expect("more than one segment");
                if !should_go(oldest, log_bytes) {
                    break;
                }
                log_bytes -= oldest.size;
                let base = oldest.base_offset;
                doomed.push(s.segments.remove(&base).expect("present"));
            }
            if doomed.is_empty() {
                return 0;
            }
            let first = *s
                .segments
                .keys()
                .next()
                .expect("the active segment remains");
            s.log_start_offset = s.log_start_offset.max(first);
            let gone = |base: i64| doomed.iter().any(|d| d.base_offset == base);
            if s.max_timestamp.is_some_and(|m| gone(m.segment_base)) {
                s.max_timestamp = None;
            }
            s.unflushed_files
                .retain(|f| !doomed.iter().any(|d| Rc::ptr_eq(&d.log, f)));
            doomed
        };
        let mut retired = Vec::new();
        for seg in &doomed {
            for path in [
                segment::log_path(&self.dir, seg.base_offset),
                segment::index_path(&self.dir, seg.base_offset),
                segment::time_index_path(&self.dir, seg.base_offset),
            ] {
                match rename_retired(&path, "") {
                    Ok(to) => retired.push(to),
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "renaming a retired segment file failed")
                    }
                }
            }
            info!(dir = %self.dir.display(), segment = seg.base_offset, bytes = seg.size, "deleted a segment below the log start");
        }
        let count = doomed.len();
        drop(doomed);
        if !retired.is_empty() {
            remove_later(retired);
        }
        count
    }

    /// Clean shutdown: waits for appends in flight to finish and refuses new ones,
    /// flushes, seals the active segment and records the partition's state for the
    /// next start. Returns whether that record was written (a partition that was
    /// already offline, or failed to flush, gets none and is scanned next time).
    pub async fn quiesce(&self) -> bool {
        self.refusing.set(true);
        let was_offline = self.is_offline();
        self.writer_done().await;
        self.state.borrow_mut().closed = true;
        // Appends written before the writer stopped may still be writing index entries.
        self.index_writes_done().await;
        self.wake_waiters();
        let files = std::mem::take(&mut self.state.borrow_mut().unflushed_files);
        if !files.is_empty() {
            if let Err(e) = self.sync_group.sync(files).await {
                warn!(dir = %self.dir.display(), error = %e, "flush at shutdown failed");
                return false;
            }
        }
        if was_offline {
            return false;
        }
        let (active, snapshot) = {
            let mut s = self.state.borrow_mut();
            let active = s
                .segments
                .values_mut()
                .next_back()
                .map(Segment::seal_handle);
            let snapshot = ShutdownSnapshot {
                segments: s.segments.values().map(Segment::snapshot).collect(),
                producers: s.producers.clone(),
                max_timestamp: s.max_timestamp,
            };
            (active, snapshot)
        };
        if let Some(active) = active {
            if let Err(e) = active.seal().await {
                warn!(dir = %self.dir.display(), error = %e, "sealing the active segment at shutdown failed");
                return false;
            }
        }
        let written = serde_json::to_vec(&snapshot)
            .map_err(io::Error::other)
            .and_then(|bytes| write_atomic(&self.dir, SHUTDOWN_SNAPSHOT, &bytes));
        if let Err(e) = written {
            warn!(dir = %self.dir.display(), error = %e, "writing the clean-shutdown snapshot failed");
            return false;
        }
        true
    }

    /// Closes the log and removes its directory: renamed `*.deleted` at once (a topic
    /// created again under the name starts empty, and the start-up scan removes what a
    /// crash left), then removed off the shard, as retired segments are
    /// (`remove_later`); returns once it is renamed. Readers holding segment files
    /// keep them readable until they finish.
    pub async fn delete(&self) -> io::Result<()> {
        // A write under way lands first (its appends are answered); taking the
        // segments from under it would leave it nowhere to land.
        self.refusing.set(true);
        self.writer_done().await;
        self.index_writes_done().await;
        {
            let mut s = self.state.borrow_mut();
            s.offline = true;
            s.closed = true;
        }
        self.wake_waiters();
        // Close the files now, so that the removal frees their pages off the shard.
        let closed = {
            let mut s = self.state.borrow_mut();
            (
                std::mem::take(&mut s.segments),
                std::mem::take(&mut s.unflushed_files),
            )
        };
        drop(closed);
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let doomed = rename_retired(&self.dir, &format!(".{unique}"))?;
        // As Kafka (a deleted log is renamed, then removed `file.delete.delay.ms`
        // later), the deletion is done once the directory is renamed: the name is free
        // for a new topic, and the files go off the shard soon after.
        remove_later(vec![doomed]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::batch::BatchTemplate;
    use crate::storage::fault;
    use crate::storage::test_support::on_executor_in_scratch_dir;

    fn config(tail_cache_bytes: usize) -> LogConfig {
        LogConfig {
            tail_cache_bytes,
            // Every second record flushes.
            flush_interval_messages: 2,
            ..LogConfig::plain(WriteMode::Buffered)
        }
    }

    /// A batch of `records` records from idempotent producer 7, epoch 0, sequence `seq`.
    fn idempotent_batch(seq: i32, records: usize) -> Bytes {
        let recs: Vec<batch::build::Record> = (0..records)
            .map(|_| batch::build::Record {
                key: None,
                value: Some(b"v"),
                headers: &[],
                timestamp: segment::now_ms(),
            })
            .collect();
        Bytes::from(batch::build::encode(&recs, Some((7, 0, seq))))
    }

    /// A retried batch (an idempotent duplicate) is acknowledged no sooner than its
    /// original: while the original's flush is under way the duplicate waits for it.
    #[test]
    fn a_duplicate_waits_for_its_originals_flush() {
        on_executor_in_scratch_dir("duplicate-flush", |dir| async move {
            let sync = Rc::new(SyncGroup::default());
            let log = PartitionLog::open(dir.clone(), config(0), sync.clone(), false)
                .await
                .unwrap();
            // Two records: the original reaches flush.messages=2 and must flush.
            let (release, held) = oneshot::channel();
            sync.hold_next_round(held);
            // The same batch each time: the second is a retry, a duplicate.
            let append = || {
                let log = log.clone();
                glommio::spawn_local(async move {
                    log.append(idempotent_batch(0, 2))
                        .await
                        .map(|i| i.base_offset)
                })
            };
            let original = append();
            for _ in 0..2000 {
                if log.offsets().log_end == 2 {
                    break;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            assert_eq!(log.offsets().log_end, 2, "the original was written");

            let duplicate = append();
            let wait = glommio::timer::sleep(std::time::Duration::from_millis(200));
            let duplicate = match futures::future::select(duplicate, Box::pin(wait)).await {
                futures::future::Either::Left(_) => {
                    panic!("the duplicate was answered before its original was durable")
                }
                futures::future::Either::Right((_, duplicate)) => duplicate,
            };
            release.send(()).unwrap();
            assert_eq!(original.await.unwrap(), 0);
            assert_eq!(duplicate.await.unwrap(), 0);
            assert_eq!(log.offsets().log_end, 2, "the duplicate was not written");
        });
    }

    /// A partition deleted while appends are queued and under way: the write under
    /// way lands, the rest are refused, and nothing panics.
    #[test]
    fn delete_waits_for_the_write_under_way() {
        on_executor_in_scratch_dir("delete-under-append", |dir| async move {
            let sync = Rc::new(SyncGroup::default());
            let log = PartitionLog::open(dir.join("t-0"), config(0), sync, false)
                .await
                .unwrap();
            let appends: Vec<_> = (0..8)
                .map(|n| glommio::spawn_local(log.append(idempotent_batch(n * 2, 2))))
                .collect();
            log.delete().await.unwrap();
            let mut landed = 0;
            for a in appends {
                match a.await {
                    Ok(_) => landed += 1,
                    Err(AppendError::Closed) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            assert!(landed > 0, "the write under way was answered");
            assert!(!dir.join("t-0").exists(), "the directory was renamed away");
            assert!(log.append(idempotent_batch(16, 2)).await.is_err());
        });
    }

    /// Appends made while the writer is busy go together in one write, keep the order
    /// they were made in (offsets, sequence checks against the batches ahead of them
    /// in the same write, a duplicate of one of those), and a failed write fails all
    /// of them and leaves the producer's state as it was.
    #[test]
    fn queued_appends_share_a_write_in_order() {
        on_executor_in_scratch_dir("grouped", |dir| async move {
            let sync = Rc::new(SyncGroup::default());
            let log = PartitionLog::open(dir.clone(), config(0), sync, false)
                .await
                .unwrap();
            let appends: Vec<_> = [(0, 2), (2, 3), (5, 1), (0, 2), (9, 1), (6, 4)]
                .into_iter()
                .map(|(seq, n)| log.append(idempotent_batch(seq, n)))
                .collect();
            let answers: Vec<_> = futures::future::join_all(appends)
                .await
                .into_iter()
                .map(|a| a.map(|i| i.base_offset).map_err(|e| e.error_code()))
                .collect();
            assert_eq!(
                answers,
                [
                    Ok(0),
                    Ok(2),
                    Ok(5),
                    Ok(0), // the duplicate of the first, in the same write
                    Err(ErrorCode::OutOfOrderSequenceNumber),
                    Ok(6),
                ]
            );
            assert_eq!(log.offsets().log_end, 10);
            let read: usize = log
                .read(0, 1 << 20, true)
                .await
                .unwrap()
                .iter()
                .map(Bytes::len)
                .sum();
            let sizes = [2, 3, 1, 4].map(|n| idempotent_batch(0, n).len());
            assert_eq!(read, sizes.iter().sum::<usize>());

            // A write fails: the appends it carried fail, and the producer's state is
            // put back. The writer starts at once (glommio runs a spawned task until
            // it first waits), so the first append goes alone, reaching the fault seam
            // before faults are on; the three queued behind it share the next write.
            let first = log.append(idempotent_batch(10, 1));
            let queued: Vec<_> = [11, 12, 13]
                .into_iter()
                .map(|seq| log.append(idempotent_batch(seq, 1)))
                .collect();
            let failing = fault::FaultRates {
                seed: 1,
                short_write: 0.0,
                eio: 1.0,
                enospc: 0.0,
            };
            fault::install(failing, 0);
            assert_eq!(first.await.unwrap().base_offset, 10);
            for answer in futures::future::join_all(queued).await {
                assert_eq!(
                    answer.unwrap_err().error_code(),
                    ErrorCode::KafkaStorageError
                );
            }
            assert_eq!(fault::injected(), 1, "one write for the three");
            fault::install(
                fault::FaultRates {
                    eio: 0.0,
                    ..failing
                },
                0,
            );
            // Sequence 11 is next, not a duplicate; the log goes on from offset 11.
            for seq in [11, 12] {
                let appended = log.append(idempotent_batch(seq, 1)).await.unwrap();
                assert_eq!(appended.base_offset, seq as i64);
                assert_eq!(log.offsets().log_end, seq as i64 + 1);
            }
        });
    }

    /// Bytes the copying and the zero-copy read return from `offset`.
    async fn readable(log: &PartitionLog, offset: i64) -> (usize, usize) {
        let copied = log.read(offset, 1 << 20, true).await.unwrap();
        let chunks = log.read_chunks(offset, 1 << 20, true, true).await.unwrap();
        (
            copied.iter().map(Bytes::len).sum(),
            chunks.iter().map(Chunk::len).sum(),
        )
    }

    /// `flush.ms` is the periodic flusher's business, as in Kafka: an append made when
    /// a flush by time is due is acknowledged and visible without waiting for it.
    #[test]
    fn appends_do_not_wait_for_a_flush_by_time() {
        on_executor_in_scratch_dir("flush-ms", |dir| async move {
            let sync = Rc::new(SyncGroup::default());
            let config = LogConfig {
                flush_interval_ms: Some(0),
                ..LogConfig::plain(WriteMode::Buffered)
            };
            let log = PartitionLog::open(dir.clone(), config, sync.clone(), false)
                .await
                .unwrap();
            let (release, held) = oneshot::channel();
            sync.hold_next_round(held);
            let batch = Bytes::from(BatchTemplate::new(1, 100).batch(1, segment::now_ms(), None));
            let appended = futures::FutureExt::boxed_local(log.append(batch));
            let timeout = futures::FutureExt::boxed_local(glommio::timer::sleep(
                std::time::Duration::from_secs(5),
            ));
            let futures::future::Either::Left((appended, _)) =
                futures::future::select(appended, timeout).await
            else {
                panic!("the append waited for the held flush");
            };
            appended.unwrap();
            assert_eq!(log.offsets().high_watermark, 1);
            assert_eq!(sync.counts(), (0, 0), "no sync asked for by the append");

            // The periodic flusher syncs it.
            let flushing = glommio::spawn_local({
                let log = log.clone();
                async move { log.flush_if_due().await }
            });
            release.send(()).unwrap();
            flushing.await.unwrap();
            assert_eq!(sync.counts(), (1, 1));
        });
    }

    /// An append that must flush is not visible (fetch, zero-copy fetch, tail cache,
    /// the high watermark, fetch waiters) until its sync is done, nor is any append
    /// made after it; appends that need no flush are visible at once.
    #[test]
    fn appends_become_visible_only_once_their_flush_is_done() {
        for tail_cache_bytes in [0, 1 << 20] {
            let name = format!("visible-{tail_cache_bytes}");
            on_executor_in_scratch_dir(&name, move |dir| async move {
                let sync = Rc::new(SyncGroup::default());
                let log =
                    PartitionLog::open(dir.clone(), config(tail_cache_bytes), sync.clone(), false)
                        .await
                        .unwrap();
                let batch =
                    Bytes::from(BatchTemplate::new(1, 100).batch(1, segment::now_ms(), None));
                let size = batch.len();

                // Offset 0: one unflushed record, no flush due, visible at once.
                log.append(batch.clone()).await.unwrap();
                assert_eq!(log.offsets().high_watermark, 1);
                assert_eq!(readable(&log, 0).await, (size, size));

                // Offset 1 must flush; its sync round is held.
                let (release, held) = oneshot::channel();
                sync.hold_next_round(held);
                let waiting = log.wait_for_append();
                let flushing = glommio::spawn_local({
                    let (log, batch) = (log.clone(), batch.clone());
                    async move { log.append(batch).await.map(|i| i.base_offset) }
                });
                for _ in 0..2000 {
                    if log.offsets().log_end == 2 {
                        break;
                    }
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
                assert_eq!(log.offsets().log_end, 2, "the append was written");
                // Offset 2 needs no flush, but comes after one that waits.
                log.append(batch.clone()).await.unwrap();
                let o = log.offsets();
                assert_eq!((o.log_end, o.high_watermark), (3, 1));
                assert_eq!(readable(&log, 0).await, (size, size));
                assert_eq!(readable(&log, 1).await, (0, 0));
                assert_eq!(readable(&log, 2).await, (0, 0));
                assert!(matches!(
                    log.delete_records_before(2).await,
                    Err(ReadError::OutOfRange { .. })
                ));

                release.send(()).unwrap();
                assert_eq!(flushing.await.unwrap(), 1);
                waiting.await.expect("fetch waiters woken by the sync");
                assert_eq!(log.offsets().high_watermark, 3);
                assert_eq!(readable(&log, 0).await, (3 * size, 3 * size));
                assert_eq!(readable(&log, 2).await, (size, size));
            });
        }
    }
}

//! Opening a log: after a clean shutdown, the state it recorded (`quiesce` writes
//! it); otherwise a scan that validates every batch, truncates a torn tail of the
//! active segment and takes a partition damaged anywhere else offline.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tracing::{error, info, warn};

use super::read::TailCache;
use super::recovery_point::RecoveryPoint;
use super::retention::RETIRED_SUFFIX;
use super::{
    AbortedTxn, EpochCache, LogConfig, LogState, MaxTimestampBatch, PartitionLog, Wakers,
    LOG_START_CHECKPOINT,
};
use crate::ids::LeaderEpoch;
use crate::protocol::batch::BatchHeader;
use crate::storage::atomic_file::write_atomic;
use crate::storage::producer_state::CompletedTxn;
use crate::storage::producer_state::ProducerStates;
use crate::storage::segment::{Segment, SegmentSnapshot, SegmentSpec};
use crate::storage::sync_group::SyncGroup;

/// What a clean shutdown writes about the partition, read by the next start instead
/// of scanning (trusted only while the broker's clean-shutdown marker exists).
const SHUTDOWN_SNAPSHOT: &str = "clean-shutdown.json";

/// How a start found a log's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedBy {
    /// From what the last clean shutdown recorded.
    CleanShutdown,
    /// From the last recovery point, validating what lies past it.
    RecoveryPoint,
    /// By validating every batch.
    FullScan,
}

/// What `quiesce` writes for the next start.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ShutdownSnapshot {
    segments: Vec<SegmentSnapshot>,
    producers: ProducerStates,
    /// Absent in snapshots from before transactions: there were none.
    #[serde(default)]
    aborted: VecDeque<AbortedTxn>,
    max_timestamp: Option<MaxTimestampBatch>,
    /// Absent in snapshots from before replication: those logs are scanned.
    #[serde(default)]
    epochs: Option<EpochCache>,
    /// The high watermark at shutdown, if replication capped it.
    #[serde(default)]
    replicated_high_watermark: Option<i64>,
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

/// A partition's state as found on disk at startup.
pub(super) struct Recovered {
    segments: BTreeMap<i64, Segment>,
    producers: ProducerStates,
    aborted: VecDeque<AbortedTxn>,
    max_timestamp: Option<MaxTimestampBatch>,
    epochs: EpochCache,
    /// The high watermark a replicated log had at a clean shutdown.
    replicated_high_watermark: Option<i64>,
    /// Why the partition cannot be served, if it cannot.
    offline: Option<String>,
}

impl Recovered {
    /// Takes what a clean shutdown recorded, if it matches the files; `None` otherwise.
    pub(super) async fn from_snapshot(
        dir: &Path,
        spec: &SegmentSpec,
    ) -> io::Result<Option<Recovered>> {
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
        let Some(epochs) = snapshot.epochs else {
            info!(dir = %dir.display(), "clean-shutdown snapshot without leader epochs; scanning instead");
            return Ok(None);
        };
        Ok(Some(Recovered {
            segments,
            producers: snapshot.producers,
            aborted: snapshot.aborted,
            max_timestamp: snapshot.max_timestamp,
            epochs,
            replicated_high_watermark: snapshot.replicated_high_watermark,
            offline: None,
        }))
    }

    /// Validates every batch of every segment; truncates a torn or corrupt tail of the
    /// active segment; damage anywhere else takes the partition offline.
    pub(super) async fn by_scanning(dir: &Path, spec: &SegmentSpec) -> io::Result<Recovered> {
        let bases = segment_bases(dir)?;
        let mut scan = Scan::default();
        scan.segments_from(dir, spec, &bases, None).await?;
        Ok(scan.into_recovered())
    }

    /// Takes the last recovery point (`recovery_point`) and validates only what lies
    /// past it: the segments it records whole are loaded as they are, the one it ends
    /// in is rescanned from there, later ones fully. `None` if there is none, or the
    /// files do not match it: the caller then scans everything.
    pub(super) async fn from_recovery_point(
        dir: &Path,
        spec: &SegmentSpec,
    ) -> io::Result<Option<Recovered>> {
        let Some(point) = RecoveryPoint::read(dir) else {
            return Ok(None);
        };
        let Some((partial, whole)) = point.segments.split_last() else {
            return Ok(None);
        };
        let bases = segment_bases(dir)?;
        let (older, rest): (Vec<i64>, Vec<i64>) =
            bases.iter().partition(|&&b| b < partial.base_offset);
        // Retention may have removed the oldest segments since; nothing else may differ.
        let Some(first_kept) = whole.len().checked_sub(older.len()) else {
            return Ok(None);
        };
        let whole = &whole[first_kept..];
        if rest.first() != Some(&partial.base_offset)
            || !whole
                .iter()
                .map(|g| g.base_offset)
                .eq(older.iter().copied())
        {
            warn!(dir = %dir.display(), "segment files differ from the recovery point; scanning instead");
            return Ok(None);
        }
        let mut scan = Scan {
            producers: point.producers,
            aborted: point.aborted,
            max_timestamp: point.max_timestamp,
            epochs: point.epochs,
            ..Scan::default()
        };
        for g in whole {
            match Segment::load(dir, g, spec).await? {
                Some(seg) => scan.segments.insert(g.base_offset, seg),
                None => {
                    warn!(dir = %dir.display(), segment = g.base_offset, "segment differs from the recovery point; scanning instead");
                    return Ok(None);
                }
            };
        }
        if !scan.segments_from(dir, spec, &rest, Some(partial)).await? {
            warn!(dir = %dir.display(), segment = partial.base_offset, "segment does not hold what the recovery point recorded; scanning instead");
            return Ok(None);
        }
        // As retention does: the batch with the largest timestamp went with its segment.
        if scan
            .max_timestamp
            .is_some_and(|m| !scan.segments.contains_key(&m.segment_base))
        {
            scan.max_timestamp = None;
        }
        info!(dir = %dir.display(), recovery_point = point.end_offset, "recovered from the recovery point");
        Ok(Some(scan.into_recovered()))
    }
}

/// A recovery scan's findings so far.
#[derive(Default)]
struct Scan {
    segments: BTreeMap<i64, Segment>,
    producers: ProducerStates,
    aborted: VecDeque<AbortedTxn>,
    max_timestamp: Option<MaxTimestampBatch>,
    epochs: EpochCache,
    offline: Option<String>,
}

impl Scan {
    /// Validates the segments at `bases`, in order; the first is only validated past
    /// `resume_at` if given (see `Segment::resume`). Truncates a torn or corrupt tail
    /// of the active segment; damage anywhere else takes the partition offline.
    /// False if the first segment does not hold what `resume_at` says.
    async fn segments_from(
        &mut self,
        dir: &Path,
        spec: &SegmentSpec,
        bases: &[i64],
        resume_at: Option<&SegmentSnapshot>,
    ) -> io::Result<bool> {
        let mut expected = bases.first().copied().unwrap_or(0);
        for (i, &base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            if base < expected {
                self.offline = Some(format!(
                    "segment {base} overlaps its predecessor, which ends at {expected}"
                ));
                break;
            }
            let (epochs, aborted, max_timestamp) =
                (&mut self.epochs, &mut self.aborted, &mut self.max_timestamp);
            let on_batch = |h: &BatchHeader<'_>, pos: u64, txn: Option<CompletedTxn>| {
                epochs.note(h.partition_leader_epoch(), h.base_offset());
                if let Some(t) = txn.filter(|t| t.aborted) {
                    // The last stable offset of that time is not known; the marker's own
                    // offset bounds it.
                    aborted.push_back(AbortedTxn::new(&t, t.last_offset));
                }
                if max_timestamp.is_none_or(|m| h.max_timestamp() > m.timestamp) {
                    *max_timestamp = Some(MaxTimestampBatch {
                        timestamp: h.max_timestamp(),
                        segment_base: base,
                        position: pos,
                        size: h.total_size() as usize,
                    });
                }
            };
            let (mut seg, torn) = match resume_at.filter(|_| i == 0) {
                Some(known) => {
                    match Segment::resume(dir, known, spec, &mut self.producers, on_batch).await? {
                        Some(resumed) => resumed,
                        None => return Ok(false),
                    }
                }
                None => Segment::recover(dir, base, spec, &mut self.producers, on_batch).await?,
            };
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
                    self.offline = Some(format!(
                        "segment {base} is damaged at byte {}: {}",
                        t.position, t.reason
                    ));
                    self.segments.insert(base, seg);
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
            self.segments.insert(base, seg);
        }
        Ok(true)
    }

    fn into_recovered(self) -> Recovered {
        Recovered {
            segments: self.segments,
            producers: self.producers,
            aborted: self.aborted,
            max_timestamp: self.max_timestamp,
            epochs: self.epochs,
            replicated_high_watermark: None,
            offline: self.offline,
        }
    }
}

impl PartitionLog {
    /// Opens the log in `dir`, creating it if empty. After a clean shutdown
    /// (`clean_shutdown`: the broker's marker was found) the state it recorded is
    /// loaded; otherwise the batches past the last recovery point (all of them, if
    /// there is none) are validated, and a torn or corrupt tail is truncated and
    /// reported in the log.
    pub async fn open(
        dir: PathBuf,
        config: LogConfig,
        sync_group: Rc<SyncGroup>,
        clean_shutdown: bool,
    ) -> io::Result<Rc<PartitionLog>> {
        std::fs::create_dir_all(&dir)?;
        let mut opened_by = OpenedBy::CleanShutdown;
        let mut loaded = if clean_shutdown {
            Recovered::from_snapshot(&dir, &config.segment).await?
        } else {
            None
        };
        if loaded.is_none() {
            opened_by = OpenedBy::RecoveryPoint;
            loaded = Recovered::from_recovery_point(&dir, &config.segment).await?;
        }
        if loaded.is_none() {
            opened_by = OpenedBy::FullScan;
        }
        // A snapshot describes one shutdown; it must never be trusted after this start.
        match std::fs::remove_file(dir.join(SHUTDOWN_SNAPSHOT)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let Recovered {
            mut segments,
            producers,
            aborted,
            max_timestamp,
            mut epochs,
            replicated_high_watermark,
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
        epochs.truncate_from_start(log_start_offset);
        // Nothing recovered is known to be flushed (after a crash, what the scan found
        // may be in the page cache only): the first recovery point syncs it all.
        let unsynced_segments = segments.values().map(Segment::files).collect();
        if log_end_offset > 0 {
            info!(dir = %dir.display(), log_start_offset, log_end_offset, segments = segments.len(), ?opened_by, "recovered partition log");
        }
        Ok(Rc::new(PartitionLog {
            dir,
            config: Cell::new(config),
            state: RefCell::new(LogState {
                segments,
                log_start_offset,
                log_end_offset,
                flushed_visible_end: log_end_offset,
                replicated_end: i64::MAX,
                syncs_pending: 0,
                producers,
                aborted,
                max_timestamp,
                offline: offline.is_some(),
                closed: false,
                unflushed_records: 0,
                unflushed_files: Vec::new(),
                last_flush: std::time::Instant::now(),
                tail_cache: TailCache::default(),
                epochs,
                recovered_high_watermark: replicated_high_watermark
                    .map_or(log_start_offset, |hw| {
                        hw.clamp(log_start_offset, log_end_offset)
                    }),
                unsynced_segments,
            }),
            pending: RefCell::new(VecDeque::new()),
            leader_epoch: Cell::new(LeaderEpoch(0)),
            writing: Cell::new(false),
            writer_idle: Wakers::default(),
            refusing: Cell::new(false),
            appended: Wakers::default(),
            append_watches: RefCell::default(),
            index_writes: Cell::new(0),
            index_writes_idle: Wakers::default(),
            sync_group,
            recovery_points: Default::default(),
            opened_by,
        }))
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
        // A recovery point being stored may be writing index entries too.
        self.stop_recovery_points().await;
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
                aborted: s.aborted.clone(),
                max_timestamp: s.max_timestamp,
                epochs: Some(s.epochs.clone()),
                replicated_high_watermark: (s.replicated_end != i64::MAX)
                    .then(|| s.high_watermark()),
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
}

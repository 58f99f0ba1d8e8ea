//! Removing data: time and size retention, DeleteRecords, deleting the whole log,
//! and the reaper thread that removes retired files off the shards.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tracing::{error, info, warn};

use super::{Offsets, PartitionLog, ReadError, LOG_START_CHECKPOINT};
use crate::storage::atomic_file::write_atomic;
use crate::storage::segment::{self, Segment};

/// Added to a retired segment's file names, and a deleted partition's directory name,
/// until they are removed (Kafka's `.deleted`): the rename takes them out of the log
/// at once, even across a crash; the start-up scan removes any left behind.
pub const RETIRED_SUFFIX: &str = ".deleted";
/// How long retired files wait before they are removed: time for glommio to close
/// the shard's descriptors, dropped with the segments (it closes on its next I/O
/// cycle), so that the removal, not a close on the shard, frees the file's pages.
const UNLINK_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

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

impl PartitionLog {
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
            s.trim_aborted();
            let start = s.log_start_offset;
            s.epochs.truncate_from_start(start);
        }
        self.retire_oldest(|oldest, _| oldest.next_offset <= target);
        Ok(self.offsets().log_start)
    }

    /// Deletes the oldest segments while `should_go(oldest, log_bytes)` says so, never
    /// the active one; the log start moves to at least the first remaining segment.
    ///
    /// Readers already holding a deleted segment's file keep reading it: the file is
    /// unlinked, and closed when the last reader drops it.
    pub(super) fn retire_oldest(&self, mut should_go: impl FnMut(&Segment, u64) -> bool) -> usize {
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
            s.trim_aborted();
            let start = s.log_start_offset;
            s.epochs.truncate_from_start(start);
            let gone = |base: i64| doomed.iter().any(|d| d.base_offset == base);
            if s.max_timestamp.is_some_and(|m| gone(m.segment_base)) {
                s.max_timestamp = None;
            }
            s.unflushed_files
                .retain(|f| !doomed.iter().any(|d| Rc::ptr_eq(&d.log, f)));
            doomed
        };
        self.retire_segments(doomed)
    }

    /// Takes segments already out of the log off the disk: renamed at once, closed,
    /// removed later (`remove_later`); returns how many. Readers holding their files
    /// keep reading them.
    pub(super) fn retire_segments(&self, doomed: Vec<Segment>) -> usize {
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
            info!(dir = %self.dir.display(), segment = seg.base_offset, bytes = seg.size, "removed a segment");
        }
        let count = doomed.len();
        drop(doomed);
        if !retired.is_empty() {
            remove_later(retired);
        }
        count
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
        self.stop_recovery_points().await;
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
                std::mem::take(&mut s.unsynced_segments),
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

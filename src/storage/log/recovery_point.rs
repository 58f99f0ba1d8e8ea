//! The recovery point: a partition's state at an offset up to which its files are
//! known flushed, stored so that a start after a crash validates only what lies past
//! it instead of every batch of every segment (Kafka's recovery-point checkpoint,
//! together with what Kafka keeps beside it: producer snapshots, the transaction
//! index, the leader-epoch checkpoint).
//!
//! One is taken when a segment rolls (as Kafka flushes a rolled segment) and every
//! `log.flush.offset.checkpoint.interval.ms` (the shard asks every log), always
//! while the partition's writer is between writes, so that the producer state it
//! records is exactly that of the log end. It is stored by a task of its own: the
//! files written since the last one are synced first, then the record replaces the
//! last one atomically. Appends never wait for it. A truncation that may cut below
//! it removes it first; a deleted log stops storing them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::rc::Rc;

use tracing::{debug, warn};

use super::{AbortedTxn, EpochCache, MaxTimestampBatch, PartitionLog, Wakers};
use crate::storage::atomic_file::write_atomic;
use crate::storage::file::{to_io, LogFile};
use crate::storage::producer_state::ProducerStates;
use crate::storage::segment::{IndexFiles, Segment, SegmentSnapshot};

const RECOVERY_POINT: &str = "recovery-point.json";

/// A segment's files: synced before a recovery point that covers them is stored.
pub(super) type SegmentFiles = (Rc<LogFile>, IndexFiles);

/// What is stored: the log as it was at `end_offset`.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RecoveryPoint {
    /// The log end when it was taken; every batch before it was flushed.
    pub end_offset: i64,
    /// Every segment then, oldest first; the last one ends at `end_offset`.
    pub segments: Vec<SegmentSnapshot>,
    pub producers: ProducerStates,
    pub aborted: VecDeque<AbortedTxn>,
    pub max_timestamp: Option<MaxTimestampBatch>,
    pub epochs: EpochCache,
}

impl RecoveryPoint {
    /// The one stored in `dir`, if any can be read.
    pub(super) fn read(dir: &Path) -> Option<RecoveryPoint> {
        let bytes = std::fs::read(dir.join(RECOVERY_POINT)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(point) => Some(point),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "unreadable recovery point; scanning instead");
                None
            }
        }
    }
}

/// One taken and not yet stored.
struct Taken {
    point: RecoveryPoint,
    files: Vec<SegmentFiles>,
    generation: u64,
}

/// A log's recovery-point bookkeeping (one shard's, like the log).
#[derive(Default)]
pub(super) struct RecoveryPoints {
    /// The writer takes one when it finishes its current write.
    wanted: Cell<bool>,
    /// None is taken while a truncation cuts the log, or after the log is deleted.
    paused: Cell<bool>,
    /// The log end of the last one taken: none is taken again at the same end.
    taken_end: Cell<Option<i64>>,
    /// Bumped when taking stops: those taken before are not stored.
    generation: Cell<u64>,
    next: RefCell<Option<Taken>>,
    storing: Cell<bool>,
    stored: Wakers,
}

impl Segment {
    pub(super) fn files(&self) -> SegmentFiles {
        (self.log.clone(), self.index_files())
    }
}

impl PartitionLog {
    /// Takes a recovery point at the log end: now if the writer is between writes,
    /// else when it finishes the current one.
    pub fn take_recovery_point(self: &Rc<Self>) {
        if self.writing.get() {
            self.recovery_points.wanted.set(true);
        } else {
            self.capture_recovery_point();
        }
    }

    /// A segment rolled: its files join those the next recovery point syncs, and the
    /// writer takes one when it finishes this write.
    pub(super) fn rolled_for_recovery_point(&self, previous: SegmentFiles) {
        self.state.borrow_mut().unsynced_segments.push(previous);
        self.recovery_points.wanted.set(true);
    }

    /// The writer is between writes: takes the recovery point asked for, if any.
    pub(super) fn take_wanted_recovery_point(self: &Rc<Self>) {
        if self.recovery_points.wanted.take() {
            self.capture_recovery_point();
        }
    }

    fn capture_recovery_point(self: &Rc<Self>) {
        let rp = &self.recovery_points;
        let mut taken = {
            let mut s = self.state.borrow_mut();
            if rp.paused.get()
                || s.offline
                || s.closed
                || rp.taken_end.get() == Some(s.log_end_offset)
                // Never written: a start scans nothing, so a point (a write and an
                // fdatasync per partition: thousands on a broker of new topics) saves
                // nothing.
                || s.log_end_offset == 0
            {
                return;
            }
            let active = s.segments.values().next_back().expect("a segment").files();
            let mut files = std::mem::take(&mut s.unsynced_segments);
            files.push(active);
            rp.taken_end.set(Some(s.log_end_offset));
            Taken {
                point: RecoveryPoint {
                    end_offset: s.log_end_offset,
                    segments: s.segments.values().map(Segment::snapshot).collect(),
                    producers: s.producers.clone(),
                    aborted: s.aborted.clone(),
                    max_timestamp: s.max_timestamp,
                    epochs: s.epochs.clone(),
                },
                files,
                generation: rp.generation.get(),
            }
        };
        // One not stored yet is superseded; its files still need syncing.
        if let Some(older) = rp.next.borrow_mut().take() {
            for f in older.files {
                if !taken.files.iter().any(|t| Rc::ptr_eq(&t.0, &f.0)) {
                    taken.files.push(f);
                }
            }
        }
        *rp.next.borrow_mut() = Some(taken);
        if !rp.storing.replace(true) {
            let this = self.clone();
            glommio::spawn_local(async move { this.store_recovery_points().await }).detach();
        }
    }

    async fn store_recovery_points(self: Rc<Self>) {
        let rp = &self.recovery_points;
        loop {
            let Some(taken) = rp.next.borrow_mut().take() else {
                break;
            };
            if taken.generation != rp.generation.get() {
                continue;
            }
            // The active segment's index entries are written first, as Kafka flushes
            // the index with the log: a start from this point then need not rebuild
            // them (appends write them only 512 at a time).
            let index = {
                let mut s = self.state.borrow_mut();
                let active = s.segments.values_mut().next_back().expect("a segment");
                active
                    .take_unwritten_index(0)
                    .map(|entries| (active.index_files(), entries))
            };
            if let Some((files, entries)) = index {
                self.write_index_entries(files, entries).await;
            }
            if let Err(e) = sync_files(&taken.files).await {
                warn!(dir = %self.dir.display(), error = %e, "syncing for a recovery point failed; the previous one stays");
                self.state
                    .borrow_mut()
                    .unsynced_segments
                    .extend(taken.files);
                rp.taken_end.set(None);
                continue;
            }
            if taken.generation != rp.generation.get() {
                continue;
            }
            let stored = match serde_json::to_vec(&taken.point) {
                Ok(bytes) => {
                    let dir = self.dir.clone();
                    glommio::executor()
                        .spawn_blocking(move || write_atomic(&dir, RECOVERY_POINT, &bytes))
                        .await
                }
                Err(e) => Err(io::Error::other(e)),
            };
            match stored {
                Ok(()) => {
                    debug!(dir = %self.dir.display(), end_offset = taken.point.end_offset, "stored a recovery point")
                }
                Err(e) => {
                    warn!(dir = %self.dir.display(), error = %e, "storing a recovery point failed; the previous one stays");
                    rp.taken_end.set(None);
                }
            }
        }
        rp.storing.set(false);
        rp.stored.wake_all();
    }

    /// Stops taking recovery points and waits until none is being stored.
    pub(super) async fn stop_recovery_points(&self) {
        let rp = &self.recovery_points;
        rp.paused.set(true);
        rp.generation.set(rp.generation.get() + 1);
        rp.next.borrow_mut().take();
        while rp.storing.get() {
            let _ = rp.stored.wait().await;
        }
    }

    /// Before a truncation: the stored recovery point may lie past the cut, so it goes
    /// (durably: a crash must not bring it back over the cut log), and none is taken
    /// until `restart_recovery_points`.
    pub(super) async fn remove_recovery_point(&self) -> io::Result<()> {
        self.stop_recovery_points().await;
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(
                move || match std::fs::remove_file(dir.join(RECOVERY_POINT)) {
                    Ok(()) => std::fs::File::open(&dir)?.sync_all(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                },
            )
            .await
    }

    /// After a truncation: every segment's files count as unsynced, and recovery
    /// points are taken again.
    pub(super) fn restart_recovery_points(&self) {
        let mut s = self.state.borrow_mut();
        s.unsynced_segments = s.segments.values().map(Segment::files).collect();
        self.recovery_points.taken_end.set(None);
        self.recovery_points.paused.set(false);
    }
}

#[cfg(test)]
impl PartitionLog {
    /// Takes a recovery point at the log end once the writer is idle and waits until
    /// it is stored.
    pub(super) async fn store_recovery_point_now(self: &Rc<Self>) {
        self.writer_done().await;
        self.take_recovery_point();
        while self.recovery_points.storing.get() {
            let _ = self.recovery_points.stored.wait().await;
        }
    }
}

async fn sync_files(files: &[SegmentFiles]) -> io::Result<()> {
    for (log, (offsets, times)) in files {
        log.fdatasync().await?;
        offsets.fdatasync().await.map_err(to_io)?;
        times.fdatasync().await.map_err(to_io)?;
    }
    Ok(())
}

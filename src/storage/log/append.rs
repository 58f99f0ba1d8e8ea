//! Appends: validation, the partition's writer task (batches queued meanwhile go out
//! together in one write), offsets and producer state, the flush policy and the
//! high watermark it holds back, index entries and segment rolls.

use std::io;
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use tracing::{info, warn};

use super::read::CachedBatch;
use super::{AbortedTxn, AppendError, AppendInfo, LogState, MaxTimestampBatch, PartitionLog};
use crate::protocol::batch::{self, BatchHeader};
use crate::protocol::control::{self, Marker};
use crate::storage::file::LogFile;
use crate::storage::producer_state::{CompletedTxn, SavedProducers, SequenceCheck};
use crate::storage::segment::{self, IndexEntries, IndexFiles, Segment};

/// Index entries an append took to write, and the files they go to.
pub(super) type IndexWrite = (IndexFiles, IndexEntries);

/// What a written append waits for before it is acknowledged.
pub(super) enum Durability {
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
pub(super) type Written = Result<(AppendInfo, Durability, Option<IndexWrite>), AppendError>;

/// A validated batch queued for the partition's writer.
pub(super) struct PendingAppend {
    pub(super) batch: Bytes,
    /// Copied from the leader (`append_replicated`): the batch keeps its offsets and
    /// epoch, and the leader has checked its producer's sequence.
    pub(super) replicated: bool,
    pub(super) done: oneshot::Sender<Written>,
}

/// Queued batches written together by one write, at most (a larger batch goes alone).
/// 1 MiB wrote a lone partition 11 % faster, but at the bench's 50 % e2e rate (direct)
/// its p99 was 2.2–15 ms and max 13–47 ms against 1.9–2.7 and 8–11 ms (tuning/README).
const GROUP_BYTES_MAX: usize = 512 << 10;

impl PartitionLog {
    /// Validates and appends one batch (exactly one, as Produce v3+ carries), assigning
    /// its offsets. Appends take effect in the order this function was *called*: the
    /// batch is validated and queued for the partition's writer before the returned
    /// future is first polled.
    pub fn append(
        self: &Rc<Self>,
        batch: Bytes,
    ) -> impl std::future::Future<Output = Result<AppendInfo, AppendError>> + 'static {
        // Validating (CRC-32C included) before queueing keeps it off the writer's path.
        let queued = self.check_batch(&batch).and_then(|()| {
            // Markers are the coordinator's (`append_marker`), never a client's.
            if BatchHeader::new(&batch).expect("validated").is_control() {
                return Err(AppendError::ControlBatchFromClient);
            }
            Ok(self.enqueue(batch, false))
        });
        let this = self.clone();
        async move { this.complete(queued?).await }
    }

    /// Appends a transaction marker (COMMIT or ABORT) for `producer` (id, epoch),
    /// ending its transaction here, as a partition leader does for WriteTxnMarkers.
    /// Refused (`SequenceError`) if the producer's epoch or the coordinator's epoch
    /// is older than the partition has seen.
    pub fn append_marker(
        self: &Rc<Self>,
        producer: (i64, i16),
        marker: Marker,
    ) -> impl std::future::Future<Output = Result<AppendInfo, AppendError>> + 'static {
        let batch = Bytes::from(control::encode_marker(
            producer,
            marker,
            crate::storage::segment::now_ms(),
        ));
        let queued = self.enqueue(batch, false);
        let this = self.clone();
        async move { this.complete(queued).await }
    }

    /// Waits until an enqueued append is written, then writes its index entries and
    /// waits for what its durability asks: its flush, or its original's.
    pub(super) async fn complete(
        &self,
        queued: oneshot::Receiver<Written>,
    ) -> Result<AppendInfo, AppendError> {
        let written = queued.await.map_err(|_| AppendError::Closed)?;
        let (info, durability, index_write) = written?;
        // The writer goes on with later appends while this one writes its index
        // entries and waits for its sync: that is what lets appends share a round.
        if let Some((files, due)) = index_write {
            self.write_index_entries(files, due).await;
        }
        match durability {
            Durability::Done => {}
            Durability::Sync { files, end_offset } => {
                if let Err(e) = self.sync_group.sync(files).await {
                    warn!(dir = %self.dir.display(), error = %e, "fdatasync failed; partition goes offline");
                    self.go_offline();
                    return Err(AppendError::Io(e));
                }
                self.synced(end_offset);
            }
            Durability::Visible(end_offset) => self.visible(end_offset).await?,
        }
        Ok(info)
    }

    /// Returns once the high watermark reaches `end_offset`; fails if the partition
    /// goes offline first (`go_offline` wakes it).
    pub(super) async fn visible(&self, end_offset: i64) -> Result<(), AppendError> {
        loop {
            {
                let s = self.state.borrow();
                if s.flushed_visible_end >= end_offset {
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
    pub(super) fn check_batch(&self, batch: &Bytes) -> Result<(), AppendError> {
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
    pub(super) fn enqueue(
        self: &Rc<Self>,
        batch: Bytes,
        replicated: bool,
    ) -> oneshot::Receiver<Written> {
        let (done, written) = oneshot::channel();
        if self.refusing.get() {
            let _ = done.send(Err(AppendError::Closed));
            return written;
        }
        self.pending.borrow_mut().push_back(PendingAppend {
            batch,
            replicated,
            done,
        });
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
    pub(super) async fn write_pending(self: Rc<Self>) {
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
            self.take_wanted_recovery_point();
        }
        self.writing.set(false);
        self.writer_idle.wake_all();
    }

    /// The next appends to write together: the oldest, and those behind it up to
    /// `GROUP_BYTES_MAX`.
    pub(super) fn take_group(&self) -> Vec<PendingAppend> {
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
    pub(super) async fn writer_done(&self) {
        while self.writing.get() {
            let _ = self.writer_idle.wait().await;
        }
    }

    /// An append's sync is done: everything up to `end_offset` is durable. Rounds
    /// complete in the order they were asked for, so when none is pending any more,
    /// the appends made meanwhile (which did not have to flush) are visible too.
    pub(super) fn synced(&self, end_offset: i64) {
        {
            let mut s = self.state.borrow_mut();
            s.syncs_pending -= 1;
            s.flushed_visible_end = if s.syncs_pending == 0 {
                s.log_end_offset
            } else {
                s.flushed_visible_end.max(end_offset)
            };
        }
        self.wake_waiters();
    }

    /// Takes the files to flush if the policy says a flush is due now: by count, and
    /// with `by_time` by age too. Appends look at the count only: as in Kafka, whose
    /// append flushes on `flush.messages` and leaves `flush.ms` to the periodic
    /// flusher, an acknowledgement never waits for a flush by time.
    pub(super) fn take_due_flush(
        &self,
        s: &mut LogState,
        by_time: bool,
    ) -> Option<Vec<Rc<LogFile>>> {
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
    pub(super) async fn append_run(&self, batches: &[PendingAppend], outcomes: &mut Vec<Written>) {
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
            let first_marker = first
                .is_control()
                .then(|| control::parse_marker(&batches[0].batch))
                .flatten();
            if let Some(answer) = self.answer_without_write(
                &s,
                &first,
                first_marker,
                batches[0].replicated,
                s.log_end_offset,
            ) {
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
        let mut saved = SavedProducers::default();
        // Transactions the markers of this write end, recorded once it lands.
        let mut completed: Vec<CompletedTxn> = Vec::new();
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
                let marker = header
                    .is_control()
                    .then(|| control::parse_marker(&append.batch))
                    .flatten();
                let answer =
                    self.answer_without_write(&s, &header, marker, append.replicated, next_offset);
                if answer.is_none() {
                    // The broker's fields (base offset, leader epoch) go into the header
                    // as it is copied into the buffer handed to the kernel: the one copy
                    // on this path. A replicated batch keeps the leader's.
                    let mut head = [0u8; batch::HEADER_SIZE];
                    head.copy_from_slice(&append.batch[..batch::HEADER_SIZE]);
                    if !append.replicated {
                        batch::assign(&mut head, next_offset, self.leader_epoch.get().0);
                    }
                    let assigned = BatchHeader::new(&head).expect("validated");
                    s.producers.save_once(&assigned, &mut saved);
                    completed.extend(s.producers.update(&assigned, marker));
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
        if !completed.is_empty() {
            let mut s = self.state.borrow_mut();
            let last_stable = s.last_stable_offset();
            s.aborted.extend(
                completed
                    .iter()
                    .filter(|t| t.aborted)
                    .map(|t| AbortedTxn::new(t, last_stable)),
            );
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
    /// offsets, or why the producer's sequence refuses it; for a replicated batch
    /// (whose producer the leader checked), that it does not start at `next_offset`.
    pub(super) fn answer_without_write(
        &self,
        s: &LogState,
        header: &BatchHeader<'_>,
        marker: Option<Marker>,
        replicated: bool,
        next_offset: i64,
    ) -> Option<Written> {
        if replicated {
            return (header.base_offset() != next_offset).then_some(Err(
                AppendError::NotContiguous {
                    expected: next_offset,
                    found: header.base_offset(),
                },
            ));
        }
        match s.producers.check(header, marker) {
            SequenceCheck::Append => None,
            SequenceCheck::Duplicate { base_offset } => {
                let end_offset = base_offset + header.last_offset_delta() as i64 + 1;
                Some(Ok((
                    AppendInfo {
                        base_offset,
                        end_offset,
                        log_start_offset: s.log_start_offset,
                    },
                    Durability::Visible(end_offset),
                    None,
                )))
            }
            SequenceCheck::Reject(code) => Some(Err(AppendError::Sequence(code))),
        }
    }

    /// Whether a batch of `header` at `position` in `active`, after `planned` batches
    /// not yet noted in its index, must go to a new segment: it would pass the size
    /// limit, `segment.ms` has passed, or the index could be full.
    pub(super) fn must_roll(
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
    pub(super) fn landed(
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
            s.epochs.note(header.partition_leader_epoch(), base_offset);
            let hw = s.high_watermark();
            s.producers.forget_stable(hw);
            if flush.is_some() {
                s.syncs_pending += 1;
            } else if s.syncs_pending == 0 {
                s.flushed_visible_end = s.log_end_offset;
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
            let visible = s.flushed_visible_end == s.log_end_offset;
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
                end_offset: header.last_offset() + 1,
                log_start_offset,
            },
            flush,
            index_write,
        )
    }

    /// Writes index entries an append took. Indexes are rebuilt by recovery, so a
    /// failed write loses nothing; a clean shutdown waits for every write under way
    /// (`quiesce`) before it seals the index files and records them as complete.
    pub(super) async fn write_index_entries(&self, files: IndexFiles, entries: IndexEntries) {
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
    pub(super) async fn index_writes_done(&self) {
        while self.index_writes.get() > 0 {
            let _ = self.index_writes_idle.wait().await;
        }
    }

    pub(super) async fn roll(&self, base_offset: i64) -> io::Result<(u64, Rc<LogFile>)> {
        let seg = Segment::create(&self.dir, base_offset, &self.config.get().segment).await?;
        // The new file's directory entry must be durable before data in it can be.
        let dir = self.dir.clone();
        let started = std::time::Instant::now();
        glommio::executor()
            .spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await?;
        let dir_sync_ms = started.elapsed().as_millis() as u64;
        let log = seg.log.clone();
        let (sealed, previous_files) = {
            let mut s = self.state.borrow_mut();
            let previous = s.segments.values_mut().next_back();
            let files = previous.as_ref().map(|p| p.files());
            let handle = previous.map(Segment::seal_handle);
            s.segments.insert(base_offset, seg);
            (handle, files)
        };
        // The previous segment is final: trim its index files (and a direct file's
        // padding). Readers never read past a segment's size, so this is safe under
        // them; a failure only leaves spare bytes, which recovery ignores.
        if let Some(previous) = sealed {
            if let Err(e) = previous.seal().await {
                warn!(dir = %self.dir.display(), error = %e, "trimming a rolled segment failed");
            }
        }
        if let Some(files) = previous_files {
            self.rolled_for_recovery_point(files);
        }
        info!(dir = %self.dir.display(), base_offset, dir_sync_ms, "rolled to a new segment");
        Ok((0, log))
    }
}

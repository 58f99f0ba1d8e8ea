//! What replication needs of a log: appends copied from the leader (batches keep the
//! leader's offsets and epochs), a high watermark driven from outside, the leader
//! epoch cache's answers, and truncation of a follower's divergent tail.
//!
//! Invariant: only the partition's replica fetcher appends to a follower's log, and
//! it does not append while it truncates.

use std::io;
use std::rc::Rc;

use bytes::Bytes;
use tracing::{info, warn};

use super::{AppendError, PartitionLog};
use crate::protocol::batch::{self, BatchHeader};
use crate::storage::producer_state::ProducerStates;
use crate::storage::segment::Segment;

impl PartitionLog {
    /// Appends the whole batches of `records` (a fetch response's records from the
    /// leader; a partial batch at the end is left for the next fetch), each checked
    /// (length, magic, CRC-32C) and kept as the leader wrote it. The first must start
    /// at this log's end. Returns the log end after them. Durable as `append` is:
    /// the flush policy applies to followers too.
    pub async fn append_replicated(self: &Rc<Self>, records: Bytes) -> Result<i64, AppendError> {
        let mut queued = Vec::new();
        let mut position = 0usize;
        while let Some(h) = BatchHeader::new(&records[position..]) {
            let Some(size) = h.span().map(|s| s as usize) else {
                break;
            };
            if position + size > records.len() {
                break;
            }
            let bytes = records.slice(position..position + size);
            batch::validate(&bytes, usize::MAX)?;
            queued.push(self.enqueue(bytes, true));
            position += size;
        }
        for q in queued {
            self.complete(q).await?;
        }
        Ok(self.offsets().log_end)
    }

    /// Caps the high watermark at `end`: what the replicas hold (a leader's minimum
    /// log end over its in-sync replicas, a follower's leader's high watermark).
    /// `i64::MAX` lifts the cap (nobody replicates the log). Waiting readers and
    /// `wait_for_high_watermark` see a raise at once.
    pub fn set_replicated_end(&self, end: i64) {
        let raised = {
            let mut s = self.state.borrow_mut();
            let before = s.high_watermark();
            s.replicated_end = end;
            s.high_watermark() > before
        };
        if raised {
            self.wake_waiters();
        }
    }

    /// Where the high watermark of a replicated log starts after this start
    /// (`LogState::recovered_high_watermark`): a new leadership of a log that was not
    /// replicated since it opened starts there, not at the log end.
    pub fn recovered_high_watermark(&self) -> i64 {
        self.state.borrow().recovered_high_watermark
    }

    /// Raises where the high watermark starts after this start to `offset` (the
    /// node's high-watermark checkpoint), within the log.
    pub fn raise_recovered_high_watermark(&self, offset: i64) {
        let mut s = self.state.borrow_mut();
        let raised = s.recovered_high_watermark.max(offset);
        s.recovered_high_watermark = raised.clamp(s.log_start_offset, s.log_end_offset);
    }

    /// Whether replication caps the high watermark (`set_replicated_end`).
    pub fn is_replicated(&self) -> bool {
        self.state.borrow().replicated_end != i64::MAX
    }

    /// Returns once the high watermark reaches `offset` (acks=all: every in-sync
    /// replica holds the batch ending there); fails if the partition goes offline or
    /// closes first. The caller bounds the wait.
    pub async fn wait_for_high_watermark(&self, offset: i64) -> Result<(), AppendError> {
        loop {
            {
                let s = self.state.borrow();
                if s.high_watermark() >= offset {
                    return Ok(());
                }
                if s.closed {
                    return Err(AppendError::Closed);
                }
                if s.offline {
                    return Err(AppendError::Offline);
                }
            }
            let _ = self.wait_for_append().await;
        }
    }

    /// The newest leader epoch of the log's batches, if it has any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.state.borrow().epochs.latest()
    }

    /// Where leader epoch `epoch` ends in this log (OffsetsForLeaderEpoch, and the
    /// diverging epoch of Fetch): see `EpochCache::end_offset_for`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let s = self.state.borrow();
        s.epochs.end_offset_for(epoch, s.log_end_offset)
    }

    /// Cuts the log so that it ends before `offset`: the batch holding `offset` and
    /// everything after it go (if `offset` falls inside a batch, the log ends at that
    /// batch's start). A follower does this where its log diverged from its leader's.
    /// Nothing at or below the log start is cut; an offset at or past the log end
    /// changes nothing. Returns the new log end.
    pub async fn truncate_to(&self, offset: i64) -> io::Result<i64> {
        self.writer_done().await;
        self.index_writes_done().await;
        let offset = offset.max(self.offsets().log_start);
        if offset >= self.offsets().log_end {
            return Ok(self.offsets().log_end);
        }
        self.remove_recovery_point().await?;
        let cut = self.cut_at(offset).await;
        self.restart_recovery_points();
        cut
    }

    async fn cut_at(&self, offset: i64) -> io::Result<i64> {
        let (doomed, cut) = {
            let mut s = self.state.borrow_mut();
            if offset >= s.log_end_offset {
                return Ok(s.log_end_offset);
            }
            let later: Vec<i64> = s.segments.range(offset + 1..).map(|(b, _)| *b).collect();
            let doomed: Vec<Segment> = later.iter().filter_map(|b| s.segments.remove(b)).collect();
            let (_, holding) = s
                .segments
                .range(..=offset)
                .next_back()
                .expect("a segment at or below the log start");
            (doomed, (holding.base_offset, holding.position_for(offset)))
        };
        let (base, indexed) = cut;
        self.state
            .borrow_mut()
            .unflushed_files
            .retain(|f| !doomed.iter().any(|d| Rc::ptr_eq(&d.log, f)));
        let removed = self.retire_segments(doomed);
        let position = self.batch_position(base, indexed, offset).await?;
        let spec = self.config.get().segment;
        // The old segment stays in place (reads of it past the cut fail as short
        // reads) until the rescanned one replaces it.
        let old_file = self.state.borrow().segments[&base].log.clone();
        old_file.truncate(position).await?;
        let mut scratch = ProducerStates::default();
        let (mut seg, torn) =
            Segment::recover(&self.dir, base, &spec, &mut scratch, |_, _, _| {}).await?;
        if let Some(t) = torn {
            warn!(dir = %self.dir.display(), segment = base, reason = %t.reason, "a cut segment rescanned short");
        }
        seg.commit_recovery().await?;
        let end = seg.next_offset;
        {
            let mut s = self.state.borrow_mut();
            s.unflushed_files.retain(|f| !Rc::ptr_eq(f, &old_file));
            s.unflushed_files.push(seg.log.clone());
            s.segments.insert(base, seg);
            s.log_end_offset = end;
            s.flushed_visible_end = s.flushed_visible_end.min(end);
            s.producers.truncate(end);
            while s.aborted.back().is_some_and(|a| a.last_offset >= end) {
                s.aborted.pop_back();
            }
            s.epochs.truncate_from_end(end);
            if s.max_timestamp.is_some_and(|m| {
                m.segment_base > base || (m.segment_base == base && m.position >= position)
            }) {
                s.max_timestamp = None;
            }
            s.tail_cache = Default::default();
        }
        info!(dir = %self.dir.display(), log_end_offset = end, segments_removed = removed, "truncated the log");
        Ok(end)
    }

    /// Empties the log and starts it again at `offset` (Kafka's
    /// `truncateFullyAndStartAt`): a follower whose log ends before its leader's log
    /// start cannot fetch what lies between, so it keeps nothing of its own and copies
    /// from the leader's log start. Producer state and leader epochs go with the data.
    pub async fn truncate_fully_and_start_at(&self, offset: i64) -> io::Result<()> {
        self.writer_done().await;
        self.index_writes_done().await;
        self.remove_recovery_point().await?;
        let emptied = self.empty_to_start_at(offset).await;
        self.restart_recovery_points();
        emptied
    }

    async fn empty_to_start_at(&self, offset: i64) -> io::Result<()> {
        let spec = self.config.get().segment;
        let fresh = Segment::create(&self.dir, offset, &spec).await?;
        let doomed: Vec<Segment> = {
            let mut s = self.state.borrow_mut();
            let old = std::mem::take(&mut s.segments);
            s.segments.insert(offset, fresh);
            s.log_start_offset = offset;
            s.log_end_offset = offset;
            s.flushed_visible_end = offset;
            s.producers = ProducerStates::default();
            s.aborted.clear();
            s.epochs = Default::default();
            s.max_timestamp = None;
            s.tail_cache = Default::default();
            s.unflushed_files.clear();
            old.into_values()
                .filter(|seg| seg.base_offset != offset)
                .collect()
        };
        let removed = self.retire_segments(doomed);
        info!(dir = %self.dir.display(), log_start_offset = offset, segments_removed = removed, "emptied the log to start at the leader's log start");
        Ok(())
    }

    /// The file position of the batch holding `offset` in the segment at `base`
    /// (from `indexed`, an index position at or below it), or the segment's end.
    async fn batch_position(&self, base: i64, indexed: u64, offset: i64) -> io::Result<u64> {
        let (file, size) = {
            let s = self.state.borrow();
            let seg = &s.segments[&base];
            (seg.log.clone(), seg.size)
        };
        let mut position = indexed;
        while position < size {
            let head = file.read_at(position, batch::HEADER_SIZE).await?;
            let Some(h) = BatchHeader::new(&head) else {
                break;
            };
            if h.last_offset() >= offset {
                return Ok(position);
            }
            position += h.span().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "corrupt batch length")
            })?;
        }
        Ok(size.min(position))
    }
}

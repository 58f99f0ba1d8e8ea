//! Reads: whole batches below the high watermark for fetches (from the tail cache,
//! as a file range to sendfile, or read into memory), and the timestamp lookups of
//! ListOffsets.

use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use bytes::Bytes;

use super::{LogState, PartitionLog, ReadError};
use crate::protocol::batch::{self, BatchHeader};
use crate::protocol::chunk::{Chunk, FileRange};
use crate::protocol::records;
use crate::storage::file::LogFile;

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Consumers: up to the high watermark.
    HighWatermark,
    /// Followers: up to the log end, which they must hold before it is committed.
    LogEnd,
    /// read_committed consumers: up to the last stable offset.
    LastStable,
}

impl ReadBound {
    fn end(self, s: &LogState) -> i64 {
        match self {
            ReadBound::HighWatermark => s.high_watermark(),
            ReadBound::LogEnd => s.log_end_offset,
            ReadBound::LastStable => s.last_stable_offset(),
        }
    }
}

/// Reads for fetch go in blocks at least this large, to limit I/Os per fetch.
const READ_BLOCK_BYTES: usize = 64 << 10;

/// The newest batches of the log, as stored, so that consumers reading at the tail are
/// served from memory. With direct writes the page cache holds nothing fresh, so this
/// is what keeps a caught-up consumer off the disk. Always a contiguous run of batches
/// ending at the log end. A batch is kept as its header (with the broker's fields
/// written in) and its body, a slice of the produce request: caching costs no copy of
/// record data.
#[derive(Default)]
pub(super) struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
}

pub(super) struct CachedBatch {
    pub(super) base_offset: i64,
    pub(super) last_offset: i64,
    pub(super) head: Bytes,
    pub(super) body: Bytes,
}

impl CachedBatch {
    pub(super) fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

impl TailCache {
    pub(super) fn push(&mut self, batch: CachedBatch, cap: usize) {
        self.bytes += batch.len();
        self.batches.push_back(batch);
        while self.bytes > cap {
            let Some(old) = self.batches.pop_front() else {
                break;
            };
            self.bytes -= old.len();
        }
    }

    pub(super) fn holds(&self, offset: i64) -> bool {
        self.batches
            .front()
            .is_some_and(|b| offset >= b.base_offset)
    }

    /// Whole batches from the one holding `offset` and ending before `visible_end`,
    /// up to `max_bytes` (at least one if `min_one_batch`); `None` if `offset` is
    /// older than the cache.
    pub(super) fn read(
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

/// A batch header whose length no batch can have, found where a batch should start.
fn corrupt_header(position: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt batch header at position {position}: impossible length"),
    )
}

impl PartitionLog {
    /// As `read`, for a fetch response: with `zero_copy`, batches in the page cache
    /// come back as a file range, which the connection sendfiles; otherwise (or when a
    /// part of them is not cached, or the file is direct) as bytes read into memory.
    pub async fn read_chunks(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        zero_copy: bool,
        bound: ReadBound,
    ) -> Result<Vec<Chunk>, ReadError> {
        if zero_copy {
            if let Some(range) = self.cached_range(offset, max_bytes, min_one_batch, bound)? {
                return Ok(vec![Chunk::File(range)]);
            }
        }
        let pieces = self
            .read_bounded(offset, max_bytes, min_one_batch, bound)
            .await?;
        Ok(pieces.into_iter().map(Chunk::Bytes).collect())
    }

    /// The file range of the batches `read` would return, found without waiting for
    /// the device: batch headers are read only if cached (`read_cached`), and so is
    /// the range's last byte. `None` whenever that is not so, or the case is one
    /// `read` handles (the tail cache, the log end, errors): the caller then reads.
    pub(super) fn cached_range(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        bound: ReadBound,
    ) -> Result<Option<FileRange>, ReadError> {
        let s = self.state.borrow();
        let visible_end = bound.end(&s);
        if s.offline || offset < s.log_start_offset || offset >= visible_end {
            return Ok(None);
        }
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
        self.read_bounded(offset, max_bytes, min_one_batch, ReadBound::HighWatermark)
            .await
    }

    /// As `read`, up to `bound`.
    pub async fn read_bounded(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        bound: ReadBound,
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
            let visible_end = bound.end(&s);
            if offset >= visible_end {
                return Ok(Vec::new());
            }
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

    /// Calls `f` with every whole batch from the log start to the log end, in order
    /// (a coordinator replaying its partition when it becomes the leader).
    pub async fn for_each_batch(&self, mut f: impl FnMut(&[u8])) -> io::Result<()> {
        let mut offset = self.offsets().log_start;
        loop {
            let pieces = self
                .read_bounded(offset, 4 << 20, true, ReadBound::LogEnd)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            if pieces.is_empty() {
                return Ok(());
            }
            let bytes: Vec<u8> = pieces.concat();
            let mut at = 0;
            while let Some(h) = BatchHeader::new(&bytes[at..]) {
                let size = h.total_size() as usize;
                if at + size > bytes.len() {
                    break;
                }
                offset = h.last_offset() + 1;
                f(&bytes[at..at + size]);
                at += size;
            }
        }
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
}

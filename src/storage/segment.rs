//! One segment of a partition log: a `.log` file holding RecordBatch v2 bytes exactly
//! as served to consumers (written buffered or direct, see `file`), a sparse `.index`
//! of (relative offset, position) pairs, 8 bytes per entry, and a sparse `.timeindex`
//! of (max timestamp so far, relative offset) pairs, 12 bytes per entry, as in Kafka.
//! Index files are created at their maximum size (sparse, as Kafka's `setLength`) and
//! trimmed to their entries when the segment is sealed (roll, clean shutdown).
//!
//! Invariants: `size` covers only whole batches that were validated (at append or by
//! recovery); readers never read past it. Index entries are strictly increasing.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, OpenOptions};
use serde::{Deserialize, Serialize};

pub use super::file::{to_io, write_all_at};
use super::file::{LogFile, WriteMode};
use super::producer_state::{CompletedTxn, ProducerStates};
use crate::protocol::batch::{self, BatchHeader};
use crate::protocol::control;

/// How much a recovery scan reads per I/O.
const SCAN_CHUNK_BYTES: usize = 4 << 20;
const OFFSET_ENTRY_BYTES: u64 = 8;
const TIME_ENTRY_BYTES: u64 = 12;
/// Offset entries an append lets wait in memory before it writes them (4 KiB of
/// them): one io_uring write per this many batches rather than per batch. The files
/// matter only after a clean shutdown (recovery rebuilds them otherwise), and sealing
/// writes whatever is left.
pub const INDEX_ENTRIES_PER_WRITE: usize = 512;

/// How a partition's segments are written and indexed.
#[derive(Debug, Clone, Copy)]
pub struct SegmentSpec {
    pub write_mode: WriteMode,
    pub index_interval_bytes: u64,
    /// Largest index file (`segment.index.bytes`); a full index rolls the segment.
    pub index_size_max_bytes: u64,
}

pub fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

pub fn time_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.timeindex"))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Kafka's time-based roll: the incoming batch's timestamp minus the segment's first
/// batch timestamp, or the segment's age by the wall clock if it has no timestamps.
pub fn waited_for_roll_ms(seg: &Segment, incoming_max_timestamp: i64) -> i64 {
    if seg.first_batch_timestamp >= 0 {
        incoming_max_timestamp.saturating_sub(seg.first_batch_timestamp)
    } else {
        now_ms() - seg.opened_ms
    }
}

async fn open_index(path: &Path, truncate: bool) -> io::Result<BufferedFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .buffered_open(path)
        .await
        .map_err(to_io)
}

/// A read-ahead buffer for the recovery scan: large sequential reads, re-filled
/// whenever a requested range is not wholly inside it.
struct ScanWindow {
    start: u64,
    bytes: Vec<u8>,
}

impl ScanWindow {
    async fn get(
        &mut self,
        file: &LogFile,
        pos: u64,
        len: usize,
        file_size: u64,
    ) -> io::Result<&[u8]> {
        let end = pos + len as u64;
        if pos < self.start || end > self.start + self.bytes.len() as u64 {
            let want = (len.max(SCAN_CHUNK_BYTES) as u64).min(file_size - pos) as usize;
            let read = file.read_at(pos, want).await?;
            if read.len() < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "short read during recovery",
                ));
            }
            self.start = pos;
            self.bytes = read.to_vec();
        }
        let from = (pos - self.start) as usize;
        Ok(&self.bytes[from..from + len])
    }
}

/// What a recovery scan found wrong at the tail of a segment.
#[derive(Debug)]
pub struct TornTail {
    pub position: u64,
    pub file_size: u64,
    pub reason: String,
    /// Only zero bytes follow the last good batch: block padding of a direct write or
    /// space allocated but never written, not damage.
    pub zeros_only: bool,
}

/// What a clean shutdown records about a segment, so the next start can skip the scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentSnapshot {
    pub base_offset: i64,
    pub size: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub max_timestamp_offset: i64,
    pub first_batch_timestamp: i64,
}

pub struct Segment {
    pub base_offset: i64,
    pub log: Rc<LogFile>,
    index_file: Rc<BufferedFile>,
    time_index_file: Rc<BufferedFile>,
    /// Bytes of whole, validated batches.
    pub size: u64,
    /// Offset after the last batch in this segment.
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// The last offset of the batch carrying `max_timestamp`: what the next time-index
    /// entry records (Kafka's `maxTimestampAndOffsetSoFar`).
    max_timestamp_offset: i64,
    /// Max timestamp of the first batch (-1: none yet), and when this segment was
    /// created or opened: what time-based rolling measures from, as in Kafka.
    pub first_batch_timestamp: i64,
    pub opened_ms: i64,
    index: Vec<(u32, u32)>,
    time_index: Vec<(i64, u32)>,
    /// How many of `index` and `time_index` have been handed to writes of the files.
    index_written: usize,
    time_index_written: usize,
    bytes_since_index_entry: u64,
}

/// A segment's offset and time index files.
pub type IndexFiles = (Rc<BufferedFile>, Rc<BufferedFile>);

/// Index entries taken from memory to be written to the index files: each file's
/// entries encoded, and the file position they go to.
pub struct IndexEntries {
    offset: (u64, Vec<u8>),
    time: (u64, Vec<u8>),
}

fn encode_offset_entry((rel, position): (u32, u32)) -> [u8; 8] {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&rel.to_be_bytes());
    buf[4..].copy_from_slice(&position.to_be_bytes());
    buf
}

fn decode_offset_entry(e: &[u8]) -> (u32, u32) {
    let rel = u32::from_be_bytes(e[..4].try_into().expect("4 bytes"));
    let position = u32::from_be_bytes(e[4..8].try_into().expect("4 bytes"));
    (rel, position)
}

fn decode_time_entry(e: &[u8]) -> (i64, u32) {
    let timestamp = i64::from_be_bytes(e[..8].try_into().expect("8 bytes"));
    let rel = u32::from_be_bytes(e[8..12].try_into().expect("4 bytes"));
    (timestamp, rel)
}

fn encode_time_entry((timestamp, rel): (i64, u32)) -> [u8; 12] {
    let mut buf = [0u8; 12];
    buf[..8].copy_from_slice(&timestamp.to_be_bytes());
    buf[8..].copy_from_slice(&rel.to_be_bytes());
    buf
}

impl Segment {
    /// Creates a fresh, empty segment starting at `base_offset`.
    pub async fn create(dir: &Path, base_offset: i64, spec: &SegmentSpec) -> io::Result<Segment> {
        let log = LogFile::open(&log_path(dir, base_offset), spec.write_mode, true).await?;
        let index_file = open_index(&index_path(dir, base_offset), true).await?;
        let time_index_file = open_index(&time_index_path(dir, base_offset), true).await?;
        // Kafka's preallocation: full size up front (sparse), trimmed at seal.
        index_file
            .truncate(spec.index_size_max_bytes)
            .await
            .map_err(to_io)?;
        time_index_file
            .truncate(spec.index_size_max_bytes)
            .await
            .map_err(to_io)?;
        Ok(Segment::holding_nothing_yet(
            base_offset,
            log,
            index_file,
            time_index_file,
        ))
    }

    /// A segment over open files, before any batch has been appended or recovered.
    fn holding_nothing_yet(
        base_offset: i64,
        log: LogFile,
        index_file: BufferedFile,
        time_index_file: BufferedFile,
    ) -> Segment {
        Segment {
            base_offset,
            log: Rc::new(log),
            index_file: Rc::new(index_file),
            time_index_file: Rc::new(time_index_file),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            max_timestamp_offset: -1,
            first_batch_timestamp: -1,
            opened_ms: now_ms(),
            index: Vec::new(),
            time_index: Vec::new(),
            index_written: 0,
            time_index_written: 0,
            bytes_since_index_entry: 0,
        }
    }

    async fn open_files(dir: &Path, base_offset: i64, spec: &SegmentSpec) -> io::Result<Segment> {
        let log = LogFile::open(&log_path(dir, base_offset), spec.write_mode, false).await?;
        let index_file = open_index(&index_path(dir, base_offset), false).await?;
        let time_index_file = open_index(&time_index_path(dir, base_offset), false).await?;
        Ok(Segment::holding_nothing_yet(
            base_offset,
            log,
            index_file,
            time_index_file,
        ))
    }

    /// Opens an existing segment and validates every batch in it (length, magic,
    /// CRC-32C, offsets increasing). Reports where the first bad batch starts, but
    /// changes no file: the caller decides (`commit_recovery` for the active segment,
    /// or leaving a damaged older segment untouched).
    pub async fn recover(
        dir: &Path,
        base_offset: i64,
        spec: &SegmentSpec,
        producers: &mut ProducerStates,
        on_batch: impl FnMut(&BatchHeader<'_>, u64, Option<CompletedTxn>),
    ) -> io::Result<(Segment, Option<TornTail>)> {
        let mut seg = Segment::open_files(dir, base_offset, spec).await?;
        let file_size = seg.log.file_size().await?;
        let (torn, _) = seg
            .scan(0, file_size, base_offset, spec, producers, on_batch)
            .await?;
        Ok((seg, torn))
    }

    /// Opens a segment that a recovery point recorded up to `known` (its size and next
    /// offset then) and validates what lies past it, as `recover` does; the batches
    /// before it are trusted, being flushed before the recovery point was stored. Their
    /// index entries come from the index file: its longest plausible prefix, the last
    /// entry of which is where a short rescan (index entries only) starts, since the
    /// entries the recovery point covers may not all have reached the file. `None` if
    /// the file does not hold what `known` says (shorter, or no batch boundary there,
    /// or damage before it): the caller then scans the whole log.
    pub async fn resume(
        dir: &Path,
        known: &SegmentSnapshot,
        spec: &SegmentSpec,
        producers: &mut ProducerStates,
        on_batch: impl FnMut(&BatchHeader<'_>, u64, Option<CompletedTxn>),
    ) -> io::Result<Option<(Segment, Option<TornTail>)>> {
        let base = known.base_offset;
        let mut seg = Segment::open_files(dir, base, spec).await?;
        let file_size = seg.log.file_size().await?;
        if file_size < known.size {
            return Ok(None);
        }
        let span = known.next_offset - base;
        let mut kept = read_plausible_prefix(
            &seg.index_file,
            OFFSET_ENTRY_BYTES,
            decode_offset_entry,
            |&(rel, pos)| i64::from(rel) < span && u64::from(pos) < known.size,
        )
        .await?;
        // The scan starts at the last kept entry's batch and writes that entry again.
        let (start_rel, start_pos) = kept.pop().unwrap_or((0, 0));
        // The index files are written apart, so the time index may lack entries for
        // batches before the scan's start. Its lookups stay right if the scan starts
        // from the largest timestamp up to the point instead of the largest before
        // its start: a time entry (t, r) needs only that no record before offset r
        // has a timestamp of t or more, which holds for the offset where the
        // segment's largest timestamp was first reached.
        let times = read_plausible_prefix(
            &seg.time_index_file,
            TIME_ENTRY_BYTES,
            decode_time_entry,
            |&(ts, rel)| ts >= 0 && ts <= known.max_timestamp && rel < start_rel,
        )
        .await?;
        seg.max_timestamp = known.max_timestamp;
        seg.max_timestamp_offset = known.max_timestamp_offset;
        seg.index = kept;
        seg.time_index = times;
        seg.size = u64::from(start_pos);
        seg.next_offset = base + i64::from(start_rel);
        seg.first_batch_timestamp = known.first_batch_timestamp;
        // An entry is due at the first batch scanned.
        seg.bytes_since_index_entry = spec.index_interval_bytes;
        let (torn, first_past) = seg
            .scan(
                u64::from(start_pos),
                file_size,
                known.next_offset,
                spec,
                producers,
                on_batch,
            )
            .await?;
        // The batches before `known` were all there, and the next one starts at it.
        let as_known = match first_past {
            Some(at) => at == (known.size, known.next_offset),
            None => seg.size == known.size && seg.next_offset == known.next_offset,
        };
        Ok(as_known.then_some((seg, torn)))
    }

    /// Validates the batches from byte `pos` to `file_size`, noting each in the segment
    /// (size, next offset, indexes); those from offset `state_from` on also go to
    /// `producers` and `on_batch`. Returns where the first bad batch starts, if any,
    /// and where the first batch from `state_from` on is (position, base offset).
    async fn scan(
        &mut self,
        mut pos: u64,
        file_size: u64,
        state_from: i64,
        spec: &SegmentSpec,
        producers: &mut ProducerStates,
        mut on_batch: impl FnMut(&BatchHeader<'_>, u64, Option<CompletedTxn>),
    ) -> io::Result<(Option<TornTail>, Option<(u64, i64)>)> {
        let mut window = ScanWindow {
            start: 0,
            bytes: Vec::new(),
        };
        let mut torn = None;
        let mut first_past = None;
        while pos < file_size {
            let tear = move |reason: String| {
                Some(TornTail {
                    position: pos,
                    file_size,
                    reason,
                    zeros_only: false,
                })
            };
            if file_size - pos < batch::HEADER_SIZE as u64 {
                torn = tear(format!(
                    "{} trailing bytes, shorter than a batch header",
                    file_size - pos
                ));
                break;
            }
            let header = window
                .get(&self.log, pos, batch::HEADER_SIZE, file_size)
                .await?;
            let size = BatchHeader::new(header).map_or(0, |h| h.total_size());
            if size < batch::HEADER_SIZE as i64 || pos + size as u64 > file_size {
                torn = tear(format!("batch length {size} runs past the end of the file"));
                break;
            }
            let bytes = window.get(&self.log, pos, size as usize, file_size).await?;
            match batch::validate(bytes, usize::MAX) {
                Err(e) => {
                    torn = tear(e.to_string());
                    break;
                }
                Ok(h) if h.base_offset() < self.next_offset => {
                    torn = tear(format!(
                        "offset {} does not follow {}",
                        h.base_offset(),
                        self.next_offset - 1
                    ));
                    break;
                }
                Ok(h) => {
                    if h.base_offset() >= state_from {
                        first_past.get_or_insert((pos, h.base_offset()));
                        let marker = h
                            .is_control()
                            .then(|| control::parse_marker(bytes))
                            .flatten();
                        let completed = producers.update(&h, marker);
                        on_batch(&h, pos, completed);
                    }
                    self.note_append(&h, pos, spec.index_interval_bytes);
                    pos += size as u64;
                }
            }
        }
        if let Some(t) = torn.as_mut() {
            t.zeros_only = only_zeros_from(&self.log, t.position, file_size).await?;
        }
        self.size = torn.as_ref().map_or(file_size, |t| t.position);
        Ok((torn, first_past))
    }

    /// Opens a segment from what a clean shutdown recorded, reading its index files
    /// instead of scanning the log. `None` if the files do not match the record (the
    /// caller then recovers by scanning).
    pub async fn load(
        dir: &Path,
        snapshot: &SegmentSnapshot,
        spec: &SegmentSpec,
    ) -> io::Result<Option<Segment>> {
        let mut seg = Segment::open_files(dir, snapshot.base_offset, spec).await?;
        if seg.log.file_size().await? != snapshot.size {
            return Ok(None);
        }
        let Some(index) =
            read_entries(&seg.index_file, OFFSET_ENTRY_BYTES, decode_offset_entry).await?
        else {
            return Ok(None);
        };
        let Some(time_index) =
            read_entries(&seg.time_index_file, TIME_ENTRY_BYTES, decode_time_entry).await?
        else {
            return Ok(None);
        };
        let span = (snapshot.next_offset - snapshot.base_offset) as u64;
        let index_ok = index.windows(2).all(|w| w[0] < w[1])
            && index.iter().all(|&(rel, pos)| {
                (rel as u64) < span.max(1) && (pos as u64) < snapshot.size.max(1)
            });
        let time_ok = time_index.windows(2).all(|w| w[0] < w[1])
            && time_index
                .iter()
                .all(|&(_, rel)| (rel as u64) < span.max(1));
        if !index_ok || !time_ok {
            return Ok(None);
        }
        seg.log.truncate(snapshot.size).await?;
        seg.size = snapshot.size;
        seg.next_offset = snapshot.next_offset;
        seg.max_timestamp = snapshot.max_timestamp;
        seg.max_timestamp_offset = snapshot.max_timestamp_offset;
        seg.first_batch_timestamp = snapshot.first_batch_timestamp;
        seg.bytes_since_index_entry = index.last().map_or(seg.size, |e| seg.size - e.1 as u64);
        seg.index_written = index.len();
        seg.time_index_written = time_index.len();
        seg.index = index;
        seg.time_index = time_index;
        Ok(Some(seg))
    }

    pub fn snapshot(&self) -> SegmentSnapshot {
        SegmentSnapshot {
            base_offset: self.base_offset,
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            max_timestamp_offset: self.max_timestamp_offset,
            first_batch_timestamp: self.first_batch_timestamp,
        }
    }

    /// Makes a recovered segment's files match what recovery validated: cuts the log
    /// at `seg.size` (dropping a torn or corrupt tail) and rewrites the indexes.
    pub async fn commit_recovery(&mut self) -> io::Result<()> {
        self.log.truncate(self.size).await?;
        // Everything recovery indexed is rewritten from the files' start.
        self.index_written = 0;
        self.time_index_written = 0;
        let unwritten = self.take_unwritten_index(0);
        finish_index_files(self.index_files(), unwritten, self.index_sizes()).await
    }

    /// Bytes of the offset and time index files' entries.
    fn index_sizes(&self) -> (u64, u64) {
        (
            self.index.len() as u64 * OFFSET_ENTRY_BYTES,
            self.time_index.len() as u64 * TIME_ENTRY_BYTES,
        )
    }

    /// What sealing needs, so that it can run after the log's state is released:
    /// with it go the index entries not yet written.
    pub fn seal_handle(&mut self) -> SealHandle {
        SealHandle {
            unwritten: self.take_unwritten_index(0),
            log: self.log.clone(),
            index_files: self.index_files(),
            index_sizes: self.index_sizes(),
        }
    }

    /// True if another index entry would not fit in `segment.index.bytes`: the
    /// segment must roll first, as in Kafka.
    /// Whether both indexes can take `entries` more entries.
    pub fn index_has_room(&self, spec: &SegmentSpec, entries: usize) -> bool {
        let entries = entries as u64;
        (self.index.len() as u64 + entries) * OFFSET_ENTRY_BYTES <= spec.index_size_max_bytes
            && (self.time_index.len() as u64 + entries) * TIME_ENTRY_BYTES
                <= spec.index_size_max_bytes
    }

    /// Bookkeeping after a batch of `h` landed at `position`, index entries (in
    /// memory) included.
    pub fn note_append(&mut self, h: &BatchHeader<'_>, position: u64, index_interval_bytes: u64) {
        let size = h.total_size() as u64;
        if h.max_timestamp() > self.max_timestamp {
            self.max_timestamp = h.max_timestamp();
            self.max_timestamp_offset = h.last_offset();
        }
        if self.index.is_empty() || self.bytes_since_index_entry >= index_interval_bytes {
            self.index
                .push(((h.base_offset() - self.base_offset) as u32, position as u32));
            self.bytes_since_index_entry = 0;
            // Kafka's rule: a time entry goes with an offset entry when the max
            // timestamp has grown since the last time entry.
            let grew = self
                .time_index
                .last()
                .is_none_or(|&(ts, _)| self.max_timestamp > ts);
            if self.max_timestamp >= 0 && grew {
                self.time_index.push((
                    self.max_timestamp,
                    (self.max_timestamp_offset - self.base_offset) as u32,
                ));
            }
        }
        self.bytes_since_index_entry += size;
        self.size = position + size;
        self.next_offset = h.last_offset() + 1;
        if self.first_batch_timestamp < 0 && position == 0 {
            self.first_batch_timestamp = h.max_timestamp();
        }
    }

    /// The index entries not yet handed to a write, once at least `min_entries`
    /// offset entries wait (0: any entry); they count as written from here on.
    pub fn take_unwritten_index(&mut self, min_entries: usize) -> Option<IndexEntries> {
        let offsets = &self.index[self.index_written..];
        let times = &self.time_index[self.time_index_written..];
        if offsets.len() < min_entries || (offsets.is_empty() && times.is_empty()) {
            return None;
        }
        let entries = IndexEntries {
            offset: (
                self.index_written as u64 * OFFSET_ENTRY_BYTES,
                offsets
                    .iter()
                    .flat_map(|&e| encode_offset_entry(e))
                    .collect(),
            ),
            time: (
                self.time_index_written as u64 * TIME_ENTRY_BYTES,
                times.iter().flat_map(|&e| encode_time_entry(e)).collect(),
            ),
        };
        self.index_written = self.index.len();
        self.time_index_written = self.time_index.len();
        Some(entries)
    }

    /// The index files, for writing entries after the segment's state is released.
    pub fn index_files(&self) -> IndexFiles {
        (self.index_file.clone(), self.time_index_file.clone())
    }

    /// Writes entries taken by `take_unwritten_index` to the index files.
    pub async fn write_index_entries(
        (offset_file, time_file): IndexFiles,
        entries: IndexEntries,
    ) -> io::Result<()> {
        for (file, (pos, bytes)) in [(offset_file, entries.offset), (time_file, entries.time)] {
            if !bytes.is_empty() {
                write_all_at(&file, bytes.len(), pos, |from| bytes[from..].to_vec()).await?;
            }
        }
        Ok(())
    }

    /// Byte position from which to scan for `offset`: the last index entry at or
    /// below it.
    pub fn position_for(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).max(0) as u32;
        match self.index.partition_point(|(r, _)| *r <= rel) {
            0 => 0,
            i => self.index[i - 1].1 as u64,
        }
    }

    /// The start of the last indexed batch at or below byte `position` (0 if none):
    /// a batch boundary, found without reading the log.
    pub fn batch_start_at_or_below(&self, position: u64) -> u64 {
        match self
            .index
            .partition_point(|(_, p)| u64::from(*p) <= position)
        {
            0 => 0,
            i => u64::from(self.index[i - 1].1),
        }
    }

    /// Byte position from which to scan for the first record with a timestamp at or
    /// after `timestamp`: every record before the last time entry at or below it is
    /// no newer than that entry, so the scan may start at its offset.
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        match self.time_index.partition_point(|(ts, _)| *ts <= timestamp) {
            0 => 0,
            i => self.position_for(self.base_offset + self.time_index[i - 1].1 as i64),
        }
    }
}

/// A segment's files and sizes, for trimming it once it will not be appended to again
/// (roll, clean shutdown).
pub struct SealHandle {
    unwritten: Option<IndexEntries>,
    log: Rc<LogFile>,
    index_files: IndexFiles,
    index_sizes: (u64, u64),
}

impl SealHandle {
    /// Writes the index entries not yet written, then trims index files to their
    /// entries and a direct log file to its data.
    pub async fn seal(self) -> io::Result<()> {
        self.log.seal().await?;
        finish_index_files(self.index_files, self.unwritten, self.index_sizes).await
    }
}

/// Writes `unwritten` entries, then cuts each index file to `sizes` (offset, time):
/// what sealing and recovery's commit leave behind.
async fn finish_index_files(
    files: IndexFiles,
    unwritten: Option<IndexEntries>,
    (index_bytes, time_index_bytes): (u64, u64),
) -> io::Result<()> {
    if let Some(entries) = unwritten {
        Segment::write_index_entries(files.clone(), entries).await?;
    }
    let (offset_file, time_file) = files;
    offset_file.truncate(index_bytes).await.map_err(to_io)?;
    time_file.truncate(time_index_bytes).await.map_err(to_io)
}

/// Reads a whole index file as fixed-size entries; `None` if its size is not a
/// multiple of the entry size.
async fn read_entries<T>(
    file: &BufferedFile,
    entry_bytes: u64,
    decode: impl Fn(&[u8]) -> T,
) -> io::Result<Option<Vec<T>>> {
    let size = file.file_size().await.map_err(to_io)?;
    if size % entry_bytes != 0 {
        return Ok(None);
    }
    read_whole_entries(file, size, entry_bytes, decode).await
}

/// The longest prefix of an unsealed index file's entries that is strictly increasing
/// and passes `fits`: what of it can be trusted (its preallocated tail is zeros, and
/// entries may be lost with a crash). Read in chunks, so the zeros past the entries
/// are mostly not read.
async fn read_plausible_prefix<T: PartialOrd + Copy>(
    file: &BufferedFile,
    entry_bytes: u64,
    decode: impl Fn(&[u8]) -> T,
    fits: impl Fn(&T) -> bool,
) -> io::Result<Vec<T>> {
    // A multiple of both entry sizes (8 and 12 bytes).
    const CHUNK: u64 = 96 * 1024;
    let size = file.file_size().await.map_err(to_io)?;
    let whole = size - size % entry_bytes;
    let mut kept: Vec<T> = Vec::new();
    let mut pos = 0;
    while pos < whole {
        let len = CHUNK.min(whole - pos);
        let bytes = file.read_at(pos, len as usize).await.map_err(to_io)?;
        for e in bytes.chunks_exact(entry_bytes as usize).map(&decode) {
            if !fits(&e) || kept.last().is_some_and(|last| *last >= e) {
                return Ok(kept);
            }
            kept.push(e);
        }
        if (bytes.len() as u64) < len {
            break;
        }
        pos += len;
    }
    Ok(kept)
}

async fn read_whole_entries<T>(
    file: &BufferedFile,
    size: u64,
    entry_bytes: u64,
    decode: impl Fn(&[u8]) -> T,
) -> io::Result<Option<Vec<T>>> {
    if size == 0 {
        return Ok(Some(Vec::new()));
    }
    let bytes = file.read_at(0, size as usize).await.map_err(to_io)?;
    if bytes.len() as u64 != size {
        return Ok(None);
    }
    Ok(Some(
        bytes
            .chunks_exact(entry_bytes as usize)
            .map(decode)
            .collect(),
    ))
}

/// True if `file` holds only zero bytes from `from` to `to`.
async fn only_zeros_from(file: &LogFile, from: u64, to: u64) -> io::Result<bool> {
    let mut pos = from;
    while pos < to {
        let len = ((to - pos) as usize).min(SCAN_CHUNK_BYTES);
        let read = file.read_at(pos, len).await?;
        if read.is_empty() {
            break;
        }
        if read.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += read.len() as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lookup_floors() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let dir = std::env::temp_dir().join(format!("ringlog-seg-{}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let spec = SegmentSpec {
                    write_mode: WriteMode::Buffered,
                    index_interval_bytes: 4096,
                    index_size_max_bytes: 1 << 20,
                };
                let mut seg = Segment::create(&dir, 100, &spec).await.unwrap();
                seg.index = vec![(0, 0), (10, 4096), (25, 9000)];
                seg.time_index = vec![(1_000, 9), (2_000, 24), (3_000, 30)];
                // Before the first time entry: from the start.
                assert_eq!(seg.position_for_timestamp(999), 0);
                // Records up to offset 109 are <= 1000: scan from the entry's batch.
                assert_eq!(seg.position_for_timestamp(1_000), 0);
                assert_eq!(seg.position_for_timestamp(2_500), 4096);
                assert_eq!(seg.position_for_timestamp(9_999), 9000);
                assert_eq!(seg.position_for(100), 0);
                assert_eq!(seg.position_for(109), 0);
                assert_eq!(seg.position_for(110), 4096);
                assert_eq!(seg.position_for(124), 4096);
                assert_eq!(seg.position_for(500), 9000);
                std::fs::remove_dir_all(&dir).unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

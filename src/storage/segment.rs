//! One segment of a partition log: a `.log` file holding RecordBatch v2 bytes exactly
//! as served to consumers, and a sparse `.index` of (relative offset, position) pairs,
//! 8 bytes per entry as in Kafka. Files go through glommio's io_uring buffered I/O.
//!
//! Invariants: `size` covers only whole batches that were validated (at append or by
//! recovery); readers never read past it. Index entries are strictly increasing.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, OpenOptions};

use super::fault;
use super::producer_state::ProducerStates;
use crate::protocol::batch::{self, BatchHeader};

/// How much a recovery scan reads per I/O.
const SCAN_CHUNK_BYTES: usize = 4 << 20;

pub fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
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

pub fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

async fn open_rw(path: &Path, truncate: bool) -> io::Result<BufferedFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .buffered_open(path)
        .await
        .map_err(to_io)
}

/// Writes `len` bytes at `pos`. `copy_from(i)` yields an owned copy of the bytes from
/// `i` on: glommio's `write_at` takes ownership of its buffer, so the normal case costs
/// exactly one copy and only a short write makes another (of the remainder).
pub async fn write_all_at(
    file: &BufferedFile,
    len: usize,
    pos: u64,
    copy_from: impl Fn(usize) -> Vec<u8>,
) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let mut buf = copy_from(done);
        // The fault seam: a no-op unless a test enabled injection (see `fault`).
        let failure = match fault::before_write(buf.len()) {
            fault::WriteFault::None => None,
            fault::WriteFault::Short(n) => {
                buf.truncate(n);
                None
            }
            fault::WriteFault::Fail { written, errno } => {
                buf.truncate(written);
                Some(fault::error(errno))
            }
        };
        let written = if buf.is_empty() {
            0
        } else {
            file.write_at(buf, pos + done as u64).await.map_err(to_io)?
        };
        if let Some(e) = failure {
            return Err(e);
        }
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write returned 0 bytes",
            ));
        }
        done += written;
    }
    Ok(())
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
        file: &BufferedFile,
        pos: u64,
        len: usize,
        file_size: u64,
    ) -> io::Result<&[u8]> {
        let end = pos + len as u64;
        if pos < self.start || end > self.start + self.bytes.len() as u64 {
            let want = (len.max(SCAN_CHUNK_BYTES) as u64).min(file_size - pos) as usize;
            let read = file.read_at(pos, want).await.map_err(to_io)?;
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
}

pub struct Segment {
    pub base_offset: i64,
    pub log: Rc<BufferedFile>,
    index_file: Rc<BufferedFile>,
    /// Bytes of whole, validated batches.
    pub size: u64,
    /// Offset after the last batch in this segment.
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// Max timestamp of the first batch (-1: none yet), and when this segment was
    /// created or opened: what time-based rolling measures from, as in Kafka.
    pub first_batch_timestamp: i64,
    pub opened_ms: i64,
    index: Vec<(u32, u32)>,
    bytes_since_index_entry: u64,
}

/// Where a batch was appended, for the log's bookkeeping.
pub struct Appended {
    pub position: u64,
    pub index_entry: Option<(u32, u32)>,
}

impl Segment {
    /// Creates a fresh, empty segment starting at `base_offset`.
    pub async fn create(dir: &Path, base_offset: i64) -> io::Result<Segment> {
        let log = open_rw(&log_path(dir, base_offset), true).await?;
        let index_file = open_rw(&index_path(dir, base_offset), true).await?;
        Ok(Segment::holding_nothing_yet(base_offset, log, index_file))
    }

    /// A segment over open files, before any batch has been appended or recovered.
    fn holding_nothing_yet(
        base_offset: i64,
        log: BufferedFile,
        index_file: BufferedFile,
    ) -> Segment {
        Segment {
            base_offset,
            log: Rc::new(log),
            index_file: Rc::new(index_file),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            first_batch_timestamp: -1,
            opened_ms: now_ms(),
            index: Vec::new(),
            bytes_since_index_entry: 0,
        }
    }

    /// Opens an existing segment and validates every batch in it (length, magic,
    /// CRC-32C, offsets increasing). Reports where the first bad batch starts, but
    /// changes no file: the caller decides (`commit_recovery` for the active segment,
    /// or leaving a damaged older segment untouched).
    pub async fn recover(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        producers: &mut ProducerStates,
        mut on_batch: impl FnMut(&BatchHeader<'_>, u64),
    ) -> io::Result<(Segment, Option<TornTail>)> {
        let log = open_rw(&log_path(dir, base_offset), false).await?;
        let file_size = log.file_size().await.map_err(to_io)?;
        let index_file = open_rw(&index_path(dir, base_offset), false).await?;
        let mut seg = Segment::holding_nothing_yet(base_offset, log, index_file);
        let mut window = ScanWindow {
            start: 0,
            bytes: Vec::new(),
        };
        let mut torn = None;
        let mut pos = 0u64;
        while pos < file_size {
            let tear = move |reason: String| {
                Some(TornTail {
                    position: pos,
                    file_size,
                    reason,
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
                .get(&seg.log, pos, batch::HEADER_SIZE, file_size)
                .await?;
            let size = BatchHeader::new(header).map_or(0, |h| h.total_size());
            if size < batch::HEADER_SIZE as i64 || pos + size as u64 > file_size {
                torn = tear(format!("batch length {size} runs past the end of the file"));
                break;
            }
            let bytes = window.get(&seg.log, pos, size as usize, file_size).await?;
            match batch::validate(bytes, usize::MAX) {
                Err(e) => {
                    torn = tear(e.to_string());
                    break;
                }
                Ok(h) if h.base_offset() < seg.next_offset => {
                    torn = tear(format!(
                        "offset {} does not follow {}",
                        h.base_offset(),
                        seg.next_offset - 1
                    ));
                    break;
                }
                Ok(h) => {
                    producers.update(&h);
                    on_batch(&h, pos);
                    seg.note_append(&h, pos, index_interval_bytes);
                    pos += size as u64;
                }
            }
        }
        seg.size = torn.as_ref().map_or(file_size, |t| t.position);
        Ok((seg, torn))
    }

    /// Makes a recovered segment's files match what recovery validated: cuts the log
    /// at `seg.size` (dropping a torn or corrupt tail) and rewrites the index.
    pub async fn commit_recovery(&self) -> io::Result<()> {
        self.log.truncate(self.size).await.map_err(to_io)?;
        self.write_whole_index().await?;
        self.index_file
            .truncate(self.index.len() as u64 * 8)
            .await
            .map_err(to_io)
    }

    async fn write_whole_index(&self) -> io::Result<()> {
        if self.index.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(self.index.len() * 8);
        for (rel, position) in &self.index {
            buf.extend_from_slice(&rel.to_be_bytes());
            buf.extend_from_slice(&position.to_be_bytes());
        }
        write_all_at(&self.index_file, buf.len(), 0, |from| buf[from..].to_vec()).await
    }

    /// Bookkeeping after a batch of `h` landed at `position`; returns a new index
    /// entry if one is due.
    pub fn note_append(
        &mut self,
        h: &BatchHeader<'_>,
        position: u64,
        index_interval_bytes: u64,
    ) -> Appended {
        let size = h.total_size() as u64;
        let mut index_entry = None;
        if self.index.is_empty() || self.bytes_since_index_entry >= index_interval_bytes {
            let entry = ((h.base_offset() - self.base_offset) as u32, position as u32);
            self.index.push(entry);
            self.bytes_since_index_entry = 0;
            index_entry = Some(entry);
        }
        self.bytes_since_index_entry += size;
        self.size = position + size;
        self.next_offset = h.last_offset() + 1;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp());
        if self.first_batch_timestamp < 0 && position == 0 {
            self.first_batch_timestamp = h.max_timestamp();
        }
        Appended {
            position,
            index_entry,
        }
    }

    /// Appends one index entry to the `.index` file.
    pub async fn write_index_entry(
        index_file: &BufferedFile,
        slot: usize,
        entry: (u32, u32),
    ) -> io::Result<()> {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&entry.0.to_be_bytes());
        buf[4..].copy_from_slice(&entry.1.to_be_bytes());
        write_all_at(index_file, 8, slot as u64 * 8, |from| buf[from..].to_vec()).await
    }

    pub fn index_file(&self) -> Rc<BufferedFile> {
        self.index_file.clone()
    }

    pub fn index_len(&self) -> usize {
        self.index.len()
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
                let mut seg = Segment::create(&dir, 100).await.unwrap();
                seg.index = vec![(0, 0), (10, 4096), (25, 9000)];
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

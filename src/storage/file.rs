//! A segment's `.log` file, written in one of the two modes `ringlog.log.write.mode`
//! selects:
//!
//! - **buffered**: glommio's io_uring buffered file. Writes land in the page cache
//!   (what Kafka relies on: fresh data is hot for consumers, and sendfile can serve it).
//!   Small appends are written inline on the shard's thread unless that blocked lately
//!   (`inline_write`: io_uring would hand each to a worker thread).
//!   Space is preallocated ahead of the appends (`fallocate` with `KEEP_SIZE`), as in
//!   direct mode: without it, ext4's delayed allocation makes every append take the
//!   inode's block-map lock, which writeback holds while it allocates the blocks of
//!   earlier appends, and an append then waited up to hundreds of milliseconds behind
//!   a busy disk. Into preallocated blocks an append takes no such lock.
//! - **direct**: `O_DIRECT` through glommio's `DmaFile`. Writes bypass the page cache,
//!   so they pollute nothing and cost no kernel copy, but must be whole aligned blocks:
//!   the partial block at the end of the log is kept in memory and written again,
//!   followed by the new bytes and zero padding, with the next append. The zero padding
//!   past the logical end is never read as data (readers stop at the segment's size;
//!   recovery cuts it). Writes are aligned to the file system's block, and space is
//!   preallocated in large steps *inside* the file's size, so that ext4 can issue an
//!   append's write without blocking and io_uring need not hand it to a worker thread
//!   (see `DirectFile::append`).
//!
//! In both modes sealing a segment (roll, shutdown) trims the file to its logical size,
//! which frees the preallocated space past it; recovery's cut does the same.
//!
//! Both modes read with `read_at` (direct reads go to the device; the partition's tail
//! cache keeps fresh data hot, see `log`), sync with `fdatasync`, and pass every write
//! through the fault seam (`fault`).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions, ReadResult};

use super::{fault, inline_write};

/// Log files are preallocated ahead of the write position by as much as they already
/// hold, within these bounds: a busy partition allocates 32 MiB at a time, while a
/// quiet one (of thousands on a broker) holds at most twice its data, and 1 MiB more.
const PREALLOCATE_STEP_MIN_BYTES: u64 = 1 << 20;
const PREALLOCATE_STEP_MAX_BYTES: u64 = 32 << 20;

/// The largest block a direct file aligns its writes to (a file system reporting a
/// larger preferred size, such as a RAID stripe, gets the device's alignment instead).
const MAX_BLOCK_BYTES: u64 = 64 << 10;

/// Zero padding for the last block of a direct write.
static ZEROS: [u8; MAX_BLOCK_BYTES as usize] = [0; MAX_BLOCK_BYTES as usize];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Buffered,
    Direct,
}

impl std::str::FromStr for WriteMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "buffered" => Ok(WriteMode::Buffered),
            "direct" => Ok(WriteMode::Direct),
            _ => Err("expected buffered or direct".into()),
        }
    }
}

pub fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

pub struct LogFile {
    inner: Inner,
    /// A duplicate descriptor of a buffered file that other shards may hold: fetch
    /// responses carry it to the connection, which sendfiles from it.
    shared: std::cell::OnceCell<Option<Arc<File>>>,
}

enum Inner {
    Buffered(BufferedLog),
    Direct(DirectFile),
}

struct BufferedLog {
    file: BufferedFile,
    space: Preallocation,
}

struct DirectFile {
    file: DmaFile,
    /// Writes start and end on multiples of this: the larger of the device's direct
    /// I/O alignment (its logical block, often 512 bytes) and the file system's block.
    /// A write that covers part of a file system block makes ext4 take the inode lock
    /// exclusively and wait for the write to finish, and io_uring hands every such
    /// write to a worker thread.
    block: u64,
    /// Logical end: the bytes of the log. The file may extend past it (zero padding
    /// to the block, preallocated space).
    end: Cell<u64>,
    /// The bytes of the block holding `end`, from the block's start to `end`.
    tail: RefCell<Vec<u8>>,
    space: Preallocation,
}

impl LogFile {
    /// Opens (creating if missing) a log file. A direct file opened over existing data
    /// knows its end only after `truncate` (recovery's commit) sets it.
    pub async fn open(path: &Path, mode: WriteMode, truncate: bool) -> io::Result<LogFile> {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate);
        let inner = match mode {
            WriteMode::Buffered => Inner::Buffered(BufferedLog {
                file: options.buffered_open(path).await.map_err(to_io)?,
                space: Preallocation::default(),
            }),
            WriteMode::Direct => {
                if let Some(dir) = path.parent() {
                    prime_direct_io(dir).await?;
                }
                let file = options.dma_open(path).await.map_err(to_io)?;
                let fs_block = fs_block_size(file.as_raw_fd());
                let block = if fs_block > file.alignment()
                    && fs_block.is_multiple_of(file.alignment())
                    && fs_block <= MAX_BLOCK_BYTES
                {
                    fs_block
                } else {
                    file.alignment()
                };
                Inner::Direct(DirectFile {
                    file,
                    block,
                    end: Cell::new(0),
                    tail: RefCell::new(Vec::new()),
                    space: Preallocation::default(),
                })
            }
        };
        Ok(LogFile {
            inner,
            shared: std::cell::OnceCell::new(),
        })
    }

    /// A handle on this file that any shard may hold, for sendfile; `None` for a
    /// direct file (its data is not in the page cache, so sendfile would read the
    /// device synchronously) or if no descriptor is left.
    pub fn shared_handle(&self) -> Option<Arc<File>> {
        let Inner::Buffered(b) = &self.inner else {
            return None;
        };
        self.shared
            .get_or_init(|| {
                // SAFETY: dup of a descriptor this file owns; the copy is owned by the
                // returned File alone.
                let fd = unsafe { libc::dup(b.file.as_raw_fd()) };
                (fd >= 0).then(|| Arc::new(unsafe { File::from_raw_fd(fd) }))
            })
            .clone()
    }

    /// Reads `buf.len()` bytes at `pos` if, and only if, all of them are in the page
    /// cache (`preadv2` with `RWF_NOWAIT`, which never waits for the device): the
    /// synchronous read is then a memory copy and cannot stall the shard. `false`
    /// when they are not (or the file is direct).
    pub fn read_cached(&self, pos: u64, buf: &mut [u8]) -> io::Result<bool> {
        let Inner::Buffered(b) = &self.inner else {
            return Ok(false);
        };
        if let Some(e) = fault::before_read() {
            return Err(e);
        }
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: one iovec over `buf`, which outlives the call.
        let n = unsafe { libc::preadv2(b.file.as_raw_fd(), &iov, 1, pos as i64, libc::RWF_NOWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) => Ok(false),
                _ => Err(e),
            };
        }
        Ok(n as usize == buf.len())
    }

    pub async fn file_size(&self) -> io::Result<u64> {
        match &self.inner {
            Inner::Buffered(b) => b.file.file_size().await.map_err(to_io),
            Inner::Direct(d) => d.file.file_size().await.map_err(to_io),
        }
    }

    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<ReadResult> {
        // No read of a segment is larger than a segment (log.segment.bytes is an
        // int). A larger length came from damaged bytes; glommio would try to
        // allocate it and, past 2^63, loop forever in its buffer allocator.
        if len > i32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("refusing a {len}-byte read at {pos}: no segment is that large"),
            ));
        }
        if let Some(e) = fault::before_read() {
            return Err(e);
        }
        match &self.inner {
            Inner::Buffered(b) => b.file.read_at(pos, len).await.map_err(to_io),
            Inner::Direct(d) => d.file.read_at(pos, len).await.map_err(to_io),
        }
    }

    /// Writes `parts` (concatenated) at `pos`, the log's end.
    pub async fn append(&self, pos: u64, parts: &[&[u8]]) -> io::Result<()> {
        match &self.inner {
            Inner::Buffered(b) => {
                let len: usize = parts.iter().map(|p| p.len()).sum();
                b.space
                    .cover(pos + len as u64, |target| b.file.pre_allocate(target, true))
                    .await;
                if inline_write::enabled(len) {
                    return inline_write::write(b.file.as_raw_fd(), pos, parts, len);
                }
                write_all_at(&b.file, len, pos, |from| concat_from(parts, from)).await
            }
            Inner::Direct(d) => d.append(pos, parts).await,
        }
    }

    /// Cuts the file to `size`, which becomes the log's end.
    pub async fn truncate(&self, size: u64) -> io::Result<()> {
        match &self.inner {
            Inner::Buffered(b) => {
                b.file.truncate(size).await.map_err(to_io)?;
                b.space.cut();
                Ok(())
            }
            Inner::Direct(d) => {
                d.file.truncate(size).await.map_err(to_io)?;
                d.space.cut();
                let block = d.align_down(size);
                let tail = if size > block {
                    let read = d.file.read_at(block, (size - block) as usize).await;
                    let read = read.map_err(to_io)?;
                    if read.len() as u64 != size - block {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "short read of the tail block",
                        ));
                    }
                    read.to_vec()
                } else {
                    Vec::new()
                };
                d.end.set(size);
                *d.tail.borrow_mut() = tail;
                Ok(())
            }
        }
    }

    /// Trims what a direct file holds past its logical end (padding, preallocated
    /// space); a segment that will not be appended to again is sealed.
    pub async fn seal(&self) -> io::Result<()> {
        match &self.inner {
            Inner::Buffered(b) => {
                if b.space.used() {
                    let size = b.file.file_size().await.map_err(to_io)?;
                    self.truncate(size).await?;
                }
                Ok(())
            }
            Inner::Direct(d) => {
                d.file.truncate(d.end.get()).await.map_err(to_io)?;
                d.space.cut();
                Ok(())
            }
        }
    }

    pub async fn fdatasync(&self) -> io::Result<()> {
        if let Some(e) = fault::before_sync() {
            return Err(e);
        }
        match &self.inner {
            Inner::Buffered(b) => b.file.fdatasync().await.map_err(to_io),
            Inner::Direct(d) => d.file.fdatasync().await.map_err(to_io),
        }
    }
}

/// The file system's block size for `fd` (`st_blksize`), 0 if unknown.
fn fs_block_size(fd: std::os::fd::RawFd) -> u64 {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills `st` on success; it is read only then.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return 0;
    }
    let size = unsafe { st.assume_init() }.st_blksize;
    u64::try_from(size).unwrap_or(0)
}

thread_local! {
    /// Devices on which this thread's glommio has already probed for polled I/O.
    static PRIMED_DEVICES: RefCell<std::collections::HashSet<u64>> = RefCell::default();
}

/// Works around glommio 0.9's probe for polled I/O (IOPOLL): on a thread's first
/// `DmaFile` per device it reads block 0 of the file being opened and takes success
/// as support. On an empty file the kernel answers that read without touching the
/// device, so glommio wrongly turns IOPOLL on, and every later read of data fails with
/// EOPNOTSUPP on devices that cannot poll (such as virtio disks). Opening a file that
/// holds a block first makes the probe real.
async fn prime_direct_io(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(dir)?.dev();
    if PRIMED_DEVICES.with(|p| p.borrow().contains(&device)) {
        return Ok(());
    }
    let probe = dir.join(format!(
        ".direct-io-probe-{:?}",
        std::thread::current().id()
    ));
    std::fs::write(&probe, vec![0u8; 4096])?;
    let opened = OpenOptions::new().read(true).dma_open(&probe).await;
    let _ = std::fs::remove_file(&probe);
    opened.map_err(to_io)?.close().await.map_err(to_io)?;
    PRIMED_DEVICES.with(|p| p.borrow_mut().insert(device));
    Ok(())
}

/// How far a log file's space is allocated ahead of its appends (`fallocate`, a step
/// at a time; see `PREALLOCATE_STEP_MIN_BYTES`; buffered files keep their size,
/// direct files grow to cover the space). Only a hint for
/// speed: where `fallocate` fails (unsupported, or the disk is full) the appends still
/// work, allocating as they go, and it is tried again one step later, not per append.
#[derive(Default)]
struct Preallocation {
    /// Allocated (or tried) up to here since the file was last cut (0: nothing).
    allocated: Cell<u64>,
}

impl Preallocation {
    /// Makes sure space is allocated up to `stop`, a step past it when not. Awaited
    /// by the append: a `fallocate` takes the inode's lock, which the append's write
    /// would wait for anyway (tried in a task of its own ahead of the appends: no
    /// better).
    async fn cover<F>(&self, stop: u64, fallocate: impl FnOnce(u64) -> F)
    where
        F: std::future::Future<Output = glommio::Result<(), ()>>,
    {
        if stop > self.allocated.get() {
            let step = stop.clamp(PREALLOCATE_STEP_MIN_BYTES, PREALLOCATE_STEP_MAX_BYTES);
            let target = stop + step;
            let _ = fallocate(target).await;
            self.allocated.set(target);
        }
    }

    /// The file was cut (which frees the space past the cut).
    fn cut(&self) {
        self.allocated.set(0);
    }

    fn used(&self) -> bool {
        self.allocated.get() > 0
    }
}

/// Copies `bytes` into `out`, whose buffers are taken as one run of bytes, from
/// position `at` of that run on; returns the position after them.
fn copy_across(out: &mut [&mut [u8]], at: usize, bytes: &[u8]) -> usize {
    let (mut pos, mut rest, mut base) = (at, bytes, 0);
    for o in out.iter_mut() {
        let end = base + o.len();
        if !rest.is_empty() && pos < end {
            let from = pos - base;
            let n = rest.len().min(o.len() - from);
            o[from..from + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            pos += n;
        }
        base = end;
    }
    debug_assert!(rest.is_empty(), "bytes past the buffers");
    pos
}

/// An owned copy of `parts` (concatenated) from byte `from` on.
fn concat_from(parts: &[&[u8]], mut from: usize) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len.saturating_sub(from));
    for p in parts {
        if from >= p.len() {
            from -= p.len();
            continue;
        }
        out.extend_from_slice(&p[from..]);
        from = 0;
    }
    out
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
        // The fault seam: a no-op unless a test enabled injection (see `fault`).
        let (limit, failure) = fault::plan_write(len - done);
        let mut buf = copy_from(done);
        buf.truncate(limit);
        let written = if buf.is_empty() {
            0
        } else {
            file.write_at(buf, pos + done as u64).await.map_err(to_io)?
        };
        fault::after_write(written, failure)?;
        done += written;
    }
    Ok(())
}

impl DirectFile {
    fn align_down(&self, v: u64) -> u64 {
        v - v % self.block
    }

    fn align_up(&self, v: u64) -> u64 {
        self.align_down(v + self.block - 1)
    }

    async fn append(&self, pos: u64, parts: &[&[u8]]) -> io::Result<()> {
        if pos != self.end.get() {
            return Err(io::Error::other(format!(
                "direct append at {pos}, but the log ends at {}",
                self.end.get()
            )));
        }
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let start = self.align_down(pos);
        let stop = self.align_up(pos + len);
        // Preallocated space is inside the file's size (no KEEP_SIZE): a write that
        // extends the file makes ext4 take the inode lock exclusively and wait for
        // the write, so io_uring would hand every append to a worker thread.
        self.space
            .cover(stop, |target| self.file.pre_allocate(target, false))
            .await;
        // The block holding `pos` was written by the previous append, the blocks after
        // it only preallocated (unwritten). ext4 issues a write without blocking only
        // if all of it is one kind, so the two parts are written separately, at once.
        let split = if start < pos && stop > start + self.block {
            start + self.block
        } else {
            stop
        };
        // The one copy on this path: request bytes into the aligned DMA buffers.
        let mut head = self.file.alloc_dma_buffer((split - start) as usize);
        let mut rest = (split < stop).then(|| self.file.alloc_dma_buffer((stop - split) as usize));
        {
            let mut out: [&mut [u8]; 2] = [
                head.as_bytes_mut(),
                rest.as_mut().map_or(&mut [][..], |r| r.as_bytes_mut()),
            ];
            let tail = self.tail.borrow();
            let mut at = 0;
            for bytes in std::iter::once(&tail[..]).chain(parts.iter().copied()) {
                at = copy_across(&mut out, at, bytes);
            }
            copy_across(&mut out, at, &ZEROS[..(stop - start) as usize - at]);
        }
        let head = Rc::new(head);
        let rest = rest.map(Rc::new);
        match &rest {
            None => self.write_blocks(&head, start).await?,
            Some(rest) => {
                futures::future::try_join(
                    self.write_blocks(&head, start),
                    self.write_blocks(rest, split),
                )
                .await?;
            }
        }
        let end = pos + len;
        let block = self.align_down(end);
        let (holder, holder_start) = match &rest {
            Some(rest) if block >= split => (rest, split),
            _ => (&head, start),
        };
        let bytes = holder.as_bytes();
        *self.tail.borrow_mut() =
            bytes[(block - holder_start) as usize..(end - holder_start) as usize].to_vec();
        self.end.set(end);
        Ok(())
    }

    /// Writes all of `buf` at `start` (both block-aligned). A short write goes on from
    /// the last whole block written.
    async fn write_blocks(&self, buf: &Rc<DmaBuffer>, start: u64) -> io::Result<()> {
        let total = buf.len();
        let mut done = 0usize;
        while done < total {
            let from = self.align_down(done as u64) as usize;
            let remaining = total - from;
            let (want, failure) = fault::plan_write(remaining);
            // Direct writes are whole blocks: a fault's cut rounds down to one.
            let want = self.align_down(want as u64) as usize;
            let written = if want == 0 {
                0
            } else if from == 0 && want == total {
                self.file
                    .write_rc_at(buf.clone(), start)
                    .await
                    .map_err(to_io)?
            } else {
                let mut part = self.file.alloc_dma_buffer(want);
                part.as_bytes_mut()
                    .copy_from_slice(&buf.as_bytes()[from..from + want]);
                self.file
                    .write_at(part, start + from as u64)
                    .await
                    .map_err(to_io)?
            };
            if let Some(e) = failure {
                return Err(e);
            }
            if written == 0 && want > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "write returned 0 bytes",
                ));
            }
            done = from + written;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::on_executor_in_scratch_dir;

    #[test]
    fn concat_from_skips_across_parts() {
        let parts: [&[u8]; 3] = [b"abc", b"", b"defg"];
        assert_eq!(concat_from(&parts, 0), b"abcdefg");
        assert_eq!(concat_from(&parts, 2), b"cdefg");
        assert_eq!(concat_from(&parts, 3), b"defg");
        assert_eq!(concat_from(&parts, 5), b"fg");
        assert_eq!(concat_from(&parts, 7), b"");
    }

    #[test]
    fn copy_across_fills_buffers_as_one_run() {
        let (mut a, mut b) = ([0u8; 3], [0u8; 4]);
        let mut out: [&mut [u8]; 2] = [&mut a, &mut b];
        let at = copy_across(&mut out, 0, b"ab");
        let at = copy_across(&mut out, at, b"cde");
        assert_eq!(copy_across(&mut out, at, b"fg"), 7);
        assert_eq!((&a, &b), (b"abc", b"defg"));
    }

    /// Appends allocate space a step ahead (so that they take no block-allocation
    /// locks); sealing gives back what lies past the log's end.
    #[test]
    fn appends_preallocate_and_sealing_frees_the_rest() {
        use std::os::unix::fs::MetadataExt;
        on_executor_in_scratch_dir("prealloc", |dir| async move {
            for mode in [WriteMode::Buffered, WriteMode::Direct] {
                let path = dir.join(format!("{mode:?}.log"));
                let file = LogFile::open(&path, mode, true).await.unwrap();
                let allocated = || std::fs::metadata(&path).unwrap().blocks() * 512;
                // A small file allocates the least step ahead.
                file.append(0, &[&[7u8; 10_000]]).await.unwrap();
                let small = allocated();
                assert!(small > PREALLOCATE_STEP_MIN_BYTES, "{mode:?}: {small}");
                assert!(small < 2 * PREALLOCATE_STEP_MIN_BYTES, "{mode:?}: {small}");
                // A large one allocates the largest step (at most twice its size).
                let big = vec![7u8; 40 << 20];
                file.append(10_000, &[&big]).await.unwrap();
                let size = 10_000 + big.len() as u64;
                let large = allocated();
                assert!(
                    large >= size + PREALLOCATE_STEP_MAX_BYTES,
                    "{mode:?}: {large}"
                );
                file.seal().await.unwrap();
                let meta = std::fs::metadata(&path).unwrap();
                assert_eq!(meta.len(), size, "{mode:?}");
                assert!(meta.blocks() * 512 < size + (1 << 20), "{mode:?}");
                let read = file.read_at(0, size as usize).await.unwrap();
                assert!(read.iter().all(|&b| b == 7));
            }
        });
    }

    /// Appends of odd sizes in direct mode read back exactly, across block boundaries,
    /// after a reopen, and after cutting the end back.
    #[test]
    fn direct_appends_keep_the_partial_tail_block() {
        on_executor_in_scratch_dir("direct", |dir| async move {
            let path = dir.join("seg.log");
            let file = LogFile::open(&path, WriteMode::Direct, true).await.unwrap();
            let mut expected = Vec::new();
            for i in 0..40u32 {
                let chunk: Vec<u8> = (0..(i * 397 % 5000 + 1))
                    .map(|j| (i * 31 + j) as u8)
                    .collect();
                let pos = expected.len() as u64;
                let (a, b) = chunk.split_at(chunk.len() / 3);
                file.append(pos, &[a, b]).await.unwrap();
                expected.extend_from_slice(&chunk);
            }
            let read = file.read_at(0, expected.len()).await.unwrap();
            assert_eq!(&read[..], &expected[..]);
            // Padding and preallocation go at seal; the size is the log's.
            file.seal().await.unwrap();
            assert_eq!(file.file_size().await.unwrap(), expected.len() as u64);
            drop(file);
            let file = LogFile::open(&path, WriteMode::Direct, false)
                .await
                .unwrap();
            let cut = expected.len() as u64 - 1234;
            file.truncate(cut).await.unwrap();
            expected.truncate(cut as usize);
            file.append(cut, &[b"after the cut"]).await.unwrap();
            expected.extend_from_slice(b"after the cut");
            let read = file.read_at(0, expected.len()).await.unwrap();
            assert_eq!(&read[..], &expected[..]);
            assert!(file.append(0, &[b"not at the end"]).await.is_err());
        });
    }
}

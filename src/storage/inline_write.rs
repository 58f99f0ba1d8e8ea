//! Buffered appends written with `pwritev(2)` on the shard's own thread.
//!
//! ext4 refuses to write to the page cache without the right to block (no
//! `RWF_NOWAIT` for buffered writes), so io_uring hands every buffered write to one of
//! its worker threads: a switch to that thread and back, a wake-up of the sleeping
//! shard for the completion (each sleep costs glommio a process-wide memory barrier),
//! and first a copy of the bytes into a buffer glommio owns. For the small appends
//! most producers make, that was most of an append's CPU (tuning/README.md, "Small
//! batches"). Written inline, an append is one copy into the page cache, from the
//! request's own bytes.
//!
//! Only appends up to `MAX_BYTES` go inline: a larger one amortises the hand-off, and
//! copying it (with fresh pages to fault in) would hold the shard's other connections
//! for longer. (In the bench's large-batch rows all-inline measured within noise,
//! except the 8-partition 1 KiB row, 128 KiB batches: 10–25 % lower in two of three
//! runs, so those stay on io_uring.)
//!
//! A write to the page cache does block when the kernel throttles writers that dirty
//! pages faster than the disk takes them, and a blocked shard holds up every
//! connection it serves. So an inline write that took longer than `SLOW` sends the
//! shard's buffered appends back through io_uring for `PAUSE`.

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::fault;

/// Far longer than copying the largest batch into the page cache takes: the write
/// waited for something.
const SLOW: Duration = Duration::from_millis(2);
const PAUSE: Duration = Duration::from_secs(1);
/// The largest append written inline.
pub const MAX_BYTES: usize = 96 << 10;
/// At most this many pieces per `pwritev` (appends have a few).
const MAX_IOVECS: usize = 64;

thread_local! {
    static PAUSED_UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Whether this shard writes a buffered append of `len` bytes inline now.
pub fn enabled(len: usize) -> bool {
    if len > MAX_BYTES {
        return false;
    }
    PAUSED_UNTIL.with(|p| match p.get() {
        Some(until) if Instant::now() < until => false,
        Some(_) => {
            p.set(None);
            true
        }
        None => true,
    })
}

/// Writes `parts` (concatenated, `len` bytes) at `pos` of `fd`, all of them or an
/// error, through the fault seam as `file::write_all_at`.
pub fn write(fd: RawFd, pos: u64, parts: &[&[u8]], len: usize) -> io::Result<()> {
    let started = Instant::now();
    let result = write_all(fd, pos, parts, len);
    if started.elapsed() > SLOW {
        tracing::debug!(
            micros = started.elapsed().as_micros() as u64,
            "a buffered append blocked; appends go through io_uring for a while"
        );
        pause(PAUSE);
    }
    result
}

/// This shard's buffered appends go through io_uring for `period`.
pub fn pause(period: Duration) {
    PAUSED_UNTIL.with(|p| p.set(Some(Instant::now() + period)));
}

fn write_all(fd: RawFd, pos: u64, parts: &[&[u8]], len: usize) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let (limit, failure) = fault::plan_write(len - done);
        let written = if limit == 0 {
            0
        } else {
            pwritev(fd, pos + done as u64, &iovecs(parts, done, limit))?
        };
        fault::after_write(written, failure)?;
        done += written;
    }
    Ok(())
}

/// The pieces of `parts` from byte `from` on, at most `limit` bytes.
fn iovecs(parts: &[&[u8]], mut from: usize, mut limit: usize) -> Vec<libc::iovec> {
    let mut out = Vec::with_capacity(parts.len().min(MAX_IOVECS));
    for p in parts {
        if from >= p.len() {
            from -= p.len();
            continue;
        }
        if limit == 0 || out.len() == MAX_IOVECS {
            break;
        }
        let piece = &p[from..][..(p.len() - from).min(limit)];
        from = 0;
        limit -= piece.len();
        out.push(libc::iovec {
            iov_base: piece.as_ptr() as *mut libc::c_void,
            iov_len: piece.len(),
        });
    }
    out
}

fn pwritev(fd: RawFd, pos: u64, iov: &[libc::iovec]) -> io::Result<usize> {
    loop {
        // SAFETY: each iovec points into a slice of `parts`, alive for this call.
        let n = unsafe { libc::pwritev(fd, iov.as_ptr(), iov.len() as i32, pos as i64) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn pieces_cover_exactly_the_bytes_asked_for() {
        let parts: [&[u8]; 3] = [b"abc", b"de", b"fghij"];
        let bytes = |from, limit| -> Vec<u8> {
            iovecs(&parts, from, limit)
                .iter()
                .flat_map(|v| unsafe {
                    std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len).to_vec()
                })
                .collect()
        };
        assert_eq!(bytes(0, 10), b"abcdefghij");
        assert_eq!(bytes(2, 10), b"cdefghij");
        assert_eq!(bytes(3, 3), b"def");
        assert_eq!(bytes(9, 5), b"j");
        assert_eq!(bytes(4, 0), b"");
    }

    #[test]
    fn an_inline_write_lands_at_its_position() {
        let dir = std::env::temp_dir().join(format!("inline-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let file = std::fs::File::create(&path).unwrap();
        write(file.as_raw_fd(), 0, &[b"hello ", b"world"], 11).unwrap();
        write(file.as_raw_fd(), 6, &[b"there"], 5).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello there");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

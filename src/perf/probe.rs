//! This machine's own limits, measured in the same run as the workloads so that the
//! broker's numbers can be read as fractions of them: one loopback TCP stream, large
//! sequential `O_DIRECT` writes, and `fdatasync` latency after a small append.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const CHUNK_BYTES: usize = 1 << 20;

/// MB/s of one loopback TCP stream over `duration`.
pub fn loopback_mb_per_s(duration: Duration) -> io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = std::thread::spawn(move || -> io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let chunk = vec![0x5au8; CHUNK_BYTES];
    let started = Instant::now();
    while started.elapsed() < duration {
        s.write_all(&chunk)?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let total = sink
        .join()
        .map_err(|_| io::Error::other("sink panicked"))??;
    Ok(total as f64 / started.elapsed().as_secs_f64() / 1e6)
}

/// An aligned buffer for `O_DIRECT`.
struct Aligned(Vec<u8>, usize);

impl Aligned {
    fn new(len: usize) -> Aligned {
        let v = vec![0xa5u8; len + 4096];
        let off = v.as_ptr().align_offset(4096);
        Aligned(v, off)
    }
    fn bytes(&self, len: usize) -> &[u8] {
        &self.0[self.1..self.1 + len]
    }
}

/// MB/s of sequential 1 MiB `O_DIRECT` writes into `dir`, at most `bytes_max` or
/// `duration`, then one fdatasync.
pub fn disk_write_mb_per_s(dir: &Path, bytes_max: u64, duration: Duration) -> io::Result<f64> {
    let path = dir.join("probe-write.tmp");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    let buf = Aligned::new(CHUNK_BYTES);
    let started = Instant::now();
    let mut written = 0u64;
    while written < bytes_max && started.elapsed() < duration {
        file.write_all_at(buf.bytes(CHUNK_BYTES), written)?;
        written += CHUNK_BYTES as u64;
    }
    file.sync_data()?;
    let secs = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(written as f64 / secs / 1e6)
}

/// Latency of a 4 KiB append followed by fdatasync, in microseconds, `rounds` times
/// back to back.
pub fn fdatasync_latency(dir: &Path, rounds: usize) -> io::Result<Histogram<u64>> {
    let mut hist = super::histogram();
    let mut n = 0;
    sync_appends(dir, "probe-sync.tmp", &mut hist, || {
        n += 1;
        n <= rounds
    })?;
    Ok(hist)
}

/// The disk's own fdatasync latency *while a workload runs*: a thread appends 4 KiB and
/// fdatasyncs a file of its own in `dir`, `per_second` times a second, until the
/// returned sampler is stopped. The same CPUs, device and file system are busy with the
/// broker, so this is the figure a broker's synced appends can fairly be held to.
pub struct SyncSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<io::Result<Histogram<u64>>>,
}

impl SyncSampler {
    pub fn start(dir: &Path, per_second: u32) -> SyncSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, flag) = (dir.to_path_buf(), stop.clone());
        let interval = Duration::from_secs(1) / per_second.max(1);
        let thread = std::thread::spawn(move || {
            let mut hist = super::histogram();
            let mut next = Instant::now();
            sync_appends(&dir, "probe-sync-under-load.tmp", &mut hist, || {
                next += interval;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                !flag.load(Ordering::Relaxed)
            })?;
            Ok(hist)
        });
        SyncSampler { stop, thread }
    }

    pub fn finish(self) -> io::Result<Histogram<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| io::Error::other("fdatasync sampler panicked"))?
    }
}

/// Appends 4 KiB to a new file `name` in `dir` and fdatasyncs it, recording each
/// append+sync in `hist`, for as long as `again` says; then removes the file.
fn sync_appends(
    dir: &Path,
    name: &str,
    hist: &mut Histogram<u64>,
    mut again: impl FnMut() -> bool,
) -> io::Result<()> {
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let block = [0x3cu8; 4096];
    while again() {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        hist.saturating_record(t.elapsed().as_micros() as u64);
    }
    drop(file);
    std::fs::remove_file(&path)
}

/// How long this machine takes its CPUs away: one thread per CPU, pinned, reads the
/// clock in a busy loop for `duration`; every gap between two reads is time the
/// thread did not run (the host descheduling a virtual CPU, interrupts, other
/// threads). No latency figure measured here can be better than these gaps allow.
pub fn cpu_stalls(duration: Duration) -> serde_json::Value {
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    let threads: Vec<_> = cpus
        .into_iter()
        .map(|core| {
            std::thread::spawn(move || {
                core_affinity::set_for_current(core);
                let mut gaps = super::histogram();
                let (mut stalled_us, mut over_1ms, mut over_10ms) = (0u64, 0u64, 0u64);
                let started = Instant::now();
                let mut last = started;
                while last.duration_since(started) < duration {
                    let now = Instant::now();
                    let gap = now.duration_since(last).as_micros() as u64;
                    if gap >= 100 {
                        gaps.saturating_record(gap);
                    }
                    if gap >= 1000 {
                        stalled_us += gap;
                        over_1ms += 1;
                    }
                    if gap >= 10_000 {
                        over_10ms += 1;
                    }
                    last = now;
                }
                (gaps.max(), stalled_us, over_1ms, over_10ms)
            })
        })
        .collect();
    let (mut max_us, mut stalled_us, mut over_1ms, mut over_10ms) = (0, 0, 0, 0);
    let mut n = 0;
    for t in threads {
        if let Ok((m, s, a, b)) = t.join() {
            max_us = max_us.max(m);
            stalled_us += s;
            over_1ms += a;
            over_10ms += b;
            n += 1;
        }
    }
    serde_json::json!({
        "cpus": n,
        "seconds_per_cpu": duration.as_secs_f64(),
        "max_gap_us": max_us,
        "gaps_over_1ms": over_1ms,
        "gaps_over_10ms": over_10ms,
        "stalled_fraction": stalled_us as f64 / 1e6 / (duration.as_secs_f64() * n.max(1) as f64),
    })
}

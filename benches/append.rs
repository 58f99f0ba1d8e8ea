//! Storage append throughput: buffered vs direct writes, with and without an fsync per
//! batch (group commit), measured side by side in one run on this machine's disk.
//!
//!     cargo bench --bench append [-- MIB_PER_CASE]
//!
//! Each case opens fresh partition logs in a temporary directory under `target/` (the
//! project's disk, not tmpfs) on one glommio executor, appends pre-built RecordBatch v2
//! batches from several partitions with several appends in flight per partition (as
//! pipelined producers do), then reads everything back from offset 0 (a lagging
//! consumer) and finally follows the tail (a consumer reading each batch right after it
//! is written), and reopens the logs without a clean-shutdown record, which scans and
//! validates every batch, as after a crash. Reported: MB/s, process CPU-seconds per GB written (io_uring workers
//! included), fsync rounds and the requests they served; each the median of three
//! interleaved rounds.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringlog::protocol::batch::build::{encode, Record};
use ringlog::storage::file::WriteMode;
use ringlog::storage::segment::SegmentSpec;
use ringlog::storage::sync_group::SyncGroup;
use ringlog::storage::{LogConfig, PartitionLog};

const PARTITIONS: usize = 8;
const IN_FLIGHT_PER_PARTITION: usize = 4;
const ROUNDS: usize = 3;

struct Case {
    mode: WriteMode,
    fsync_each: bool,
    batch_bytes: usize,
}

struct Outcome {
    write_mb_s: f64,
    cpu_s_per_gb: f64,
    read_back_mb_s: f64,
    tail_mb_s: f64,
    scan_mb_s: f64,
    sync_rounds: u64,
    sync_requests: u64,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// A producer's batch of ~`bytes` bytes: 100-byte records, 8-byte keys.
fn sample_batch(bytes: usize) -> Bytes {
    let value = [0x5au8; 100];
    let n = (bytes / 110).max(1);
    let records: Vec<Record> = (0..n)
        .map(|_| Record {
            key: Some(b"key-0001"),
            value: Some(&value),
            headers: &[],
            timestamp: 1_700_000_000_000,
        })
        .collect();
    Bytes::from(encode(&records, None))
}

fn log_config(case: &Case) -> LogConfig {
    let plain = LogConfig::plain(case.mode);
    LogConfig {
        segment: SegmentSpec {
            index_size_max_bytes: 10 << 20,
            ..plain.segment
        },
        batch_size_max_bytes: 16 << 20,
        tail_cache_bytes: if case.mode == WriteMode::Direct {
            8 << 20
        } else {
            0
        },
        flush_interval_messages: if case.fsync_each { 1 } else { u64::MAX },
        ..plain
    }
}

/// The offset after the last batch in `pieces` (whole batches, split anywhere except
/// inside a batch header).
fn after_last_batch(pieces: &[Bytes]) -> i64 {
    let mut next = 0;
    let mut skip = 0usize;
    for piece in pieces {
        let mut at = skip;
        while at < piece.len() {
            let h = ringlog::protocol::batch::BatchHeader::new(&piece[at..]).expect("header");
            next = h.last_offset() + 1;
            at += h.total_size() as usize;
        }
        skip = at - piece.len();
    }
    next
}

async fn run_case(case: &Case, root: &std::path::Path, total_bytes: usize) -> Outcome {
    let sync = Rc::new(SyncGroup::default());
    let dir = root.join(format!(
        "{:?}-{}-{}",
        case.mode, case.fsync_each, case.batch_bytes
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut logs = Vec::new();
    for p in 0..PARTITIONS {
        let log = PartitionLog::open(
            dir.join(format!("p-{p}")),
            log_config(case),
            sync.clone(),
            false,
        )
        .await
        .expect("open log");
        logs.push(log);
    }
    let batch = sample_batch(case.batch_bytes);
    let per_partition = total_bytes / batch.len() / PARTITIONS;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for log in &logs {
        for w in 0..IN_FLIGHT_PER_PARTITION {
            let (log, batch) = (log.clone(), batch.clone());
            let count = per_partition / IN_FLIGHT_PER_PARTITION
                + usize::from(w < per_partition % IN_FLIGHT_PER_PARTITION);
            writers.push(glommio::spawn_local(async move {
                for _ in 0..count {
                    log.append(batch.clone()).await.expect("append");
                }
            }));
        }
    }
    for w in writers {
        w.await;
    }
    let write_s = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let written = (per_partition * PARTITIONS * batch.len()) as f64;
    let (sync_rounds, sync_requests) = sync.counts();

    // A lagging consumer reads everything from offset 0 in 1 MiB fetches.
    let t1 = Instant::now();
    let mut read = 0usize;
    for log in &logs {
        let mut offset = 0;
        loop {
            let pieces = log.read(offset, 1 << 20, true).await.expect("read");
            if pieces.is_empty() {
                break;
            }
            read += pieces.iter().map(Bytes::len).sum::<usize>();
            offset = after_last_batch(&pieces);
        }
    }
    assert_eq!(read as f64, written, "read back everything");
    let read_back_mb_s = read as f64 / t1.elapsed().as_secs_f64() / 1e6;

    // A caught-up consumer: each batch is read right after it is appended.
    let log = &logs[0];
    let follow = (total_bytes / 8 / batch.len()).max(1);
    let t2 = Instant::now();
    for _ in 0..follow {
        let at = log.append(batch.clone()).await.expect("append").base_offset;
        let pieces = log.read(at, 1 << 20, true).await.expect("read");
        assert_eq!(pieces.iter().map(Bytes::len).sum::<usize>(), batch.len());
    }
    let tail_mb_s = (follow * batch.len()) as f64 / t2.elapsed().as_secs_f64() / 1e6;
    drop(logs);

    // Crash recovery: reopening without a clean-shutdown record scans (and validates)
    // every batch. The page cache may still hold the files in buffered mode.
    let scanned = written + (follow * batch.len()) as f64;
    let t3 = Instant::now();
    for p in 0..PARTITIONS {
        PartitionLog::open(
            dir.join(format!("p-{p}")),
            log_config(case),
            sync.clone(),
            false,
        )
        .await
        .expect("reopen log");
    }
    let scan_mb_s = scanned / t3.elapsed().as_secs_f64() / 1e6;
    let _ = std::fs::remove_dir_all(&dir);
    Outcome {
        write_mb_s: written / write_s / 1e6,
        cpu_s_per_gb: cpu / (written / 1e9),
        read_back_mb_s,
        tail_mb_s,
        scan_mb_s,
        sync_rounds,
        sync_requests,
    }
}

fn main() {
    let mib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(512);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/append-bench");
    std::fs::create_dir_all(&root).unwrap();
    let mut cases = Vec::new();
    for batch_bytes in [16 << 10, 1 << 20] {
        for fsync_each in [false, true] {
            for mode in [WriteMode::Buffered, WriteMode::Direct] {
                cases.push(Case {
                    mode,
                    fsync_each,
                    batch_bytes,
                });
            }
        }
    }
    println!(
        "append bench: {PARTITIONS} partitions x {IN_FLIGHT_PER_PARTITION} appends in flight, {mib} MiB per case, one shard, disk under {}",
        root.display()
    );
    println!(
        "| batch | fsync per batch | mode | write MB/s | CPU-s per GB written | read-back MB/s | tail-follow MB/s | recovery scan MB/s | fsync rounds / requests |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // Rounds interleave the cases, so that a noisy moment on this shared machine hits
    // them alike; each figure is the median over rounds.
    let mut results: Vec<Vec<Outcome>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        eprintln!("round {} of {ROUNDS}", round + 1);
        for (i, case) in cases.iter().enumerate() {
            let root = root.clone();
            let total = mib << 20;
            let (mode, fsync_each, batch_bytes) = (case.mode, case.fsync_each, case.batch_bytes);
            let out = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .spawn(move || async move {
                    let case = Case {
                        mode,
                        fsync_each,
                        batch_bytes,
                    };
                    run_case(&case, &root, total).await
                })
                .unwrap()
                .join()
                .unwrap();
            results[i].push(out);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for (case, outs) in cases.iter().zip(&results) {
        let median = |f: &dyn Fn(&Outcome) -> f64| {
            let mut v: Vec<f64> = outs.iter().map(f).collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        println!(
            "| {} KiB | {} | {:?} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} / {:.0} |",
            case.batch_bytes >> 10,
            if case.fsync_each { "yes" } else { "no" },
            case.mode,
            median(&|o| o.write_mb_s),
            median(&|o| o.cpu_s_per_gb),
            median(&|o| o.read_back_mb_s),
            median(&|o| o.tail_mb_s),
            median(&|o| o.scan_mb_s),
            median(&|o| o.sync_rounds as f64),
            median(&|o| o.sync_requests as f64),
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

//! `ringlog perf`: the project's own load generator, speaking the Kafka protocol to
//! any Kafka-compatible endpoint. Batches are prebuilt and requests pipelined, so that
//! the broker rather than the client is what gets measured. Each run prints one JSON
//! object on stdout (what `scripts/bench.sh` collects) and progress on stderr.
//!
//! - `produce`: producers at full speed (or `--rate`), acks as asked.
//! - `consume`: consumers read the backlog a topic holds now (page cache reads).
//! - `e2e`: producers at a fixed rate and a consumer tailing them; the latency from
//!   a batch's intended send time to its arrival at the consumer, corrected for
//!   coordinated omission (see `produce`). With `--rate 0`, the producers run at full
//!   speed and the figure is caught-up consume throughput.
//! - `probe`: loopback, disk and fdatasync limits of this machine.

pub mod batch;
pub mod conn;
pub mod consume;
pub mod probe;
pub mod produce;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::protocol::batch::BatchHeader;
use consume::{Consumer, FetchSpec};
use produce::{Clock, Counters, ProduceSpec};

#[derive(Subcommand)]
pub enum PerfCommand {
    /// Produce as fast as acks come back (or at --rate) for --seconds.
    Produce(ProduceArgs),
    /// Consume the backlog a topic holds now (every partition, earliest to latest).
    Consume(ConsumeArgs),
    /// Produce at a fixed rate while a consumer tails: end-to-end latency.
    E2e(E2eArgs),
    /// Measure this machine: loopback TCP, sequential O_DIRECT writes, fdatasync,
    /// and how long its CPUs are taken away (stalls a busy loop sees).
    Probe(ProbeArgs),
}

#[derive(Args, Clone)]
pub struct Target {
    /// A Kafka-compatible endpoint (its one broker leads every partition used).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[arg(long)]
    pub topic: String,
}

#[derive(Args, Clone)]
pub struct ProducerArgs {
    /// Partitions of the topic (created if missing).
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Value size of each record (keys are null).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Largest batch (as a Kafka producer's batch.size).
    #[arg(long, default_value_t = 256 << 10)]
    pub batch_bytes: usize,
    /// Batches for several partitions share a request up to this size.
    #[arg(long, default_value_t = 1 << 20)]
    pub request_bytes: usize,
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub acks: i16,
    /// Connections, each with its own writer and ack reader.
    #[arg(long, default_value_t = 2)]
    pub producers: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// At full speed, also stop once this many bytes are acknowledged (so that two
    /// brokers can be given the same backlog).
    #[arg(long)]
    pub max_bytes: Option<u64>,
    /// A topic config for creation, KEY=VALUE (repeatable).
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    pub topic_configs: Vec<String>,
}

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub producer: ProducerArgs,
    /// Records per second over all producers (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<f64>,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    #[arg(long, default_value_t = 1 << 20)]
    pub partition_max_bytes: i32,
    #[arg(long, default_value_t = 50 << 20)]
    pub max_bytes: i32,
    /// Stop after this long even if the backlog is not read.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Fetch with isolation_level READ_COMMITTED (up to the last stable offset).
    #[arg(long)]
    pub read_committed: bool,
}

#[derive(Args)]
pub struct E2eArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub producer: ProducerArgs,
    /// Records per second over all producers; 0 = as fast as possible.
    #[arg(long)]
    pub rate: f64,
    /// A fixed-rate producer sends what is due every this many microseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_us: u64,
    /// Meanwhile, append 4 KiB to a file of our own in DIR and fdatasync it 200 times
    /// a second: the disk's own fdatasync latency under the same load, to hold the
    /// broker's synced appends to (put DIR on the broker's log file system).
    #[arg(long, value_name = "DIR")]
    pub disk_sync_probe: Option<PathBuf>,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Where to write the disk probes (the broker's log directory's file system).
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
}

pub fn run(command: PerfCommand) -> io::Result<Value> {
    keep_freed_memory();
    match command {
        PerfCommand::Produce(a) => {
            let spec = produce_spec(&a.target, &a.producer, a.rate, 1000);
            prepare_topic(&spec, &a.producer.topic_configs)?;
            produce_only(&spec)
        }
        PerfCommand::Consume(a) => consume_backlog(&a),
        PerfCommand::E2e(a) => {
            let rate = (a.rate > 0.0).then_some(a.rate);
            let spec = produce_spec(&a.target, &a.producer, rate, a.interval_us);
            prepare_topic(&spec, &a.producer.topic_configs)?;
            let sampler = a
                .disk_sync_probe
                .as_deref()
                .map(|dir| probe::SyncSampler::start(dir, 200));
            let mut result = end_to_end(&spec)?;
            if let Some(sampler) = sampler {
                result["disk_fdatasync_under_load_us"] = latency_summary(&sampler.finish()?);
            }
            Ok(result)
        }
        PerfCommand::Probe(a) => {
            let d = Duration::from_secs_f64(a.seconds);
            eprintln!("probe: loopback TCP ...");
            let loopback = probe::loopback_mb_per_s(d)?;
            eprintln!("probe: O_DIRECT 1 MiB writes ...");
            let disk = probe::disk_write_mb_per_s(&a.dir, 4 << 30, d)?;
            eprintln!("probe: fdatasync ...");
            let sync = probe::fdatasync_latency(&a.dir, 500)?;
            eprintln!("probe: CPU stalls (a busy loop per CPU) ...");
            let stalls = probe::cpu_stalls(d);
            Ok(json!({
                "loopback_mb_per_s": loopback,
                "disk_write_mb_per_s": disk,
                "fdatasync_us": latency_summary(&sync),
                "cpu_stalls": stalls,
            }))
        }
    }
}

/// Tells glibc's allocator to keep freed memory for reuse. Its defaults return large
/// blocks to the kernel (`munmap`, or `madvise` on a thread's heap) as soon as they are
/// freed, and every request and fetch response here is such a block: the next one
/// faults its pages in again, zeroed. Measured at 740 k records/s of 1 KiB (e2e, the
/// generator on one CPU): 15.4 CPU-seconds with the defaults, two thirds of them in
/// page faults and `madvise`, against 4.7 with this; the generator, not the broker,
/// was then the limit.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets two allocator parameters (it takes the arenas' locks).
    unsafe {
        // Blocks up to 32 MiB (glibc's largest allowed) come from the heap, not mmap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        // Free memory at the top of a heap is kept up to 1 GiB.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn produce_spec(t: &Target, p: &ProducerArgs, rate: Option<f64>, interval_us: u64) -> ProduceSpec {
    ProduceSpec {
        bootstrap: t.bootstrap.clone(),
        topic: t.topic.clone(),
        partitions: p.partitions.max(1),
        record_bytes: p.record_bytes,
        batch_bytes: p.batch_bytes,
        request_bytes: p.request_bytes,
        acks: p.acks,
        producers: p.producers.max(1),
        in_flight: p.in_flight.max(1),
        duration: Duration::from_secs_f64(p.seconds),
        max_bytes: p.max_bytes,
        rate,
        interval: Duration::from_micros(interval_us.max(50)),
    }
}

fn prepare_topic(spec: &ProduceSpec, configs: &[String]) -> io::Result<()> {
    let configs: Vec<(String, String)> = configs
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| conn::other(format!("--topic-config {kv}: expected KEY=VALUE")))
        })
        .collect::<io::Result<_>>()?;
    let mut c = conn::Conn::connect(&spec.bootstrap)?;
    conn::create_topic(&mut c, &spec.topic, spec.partitions, &configs)
}

/// A latency histogram in microseconds, from 1 µs to 10 minutes (larger values are
/// recorded as 10 minutes).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn latency_summary(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// Prints progress every second until `done`.
fn progress(
    label: String,
    counters: Arc<Counters>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut last = (0u64, 0u64, started);
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let now = Instant::now();
            if now.duration_since(last.2) < Duration::from_secs(1) {
                continue;
            }
            let records = counters.records.load(Ordering::Relaxed);
            let bytes = counters.bytes.load(Ordering::Relaxed);
            let secs = now.duration_since(last.2).as_secs_f64();
            eprintln!(
                "  {label} {:5.1} s: {:8.1} MB/s {:10.0} records/s{}",
                now.duration_since(started).as_secs_f64(),
                (bytes - last.1) as f64 / secs / 1e6,
                (records - last.0) as f64 / secs,
                match counters.errors.load(Ordering::Relaxed) {
                    0 => String::new(),
                    e => format!(" ({e} failed requests)"),
                }
            );
            last = (records, bytes, now);
        }
    })
}

/// Runs every producer of `spec` on its own thread; the merged result.
fn run_producers(spec: &ProduceSpec, clock: Clock, label: &str) -> io::Result<Value> {
    let counters = Arc::new(Counters::default());
    let done = Arc::new(AtomicBool::new(false));
    let printer = progress(label.to_string(), counters.clone(), done.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..spec.producers)
        .map(|i| {
            let (spec, counters, stop) = (spec.clone(), counters.clone(), stop.clone());
            std::thread::spawn(move || {
                let r = produce::run_producer(&spec, i, clock, counters, &stop);
                if r.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                r
            })
        })
        .collect();
    let reports: Vec<io::Result<produce::ProducerReport>> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(conn::other("producer panicked")))
        })
        .collect();
    done.store(true, Ordering::Relaxed);
    let _ = printer.join();
    let seconds = started.elapsed().as_secs_f64();
    let mut latency = histogram();
    let (mut records, mut bytes, mut requests, mut errors) = (0, 0, 0, 0);
    let mut first_error = None;
    for r in reports {
        let r = r?;
        records += r.records;
        bytes += r.bytes;
        requests += r.requests;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
        latency.add(&r.ack_latency).expect("same histogram bounds");
    }
    Ok(json!({
        "records": records,
        "bytes": bytes,
        "requests": requests,
        "failed_requests": errors,
        "first_error": first_error,
        "seconds": seconds,
        "records_per_s": records as f64 / seconds,
        "mb_per_s": bytes as f64 / seconds / 1e6,
        "ack_latency_us": latency_summary(&latency),
    }))
}

fn produce_only(spec: &ProduceSpec) -> io::Result<Value> {
    let clock = Clock {
        epoch: Instant::now(),
    };
    let produced = run_producers(spec, clock, "produce")?;
    Ok(json!({ "produce": produced }))
}

fn fetch_spec(partition_max_bytes: i32, max_bytes: i32, max_wait: Duration) -> FetchSpec {
    FetchSpec {
        partition_max_bytes,
        max_bytes,
        max_wait,
        min_bytes: 1,
        isolation_level: 0,
    }
}

fn consume_backlog(a: &ConsumeArgs) -> io::Result<Value> {
    let mut c = conn::Conn::connect(&a.target.bootstrap)?;
    let partitions = conn::partition_leaders(&mut c, &a.target.topic)?.len() as i32;
    if partitions == 0 {
        return Err(conn::other(format!("topic {} not found", a.target.topic)));
    }
    let all: Vec<i32> = (0..partitions).collect();
    let ends = conn::list_offsets(&mut c, &a.target.topic, &all, -1)?;
    let counters = Arc::new(Counters::default());
    let done = Arc::new(AtomicBool::new(false));
    let printer = progress("consume".into(), counters.clone(), done.clone());
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let started = Instant::now();
    let consumers = a.consumers.clamp(1, partitions as usize);
    let handles: Vec<_> = (0..consumers)
        .map(|i| {
            let mine: Vec<i32> = all
                .iter()
                .copied()
                .filter(|p| *p as usize % consumers == i)
                .collect();
            let (target, counters, ends) = (a.target.clone(), counters.clone(), ends.clone());
            let spec = FetchSpec {
                isolation_level: a.read_committed as i8,
                ..fetch_spec(
                    a.partition_max_bytes,
                    a.max_bytes,
                    Duration::from_millis(100),
                )
            };
            std::thread::spawn(move || -> io::Result<(u64, u64)> {
                let mut consumer =
                    Consumer::new(&target.bootstrap, &target.topic, &mine, -2, spec)?;
                let (mut records, mut bytes) = (0, 0);
                let behind = |c: &Consumer| mine.iter().any(|p| c.offsets[p] < ends[p]);
                while behind(&consumer) && Instant::now() < deadline {
                    let got = consumer.fetch(|_| {})?;
                    records += got.records;
                    bytes += got.bytes;
                    counters.records.fetch_add(got.records, Ordering::Relaxed);
                    counters.bytes.fetch_add(got.bytes, Ordering::Relaxed);
                }
                Ok((records, bytes))
            })
        })
        .collect();
    let mut totals = (0u64, 0u64);
    let mut failure = None;
    for h in handles {
        match h
            .join()
            .unwrap_or_else(|_| Err(conn::other("consumer panicked")))
        {
            Ok((r, b)) => totals = (totals.0 + r, totals.1 + b),
            Err(e) => failure = Some(e),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = printer.join();
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(json!({ "consume": {
        "records": totals.0,
        "bytes": totals.1,
        "seconds": seconds,
        "records_per_s": totals.0 as f64 / seconds,
        "mb_per_s": totals.1 as f64 / seconds / 1e6,
    }}))
}

fn end_to_end(spec: &ProduceSpec) -> io::Result<Value> {
    let clock = Clock {
        epoch: Instant::now(),
    };
    let all: Vec<i32> = (0..spec.partitions).collect();
    let mut consumer = Consumer::new(
        &spec.bootstrap,
        &spec.topic,
        &all,
        -1,
        fetch_spec(1 << 20, 50 << 20, Duration::from_millis(100)),
    )?;
    let producing = Arc::new(AtomicBool::new(true));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    // Only fixed-rate producers stamp their batches.
    let timed = spec.rate.is_some();
    let tail = {
        let (producing, expected) = (producing.clone(), expected.clone());
        std::thread::spawn(move || -> io::Result<(Histogram<u64>, u64, u64, f64)> {
            let mut hist = histogram();
            let (mut records, mut bytes) = (0u64, 0u64);
            let mut first = None;
            let mut grace = None;
            loop {
                let got = consumer.fetch(|batch| {
                    let now = Instant::now();
                    if let Some(stamp) = batch::read_stamp(batch).filter(|_| timed) {
                        let us = now
                            .saturating_duration_since(clock.instant(stamp))
                            .as_micros();
                        let count = BatchHeader::new(batch).map_or(0, |h| h.record_count());
                        hist.saturating_record_n(us as u64, count.max(0) as u64);
                    }
                })?;
                if got.records > 0 && first.is_none() {
                    first = Some(Instant::now());
                }
                records += got.records;
                bytes += got.bytes;
                if records >= expected.load(Ordering::Relaxed) {
                    break;
                }
                if !producing.load(Ordering::Relaxed) {
                    // Acks are in; what is left should arrive at once.
                    let g = *grace.get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
                    if Instant::now() > g {
                        break;
                    }
                }
            }
            let secs = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
            Ok((hist, records, bytes, secs))
        })
    };
    let produced = run_producers(spec, clock, "e2e");
    if let Ok(p) = &produced {
        expected.store(p["records"].as_u64().unwrap_or(0), Ordering::Relaxed);
    }
    producing.store(false, Ordering::Relaxed);
    let (hist, records, bytes, secs) = tail
        .join()
        .unwrap_or_else(|_| Err(conn::other("consumer panicked")))?;
    let produced = produced?;
    Ok(json!({
        "produce": produced,
        "consume": {
            "records": records,
            "bytes": bytes,
            "seconds": secs,
            "mb_per_s": if secs > 0.0 { bytes as f64 / secs / 1e6 } else { 0.0 },
        },
        "rate": spec.rate,
        "e2e_latency_us": latency_summary(&hist),
    }))
}

//! The producing side of the load generator: one connection per producer, requests
//! pipelined (`in_flight` per connection: a writer thread sends, a reader thread
//! takes the acks), batches cut from a prebuilt template.
//!
//! At full speed (`rate` unset) each producer cycles through prebuilt request frames
//! (only the correlation id changes), so the client spends its CPU in `write(2)`.
//! At a fixed rate, every tick sends the records due by then in one batch stamped
//! with the tick's *intended* time; latency is measured from that time, so a stalled
//! broker cannot hide its stall by slowing the producer down (coordinated omission).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::{
    produce_request::{PartitionProduceData, TopicProduceData},
    ApiKey, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::batch::BatchTemplate;
use super::conn::{self, error_name, Conn};
use crate::storage::segment::now_ms;

#[derive(Clone)]
pub struct ProduceSpec {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub record_bytes: usize,
    pub batch_bytes: usize,
    pub request_bytes: usize,
    pub acks: i16,
    pub producers: usize,
    pub in_flight: usize,
    pub duration: Duration,
    /// At full speed, stop sending once all producers together have this many bytes
    /// acknowledged (a backlog of a set size, whatever the speed).
    pub max_bytes: Option<u64>,
    /// Records per second over all producers; `None` = as fast as acks come back.
    pub rate: Option<f64>,
    /// The tick of a fixed-rate producer.
    pub interval: Duration,
}

/// What all producers have acknowledged so far (read by the progress printer).
#[derive(Default)]
pub struct Counters {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

pub struct ProducerReport {
    pub records: u64,
    pub bytes: u64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    /// From a request's intended send time (at full speed: when it was written) to its
    /// ack, in microseconds.
    pub ack_latency: Histogram<u64>,
}

/// The time base every stamp is measured from (nanoseconds since `epoch`).
#[derive(Clone, Copy)]
pub struct Clock {
    pub epoch: Instant,
}

impl Clock {
    pub fn stamp(&self, at: Instant) -> u64 {
        at.duration_since(self.epoch).as_nanos() as u64
    }
    pub fn instant(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_nanos(stamp)
    }
}

fn produce_request(spec: &ProduceSpec, batches: Vec<(i32, Bytes)>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(spec.acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(spec.topic.clone())))
            .with_partition_data(
                batches
                    .into_iter()
                    .map(|(p, b)| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(b))
                    })
                    .collect(),
            )])
}

/// What a producer's ack reader saw.
struct Acked {
    records: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

impl Acked {
    fn new() -> Acked {
        Acked {
            records: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
            latency: super::histogram(),
        }
    }
}

/// A request waiting for its ack.
struct Sent {
    correlation: i32,
    intended: Instant,
    records: u64,
    bytes: u64,
}

/// How long before a tick a fixed-rate producer stops sleeping and spins.
const SPIN_BEFORE_TICK: Duration = Duration::from_micros(100);

/// Waits for `at`: a timed sleep until shortly before, then spinning (yielding to
/// other threads), since a sleep overshoots by some tens of microseconds even on a
/// tuned host and every overshoot counts as latency.
fn wait_until(at: Instant) {
    let now = Instant::now();
    if at > now + SPIN_BEFORE_TICK {
        std::thread::sleep(at - now - SPIN_BEFORE_TICK);
    }
    while Instant::now() < at {
        std::thread::yield_now();
    }
}

/// Runs one producer until the spec's duration has passed and every ack is in.
pub fn run_producer(
    spec: &ProduceSpec,
    index: usize,
    clock: Clock,
    counters: Arc<Counters>,
    stop: &AtomicBool,
) -> io::Result<ProducerReport> {
    let mut conn = Conn::connect(&spec.bootstrap)?;
    let version = conn.version(ApiKey::Produce, 3, 9)?;
    let records_per_batch = BatchTemplate::records_for(spec.batch_bytes, spec.record_bytes);
    let template = BatchTemplate::new(records_per_batch, spec.record_bytes);
    let batches_per_request =
        (spec.request_bytes / spec.batch_bytes.max(1)).clamp(1, spec.partitions.max(1) as usize);

    let writer_stream = conn.stream.try_clone()?;
    let (tokens_tx, tokens_rx) = mpsc::sync_channel::<()>(spec.in_flight);
    for _ in 0..spec.in_flight {
        tokens_tx.send(()).expect("room for every token");
    }
    let (sent_tx, sent_rx) = mpsc::channel::<Sent>();
    let acks = spec.acks != 0;
    let reader_stream = conn.stream.try_clone()?;
    let reader_counters = counters.clone();
    let reader = acks.then(move || {
        let mut stream = reader_stream;
        let counters = reader_counters;
        std::thread::spawn(move || -> io::Result<Acked> {
            let mut acked = Acked::new();
            let mut buf = BytesMut::new();
            for sent in sent_rx {
                let mut body = conn::read_frame(&mut stream, &mut buf)?;
                let resp: ProduceResponse =
                    conn::decode_response(ApiKey::Produce, version, sent.correlation, &mut body)?;
                let mut failed = false;
                for t in &resp.responses {
                    for p in &t.partition_responses {
                        if p.error_code != 0 {
                            failed = true;
                            acked.first_error.get_or_insert_with(|| {
                                format!("partition {}: {}", p.index, error_name(p.error_code))
                            });
                        }
                    }
                }
                let now = Instant::now();
                acked
                    .latency
                    .saturating_record(now.duration_since(sent.intended).as_micros() as u64);
                if failed {
                    acked.errors += 1;
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    acked.records += sent.records;
                    acked.bytes += sent.bytes;
                    counters.records.fetch_add(sent.records, Ordering::Relaxed);
                    counters.bytes.fetch_add(sent.bytes, Ordering::Relaxed);
                }
                let _ = tokens_tx.send(());
            }
            Ok(acked)
        })
    });

    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut stream = writer_stream;
    let mut requests = 0u64;
    let (mut unacked_records, mut unacked_bytes) = (0u64, 0u64);
    // At full speed a request's latency runs from when it is written (after waiting
    // for a free in-flight slot); at a fixed rate, from its tick (set by the caller).
    let full_speed = spec.rate.is_none();
    let mut send = |frame: &mut Vec<u8>, mut sent: Sent| -> io::Result<bool> {
        if acks && tokens_rx.recv().is_err() {
            return Ok(false);
        }
        if full_speed {
            sent.intended = Instant::now();
        }
        conn::set_correlation(frame, sent.correlation);
        stream.write_all(frame)?;
        requests += 1;
        if acks {
            Ok(sent_tx.send(sent).is_ok())
        } else {
            unacked_records += sent.records;
            unacked_bytes += sent.bytes;
            counters.records.fetch_add(sent.records, Ordering::Relaxed);
            counters.bytes.fetch_add(sent.bytes, Ordering::Relaxed);
            Ok(true)
        }
    };
    let partitions = spec.partitions.max(1);
    let result: io::Result<()> = (|| {
        match spec.rate {
            None => {
                // Prebuilt frames, each with batches for a run of partitions; the
                // producers start at different runs.
                let batch = Bytes::from(template.batch(records_per_batch, now_ms(), None));
                let batch_records = records_per_batch as u64;
                let mut frames = Vec::new();
                for first in (0..partitions).step_by(batches_per_request) {
                    let last = (first + batches_per_request as i32).min(partitions);
                    let req =
                        produce_request(spec, (first..last).map(|p| (p, batch.clone())).collect());
                    let n = (last - first) as u64;
                    frames.push((
                        conn::encode_request(ApiKey::Produce, version, 0, &req)?,
                        n * batch_records,
                        n * batch.len() as u64,
                    ));
                }
                let mut next = index % frames.len();
                let limit = spec.max_bytes.unwrap_or(u64::MAX);
                while Instant::now() < deadline
                    && !stop.load(Ordering::Relaxed)
                    && counters.bytes.load(Ordering::Relaxed) < limit
                {
                    let correlation = conn.next_correlation();
                    let (frame, records, bytes) = &mut frames[next];
                    let sent = Sent {
                        correlation,
                        intended: Instant::now(), // replaced once written
                        records: *records,
                        bytes: *bytes,
                    };
                    if !send(frame, sent)? {
                        break;
                    }
                    next = (next + 1) % frames.len();
                }
            }
            Some(rate) => {
                // This producer's share of the rate, on ticks of `interval`. Each
                // tick's records form one batch stamped with the tick; a request
                // carries every tick due by now (one batch per partition, as Kafka
                // requires), so a producer that fell behind catches up at once.
                let rate = rate / spec.producers as f64;
                let mut sent_records = 0u64;
                let mut tick = started + spec.interval;
                let mut partition = index as i32 % partitions;
                while tick < deadline && !stop.load(Ordering::Relaxed) {
                    wait_until(tick);
                    let now = Instant::now();
                    let first_tick = tick;
                    let mut batches = Vec::new();
                    let (mut records, mut bytes) = (0u64, 0u64);
                    while tick <= now && tick < deadline && batches.len() < partitions as usize {
                        let due = (rate * tick.duration_since(started).as_secs_f64()) as u64;
                        let mut count = due.saturating_sub(sent_records) as usize;
                        while count > 0 && batches.len() < partitions as usize {
                            let n = count.min(records_per_batch);
                            let b = template.batch(n, now_ms(), Some(clock.stamp(tick)));
                            bytes += b.len() as u64;
                            records += n as u64;
                            sent_records += n as u64;
                            batches.push((partition, Bytes::from(b)));
                            partition = (partition + 1) % partitions;
                            count -= n;
                        }
                        tick += spec.interval;
                    }
                    if batches.is_empty() {
                        continue;
                    }
                    let correlation = conn.next_correlation();
                    let mut frame = conn::encode_request(
                        ApiKey::Produce,
                        version,
                        correlation,
                        &produce_request(spec, batches),
                    )?;
                    let sent = Sent {
                        correlation,
                        intended: first_tick,
                        records,
                        bytes,
                    };
                    if !send(&mut frame, sent)? {
                        break;
                    }
                }
            }
        }
        Ok(())
    })();
    drop(sent_tx);
    let acked = match reader {
        Some(r) => r.join().map_err(|_| conn::other("ack reader panicked"))??,
        None => Acked {
            records: unacked_records,
            bytes: unacked_bytes,
            ..Acked::new()
        },
    };
    result?;
    Ok(ProducerReport {
        records: acked.records,
        bytes: acked.bytes,
        requests,
        errors: acked.errors,
        first_error: acked.first_error,
        seconds: started.elapsed().as_secs_f64(),
        ack_latency: acked.latency,
    })
}

//! Micro-benchmarks of the protocol hot path: frame splitting, RecordBatch validation
//! (CRC-32C) and the record-level check produce runs after it (uncompressed, and
//! inflating lz4 and zstd), and Fetch response assembly. `cargo bench --bench protocol`.

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringlog::protocol::batch::build::{encode, Record};
use ringlog::protocol::batch::validate;
use ringlog::protocol::fetch_writer::{write_fetch_response, FetchPartitionData, FetchTopicData};
use ringlog::protocol::frame::split_frame;
use ringlog::protocol::records::check_records;
use ringlog::protocol::ErrorCode;

/// A batch of `n` records of `size`-byte values, as a producer would send it.
fn sample_batch(n: usize, size: usize) -> Vec<u8> {
    let value = vec![0x5au8; size];
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            key: None,
            value: Some(&value),
            headers: &[],
            timestamp: 1_700_000_000_000 + i as i64,
        })
        .collect();
    encode(&records, Some((1, 0, 0)))
}

fn batch_validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_validate");
    for (n, size) in [(160usize, 100usize), (16, 1024)] {
        let batch = sample_batch(n, size);
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_function(format!("{n}x{size}B"), |b| {
            b.iter(|| validate(&batch, 1 << 20).unwrap().record_count())
        });
    }
    g.finish();
}

/// `batch` with its records compressed by `codec` (3: lz4, 4: zstd); the CRC is
/// left stale (check_records does not look at it).
fn compressed(batch: &[u8], codec: i16) -> Vec<u8> {
    let body = &batch[61..];
    let data = match codec {
        3 => {
            let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
            std::io::Write::write_all(&mut w, body).unwrap();
            w.finish().unwrap()
        }
        _ => zstd::encode_all(body, 1).unwrap(),
    };
    let mut b = batch[..61].to_vec();
    b[21..23].copy_from_slice(&codec.to_be_bytes());
    b.extend_from_slice(&data);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b
}

fn record_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("check_records");
    for (n, size) in [(160usize, 100usize), (16, 1024)] {
        let batch = sample_batch(n, size);
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_function(format!("{n}x{size}B"), |b| {
            b.iter(|| check_records(&batch).unwrap())
        });
    }
    let batch = sample_batch(160, 100);
    g.throughput(Throughput::Bytes(batch.len() as u64));
    for (codec, name) in [(3, "lz4"), (4, "zstd")] {
        let packed = compressed(&batch, codec);
        g.bench_function(format!("160x100B_{name}"), |b| {
            b.iter(|| check_records(&packed).unwrap())
        });
    }
    g.finish();
}

fn frame_split(c: &mut Criterion) {
    let mut stream = BytesMut::new();
    for _ in 0..64 {
        stream.put_i32(16 * 1024);
        stream.put_slice(&[7u8; 16 * 1024]);
    }
    let stream = stream.freeze();
    let mut g = c.benchmark_group("frame_split");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("64x16KiB", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                let mut frames = 0;
                while let Some(f) = split_frame(&mut buf, 1 << 20).unwrap() {
                    frames += f.len();
                }
                frames
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn fetch_response(c: &mut Criterion) {
    let records = Bytes::from(sample_batch(160, 100));
    let mut g = c.benchmark_group("fetch_response");
    g.throughput(Throughput::Bytes(8 * records.len() as u64));
    g.bench_function("8_partitions", |b| {
        b.iter(|| {
            let partitions = (0..8)
                .map(|p| FetchPartitionData {
                    partition: p,
                    error: ErrorCode::None,
                    high_watermark: 1_000_000,
                    last_stable_offset: 1_000_000,
                    log_start_offset: 0,
                    aborted_transactions: None,
                    records: vec![records.clone().into()],
                    current_leader: None,
                    diverging_epoch: None,
                })
                .collect();
            let topics = vec![FetchTopicData {
                name: "bench".into(),
                topic_id: uuid::Uuid::nil(),
                partitions,
            }];
            write_fetch_response(1, 12, ErrorCode::None, 0, topics, &[]).len()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    batch_validation,
    record_check,
    frame_split,
    fetch_response
);
criterion_main!(benches);

//! Hostile and broken clients against the real broker, over raw sockets: every class
//! of malformed input gets the Kafka error code or a closed connection, slow and idle
//! clients are cut off, connection limits hold, and after each the broker still
//! serves a normal produce and fetch. (More classes live in wire.rs: bad frame sizes,
//! lying array counts, CRC mismatches, old magic, oversized batches.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::kafka::*;
use common::{Broker, Client};
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::ApiKey;
use ringlog::protocol::batch::build::{encode, Record};

/// A frame with a v2 (flexible) request header: null client id, then `tagged`.
fn flexible_request(api_key: i16, version: i16, tagged: &[u8], body: &[u8]) -> BytesMut {
    let mut req = BytesMut::new();
    req.put_i32((8 + 2 + tagged.len() + body.len()) as i32);
    req.put_i16(api_key);
    req.put_i16(version);
    req.put_i32(9);
    req.put_i16(-1);
    req.put_slice(tagged);
    req.put_slice(body);
    req
}

#[test]
fn malformed_requests_close_only_their_connection() {
    let b = Broker::start("hostile-requests", &[]);
    let produce_v3_records_length_lies = {
        let mut body = BytesMut::new();
        body.put_i16(-1); // transactional id
        body.put_i16(1); // acks
        body.put_i32(1000);
        body.put_i32(1);
        body.put_i16(1);
        body.put_slice(b"t");
        body.put_i32(1);
        body.put_i32(0);
        body.put_i32(1_000_000); // records: a length far past the frame's end
        body.put_slice(&[0u8; 16]);
        raw_request(0, 3, 5, &body)
    };
    let cases: Vec<(&str, BytesMut)> = vec![
        ("unknown api key 999", raw_request(999, 0, 1, &[])),
        ("negative api key", raw_request(-1, 0, 1, &[])),
        ("Fetch v99", raw_request(1, 99, 1, &[])),
        ("Produce v99", raw_request(0, 99, 1, &[])),
        (
            "tagged field longer than the frame",
            flexible_request(3, 12, &[1, 0, 100, 1, 2], &[]),
        ),
        (
            "tagged field count overflowing a varint",
            flexible_request(3, 12, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f], &[]),
        ),
        (
            "compact array count far past the frame",
            flexible_request(3, 12, &[0], &[0xfe, 0xff, 0xff, 0xff, 0x07, 0, 0, 0]),
        ),
        (
            "negative string length",
            raw_request(3, 4, 1, &[0, 0, 0, 1, 0xff, 0xfb]),
        ),
        (
            "string longer than the frame",
            raw_request(3, 4, 1, &[0, 0, 0, 1, 0x7f, 0xff, b'a']),
        ),
        (
            "records length past the frame",
            produce_v3_records_length_lies,
        ),
        ("body cut short", raw_request(19, 7, 1, &[0, 0, 0, 3])),
    ];
    for (what, bytes) in cases {
        let mut c = b.connect();
        c.send_raw(&bytes);
        assert!(c.is_closed_by_peer(), "{what}: connection left open");
    }
    assert_serving(&b);
}

/// A batch whose records section is replaced by `records` (and `codec` set), with
/// its length and CRC made right again: only the records are wrong.
fn with_records(good: &[u8], codec: i16, records: &[u8]) -> Vec<u8> {
    let mut b = good[..61].to_vec();
    b[21..23].copy_from_slice(&codec.to_be_bytes());
    b.extend_from_slice(records);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn stamped(timestamp: i64) -> Vec<u8> {
    encode(
        &[Record {
            key: None,
            value: Some(b"v"),
            headers: &[],
            timestamp,
        }],
        None,
    )
}

#[test]
fn batches_that_lie_inside_get_kafka_error_codes() {
    let b = Broker::start("hostile-batches", &["auto.create.topics.enable=false"]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    create_topic(&mut c, "still-serving", 1);
    create_topic_with(
        &mut c,
        "recent",
        &[("message.timestamp.before.max.ms", "60000")],
    );
    let good = batch(3, None);
    let body = &good[61..];
    let now = ringlog::storage::segment::now_ms();
    let cases: Vec<(&str, &str, Vec<u8>, i16)> = vec![
        (
            "fewer records than counted",
            "t",
            with_records(&good, 0, &body[..body.len() / 3 * 2]),
            87,
        ),
        (
            "more records than counted",
            "t",
            with_records(&good, 0, &[body, &body[..body.len() / 3]].concat()),
            87,
        ),
        (
            "gzip payload that is not gzip",
            "t",
            with_records(&good, 1, &[0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5]),
            2,
        ),
        (
            "zstd payload that is not zstd",
            "t",
            with_records(&good, 4, &[0xde, 0xad, 0xbe, 0xef]),
            2,
        ),
        (
            "lz4 payload that is not lz4",
            "t",
            with_records(&good, 3, &[0u8; 12]),
            2,
        ),
        (
            "snappy payload that is not snappy",
            "t",
            with_records(&good, 2, &[0xff; 9]),
            2,
        ),
        ("unknown codec 6", "t", with_records(&good, 6, body), 2),
        (
            "timestamp two hours ahead",
            "t",
            stamped(now + 2 * 3_600_000),
            32,
        ),
        (
            "timestamp older than the topic allows",
            "recent",
            stamped(now - 600_000),
            32,
        ),
    ];
    for (what, topic, records, code) in cases {
        assert_eq!(produce(&mut c, topic, 0, records).0, code, "{what}");
    }
    assert_eq!(produce(&mut c, "t", 0, good).0, 0);
    assert_eq!(
        produce(&mut c, "recent", 0, stamped(now)),
        (0, 0),
        "nothing refused took an offset"
    );
    assert_serving(&b);
}

/// Waits (bounded) for the broker to close `c`; true if it did.
fn closed_within(c: &mut Client, limit: Duration) -> bool {
    c.stream.set_read_timeout(Some(limit)).unwrap();
    c.is_closed_by_peer()
}

#[test]
fn idle_and_slowloris_connections_are_closed_but_long_polls_are_not() {
    let b = Broker::start(
        "hostile-slow",
        &[
            "connections.max.idle.ms=1000",
            "ringlog.request.read.timeout.ms=1500",
        ],
    );
    // Idle: connected, never sends.
    let mut idle = b.connect();
    assert!(
        closed_within(&mut idle, Duration::from_secs(20)),
        "idle connection left open"
    );

    // Slowloris: a request trickling in a byte at a time keeps the connection busy
    // (never idle for a second) but never completes.
    let mut slow = b.connect();
    let request = raw_request(18, 3, 1, &[0; 32]);
    let started = Instant::now();
    let mut closed = false;
    for byte in request.iter().take(request.len() - 1) {
        if slow.stream.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    assert!(
        closed || closed_within(&mut slow, Duration::from_secs(20)),
        "slowloris left open"
    );

    // A long poll outlasting connections.max.idle.ms is in flight, not idle.
    let mut c = b.connect();
    create_topic(&mut c, "quiet", 1);
    let resp: FetchResponse = c.call(
        ApiKey::Fetch,
        FETCH_V,
        &fetch_request("quiet", &[(0, 0)], 2500),
    );
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    assert_serving(&b);
}

#[test]
fn a_client_streaming_requests_back_to_back_outlives_the_read_timeout() {
    // Every write completes one request and starts the next, so the broker never
    // sees an empty buffer; only a request that itself takes too long may be cut.
    let b = Broker::start("hostile-stream", &["ringlog.request.read.timeout.ms=1000"]);
    let mut c = b.connect();
    let request = raw_request(18, 3, 1, &[0, 0, 0]);
    let half = request.len() / 2;
    c.send_raw(&request[..half]);
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(3000) {
        std::thread::sleep(Duration::from_millis(200));
        c.send_raw(&[&request[half..], &request[..half]].concat());
        sent += 1;
    }
    for n in 0..sent {
        assert!(
            c.recv_frame().is_ok(),
            "response {n} of {sent}: connection closed"
        );
    }
}

fn connect_from(b: &Broker, local: &str) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&local.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let server: SocketAddr = format!("127.0.0.1:{}", b.port).parse().unwrap();
    socket.connect(&server.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    Client::new(stream)
}

fn answers(c: &mut Client) -> bool {
    c.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let mut size = [0u8; 4];
    c.stream.read_exact(&mut size).is_ok()
}

#[test]
fn connection_limits_refuse_the_connection_past_them() {
    let b = Broker::start(
        "hostile-limits",
        &["max.connections.per.ip=2", "max.connections=3"],
    );
    let mut a1 = connect_from(&b, "127.0.0.1:0");
    let mut a2 = connect_from(&b, "127.0.0.1:0");
    assert!(answers(&mut a1) && answers(&mut a2));
    let mut a3 = connect_from(&b, "127.0.0.1:0");
    assert!(
        !answers(&mut a3),
        "a third connection from one address was served"
    );
    let mut b1 = connect_from(&b, "127.0.0.2:0");
    assert!(answers(&mut b1), "another address is under its own limit");
    let mut b2 = connect_from(&b, "127.0.0.2:0");
    assert!(!answers(&mut b2), "a fourth connection in all was served");
    // Closing one gives its place back (the broker notices the close first).
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = connect_from(&b, "127.0.0.1:0");
        if answers(&mut again) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn requests_larger_than_the_memory_budget_wait_for_it_and_succeed() {
    // Budget 1 MiB per shard; 4 producers at once send 900 KB batches, and one sends
    // a 1.5 MB batch that needs the whole budget.
    let b = Broker::start(
        "hostile-budget",
        &[
            "queued.max.request.bytes=1048576",
            "message.max.bytes=2000000",
            "socket.request.max.bytes=4000000",
        ],
    );
    let mut c = b.connect();
    create_topic(&mut c, "big", 2);
    let value = vec![7u8; 900_000];
    let huge = vec![8u8; 1_500_000];
    let threads: Vec<_> = (0..5)
        .map(|i| {
            let port = b.port;
            let payload = if i == 4 { huge.clone() } else { value.clone() };
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut c = Client::new(stream);
                let mut codes = Vec::new();
                for _ in 0..3 {
                    let records = encode(
                        &[Record {
                            key: None,
                            value: Some(&payload),
                            headers: &[],
                            timestamp: 1_000,
                        }],
                        None,
                    );
                    codes.push(produce(&mut c, "big", i % 2, records).0);
                }
                codes
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), vec![0, 0, 0]);
    }
    assert_serving(&b);
}

#[test]
fn a_damaged_length_in_a_trusted_segment_fails_the_request_not_the_shard() {
    // After a clean shutdown the next start trusts the segments it recorded. A batch
    // length damaged after that (here -13: a size of -1) once made ListOffsets by
    // timestamp ask the I/O layer for 2^64-1 bytes, hanging the shard for good.
    let mut b = Broker::start("hostile-damaged", &[]);
    let mut c = b.connect();
    create_topic(&mut c, "d", 1);
    for ts in [1_000, 2_000, 3_000] {
        assert_eq!(produce(&mut c, "d", 0, stamped(ts)).0, 0);
    }
    drop(c);
    assert_eq!(b.stop(libc::SIGTERM), Some(0));
    let log = b.data_dir().join("d-0").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let second = 12 + i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    bytes[second + 8..second + 12].copy_from_slice(&(-13i32).to_be_bytes());
    std::fs::write(&log, bytes).unwrap();
    b.restart(libc::SIGTERM);
    assert!(b.log_text().contains("the last shutdown was clean"));
    let mut c = b.connect();
    assert_eq!(
        list_offsets(&mut c, "d", 0, 1_500).error_code,
        56,
        "KAFKA_STORAGE_ERROR for the damaged batch"
    );
    assert_serving(&b);
}

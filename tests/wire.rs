//! The Kafka protocol at the byte level against the real broker: the API table,
//! unsupported APIs and versions, malformed frames, invalid batches, response order,
//! long-poll, idempotent sequences across a crash, recovery of a torn tail, config
//! errors. Client-library behaviour is covered by the Python suites.

mod common;

use std::collections::BTreeMap;
use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};
use common::kafka::*;
use common::{Broker, Client};
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::create_topics_response::CreateTopicsResponse;
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;
use ringlog::protocol::api::SUPPORTED_APIS;
use ringlog::protocol::batch::build::{encode, Record};

/// (base offset, byte position) of each batch in a record set or segment file.
fn batch_starts(records: &[u8]) -> Vec<(i64, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= records.len() {
        out.push((
            i64::from_be_bytes(records[at..at + 8].try_into().unwrap()),
            at,
        ));
        at += 12 + i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
    }
    out
}

/// Base offsets of the batches in a fetched record set.
fn batch_bases(records: &Bytes) -> Vec<i64> {
    batch_starts(records)
        .into_iter()
        .map(|(base, _)| base)
        .collect()
}

#[test]
fn api_versions_advertises_exactly_the_table() {
    let b = Broker::start("apiversions", &[]);
    let mut c = b.connect();
    for version in 0..=4 {
        let resp: ApiVersionsResponse =
            c.call(ApiKey::ApiVersions, version, &ApiVersionsRequest::default());
        assert_eq!(resp.error_code, 0);
        let got: BTreeMap<i16, (i16, i16)> = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        let want: BTreeMap<i16, (i16, i16)> = SUPPORTED_APIS
            .iter()
            .map(|s| (s.key, (s.version_min, s.version_max)))
            .collect();
        assert_eq!(got, want, "ApiVersions v{version}");
    }
}

#[test]
fn unknown_api_versions_version_gets_a_v0_error_with_our_ranges() {
    let b = Broker::start("apiversions-unknown", &[]);
    let mut c = b.connect();
    // The body is whatever a future version carries.
    c.send_raw(&raw_request(18, 99, 4242, &[0, 0, 0]));
    let (id, resp): (i32, ApiVersionsResponse) = c.recv(ApiKey::ApiVersions, 0);
    assert_eq!(id, 4242);
    assert_eq!(resp.error_code, 35, "UNSUPPORTED_VERSION");
    assert_eq!(resp.api_keys.len(), SUPPORTED_APIS.len());
    // The connection stays usable for a supported version.
    let resp: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(resp.error_code, 0);
}

#[test]
fn produce_v0_to_v2_are_answered_unsupported_version() {
    let b = Broker::start("produce-old", &[]);
    for version in 0..=2i16 {
        let mut c = b.connect();
        let mut body = BytesMut::new();
        body.put_i16(1); // acks
        body.put_i32(1000);
        body.put_i32(1);
        body.put_i16(5);
        body.put_slice(b"topic");
        body.put_i32(1);
        body.put_i32(3); // partition
        body.put_i32(0); // empty message set
        c.send_raw(&raw_request(0, version, 77, &body));
        let frame = c.recv_frame().unwrap();
        let mut expect = BytesMut::new();
        expect.put_i32(77);
        expect.put_i32(1);
        expect.put_i16(5);
        expect.put_slice(b"topic");
        expect.put_i32(1);
        expect.put_i32(3);
        expect.put_i16(35);
        expect.put_i64(-1);
        if version >= 2 {
            expect.put_i64(-1);
        }
        if version >= 1 {
            expect.put_i32(0);
        }
        assert_eq!(frame, expect.freeze(), "Produce v{version}");
    }
}

#[test]
fn unsupported_apis_and_versions_close_only_that_connection() {
    let b = Broker::start("unsupported", &[]);
    // JoinGroup v5: not served yet.
    let mut c = b.connect();
    c.send_raw(&raw_request(11, 5, 1, &[]));
    assert!(c.is_closed_by_peer());
    // Metadata v99.
    let mut c = b.connect();
    c.send(ApiKey::Metadata, 12, &MetadataRequest::default());
    let _ = c.recv_frame().unwrap();
    c.send_raw(&raw_request(3, 99, 2, &[]));
    assert!(c.is_closed_by_peer());
    assert_serving(&b);
}

#[test]
fn malformed_and_oversized_frames_close_the_connection() {
    let b = Broker::start("malformed", &["socket.request.max.bytes=1048576"]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative size", (-1i32).to_be_bytes().to_vec()),
        ("size below a header", 3i32.to_be_bytes().to_vec()),
        (
            "size over socket.request.max.bytes",
            (2i32 << 20).to_be_bytes().to_vec(),
        ),
        ("huge size", i32::MAX.to_be_bytes().to_vec()),
        ("client id longer than the frame", {
            let mut v = 12i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0x7f, 0xff, 0, 0]);
            v
        }),
        ("metadata body of garbage", {
            let mut v = 20i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0]);
            v.extend_from_slice(&[0xff; 9]);
            v
        }),
        ("produce with an array count that lies", {
            let mut v = Vec::new();
            let body = [
                &[0u8, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0][..],
                &[0, 0xff, 0xff, 0, 0, 0x27, 0x10, 0xff, 0xff, 0xff, 0x0f],
            ]
            .concat();
            v.extend_from_slice(&(body.len() as i32).to_be_bytes());
            v.extend_from_slice(&body);
            v
        }),
    ];
    for (what, bytes) in cases {
        let mut c = b.connect();
        c.send_raw(&bytes);
        assert!(c.is_closed_by_peer(), "{what}: connection left open");
    }
    // A frame cut off mid-way by the client closing: nothing to answer, no harm done.
    {
        let mut c = b.connect();
        c.stream.write_all(&100i32.to_be_bytes()).unwrap();
        c.stream.write_all(&[0, 18]).unwrap();
    }
    assert_serving(&b);
}

/// CRC-32 (IEEE), as a magic 0/1 message carries.
fn crc32_ieee(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn invalid_batches_get_kafka_error_codes_and_use_no_offsets() {
    let b = Broker::start(
        "batches",
        &["message.max.bytes=2000", "auto.create.topics.enable=false"],
    );
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    let good = batch(3, None);
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut two = good.clone();
    two.extend_from_slice(&good);
    // A real magic-1 message (Kafka 0.10's format): offset, length, crc, magic 1,
    // attributes, timestamp, null key, value. Kafka answers INVALID_RECORD from
    // Produce v3 on (ProduceRequest.validateRecords).
    let mut magic1 = Vec::new();
    magic1.extend_from_slice(&0i64.to_be_bytes());
    magic1.extend_from_slice(&27i32.to_be_bytes());
    let message = [
        &[1u8, 0][..],
        &0i64.to_be_bytes(),
        &(-1i32).to_be_bytes(),
        &5i32.to_be_bytes(),
        b"hello",
    ]
    .concat();
    magic1.extend_from_slice(&crc32_ieee(&message).to_be_bytes());
    magic1.extend_from_slice(&message);
    assert_eq!(magic1.len(), 39);
    let mut short = good.clone();
    short.truncate(40);
    let big = encode(
        &[Record {
            key: None,
            value: Some(&[7u8; 3000]),
            headers: &[],
            timestamp: 0,
        }],
        None,
    );
    let mut count_lies = good.clone();
    count_lies[57..61].copy_from_slice(&9i32.to_be_bytes());
    let crc = crc32c::crc32c(&count_lies[21..]);
    count_lies[17..21].copy_from_slice(&crc.to_be_bytes());
    for (what, records, code) in [
        ("crc mismatch", bad_crc, 2),
        ("two batches", two, 87),
        ("magic 1", magic1, 87),
        ("shorter than its length field", short, 87),
        ("over message.max.bytes", big, 10),
        ("record count lies", count_lies, 2),
    ] {
        assert_eq!(produce(&mut c, "t", 0, records).0, code, "{what}");
    }
    let resp: ProduceResponse = c.call(
        ApiKey::Produce,
        PRODUCE_V,
        &produce_request("t", 0, good.clone(), 5),
    );
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 21,
        "INVALID_REQUIRED_ACKS"
    );
    assert_eq!(
        produce(&mut c, "t", 7, good.clone()).0,
        3,
        "unknown partition"
    );
    assert_eq!(
        produce(&mut c, "nope", 0, good.clone()).0,
        3,
        "unknown topic, auto-create off"
    );
    assert_eq!(
        produce(&mut c, "t", 0, good),
        (0, 0),
        "nothing invalid took an offset"
    );
}

#[test]
fn a_fetch_inside_a_batch_returns_the_whole_batch() {
    let b = Broker::start("midbatch", &[]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    assert_eq!(produce(&mut c, "t", 0, batch(10, None)), (0, 0));
    assert_eq!(produce(&mut c, "t", 0, batch(5, None)), (0, 10));
    for (offset, bases) in [
        (0, vec![0, 10]),
        (3, vec![0, 10]),
        (9, vec![0, 10]),
        (12, vec![10]),
    ] {
        let resp: FetchResponse = c.call(
            ApiKey::Fetch,
            FETCH_V,
            &fetch_request("t", &[(0, offset)], 0),
        );
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.high_watermark, 15);
        assert_eq!(
            batch_bases(p.records.as_ref().unwrap()),
            bases,
            "fetch at {offset}"
        );
    }
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_V, &fetch_request("t", &[(0, 16)], 0));
    assert_eq!(
        resp.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );
}

#[test]
fn pipelined_requests_are_answered_in_request_order() {
    let b = Broker::start("pipeline", &[]);
    let mut setup = b.connect();
    create_topic(&mut setup, "t", 2);
    let mut c = b.connect();
    // A slow request first (a fetch that long-polls on an empty partition), then
    // fast ones: the fast answers must wait their turn.
    let ids = [
        c.send(ApiKey::Fetch, FETCH_V, &fetch_request("t", &[(0, 0)], 500)),
        c.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        c.send(
            ApiKey::Produce,
            PRODUCE_V,
            &produce_request("t", 1, batch(1, None), 1),
        ),
        c.send(ApiKey::Metadata, 12, &MetadataRequest::default()),
        c.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
    ];
    for want in ids {
        let frame = c.recv_frame().unwrap();
        let got = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(got, want);
    }
}

#[test]
fn a_long_poll_fetch_wakes_on_append() {
    let b = Broker::start("longpoll", &[]);
    let mut producer = b.connect();
    create_topic(&mut producer, "t", 4);
    let mut consumer = b.connect();
    // Waits up to 60 s; the client's read times out after 30 s, so only a wake-up
    // by the append can make this pass.
    let id = consumer.send(
        ApiKey::Fetch,
        FETCH_V,
        &fetch_request("t", &[(0, 0), (1, 0), (2, 0), (3, 0)], 60_000),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(produce(&mut producer, "t", 3, batch(2, None)), (0, 0));
    let (got, resp): (i32, FetchResponse) = consumer.recv(ApiKey::Fetch, FETCH_V);
    assert_eq!(got, id);
    let p3 = resp.responses[0]
        .partitions
        .iter()
        .find(|p| p.partition_index == 3)
        .unwrap();
    assert_eq!(batch_bases(p3.records.as_ref().unwrap()), vec![0]);
}

#[test]
fn a_long_poll_fetch_gathers_min_bytes_from_partitions_on_every_shard() {
    let b = Broker::start("minbytes", &[]);
    let mut producer = b.connect();
    create_topic(&mut producer, "t", 4);
    let mut consumer = b.connect();
    // min_bytes needs all four batches, so the fetch must keep what the first owners
    // returned while it waits for the others (partitions are spread over the shards).
    let one_batch = batch(2, None).len() as i32;
    let mut req = fetch_request("t", &[(0, 0), (1, 0), (2, 0), (3, 0)], 60_000);
    req.min_bytes = 3 * one_batch + 1;
    let id = consumer.send(ApiKey::Fetch, FETCH_V, &req);
    for p in 0..4 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(produce(&mut producer, "t", p, batch(2, None)), (0, 0));
    }
    let (got, resp): (i32, FetchResponse) = consumer.recv(ApiKey::Fetch, FETCH_V);
    assert_eq!(got, id);
    let mut partitions: Vec<_> = resp.responses[0]
        .partitions
        .iter()
        .map(|p| {
            let bases = batch_bases(p.records.as_ref().unwrap());
            (p.partition_index, bases, p.high_watermark)
        })
        .collect();
    partitions.sort();
    assert_eq!(
        partitions,
        (0..4).map(|p| (p, vec![0], 2)).collect::<Vec<_>>()
    );
}

#[test]
fn idempotent_sequences_are_checked_and_survive_sigkill() {
    let mut b = Broker::start("idempotent", &[]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    let resp: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &{
        let mut r = InitProducerIdRequest::default();
        r.transactional_id = None;
        r.transaction_timeout_ms = 60_000;
        r
    });
    assert_eq!(resp.error_code, 0);
    let pid = resp.producer_id.0;
    assert!(pid >= 0);
    assert_eq!(produce(&mut c, "t", 0, batch(3, Some((pid, 0, 0)))), (0, 0));
    assert_eq!(
        produce(&mut c, "t", 0, batch(3, Some((pid, 0, 0)))),
        (0, 0),
        "a retried batch is a duplicate"
    );
    assert_eq!(produce(&mut c, "t", 0, batch(2, Some((pid, 0, 3)))), (0, 3));
    assert_eq!(
        produce(&mut c, "t", 0, batch(1, Some((pid, 0, 9)))).0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    assert_eq!(
        produce(&mut c, "t", 0, batch(1, Some((pid, 1, 0)))),
        (0, 5),
        "a new epoch starts at 0"
    );
    assert_eq!(
        produce(&mut c, "t", 0, batch(1, Some((pid, 0, 5)))).0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    b.restart(libc::SIGKILL);
    let mut c = b.connect();
    assert_eq!(
        produce(&mut c, "t", 0, batch(1, Some((pid, 1, 0)))),
        (0, 5),
        "duplicate detected after a crash"
    );
    assert_eq!(latest_offset(&mut c, "t", 0), 6);
    assert_eq!(produce(&mut c, "t", 0, batch(1, Some((pid, 1, 1)))), (0, 6));
    // Producer ids are never handed out twice, even across restarts.
    let mut again = InitProducerIdRequest::default();
    again.transactional_id = None;
    let resp: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &again);
    assert!(resp.producer_id.0 > pid);
}

/// The batches at the start of a segment file's bytes, without what follows them (a
/// direct write's zero padding).
fn log_data(mut file: Vec<u8>) -> Vec<u8> {
    let mut end = 0;
    while end + 12 <= file.len() {
        let len = i32::from_be_bytes(file[end + 8..end + 12].try_into().unwrap());
        if len <= 0 || end + 12 + len as usize > file.len() {
            break;
        }
        end += 12 + len as usize;
    }
    file.truncate(end);
    file
}

#[test]
fn recovery_truncates_a_torn_tail_and_keeps_everything_before_it() {
    let mut b = Broker::start("torn", &[]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    for i in 0..3 {
        assert_eq!(produce(&mut c, "t", 0, batch(4, None)), (0, i * 4));
    }
    b.stop(libc::SIGKILL);
    let segment = b.data_dir().join("t-0").join("00000000000000000000.log");
    // Direct writes leave zero padding after the data (recovery trims it).
    let whole = log_data(std::fs::read(&segment).unwrap());
    // A torn write: the first 30 bytes of a fourth batch.
    let mut torn = whole.clone();
    torn.extend_from_slice(&batch(4, None)[..30]);
    std::fs::write(&segment, &torn).unwrap();
    b.restart(libc::SIGKILL);
    let mut c = b.connect();
    assert_eq!(latest_offset(&mut c, "t", 0), 12);
    assert!(
        b.log_text().contains("recovery truncated"),
        "the truncation is logged"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        whole,
        "the torn bytes are gone"
    );
    // A flipped byte in the last batch: that batch goes, the ones before stay.
    b.stop(libc::SIGKILL);
    let mut flipped = whole.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    std::fs::write(&segment, &flipped).unwrap();
    b.restart(libc::SIGKILL);
    let mut c = b.connect();
    assert_eq!(latest_offset(&mut c, "t", 0), 8);
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_V, &fetch_request("t", &[(0, 0)], 0));
    assert_eq!(
        batch_bases(resp.responses[0].partitions[0].records.as_ref().unwrap()),
        vec![0, 4]
    );
    // New appends continue from the truncation point.
    assert_eq!(produce(&mut c, "t", 0, batch(1, None)), (0, 8));
}

#[test]
fn metadata_lists_topics_with_ids_and_auto_creates() {
    let b = Broker::start("metadata", &["num.partitions=3"]);
    let mut c = b.connect();
    let resp = metadata_for(&mut c, "auto", 12, true);
    let t = &resp.topics[0];
    assert_eq!(t.error_code, 0);
    assert_eq!(t.partitions.len(), 3);
    assert!(!t.topic_id.is_nil());
    assert_eq!(resp.brokers[0].port as u16, b.port);
    let mut every = MetadataRequest::default();
    every.topics = None;
    let all: MetadataResponse = c.call(ApiKey::Metadata, 12, &every);
    assert_eq!(all.topics.len(), 1);
    assert_eq!(all.topics[0].topic_id, t.topic_id);
}

#[test]
fn invalid_settings_exit_2_naming_the_key_and_unknown_ones_warn() {
    let dir = common::scratch_dir("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["serve", "--override", "num.partitions=zero", "--override"])
        .arg(format!("log.dirs={}", dir.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("num.partitions"));
    let props = dir.join("server.properties");
    std::fs::write(&props, "listeners=PLAINTEXT://127.0.0.1:notaport\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .arg("serve")
        .arg(&props)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listeners"));
    let b = Broker::start("config-unknown", &["no.such.setting=1"]);
    assert!(b.log_text().contains("no.such.setting"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_large_batch_round_trips_and_is_returned_whole_past_the_fetch_limit() {
    let b = Broker::start("large", &["message.max.bytes=16777216"]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    let value: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 253) as u8).collect();
    let big = encode(
        &[Record {
            key: None,
            value: Some(&value),
            headers: &[],
            timestamp: 5,
        }],
        None,
    );
    assert_eq!(produce(&mut c, "t", 0, big.clone()), (0, 0));
    assert_eq!(produce(&mut c, "t", 0, batch(1, None)), (0, 1));
    // partition_max_bytes (1 MiB) is smaller than the batch: it still comes whole, alone.
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_V, &fetch_request("t", &[(0, 0)], 0));
    let records = resp.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(batch_bases(&records), vec![0]);
    // Byte for byte, except the fields the broker owns (base offset, leader epoch).
    assert!(
        records.len() == big.len() && records[8..12] == big[8..12] && records[16..] == big[16..]
    );
}

fn listed_topics(c: &mut Client) -> Vec<String> {
    let mut every = MetadataRequest::default();
    every.topics = None;
    let all: MetadataResponse = c.call(ApiKey::Metadata, 12, &every);
    all.topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect()
}

/// The sequence behind a deleted topic coming back (librdkafka producers and a regex
/// consumer alive across DeleteTopics): as in Kafka, Produce never creates a topic
/// (UNKNOWN_TOPIC_OR_PARTITION; KafkaApis.handleProduceRequest), nor does Metadata
/// that does not allow it (consumers) or that lists all topics; Metadata by name that
/// allows it (producers; every v0-v3 request) does, right after the delete, with a new
/// id (KRaft's deletion is one record: no deletion stays in flight to refuse it).
#[test]
fn a_deleted_topic_comes_back_only_through_metadata_that_allows_creation() {
    let b = Broker::start("delete-recreate", &["num.partitions=2"]);
    let mut c = b.connect();
    create_topic(&mut c, "gone", 3);
    assert_eq!(produce(&mut c, "gone", 2, batch(2, None)), (0, 0));
    let old_id = metadata_for(&mut c, "gone", 12, false).topics[0].topic_id;
    assert_eq!(delete_topic(&mut c, "gone"), 0);

    assert_eq!(
        produce(&mut c, "gone", 2, batch(2, None)).0,
        3,
        "produce after delete"
    );
    assert_eq!(
        produce(&mut c, "never-was", 0, batch(2, None)).0,
        3,
        "produce, new name"
    );
    let consumer_view = metadata_for(&mut c, "gone", 12, false);
    assert_eq!(
        consumer_view.topics[0].error_code, 3,
        "metadata, creation not allowed"
    );
    assert!(listed_topics(&mut c).is_empty(), "nothing re-created");

    let producer_view = metadata_for(&mut c, "gone", 12, true);
    let t = &producer_view.topics[0];
    assert_eq!(t.error_code, 0);
    assert_eq!(t.partitions.len(), 2, "re-created with num.partitions");
    assert!(
        !t.topic_id.is_nil() && t.topic_id != old_id,
        "a new topic id"
    );
    assert_eq!(
        latest_offset(&mut c, "gone", 1),
        0,
        "the new topic starts empty"
    );
    // Metadata v0-v3 has no allow flag: it always allows creation.
    assert_eq!(
        metadata_for(&mut c, "old-client", 3, true).topics[0].error_code,
        0
    );
    assert_eq!(listed_topics(&mut c), ["gone", "old-client"]);
    drop(c);

    let d = Broker::start("delete-no-autocreate", &["auto.create.topics.enable=false"]);
    let mut c = d.connect();
    create_topic(&mut c, "gone", 1);
    assert_eq!(delete_topic(&mut c, "gone"), 0);
    assert_eq!(
        metadata_for(&mut c, "gone", 12, true).topics[0].error_code,
        3
    );
    assert_eq!(
        metadata_for(&mut c, "gone", 3, true).topics[0].error_code,
        3
    );
    assert!(listed_topics(&mut c).is_empty());
}

/// Sum of `sync_requests=N` over the shards' shutdown lines of the last run.
fn sync_requests_logged(b: &Broker) -> u64 {
    let log = b.log_text();
    log.lines()
        .filter(|l| l.contains("shard stopped"))
        .filter_map(|l| l.split("sync_requests=").nth(1))
        .map(|v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn flush_messages_1_syncs_every_acknowledged_batch() {
    // Broker-wide policy.
    let mut b = Broker::start("flush-every", &["log.flush.interval.messages=1"]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 2);
    for i in 0..40 {
        assert_eq!(produce(&mut c, "t", i % 2, batch(3, None)).0, 0);
    }
    assert_eq!(b.stop(libc::SIGTERM), Some(0));
    assert!(
        sync_requests_logged(&b) >= 40,
        "every append asked for a sync:\n{}",
        b.log_text()
    );
    b.restart(libc::SIGTERM); // for the Drop check

    // Default policy: only the shutdown flush (one per partition with data).
    let mut d = Broker::start("flush-default", &[]);
    let mut c = d.connect();
    create_topic(&mut c, "t", 2);
    for i in 0..40 {
        assert_eq!(produce(&mut c, "t", i % 2, batch(3, None)).0, 0);
    }
    assert_eq!(d.stop(libc::SIGTERM), Some(0));
    assert_eq!(sync_requests_logged(&d), 2);
    d.restart(libc::SIGTERM);

    // Per-topic override.
    let mut e = Broker::start("flush-topic", &[]);
    let mut c = e.connect();
    let mut t = CreatableTopic::default();
    t.name = name("durable");
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut cfg = kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default();
    cfg.name = StrBytes::from_static_str("flush.messages");
    cfg.value = Some(StrBytes::from_static_str("1"));
    t.configs = vec![cfg];
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    for _ in 0..25 {
        assert_eq!(produce(&mut c, "durable", 0, batch(1, None)).0, 0);
    }
    assert_eq!(e.stop(libc::SIGTERM), Some(0));
    assert!(sync_requests_logged(&e) >= 25);
    e.restart(libc::SIGTERM);
}

#[test]
fn damage_in_an_older_segment_takes_only_that_partition_offline() {
    let mut b = Broker::start("older-damage", &["log.segment.bytes=300"]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    create_topic(&mut c, "healthy", 1);
    for i in 0..8 {
        assert_eq!(produce(&mut c, "t", 0, batch(4, None)), (0, i * 4));
    }
    b.stop(libc::SIGKILL);
    let dir = b.data_dir().join("t-0");
    // As if the crash came before a recovery point was stored: the start validates
    // every segment. (Below a recovery point segments are trusted as written, as
    // after a clean shutdown.)
    let _ = std::fs::remove_file(dir.join("recovery-point.json"));
    let segments = segment_logs(&dir);
    assert!(
        segments.len() >= 3,
        "the test needs several segments: {segments:?}"
    );
    let mut first = std::fs::read(&segments[0]).unwrap();
    let at = first.len() / 2;
    first[at] ^= 0x10;
    std::fs::write(&segments[0], &first).unwrap();
    let before: Vec<Vec<u8>> = segments.iter().map(|p| std::fs::read(p).unwrap()).collect();
    b.restart(libc::SIGKILL);
    let mut c = b.connect();
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_V, &fetch_request("t", &[(0, 0)], 0));
    assert_eq!(
        resp.responses[0].partitions[0].error_code, 56,
        "fetch: KAFKA_STORAGE_ERROR"
    );
    assert!(
        resp.responses[0].partitions[0]
            .records
            .as_ref()
            .is_none_or(|r| r.is_empty()),
        "no bad bytes served"
    );
    assert_eq!(
        produce(&mut c, "t", 0, batch(1, None)).0,
        56,
        "produce: KAFKA_STORAGE_ERROR"
    );
    assert_eq!(
        list_offsets(&mut c, "t", 0, -1).error_code,
        56,
        "list offsets: KAFKA_STORAGE_ERROR"
    );
    let after: Vec<Vec<u8>> = segments.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(before == after, "every segment file is left as it was");
    assert!(b.log_text().contains("OFFLINE"));
    assert_eq!(
        produce(&mut c, "healthy", 0, batch(1, None)),
        (0, 0),
        "other partitions keep working"
    );
}

fn earliest_offset(c: &mut Client, topic: &str) -> i64 {
    list_offsets(c, topic, 0, -2).offset
}

/// Waits (10 s at most) until nothing in `dir` is named `*.deleted`: retired files and
/// deleted partitions' directories are removed soon after they are renamed.
fn wait_for_retired_removal(dir: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let retired = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".deleted")
            })
            .count();
        if retired == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{retired} *.deleted entries stay in {}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A partition directory's segment files (`*.log`), oldest first.
fn segment_logs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs
}

fn segment_files(dir: &std::path::Path) -> usize {
    segment_logs(dir).len()
}

#[test]
fn retention_deletes_old_segments_and_moves_the_log_start() {
    let mut b = Broker::start(
        "retention",
        &[
            "log.segment.bytes=300",
            "log.retention.check.interval.ms=50",
        ],
    );
    let mut c = b.connect();
    // Records stamped 1970: past any retention.ms.
    create_topic_with(&mut c, "old", &[("retention.ms", "60000")]);
    // Records stamped far in the future: never old enough for time retention (the
    // topic allows them past Kafka 4's one-hour default).
    create_topic_with(
        &mut c,
        "big",
        &[
            ("retention.bytes", "700"),
            ("message.timestamp.after.max.ms", "9223372036854775807"),
        ],
    );
    for _ in 0..10 {
        assert_eq!(produce(&mut c, "old", 0, batch(4, None)).0, 0);
        let recent = encode(
            &[Record {
                key: None,
                value: Some(&[1u8; 100]),
                headers: &[],
                timestamp: i64::MAX / 2,
            }],
            None,
        );
        assert_eq!(produce(&mut c, "big", 0, recent).0, 0);
    }
    // Retention runs every 50 ms, also while the records above arrive: wait (bounded)
    // until it has done all it will do, then check the result.
    let big_dir = b.data_dir().join("big-0");
    let big_bytes = || -> u64 {
        segment_logs(&big_dir)
            .into_iter()
            .map(|p| log_data(std::fs::read(p).unwrap()).len() as u64)
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while segment_files(&b.data_dir().join("old-0")) > 1 || big_bytes() >= 700 + 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run:\n{}",
            b.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // "old": every segment but the active one is gone.
    let start = earliest_offset(&mut c, "old");
    assert_eq!(segment_files(&b.data_dir().join("old-0")), 1);
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_V, &fetch_request("old", &[(0, 0)], 0));
    assert_eq!(
        resp.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE below the log start"
    );
    assert_eq!(resp.responses[0].partitions[0].log_start_offset, start);
    let resp: FetchResponse = c.call(
        ApiKey::Fetch,
        FETCH_V,
        &fetch_request("old", &[(0, start)], 0),
    );
    assert_eq!(
        batch_bases(resp.responses[0].partitions[0].records.as_ref().unwrap())[0],
        start
    );
    // "big": trimmed to within retention.bytes plus the active segment; recent records
    // are not expired by time, so size alone did this.
    let bytes = big_bytes();
    assert!(bytes < 700 + 300, "{bytes} bytes left");
    // Retired files are renamed at once and unlinked soon after, off the shard.
    wait_for_retired_removal(&b.data_dir().join("old-0"));
    // A crash between the rename and the unlink leaves a retired file: the next start
    // removes it and does not read it as a segment.
    let left = b
        .data_dir()
        .join("old-0")
        .join(format!("{:020}.log.deleted", 0));
    std::fs::write(&left, batch(2, None)).unwrap();
    // The log start survives a restart (it is the first remaining segment).
    b.restart(libc::SIGKILL);
    let mut c = b.connect();
    assert_eq!(earliest_offset(&mut c, "old"), start);
    assert_eq!(latest_offset(&mut c, "old", 0), 40);
    assert!(!left.exists());
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct TinyFs(std::path::PathBuf);

impl TinyFs {
    fn mount(at: std::path::PathBuf, size: &str) -> TinyFs {
        std::fs::create_dir_all(&at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "this test needs root to mount a tmpfs (a real full disk)"
        );
        TinyFs(at)
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_produce_with_storage_error_and_recovers_when_space_returns() {
    let dir = common::scratch_dir("diskfull");
    let fs = TinyFs::mount(dir.join("fs"), "4m");
    let data = fs.0.join("data");
    let mut b = Broker::start(
        "diskfull-broker",
        &[&format!("log.dirs={}", data.display())],
    );
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    for i in 0..5 {
        assert_eq!(produce(&mut c, "t", 0, batch(4, None)), (0, i * 4));
    }
    // Fill the filesystem to the last byte.
    let filler = fs.0.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write(&chunk).unwrap_or(0) > 0 {}
    }
    let big = encode(
        &[Record {
            key: None,
            value: Some(&[9u8; 200 << 10]),
            headers: &[],
            timestamp: 7,
        }],
        None,
    );
    // The partition's preallocated space may take a few more batches; then the disk
    // is full.
    let mut expected: Vec<i64> = vec![0, 4, 8, 12, 16];
    let error = loop {
        let (error, base) = produce(&mut c, "t", 0, big.clone());
        if error != 0 {
            break error;
        }
        assert_eq!(base, 20 + expected.len() as i64 - 5);
        expected.push(base);
        assert!(
            expected.len() < 30,
            "a full 4 MiB file system took 25 batches of 200 KiB"
        );
    };
    assert_eq!(error, 56, "KAFKA_STORAGE_ERROR on a full disk");
    // Reads keep working, and what was acknowledged is all there.
    let next = *expected.last().unwrap() + 1;
    let mut bases = Vec::new();
    while bases.last().map_or(0, |b| b + 1) < next {
        let from = bases.last().map_or(0, |b| b + 1);
        let resp: FetchResponse =
            c.call(ApiKey::Fetch, FETCH_V, &fetch_request("t", &[(0, from)], 0));
        let got = batch_bases(resp.responses[0].partitions[0].records.as_ref().unwrap());
        assert!(!got.is_empty(), "no batches from offset {from}");
        bases.extend(got);
    }
    assert_eq!(bases, expected);
    // Space returns: appends continue right after the acknowledged data.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(produce(&mut c, "t", 0, big), (0, next));
    assert_eq!(produce(&mut c, "t", 0, batch(1, None)), (0, next + 1));
    b.restart(libc::SIGTERM);
    let mut c = b.connect();
    assert_eq!(latest_offset(&mut c, "t", 0), next + 2);
    drop(b);
    drop(fs);
    let _ = std::fs::remove_dir_all(dir);
}

fn delete_records(c: &mut Client, topic: &str, offset: i64) -> (i16, i64) {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::delete_records_response::DeleteRecordsResponse;
    let mut p = DeleteRecordsPartition::default();
    p.offset = offset;
    let mut t = DeleteRecordsTopic::default();
    t.name = name(topic);
    t.partitions = vec![p];
    let mut req = DeleteRecordsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let resp: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, 2, &req);
    let r = &resp.topics[0].partitions[0];
    (r.error_code, r.low_watermark)
}

#[test]
fn delete_records_moves_the_log_start_durably() {
    let mut b = Broker::start("deleterecords", &["log.segment.bytes=300"]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    for i in 0..10 {
        assert_eq!(produce(&mut c, "t", 0, batch(4, None)), (0, i * 4));
    }
    let segments_before = segment_files(&b.data_dir().join("t-0"));
    assert_eq!(delete_records(&mut c, "t", 22), (0, 22));
    assert_eq!(earliest_offset(&mut c, "t"), 22);
    assert!(
        segment_files(&b.data_dir().join("t-0")) < segments_before,
        "segments wholly below 22 are gone"
    );
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_V, &fetch_request("t", &[(0, 21)], 0));
    assert_eq!(
        resp.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE below the low watermark"
    );
    assert_eq!(resp.responses[0].partitions[0].log_start_offset, 22);
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_V, &fetch_request("t", &[(0, 22)], 0));
    assert_eq!(
        batch_bases(resp.responses[0].partitions[0].records.as_ref().unwrap())[0],
        20
    );
    assert_eq!(delete_records(&mut c, "t", 10), (0, 22), "never moves back");
    assert_eq!(
        delete_records(&mut c, "t", 41).0,
        1,
        "past the end: OFFSET_OUT_OF_RANGE"
    );
    b.restart(libc::SIGKILL);
    let mut c = b.connect();
    assert_eq!(
        earliest_offset(&mut c, "t"),
        22,
        "the low watermark survives a crash"
    );
    assert_eq!(
        delete_records(&mut c, "t", -1),
        (0, 40),
        "-1 means the high watermark"
    );
    assert_eq!(produce(&mut c, "t", 0, batch(1, None)), (0, 40));
}

#[test]
fn segments_roll_when_their_batches_span_log_roll_ms() {
    let b = Broker::start("timeroll", &["log.roll.ms=1000"]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    let at = |ts: i64| {
        encode(
            &[Record {
                key: None,
                value: Some(b"v"),
                headers: &[],
                timestamp: ts,
            }],
            None,
        )
    };
    let t0 = 1_700_000_000_000;
    for (i, ts) in [t0, t0 + 500, t0 + 1_500, t0 + 1_600, t0 + 2_400]
        .into_iter()
        .enumerate()
    {
        assert_eq!(produce(&mut c, "t", 0, at(ts)), (0, i as i64));
    }
    let mut names: Vec<String> = std::fs::read_dir(b.data_dir().join("t-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    // t0+1500 is more than 1000 ms after the first segment's first batch; t0+2400 is
    // not more than 1000 ms after the second's.
    assert_eq!(
        names,
        ["00000000000000000000.log", "00000000000000000002.log"]
    );
}

fn offset_for_time(c: &mut Client, topic: &str, timestamp: i64) -> (i64, i64) {
    let p = list_offsets(c, topic, 0, timestamp);
    assert_eq!(p.error_code, 0);
    (p.offset, p.timestamp)
}

/// One record with this timestamp.
fn timed_batch(timestamp: i64) -> Vec<u8> {
    encode(
        &[Record {
            key: None,
            value: Some(&[7u8; 200]),
            headers: &[],
            timestamp,
        }],
        None,
    )
}

#[test]
fn time_index_finds_offsets_by_timestamp_and_index_files_are_trimmed_on_roll() {
    // Small segments and a dense index: many segments, many index entries.
    let b = Broker::start(
        "timeindex",
        &["log.segment.bytes=8192", "log.index.interval.bytes=600"],
    );
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    // Timestamps rise by 10 per record, with one out-of-order record (Kafka allows
    // them: the time index keeps the maximum so far).
    let mut timestamps: Vec<i64> = (0..200).map(|i| 100_000 + i * 10).collect();
    timestamps[57] = 100_000 + 40 * 10;
    for (i, &ts) in timestamps.iter().enumerate() {
        assert_eq!(produce(&mut c, "t", 0, timed_batch(ts)), (0, i as i64));
    }
    for target in [
        0, 100_000, 100_005, 100_570, 100_575, 100_580, 101_000, 101_990,
    ] {
        let expected = timestamps
            .iter()
            .position(|&ts| ts >= target)
            .map(|o| (o as i64, timestamps[o]))
            .unwrap();
        assert_eq!(
            offset_for_time(&mut c, "t", target),
            expected,
            "target {target}"
        );
    }
    assert_eq!(offset_for_time(&mut c, "t", 200_000), (-1, -1));
    // Rolled segments have index files trimmed to their entries; the active one's are
    // preallocated at log.index.size.max.bytes, as Kafka does.
    let dir = b.data_dir().join("t-0");
    let mut bases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log").map(str::to_string)
        })
        .collect();
    bases.sort();
    assert!(bases.len() > 3, "expected several segments, got {bases:?}");
    let size = |base: &str, ext: &str| {
        std::fs::metadata(dir.join(format!("{base}.{ext}")))
            .unwrap()
            .len()
    };
    for base in &bases[..bases.len() - 1] {
        let (index, time) = (size(base, "index"), size(base, "timeindex"));
        assert!(
            index > 0 && index % 8 == 0 && index < 8192,
            "{base}.index: {index}"
        );
        assert!(
            time > 0 && time % 12 == 0 && time < 8192,
            "{base}.timeindex: {time}"
        );
    }
    let active = bases.last().unwrap();
    assert_eq!(size(active, "index"), 10 * 1024 * 1024);
    assert_eq!(size(active, "timeindex"), 10 * 1024 * 1024);
}

/// Index entries are written after an append lets the next one in; a clean shutdown
/// must wait for those writes before it seals the index files and vouches for them.
/// With an entry per batch and appends still arriving at SIGTERM, every entry of the
/// trusted index must point at the batch it names.
#[test]
fn a_clean_shutdown_under_appends_leaves_complete_index_files() {
    // An entry per batch, and segments of some 650 batches: a rolled segment gets
    // entries written while appending (every 512) and at its roll, the active one at
    // the shutdown.
    let mut b = Broker::start(
        "clean-index",
        &["log.index.interval.bytes=1", "log.segment.bytes=65536"],
    );
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    // Pipelined: 1,500 appends sent at once, then stopped while they are being written.
    for _ in 0..1_500 {
        c.send(
            ApiKey::Produce,
            PRODUCE_V,
            &produce_request("t", 0, batch(3, None), 1),
        );
    }
    for _ in 0..1_200 {
        let _: (i32, ProduceResponse) = c.recv(ApiKey::Produce, PRODUCE_V);
    }
    assert_eq!(b.stop(libc::SIGTERM), Some(0));
    let dir = b.data_dir().join("t-0");
    let logs = segment_logs(&dir);
    assert!(logs.len() >= 2, "{logs:?}");
    for (i, log_path) in logs.iter().enumerate() {
        let log = std::fs::read(log_path).unwrap();
        let index = std::fs::read(log_path.with_extension("index")).unwrap();
        let base: i64 = log_path
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // Every batch the segment holds has its entry, in order, pointing at it.
        let batches: Vec<(i64, usize)> = batch_starts(&log)
            .into_iter()
            .map(|(offset, at)| (offset - base, at))
            .collect();
        assert!(i > 0 || batches.len() > 512, "{} batches", batches.len());
        let entries: Vec<(i64, usize)> = index
            .chunks_exact(8)
            .map(|e| {
                let rel = u32::from_be_bytes(e[..4].try_into().unwrap());
                let at = u32::from_be_bytes(e[4..].try_into().unwrap());
                (rel as i64, at as usize)
            })
            .collect();
        assert_eq!(entries, batches, "{}", log_path.display());
    }
    // And the next start trusts them.
    b.restart(libc::SIGTERM);
    assert!(
        b.log_text().contains("opened_by=CleanShutdown"),
        "{}",
        b.log_text()
    );
}

#[test]
fn a_clean_shutdown_lets_the_next_start_skip_the_scan() {
    let mut b = Broker::start("clean", &["log.segment.bytes=4096"]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 1);
    let resp: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &{
        let mut r = InitProducerIdRequest::default();
        r.transactional_id = None;
        r
    });
    let pid = resp.producer_id.0;
    for i in 0..40 {
        let (err, offset) = produce(&mut c, "t", 0, batch(2, Some((pid, 0, i * 2))));
        assert_eq!((err, offset), (0, i as i64 * 2));
    }
    let ts_before = offset_for_time(&mut c, "t", 1_000);
    assert_eq!(b.stop(libc::SIGTERM), Some(0));
    assert!(b.data_dir().join(".ringlog-clean-shutdown").exists());
    b.restart(libc::SIGTERM);
    let text = b.log_text();
    assert!(text.contains("the last shutdown was clean"), "{text}");
    assert!(text.contains("opened_by=CleanShutdown"), "{text}");
    assert!(!b.data_dir().join(".ringlog-clean-shutdown").exists());
    assert!(!b
        .data_dir()
        .join("t-0")
        .join("clean-shutdown.json")
        .exists());
    let mut c = b.connect();
    assert_eq!(latest_offset(&mut c, "t", 0), 80);
    assert_eq!(offset_for_time(&mut c, "t", 1_000), ts_before);
    // The producer state came through: a resent batch is a duplicate, the next goes on.
    assert_eq!(
        produce(&mut c, "t", 0, batch(2, Some((pid, 0, 78)))),
        (0, 78)
    );
    assert_eq!(
        produce(&mut c, "t", 0, batch(2, Some((pid, 0, 80)))),
        (0, 80)
    );
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_V, &fetch_request("t", &[(0, 0)], 0));
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    // A crash after that start: no marker, so the next start scans (all of the log,
    // or what follows its recovery point).
    b.restart(libc::SIGKILL);
    let text = b.log_text();
    let last_start = text.rsplit("==== start #").next().unwrap();
    assert!(
        last_start.contains("recovered partition log")
            && !last_start.contains("opened_by=CleanShutdown"),
        "{text}"
    );
    let mut c = b.connect();
    assert_eq!(latest_offset(&mut c, "t", 0), 82);
    // Files changed behind a clean shutdown's back are not trusted: the record no
    // longer matches, so the partition is scanned and the garbage cut.
    assert_eq!(b.stop(libc::SIGTERM), Some(0));
    let dir = b.data_dir().join("t-0");
    let logs = segment_logs(&dir);
    let active = logs.last().unwrap();
    let mut bytes = std::fs::read(active).unwrap();
    bytes.extend_from_slice(&[0xee; 100]);
    std::fs::write(active, &bytes).unwrap();
    b.restart(libc::SIGKILL);
    let text = b.log_text();
    assert!(
        text.contains("differs from the clean-shutdown snapshot"),
        "{text}"
    );
    assert!(text.contains("recovery truncated"), "{text}");
    let mut c = b.connect();
    assert_eq!(latest_offset(&mut c, "t", 0), 82);
}

#[test]
fn group_requests_get_kafkas_error_codes() {
    use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
    use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
    use kafka_protocol::messages::join_group_request::{
        JoinGroupRequest, JoinGroupRequestProtocol,
    };
    use kafka_protocol::messages::join_group_response::JoinGroupResponse;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_commit_response::OffsetCommitResponse;
    use kafka_protocol::messages::GroupId;
    let b = Broker::start("group-errors", &["group.initial.rebalance.delay.ms=0"]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 2);
    let join = |member_id: &str, session_timeout_ms: i32| {
        let mut p = JoinGroupRequestProtocol::default();
        p.name = StrBytes::from_static_str("range");
        p.metadata = Bytes::from_static(&[0, 0, 0, 0, 0, 0]);
        let mut r = JoinGroupRequest::default();
        r.group_id = GroupId(StrBytes::from_static_str("g"));
        r.session_timeout_ms = session_timeout_ms;
        r.rebalance_timeout_ms = 10_000;
        r.member_id = StrBytes::from_string(member_id.to_string());
        r.protocol_type = StrBytes::from_static_str("consumer");
        r.protocols = vec![p];
        r
    };
    // Outside group.{min,max}.session.timeout.ms.
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join("", 10));
    assert_eq!(r.error_code, 26, "INVALID_SESSION_TIMEOUT");
    // KIP-394: the first join only hands out a member id.
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join("", 10_000));
    assert_eq!(r.error_code, 79, "MEMBER_ID_REQUIRED");
    let member = r.member_id.to_string();
    assert!(!member.is_empty());
    // Joining with it completes generation 1, with this member leading.
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join(&member, 10_000));
    assert_eq!((r.error_code, r.generation_id), (0, 1));
    assert_eq!(r.leader.as_str(), member);
    let heartbeat = |c: &mut Client, member: &str, generation: i32| -> i16 {
        let mut h = HeartbeatRequest::default();
        h.group_id = GroupId(StrBytes::from_static_str("g"));
        h.member_id = StrBytes::from_string(member.to_string());
        h.generation_id = generation;
        let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &h);
        r.error_code
    };
    assert_eq!(heartbeat(&mut c, &member, 1), 0);
    assert_eq!(heartbeat(&mut c, &member, 7), 22, "ILLEGAL_GENERATION");
    assert_eq!(heartbeat(&mut c, "stranger", 1), 25, "UNKNOWN_MEMBER_ID");
    let commit = |c: &mut Client, member: &str, generation: i32, topic: &'static str| -> i16 {
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = 5;
        let mut t = OffsetCommitRequestTopic::default();
        t.name = name(topic);
        t.partitions = vec![p];
        let mut r = OffsetCommitRequest::default();
        r.group_id = GroupId(StrBytes::from_static_str("g"));
        r.generation_id_or_member_epoch = generation;
        r.member_id = StrBytes::from_string(member.to_string());
        r.topics = vec![t];
        let resp: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &r);
        resp.topics[0].partitions[0].error_code
    };
    // Before the leader's SyncGroup the group is still completing its rebalance.
    assert_eq!(commit(&mut c, &member, 1, "t"), 27, "REBALANCE_IN_PROGRESS");
    assert_eq!(commit(&mut c, &member, 0, "t"), 22, "ILLEGAL_GENERATION");
    assert_eq!(commit(&mut c, "stranger", 1, "t"), 25, "UNKNOWN_MEMBER_ID");
    // A group that does not exist accepts a standalone commit (generation -1), but
    // not for a topic that does not exist.
    let mut other = OffsetCommitRequest::default();
    other.group_id = GroupId(StrBytes::from_static_str("standalone"));
    other.generation_id_or_member_epoch = -1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = name("nope");
    t.partitions = vec![OffsetCommitRequestPartition::default()];
    other.topics = vec![t];
    let resp: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &other);
    assert_eq!(
        resp.topics[0].partitions[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_serving(&b);
}

#[test]
fn clients_neither_create_nor_append_to_consumer_offsets() {
    use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
    use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
    let b = Broker::start("internal-topic", &["offsets.topic.num.partitions=7"]);
    let mut c = b.connect();
    let offsets_topic = |c: &mut Client, create: bool| -> MetadataResponse {
        let mut req = MetadataRequest::default();
        req.topics = Some(vec![{
            let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
            t.name = Some(name("__consumer_offsets"));
            t
        }]);
        req.allow_auto_topic_creation = create;
        c.call(ApiKey::Metadata, 12, &req)
    };
    // Auto-creation would give it num.partitions (1): it is left to the coordinator.
    assert_eq!(offsets_topic(&mut c, true).topics[0].error_code, 3);
    let (code, _) = produce(&mut c, "__consumer_offsets", 0, batch(1, None));
    assert_eq!(code, 17, "INVALID_TOPIC_EXCEPTION");
    // The first FindCoordinator creates it, with offsets.topic.num.partitions.
    let mut find = FindCoordinatorRequest::default();
    find.key = StrBytes::from_static_str("some-group");
    let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 3, &find);
    assert_eq!((r.error_code, r.port as u16), (0, b.port));
    let meta = offsets_topic(&mut c, false);
    assert_eq!(meta.topics[0].error_code, 0);
    assert!(meta.topics[0].is_internal);
    assert_eq!(meta.topics[0].partitions.len(), 7);
    let (code, _) = produce(&mut c, "__consumer_offsets", 0, batch(1, None));
    assert_eq!(code, 17, "still not writable by clients");
}

/// A fetch response far larger than the client's socket buffer, read only after a
/// pause: with zero copy the broker's sendfile fills the socket, gets EAGAIN and
/// finishes through its copying fallback; every batch must arrive intact and in
/// order, as it does through the copying path (`ringlog.fetch.zero.copy=false`).
#[test]
fn a_large_fetch_to_a_slow_reader_arrives_intact_with_and_without_zero_copy() {
    use std::os::fd::AsRawFd;
    for zero_copy in ["true", "false"] {
        let setting = format!("ringlog.fetch.zero.copy={zero_copy}");
        let b = Broker::start("zero-copy", &[&setting]);
        let mut c = b.connect();
        create_topic(&mut c, "t", 2);
        let mut sent: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        for p in 0..2i32 {
            for i in 0..24i64 {
                let value: Vec<u8> = (0..250_000u32)
                    .map(|x| (x as i64 * 7 + i + p as i64) as u8)
                    .collect();
                let key = format!("{p}-{i}");
                let rec = encode(
                    &[Record {
                        key: Some(key.as_bytes()),
                        value: Some(&value),
                        headers: &[],
                        timestamp: 1_000 + i,
                    }],
                    None,
                );
                assert_eq!(produce(&mut c, "t", p, rec.clone()), (0, i));
                sent[p as usize].push(rec);
            }
        }
        let small: libc::c_int = 64 << 10;
        // SAFETY: setsockopt on the client's own socket with a c_int option value.
        unsafe {
            libc::setsockopt(
                c.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let mut req = fetch_request("t", &[(0, 0), (1, 0)], 0);
        for p in &mut req.topics[0].partitions {
            p.partition_max_bytes = 16 << 20;
        }
        let id = c.send(ApiKey::Fetch, FETCH_V, &req);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (got, resp): (i32, FetchResponse) = c.recv(ApiKey::Fetch, FETCH_V);
        assert_eq!(got, id);
        for part in &resp.responses[0].partitions {
            let records = part.records.clone().expect("records");
            let want = &sent[part.partition_index as usize];
            assert_eq!(
                batch_bases(&records),
                (0..24).collect::<Vec<i64>>(),
                "{setting}"
            );
            let mut at = 0;
            for (i, batch) in want.iter().enumerate() {
                let got = &records[at..at + batch.len()];
                ringlog::protocol::batch::validate(got, 16 << 20).expect("a valid batch");
                // Byte for byte, except the fields the broker owns.
                assert!(
                    got[8..12] == batch[8..12] && got[16..] == batch[16..],
                    "{setting}: partition {} batch {i} differs",
                    part.partition_index
                );
                at += batch.len();
            }
            assert_eq!(at, records.len());
        }
        assert_serving(&b);
    }
}

/// The thread that unlinks deleted files runs on any of the broker's CPUs, not pinned
/// to the shard that deleted them (whose CPU it would take while it unlinks).
#[test]
fn the_reaper_thread_is_not_pinned_to_a_shard() {
    let cpus_allowed = |status: &std::path::Path| -> String {
        let status = std::fs::read_to_string(status).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or_default();
        cpus.trim().to_string()
    };
    let own_cpus = cpus_allowed("/proc/self/status".as_ref());
    if !own_cpus.contains(['-', ',']) {
        eprintln!("one CPU ({own_cpus}): nothing to tell apart, skipped");
        return;
    }
    let b = Broker::start("reaper", &["ringlog.cpus=0"]);
    let mut c = b.connect();
    // A deletion, so that a reaper started on demand (by the shard) exists too.
    create_topic(&mut c, "reaped", 1);
    assert_eq!(produce(&mut c, "reaped", 0, batch(3, None)).0, 0);
    assert_eq!(delete_topic(&mut c, "reaped"), 0);
    let pid = b.pid().unwrap();
    let threads: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            (
                comm.trim().to_string(),
                cpus_allowed(&task.path().join("status")),
            )
        })
        .collect();
    let cpus_of = |name: &str| {
        threads
            .iter()
            .find(|(comm, _)| comm.starts_with(name))
            .map(|(_, cpus)| cpus.as_str())
    };
    assert_eq!(cpus_of("shard-0"), Some("0"), "{threads:?}");
    assert_eq!(
        cpus_of("ringlog-reaper"),
        Some(own_cpus.as_str()),
        "{threads:?}"
    );
}

/// Deleting a topic renames its partition directories at once and removes them off
/// the shard; a directory such a rename left behind (a crash before the removal) is
/// removed at the next start.
#[test]
fn a_deleted_topic_leaves_no_directory_and_a_left_over_one_goes_at_start() {
    let mut b = Broker::start("deletetopic", &[]);
    let mut c = b.connect();
    create_topic(&mut c, "doomed", 2);
    for _ in 0..5 {
        assert_eq!(produce(&mut c, "doomed", 1, batch(3, None)).0, 0);
    }
    let partition_dir = b.data_dir().join("doomed-1");
    assert!(partition_dir.is_dir());
    assert_eq!(delete_topic(&mut c, "doomed"), 0);
    assert!(!partition_dir.exists());
    wait_for_retired_removal(&b.data_dir());
    let left = b.data_dir().join("doomed-0.1.deleted");
    std::fs::create_dir(&left).unwrap();
    std::fs::write(left.join(format!("{:020}.log", 0)), batch(2, None)).unwrap();
    b.restart(libc::SIGKILL);
    assert!(!left.exists());
    let mut c = b.connect();
    create_topic(&mut c, "doomed", 2);
    assert_eq!(latest_offset(&mut c, "doomed", 1), 0);
}

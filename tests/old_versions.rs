//! Request versions Kafka 3.9 served and 4.0 dropped (KIP-896), at the byte level
//! against the real broker: each request written field by field from Kafka 3.9's
//! schemas, as an old client writes it, and each answer compared byte for byte.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::kafka::*;
use common::{Broker, Client};
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::join_group_response::JoinGroupResponse;
use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{ApiKey, GroupId};
use kafka_protocol::protocol::StrBytes;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNSUPPORTED_VERSION: i16 = 35;
const TOPIC_ALREADY_EXISTS: i16 = 36;

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

/// Sends a request body at `version` and returns the answer after the correlation id.
fn call_raw(c: &mut Client, api_key: i16, version: i16, body: &BytesMut) -> Bytes {
    c.send_raw(&raw_request(api_key, version, 42, body));
    let frame = c.recv_frame().expect("an answer");
    assert_eq!(frame[..4], 42i32.to_be_bytes(), "correlation id");
    frame.slice(4..)
}

/// ListOffsets v0 for partitions of `topic`: (partition, timestamp, max_num_offsets).
fn list_offsets_v0(c: &mut Client, topic: &str, asks: &[(i32, i64, i32)]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i32(-1);
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(asks.len() as i32);
    for &(p, ts, max) in asks {
        b.put_i32(p);
        b.put_i64(ts);
        b.put_i32(max);
    }
    call_raw(c, 2, 0, &b)
}

/// The v0 answer we expect: (partition, error, offsets) for `topic`.
fn old_style_offsets(topic: &str, parts: &[(i32, i16, &[i64])]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(1);
    put_str(&mut b, topic);
    b.put_i32(parts.len() as i32);
    for &(p, code, offsets) in parts {
        b.put_i32(p);
        b.put_i16(code);
        b.put_i32(offsets.len() as i32);
        offsets.iter().for_each(|o| b.put_i64(*o));
    }
    b
}

#[test]
fn list_offsets_v0_answers_segment_starts_as_kafka_3_9() {
    let b = Broker::start("old-list-offsets", &[]);
    let mut c = b.connect();
    // Small segments: each 3-record batch rolls a new one.
    create_topic_with(&mut c, "lo", &[("segment.bytes", "100")]);
    for _ in 0..3 {
        assert_eq!(produce(&mut c, "lo", 0, batch(3, None)).0, 0);
    }
    let answer = list_offsets_v0(
        &mut c,
        "lo",
        &[
            (0, -1, 1),
            (0, -1, 10),
            (0, -2, 5),
            (0, 0, 5),
            (0, -3, 1),
            (7, -1, 1),
        ],
    );
    let expected = old_style_offsets(
        "lo",
        &[
            (0, 0, &[9]),
            (0, 0, &[9, 6, 3, 0]),
            (0, 0, &[0]),
            // No segment was modified at or before 1970.
            (0, 0, &[]),
            // Timestamps below -2 are not v0's.
            (0, UNSUPPORTED_VERSION, &[]),
            (7, UNKNOWN_TOPIC_OR_PARTITION, &[]),
        ],
    );
    assert_eq!(answer, expected.freeze());
}

/// OffsetCommit v0 and OffsetFetch v0 stored offsets in ZooKeeper: Kafka 3.9 in KRaft
/// mode advertises them and answers UNSUPPORTED_VERSION per partition; v1 is served.
#[test]
fn offset_commit_v0_v1_and_offset_fetch_v0_v1_answer_as_kafka_3_9_in_kraft_mode() {
    let b = Broker::start("old-offsets", &[]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 2);
    let commit = |c: &mut Client, version: i16, offset: i64| {
        let mut body = BytesMut::new();
        put_str(&mut body, "old-group");
        if version >= 1 {
            body.put_i32(-1); // generation: a commit outside any generation
            put_str(&mut body, "");
        }
        body.put_i32(1);
        put_str(&mut body, "t");
        body.put_i32(2);
        for p in 0..2 {
            body.put_i32(p);
            body.put_i64(offset + p as i64);
            if version >= 1 {
                body.put_i64(-1); // commit timestamp: the broker's
            }
            put_str(&mut body, "meta");
        }
        call_raw(c, 8, version, &body)
    };
    let commit_answer = |code: i16| {
        let mut b = BytesMut::new();
        b.put_i32(1);
        put_str(&mut b, "t");
        b.put_i32(2);
        for p in 0..2 {
            b.put_i32(p);
            b.put_i16(code);
        }
        b.freeze()
    };
    assert_eq!(commit(&mut c, 0, 5), commit_answer(UNSUPPORTED_VERSION));
    assert_eq!(commit(&mut c, 1, 7), commit_answer(0));

    let fetch = |c: &mut Client, version: i16| {
        let mut body = BytesMut::new();
        put_str(&mut body, "old-group");
        body.put_i32(1);
        put_str(&mut body, "t");
        body.put_i32(2);
        body.put_i32(0);
        body.put_i32(1);
        call_raw(c, 9, version, &body)
    };
    let fetch_answer = |found: Option<i64>| {
        let mut b = BytesMut::new();
        b.put_i32(1);
        put_str(&mut b, "t");
        b.put_i32(2);
        for p in 0..2 {
            b.put_i32(p);
            b.put_i64(found.map_or(-1, |o| o + p as i64));
            put_str(&mut b, if found.is_some() { "meta" } else { "" });
            b.put_i16(if found.is_some() {
                0
            } else {
                UNSUPPORTED_VERSION
            });
        }
        b.freeze()
    };
    assert_eq!(fetch(&mut c, 0), fetch_answer(None));
    assert_eq!(fetch(&mut c, 1), fetch_answer(Some(7)));
}

#[test]
fn create_topics_v0_v1_and_delete_topics_v0_answer_in_their_own_layouts() {
    let b = Broker::start("old-admin", &[]);
    let mut c = b.connect();
    let create = |c: &mut Client, version: i16, topic: &str| {
        let mut body = BytesMut::new();
        body.put_i32(1);
        put_str(&mut body, topic);
        body.put_i32(2); // partitions
        body.put_i16(1); // replication factor
        body.put_i32(0); // no assignments
        body.put_i32(1);
        put_str(&mut body, "retention.ms");
        put_str(&mut body, "60000");
        body.put_i32(10_000);
        if version >= 1 {
            body.put_u8(0); // validate_only
        }
        call_raw(c, 19, version, &body)
    };
    let mut v0 = BytesMut::new();
    v0.put_i32(1);
    put_str(&mut v0, "made-by-v0");
    v0.put_i16(0);
    assert_eq!(create(&mut c, 0, "made-by-v0"), v0.freeze());
    let again = create(&mut c, 0, "made-by-v0");
    assert_eq!(again[again.len() - 2..], TOPIC_ALREADY_EXISTS.to_be_bytes());
    // v1 adds the error message (null on success), still no throttle time.
    let mut v1 = BytesMut::new();
    v1.put_i32(1);
    put_str(&mut v1, "made-by-v1");
    v1.put_i16(0);
    v1.put_i16(-1);
    assert_eq!(create(&mut c, 1, "made-by-v1"), v1.freeze());
    assert_eq!(latest_offset(&mut c, "made-by-v0", 1), 0);

    let mut body = BytesMut::new();
    body.put_i32(2);
    put_str(&mut body, "made-by-v0");
    put_str(&mut body, "never-was");
    body.put_i32(10_000);
    let mut expected = BytesMut::new();
    expected.put_i32(2);
    put_str(&mut expected, "made-by-v0");
    expected.put_i16(0);
    put_str(&mut expected, "never-was");
    expected.put_i16(UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(call_raw(&mut c, 20, 0, &body), expected.freeze());
}

/// JoinGroup v0 has no rebalance timeout (the session timeout serves); SyncGroup v0
/// then hands out the leader's assignment.
#[test]
fn a_group_forms_through_join_group_v0_and_v1() {
    let b = Broker::start("old-join", &["group.initial.rebalance.delay.ms=0"]);
    for version in [0i16, 1] {
        let mut c = b.connect();
        let group = format!("old-join-v{version}");
        let mut join = JoinGroupRequest::default();
        join.group_id = GroupId(StrBytes::from_string(group.clone()));
        join.session_timeout_ms = 10_000;
        if version >= 1 {
            join.rebalance_timeout_ms = 10_000;
        }
        join.protocol_type = StrBytes::from_static_str("consumer");
        let mut protocol = JoinGroupRequestProtocol::default();
        protocol.name = StrBytes::from_static_str("range");
        protocol.metadata = Bytes::from_static(b"subscription");
        join.protocols = vec![protocol];
        let joined: JoinGroupResponse = c.call(ApiKey::JoinGroup, version, &join);
        assert_eq!(joined.error_code, 0, "JoinGroup v{version}");
        assert_eq!(joined.leader, joined.member_id);
        assert_eq!(joined.members.len(), 1);
        assert_eq!(
            joined.members[0].metadata,
            Bytes::from_static(b"subscription")
        );
        let mut sync = SyncGroupRequest::default();
        sync.group_id = join.group_id.clone();
        sync.generation_id = joined.generation_id;
        sync.member_id = joined.member_id.clone();
        let mut assignment =
            kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default();
        assignment.member_id = joined.member_id.clone();
        assignment.assignment = Bytes::from_static(b"yours");
        sync.assignments = vec![assignment];
        let synced: SyncGroupResponse = c.call(ApiKey::SyncGroup, 0, &sync);
        assert_eq!(synced.error_code, 0);
        assert_eq!(synced.assignment, Bytes::from_static(b"yours"));
    }
}

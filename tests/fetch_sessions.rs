//! Incremental fetch sessions (KIP-227) at the byte level against the real broker:
//! a session's answers hold only what changed, forgotten partitions stay out, epochs
//! and ids are checked with Kafka's error codes, and a full cache refuses or evicts
//! as Kafka's does. Real clients' use of sessions is covered by the Python suites.

mod common;

use common::kafka::*;
use common::{Broker, Client};
use kafka_protocol::messages::fetch_request::{FetchRequest, ForgottenTopic};
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::{ApiKey, BrokerId};

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// A full fetch of `partitions` of `topic` that asks for a new session.
fn open_session(topic: &str, partitions: &[(i32, i64)]) -> FetchRequest {
    let mut req = fetch_request(topic, partitions, 0);
    req.session_epoch = 0;
    req
}

/// An incremental fetch on session `id` at `epoch`, naming `changed` partitions.
fn incremental(id: i32, epoch: i32, topic: &str, changed: &[(i32, i64)]) -> FetchRequest {
    let mut req = fetch_request(topic, changed, 100);
    if changed.is_empty() {
        req.topics.clear();
    }
    req.session_id = id;
    req.session_epoch = epoch;
    req
}

fn forget(req: &mut FetchRequest, topic: &str, partitions: &[i32]) {
    let mut f = ForgottenTopic::default();
    f.topic = name(topic);
    f.partitions = partitions.to_vec();
    req.forgotten_topics_data.push(f);
}

fn fetch(c: &mut Client, version: i16, req: &FetchRequest) -> FetchResponse {
    c.call(ApiKey::Fetch, version, req)
}

/// (partition, high watermark, record bytes) of each partition in the answer.
fn answered(resp: &FetchResponse) -> Vec<(i32, i64, usize)> {
    let mut out: Vec<_> = resp
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
            let bytes = p.records.as_ref().map_or(0, |r| r.len());
            (p.partition_index, p.high_watermark, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn an_incremental_fetch_answers_only_what_changed() {
    let b = Broker::start("session-changes", &[]);
    let mut producer = b.connect();
    create_topic(&mut producer, "t", 4);
    let mut c = b.connect();
    let all: Vec<(i32, i64)> = (0..4).map(|p| (p, 0)).collect();

    let full = fetch(&mut c, FETCH_V, &open_session("t", &all));
    assert_eq!(full.error_code, 0);
    let id = full.session_id;
    assert!(id > 0, "a session is made");
    assert_eq!(
        answered(&full),
        (0..4).map(|p| (p, 0, 0)).collect::<Vec<_>>()
    );

    // Nothing changed: an empty answer, still in the session.
    let quiet = fetch(&mut c, FETCH_V, &incremental(id, 1, "t", &[]));
    assert_eq!((quiet.error_code, quiet.session_id), (0, id));
    assert_eq!(answered(&quiet), vec![]);

    // Records in one partition: only that one is answered.
    let one = batch(3, None);
    assert_eq!(produce(&mut producer, "t", 2, one.clone()), (0, 0));
    let changed = fetch(&mut c, FETCH_V, &incremental(id, 2, "t", &[]));
    assert_eq!(answered(&changed), vec![(2, 3, one.len())]);

    // Its new position comes with the next fetch; the cached ones stay as they were.
    assert_eq!(produce(&mut producer, "t", 0, batch(1, None)), (0, 0));
    let next = fetch(&mut c, FETCH_V, &incremental(id, 3, "t", &[(2, 3)]));
    let got = answered(&next);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (0, 1));
    let quiet = fetch(&mut c, FETCH_V, &incremental(id, 4, "t", &[(0, 1)]));
    assert_eq!(answered(&quiet), vec![]);

    // A forgotten partition stays out of the answers.
    let mut req = incremental(id, 5, "t", &[]);
    forget(&mut req, "t", &[3]);
    assert_eq!(answered(&fetch(&mut c, FETCH_V, &req)), vec![]);
    assert_eq!(produce(&mut producer, "t", 3, batch(2, None)), (0, 0));
    assert_eq!(produce(&mut producer, "t", 1, batch(2, None)), (0, 0));
    let got = answered(&fetch(&mut c, FETCH_V, &incremental(id, 6, "t", &[])));
    assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1]);

    // A full fetch without a session closes it.
    let mut close = fetch_request("t", &all, 0);
    close.session_id = id;
    close.session_epoch = -1;
    let sessionless = fetch(&mut c, FETCH_V, &close);
    assert_eq!((sessionless.error_code, sessionless.session_id), (0, 0));
    assert_eq!(answered(&sessionless).len(), 4);
    let gone = fetch(&mut c, FETCH_V, &incremental(id, 7, "t", &[]));
    assert_eq!(gone.error_code, FETCH_SESSION_ID_NOT_FOUND);
    assert_eq!(gone.responses.len(), 0);
}

#[test]
fn session_ids_epochs_and_topic_ids_are_checked() {
    let b = Broker::start("session-errors", &[]);
    let mut c = b.connect();
    create_topic(&mut c, "t", 2);
    let unknown = fetch(&mut c, FETCH_V, &incremental(12345, 1, "t", &[]));
    assert_eq!(
        (unknown.error_code, unknown.session_id),
        (FETCH_SESSION_ID_NOT_FOUND, 0)
    );

    let id = fetch(&mut c, FETCH_V, &open_session("t", &[(0, 0), (1, 0)])).session_id;
    assert!(id > 0);
    for wrong in [2, 7] {
        let resp = fetch(&mut c, FETCH_V, &incremental(id, wrong, "t", &[]));
        assert_eq!(
            resp.error_code, INVALID_FETCH_SESSION_EPOCH,
            "epoch {wrong}"
        );
        assert_eq!(resp.responses.len(), 0);
    }
    // A wrong epoch leaves the session as it was.
    assert_eq!(
        fetch(&mut c, FETCH_V, &incremental(id, 1, "t", &[])).error_code,
        0
    );
    // A repeated epoch (a retry after a lost answer) is refused too.
    let again = fetch(&mut c, FETCH_V, &incremental(id, 1, "t", &[]));
    assert_eq!(again.error_code, INVALID_FETCH_SESSION_EPOCH);

    // A session made by name cannot go on by topic id (Fetch v13), nor the reverse.
    let resp = fetch(&mut c, 13, &incremental(id, 2, "t", &[]));
    assert_eq!(resp.error_code, FETCH_SESSION_TOPIC_ID_ERROR);
    let topic_id = metadata_for(&mut c, "t", 12, false).topics[0].topic_id;
    let mut by_id = open_session("", &[(0, 0), (1, 0)]);
    by_id.topics[0].topic_id = topic_id;
    let resp = fetch(&mut c, 13, &by_id);
    assert!(resp.session_id > 0);
    assert_eq!(resp.responses[0].topic_id, topic_id);
    let resp = fetch(&mut c, FETCH_V, &incremental(resp.session_id, 1, "t", &[]));
    assert_eq!(resp.error_code, FETCH_SESSION_TOPIC_ID_ERROR);
}

#[test]
fn a_full_cache_refuses_consumers_and_gives_way_to_followers() {
    // One shard, one slot: a second consumer gets no session while the first is
    // young; a follower's (privileged) session evicts a consumer's.
    let b = Broker::start(
        "session-cache",
        &[
            "ringlog.shards=1",
            "max.incremental.fetch.session.cache.slots=1",
        ],
    );
    let mut c = b.connect();
    create_topic(&mut c, "t", 2);
    let first = fetch(&mut c, FETCH_V, &open_session("t", &[(0, 0), (1, 0)])).session_id;
    assert!(first > 0);
    let mut other = b.connect();
    let refused = fetch(&mut other, FETCH_V, &open_session("t", &[(0, 0), (1, 0)]));
    assert_eq!((refused.error_code, refused.session_id), (0, 0));
    assert_eq!(answered(&refused).len(), 2, "answered in full all the same");
    assert_eq!(
        fetch(&mut c, FETCH_V, &incremental(first, 1, "t", &[])).error_code,
        0
    );

    let mut follower = b.connect();
    let mut req = open_session("t", &[(0, 0)]);
    req.replica_id = BrokerId(7);
    let privileged = fetch(&mut follower, FETCH_V, &req);
    assert!(privileged.session_id > 0);
    let evicted = fetch(&mut c, FETCH_V, &incremental(first, 2, "t", &[]));
    assert_eq!(evicted.error_code, FETCH_SESSION_ID_NOT_FOUND);

    // A session's own full fetch frees its slot for the next one.
    let mut close = FetchRequest::default();
    close.replica_id = BrokerId(7);
    close.session_id = privileged.session_id;
    close.session_epoch = -1;
    close.max_bytes = 1 << 20;
    fetch(&mut follower, FETCH_V, &close);
    let reopened = fetch(&mut other, FETCH_V, &open_session("t", &[(0, 0), (1, 0)]));
    assert!(reopened.session_id > 0);
}

#[test]
fn a_session_keeps_partitions_it_was_told_about_across_shards() {
    // Partitions on both shards of the default placement, the session on the
    // connection's shard: an incremental fetch reads them all and long-polls.
    let b = Broker::start("session-shards", &["ringlog.shards=2"]);
    let mut producer = b.connect();
    create_topic(&mut producer, "t", 8);
    let mut c = b.connect();
    let all: Vec<(i32, i64)> = (0..8).map(|p| (p, 0)).collect();
    let id = fetch(&mut c, FETCH_V, &open_session("t", &all)).session_id;
    assert!(id > 0);
    let mut req = incremental(id, 1, "t", &[]);
    req.max_wait_ms = 60_000;
    let sent = c.send(ApiKey::Fetch, FETCH_V, &req);
    std::thread::sleep(std::time::Duration::from_millis(200));
    for p in [5, 6] {
        assert_eq!(produce(&mut producer, "t", p, batch(1, None)), (0, 0));
    }
    let (got, resp): (i32, FetchResponse) = c.recv(ApiKey::Fetch, FETCH_V);
    assert_eq!(got, sent);
    let mut seen: Vec<i32> = answered(&resp).iter().map(|p| p.0).collect();
    // The second append may come after the wake-up: then the next fetch has it.
    let mut epoch = 2;
    while seen.len() < 2 && epoch < 5 {
        let moved: Vec<(i32, i64)> = seen.iter().map(|&p| (p, 1)).collect();
        let resp = fetch(&mut c, FETCH_V, &incremental(id, epoch, "t", &moved));
        seen.extend(answered(&resp).iter().map(|p| p.0));
        epoch += 1;
    }
    seen.sort();
    assert_eq!(seen, vec![5, 6]);
}

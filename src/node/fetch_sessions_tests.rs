use std::time::{Duration, Instant};

use super::*;

fn params(topic: &str, partition: i32, fetch_offset: i64) -> FetchParams {
    FetchParams {
        key: SessionKey::Name(topic.into(), partition),
        topic_name: topic.into(),
        topic_id: uuid::Uuid::nil(),
        partition,
        fetch_offset,
        partition_max_bytes: 1 << 20,
        log_start_offset: -1,
        current_leader_epoch: -1,
        last_fetched_epoch: -1,
    }
}

fn answered(high_watermark: i64, has_records: bool) -> Answered {
    Answered {
        high_watermark,
        log_start_offset: 0,
        has_records,
        must_send: false,
    }
}

/// A session over partitions 0..n of "t", each answered with high watermark 10.
fn session(cache: &mut FetchSessions, n: i32, privileged: bool, now: Instant) -> i32 {
    let parts = (0..n)
        .map(|p| (params("t", p, 0), answered(10, false)))
        .collect();
    cache.create(privileged, false, parts, now)
}

fn fetched(opened: Opened) -> (Vec<i32>, i32) {
    match opened {
        Opened::Fetch {
            partitions,
            next_epoch,
        } => (partitions.iter().map(|p| p.partition).collect(), next_epoch),
        Opened::Emptied => panic!("the session emptied"),
    }
}

#[test]
fn ids_name_their_shard_and_epochs_follow_kafka() {
    let now = Instant::now();
    let mut cache = FetchSessions::new(1, 3, 30);
    for _ in 0..5 {
        let id = session(&mut cache, 2, false, now);
        assert!(id > 0);
        assert_eq!(FetchSessions::owner(id, 3), Some(1));
    }
    assert_eq!(FetchSessions::owner(0, 3), None);
    assert_eq!(FetchSessions::owner(-5, 3), None);
    assert_eq!(next_epoch(0), 1);
    assert_eq!(next_epoch(7), 8);
    assert_eq!(next_epoch(i32::MAX), 1, "wraps to 1, never 0");
    assert_eq!(next_epoch(-1), -1);
}

#[test]
fn an_incremental_fetch_is_checked_then_applied() {
    let now = Instant::now();
    let mut cache = FetchSessions::new(0, 1, 10);
    let id = session(&mut cache, 3, false, now);
    let open = |c: &mut FetchSessions, epoch, ids, changed: Vec<FetchParams>| {
        c.open(id, epoch, ids, changed, &[], now)
    };
    assert_eq!(
        cache.open(id + 1, 1, false, vec![], &[], now).err(),
        Some(ErrorCode::FetchSessionIdNotFound)
    );
    assert_eq!(
        open(&mut cache, 2, false, vec![]).err(),
        Some(ErrorCode::InvalidFetchSessionEpoch)
    );
    assert_eq!(
        open(&mut cache, 1, true, vec![]).err(),
        Some(ErrorCode::FetchSessionTopicIdError)
    );
    // None of those moved the session: epoch 1 is still the one it expects.
    let (order, next) = fetched(open(&mut cache, 1, false, vec![params("t", 5, 0)]).unwrap());
    assert_eq!((order, next), (vec![0, 1, 2, 5], 2));
    // An update keeps a partition's place; a forgotten one leaves.
    let forgotten = [SessionKey::Name("t".into(), 0)];
    let opened = cache
        .open(id, 2, false, vec![params("t", 2, 99)], &forgotten, now)
        .unwrap();
    let Opened::Fetch { partitions, .. } = opened else {
        panic!("emptied")
    };
    let got: Vec<_> = partitions
        .iter()
        .map(|p| (p.partition, p.fetch_offset))
        .collect();
    assert_eq!(got, vec![(1, 0), (2, 99), (5, 0)]);
    // Forgetting the rest ends the session.
    let all: Vec<_> = [1, 2, 5]
        .iter()
        .map(|&p| SessionKey::Name("t".into(), p))
        .collect();
    assert!(matches!(
        cache.open(id, 3, false, vec![], &all, now),
        Ok(Opened::Emptied)
    ));
    assert!(cache.is_empty());
}

#[test]
fn an_answer_holds_what_changed_and_rotates_what_returned_records() {
    let now = Instant::now();
    let mut cache = FetchSessions::new(0, 1, 10);
    let id = session(&mut cache, 4, false, now);
    let (order, next) = fetched(cache.open(id, 1, false, vec![], &[], now).unwrap());
    assert_eq!(order, vec![0, 1, 2, 3]);
    let mut error = answered(-1, false);
    error.must_send = true;
    let sent = cache
        .answer(
            id,
            next,
            &[
                answered(10, false), // nothing new
                answered(12, true),  // records
                answered(11, false), // a new high watermark only
                error,
            ],
        )
        .unwrap();
    assert_eq!(sent, vec![false, true, true, true]);
    // Partition 1 returned records: it goes to the back.
    let (order, next) = fetched(cache.open(id, next, false, vec![], &[], now).unwrap());
    assert_eq!(order, vec![0, 2, 3, 1]);
    // Nothing changed since, except that the error is gone: partition 3 is sent again.
    let sent = cache
        .answer(
            id,
            next,
            &[
                answered(10, false),
                answered(11, false),
                answered(10, false),
                answered(12, false),
            ],
        )
        .unwrap();
    assert_eq!(sent, vec![false, false, true, false]);
}

#[test]
fn an_answer_after_another_fetch_moved_the_session_on_is_refused() {
    let now = Instant::now();
    let mut cache = FetchSessions::new(0, 1, 10);
    let id = session(&mut cache, 1, false, now);
    let (_, first) = fetched(cache.open(id, 1, false, vec![], &[], now).unwrap());
    // A second fetch with the next epoch opens before the first one answers.
    let (_, second) = fetched(cache.open(id, first, false, vec![], &[], now).unwrap());
    assert_eq!(
        cache.answer(id, first, &[answered(10, true)]),
        Err(ErrorCode::InvalidFetchSessionEpoch)
    );
    assert!(cache.answer(id, second, &[answered(10, true)]).is_ok());
}

#[test]
fn a_full_cache_evicts_as_kafka_does() {
    let t0 = Instant::now();
    // Two slots on this shard (of 4 on 2 shards).
    let mut cache = FetchSessions::new(0, 2, 4);
    let small = session(&mut cache, 2, false, t0);
    let big = session(&mut cache, 5, false, t0);
    // Young consumer sessions: another consumer cannot evict either, however big.
    assert_eq!(
        session(&mut cache, 50, false, t0 + Duration::from_secs(1)),
        0
    );
    // A follower can: the smallest consumer session goes.
    let follower = session(&mut cache, 1, true, t0 + Duration::from_secs(2));
    assert!(follower > 0);
    assert_eq!(cache.evictions(), 1);
    assert_eq!(
        cache.open(small, 1, false, vec![], &[], t0).err(),
        Some(ErrorCode::FetchSessionIdNotFound)
    );
    // Two minutes later a consumer session used since is not stale, the follower's
    // is: it goes, whatever its privilege.
    let later = t0 + EVICTION_IDLE + Duration::from_secs(10);
    assert!(cache.open(big, 1, false, vec![], &[], later).is_ok());
    let newcomer = session(&mut cache, 1, false, later);
    assert!(newcomer > 0);
    assert_eq!(
        cache.open(follower, 1, false, vec![], &[], later).err(),
        Some(ErrorCode::FetchSessionIdNotFound)
    );
    assert_eq!(cache.len(), 2);
    // No slots at all: no session is ever made.
    let mut none = FetchSessions::new(0, 2, 1);
    assert_eq!(session(&mut none, 1, true, t0), 0);
}

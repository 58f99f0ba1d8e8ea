//! The log's unit tests: appends, flushes, visibility, deletion under a write.

use bytes::Bytes;

use super::*;
use crate::perf::batch::BatchTemplate;
use crate::protocol::batch;
use crate::protocol::chunk::Chunk;
use crate::storage::fault;
use crate::storage::producer_state::SequenceError;
use crate::storage::test_support::on_executor_in_scratch_dir;

fn config(tail_cache_bytes: usize) -> LogConfig {
    LogConfig {
        tail_cache_bytes,
        // Every second record flushes.
        flush_interval_messages: 2,
        ..LogConfig::plain(WriteMode::Buffered)
    }
}

/// A batch of `records` records from idempotent producer 7, epoch 0, sequence `seq`.
fn idempotent_batch(seq: i32, records: usize) -> Bytes {
    let recs: Vec<batch::build::Record> = (0..records)
        .map(|_| batch::build::Record {
            key: None,
            value: Some(b"v"),
            headers: &[],
            timestamp: segment::now_ms(),
        })
        .collect();
    Bytes::from(batch::build::encode(&recs, Some((7, 0, seq))))
}

/// A retried batch (an idempotent duplicate) is acknowledged no sooner than its
/// original: while the original's flush is under way the duplicate waits for it.
#[test]
fn a_duplicate_waits_for_its_originals_flush() {
    on_executor_in_scratch_dir("duplicate-flush", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let log = PartitionLog::open(dir.clone(), config(0), sync.clone(), false)
            .await
            .unwrap();
        // Two records: the original reaches flush.messages=2 and must flush.
        let (release, held) = oneshot::channel();
        sync.hold_next_round(held);
        // The same batch each time: the second is a retry, a duplicate.
        let append = || {
            let log = log.clone();
            glommio::spawn_local(async move {
                log.append(idempotent_batch(0, 2))
                    .await
                    .map(|i| i.base_offset)
            })
        };
        let original = append();
        for _ in 0..2000 {
            if log.offsets().log_end == 2 {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(log.offsets().log_end, 2, "the original was written");

        let duplicate = append();
        let wait = glommio::timer::sleep(std::time::Duration::from_millis(200));
        let duplicate = match futures::future::select(duplicate, Box::pin(wait)).await {
            futures::future::Either::Left(_) => {
                panic!("the duplicate was answered before its original was durable")
            }
            futures::future::Either::Right((_, duplicate)) => duplicate,
        };
        release.send(()).unwrap();
        assert_eq!(original.await.unwrap(), 0);
        assert_eq!(duplicate.await.unwrap(), 0);
        assert_eq!(log.offsets().log_end, 2, "the duplicate was not written");
    });
}

/// A partition deleted while appends are queued and under way: the write under
/// way lands, the rest are refused, and nothing panics.
#[test]
fn delete_waits_for_the_write_under_way() {
    on_executor_in_scratch_dir("delete-under-append", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let log = PartitionLog::open(dir.join("t-0"), config(0), sync, false)
            .await
            .unwrap();
        let appends: Vec<_> = (0..8)
            .map(|n| glommio::spawn_local(log.append(idempotent_batch(n * 2, 2))))
            .collect();
        log.delete().await.unwrap();
        let mut landed = 0;
        for a in appends {
            match a.await {
                Ok(_) => landed += 1,
                Err(AppendError::Closed) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert!(landed > 0, "the write under way was answered");
        assert!(!dir.join("t-0").exists(), "the directory was renamed away");
        assert!(log.append(idempotent_batch(16, 2)).await.is_err());
    });
}

/// Appends made while the writer is busy go together in one write, keep the order
/// they were made in (offsets, sequence checks against the batches ahead of them
/// in the same write, a duplicate of one of those), and a failed write fails all
/// of them and leaves the producer's state as it was.
#[test]
fn queued_appends_share_a_write_in_order() {
    on_executor_in_scratch_dir("grouped", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let log = PartitionLog::open(dir.clone(), config(0), sync, false)
            .await
            .unwrap();
        let appends: Vec<_> = [(0, 2), (2, 3), (5, 1), (0, 2), (9, 1), (6, 4)]
            .into_iter()
            .map(|(seq, n)| log.append(idempotent_batch(seq, n)))
            .collect();
        let answers: Vec<_> = futures::future::join_all(appends)
            .await
            .into_iter()
            .map(|a| {
                a.map(|i| i.base_offset).map_err(|e| match e {
                    AppendError::Sequence(why) => Some(why),
                    _ => None,
                })
            })
            .collect();
        assert_eq!(
            answers,
            [
                Ok(0),
                Ok(2),
                Ok(5),
                Ok(0), // the duplicate of the first, in the same write
                Err(Some(SequenceError::OutOfOrder)),
                Ok(6),
            ]
        );
        assert_eq!(log.offsets().log_end, 10);
        let read: usize = log
            .read(0, 1 << 20, true)
            .await
            .unwrap()
            .iter()
            .map(Bytes::len)
            .sum();
        let sizes = [2, 3, 1, 4].map(|n| idempotent_batch(0, n).len());
        assert_eq!(read, sizes.iter().sum::<usize>());

        // A write fails: the appends it carried fail, and the producer's state is
        // put back. The writer starts at once (glommio runs a spawned task until
        // it first waits), so the first append goes alone, reaching the fault seam
        // before faults are on; the three queued behind it share the next write.
        // (Through io_uring: an inline write does not wait, so nothing queues.)
        crate::storage::inline_write::pause(std::time::Duration::from_secs(3600));
        let first = log.append(idempotent_batch(10, 1));
        let queued: Vec<_> = [11, 12, 13]
            .into_iter()
            .map(|seq| log.append(idempotent_batch(seq, 1)))
            .collect();
        let failing = fault::FaultRates {
            seed: 1,
            short_write: 0.0,
            eio: 1.0,
            enospc: 0.0,
            read_eio: 0.0,
            fsync_eio: 0.0,
        };
        fault::install(failing, 0);
        assert_eq!(first.await.unwrap().base_offset, 10);
        for answer in futures::future::join_all(queued).await {
            assert!(matches!(answer, Err(AppendError::Io(_))), "{answer:?}");
        }
        assert_eq!(fault::injected(), 1, "one write for the three");
        fault::install(
            fault::FaultRates {
                eio: 0.0,
                ..failing
            },
            0,
        );
        // Sequence 11 is next, not a duplicate; the log goes on from offset 11.
        for seq in [11, 12] {
            let appended = log.append(idempotent_batch(seq, 1)).await.unwrap();
            assert_eq!(appended.base_offset, seq as i64);
            assert_eq!(log.offsets().log_end, seq as i64 + 1);
        }
    });
}

/// Bytes the copying and the zero-copy read return from `offset`.
async fn readable(log: &PartitionLog, offset: i64) -> (usize, usize) {
    let copied = log.read(offset, 1 << 20, true).await.unwrap();
    let chunks = log
        .read_chunks(offset, 1 << 20, true, true, ReadBound::HighWatermark)
        .await
        .unwrap();
    (
        copied.iter().map(Bytes::len).sum(),
        chunks.iter().map(Chunk::len).sum(),
    )
}

/// `flush.ms` is the periodic flusher's business, as in Kafka: an append made when
/// a flush by time is due is acknowledged and visible without waiting for it.
#[test]
fn appends_do_not_wait_for_a_flush_by_time() {
    on_executor_in_scratch_dir("flush-ms", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let config = LogConfig {
            flush_interval_ms: Some(0),
            ..LogConfig::plain(WriteMode::Buffered)
        };
        let log = PartitionLog::open(dir.clone(), config, sync.clone(), false)
            .await
            .unwrap();
        let (release, held) = oneshot::channel();
        sync.hold_next_round(held);
        let batch = Bytes::from(BatchTemplate::new(1, 100).batch(1, segment::now_ms(), None));
        let appended = futures::FutureExt::boxed_local(log.append(batch));
        let timeout = futures::FutureExt::boxed_local(glommio::timer::sleep(
            std::time::Duration::from_secs(5),
        ));
        let futures::future::Either::Left((appended, _)) =
            futures::future::select(appended, timeout).await
        else {
            panic!("the append waited for the held flush");
        };
        appended.unwrap();
        assert_eq!(log.offsets().high_watermark, 1);
        assert_eq!(sync.counts(), (0, 0), "no sync asked for by the append");

        // The periodic flusher syncs it.
        let flushing = glommio::spawn_local({
            let log = log.clone();
            async move { log.flush_if_due().await }
        });
        release.send(()).unwrap();
        flushing.await.unwrap();
        assert_eq!(sync.counts(), (1, 1));
    });
}

/// An append that must flush is not visible (fetch, zero-copy fetch, tail cache,
/// the high watermark, fetch waiters) until its sync is done, nor is any append
/// made after it; appends that need no flush are visible at once.
#[test]
fn appends_become_visible_only_once_their_flush_is_done() {
    for tail_cache_bytes in [0, 1 << 20] {
        let name = format!("visible-{tail_cache_bytes}");
        on_executor_in_scratch_dir(&name, move |dir| async move {
            let sync = Rc::new(SyncGroup::default());
            let log =
                PartitionLog::open(dir.clone(), config(tail_cache_bytes), sync.clone(), false)
                    .await
                    .unwrap();
            let batch = Bytes::from(BatchTemplate::new(1, 100).batch(1, segment::now_ms(), None));
            let size = batch.len();

            // Offset 0: one unflushed record, no flush due, visible at once.
            log.append(batch.clone()).await.unwrap();
            assert_eq!(log.offsets().high_watermark, 1);
            assert_eq!(readable(&log, 0).await, (size, size));

            // Offset 1 must flush; its sync round is held.
            let (release, held) = oneshot::channel();
            sync.hold_next_round(held);
            let waiting = log.wait_for_append();
            let flushing = glommio::spawn_local({
                let (log, batch) = (log.clone(), batch.clone());
                async move { log.append(batch).await.map(|i| i.base_offset) }
            });
            for _ in 0..2000 {
                if log.offsets().log_end == 2 {
                    break;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            assert_eq!(log.offsets().log_end, 2, "the append was written");
            // Offset 2 needs no flush, but comes after one that waits.
            log.append(batch.clone()).await.unwrap();
            let o = log.offsets();
            assert_eq!((o.log_end, o.high_watermark), (3, 1));
            assert_eq!(readable(&log, 0).await, (size, size));
            assert_eq!(readable(&log, 1).await, (0, 0));
            assert_eq!(readable(&log, 2).await, (0, 0));
            assert!(matches!(
                log.delete_records_before(2).await,
                Err(ReadError::OutOfRange { .. })
            ));

            release.send(()).unwrap();
            assert_eq!(flushing.await.unwrap(), 1);
            waiting.await.expect("fetch waiters woken by the sync");
            assert_eq!(log.offsets().high_watermark, 3);
            assert_eq!(readable(&log, 0).await, (3 * size, 3 * size));
            assert_eq!(readable(&log, 2).await, (size, size));
        });
    }
}

fn faults(spec: &str) {
    fault::install(fault::parse(spec).unwrap(), 0);
}

/// A failed fdatasync (with flush.messages=1 every append syncs): the append that
/// asked for it fails, and the partition goes offline, as Kafka takes a log directory
/// offline, since what the page cache held may never reach the device.
#[test]
fn a_failed_fsync_fails_its_append_and_takes_the_partition_offline() {
    on_executor_in_scratch_dir("fsync-fault", |dir| async move {
        let config = LogConfig {
            flush_interval_messages: 1,
            ..LogConfig::plain(WriteMode::Buffered)
        };
        let sync = Rc::new(SyncGroup::default());
        let log = PartitionLog::open(dir, config, sync, false).await.unwrap();
        let batch = || Bytes::from(BatchTemplate::new(1, 100).batch(1, segment::now_ms(), None));
        assert_eq!(log.append(batch()).await.unwrap().base_offset, 0);
        faults("fsync_eio=1");
        let failed = log.append(batch()).await;
        assert!(matches!(failed, Err(AppendError::Io(_))), "{failed:?}");
        assert!(log.is_offline());
        faults("fsync_eio=0");
        let refused = log.append(batch()).await;
        assert!(matches!(refused, Err(AppendError::Offline)), "{refused:?}");
        assert!(matches!(
            log.read(0, 1 << 20, true).await,
            Err(ReadError::Io(_))
        ));
    });
}

/// A failed read fails that read only: the partition stays online and the next read
/// returns the data, byte for byte. Both read paths (copying and zero-copy) go
/// through the seam.
#[test]
fn a_failed_read_fails_that_read_only() {
    on_executor_in_scratch_dir("read-fault", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let log = PartitionLog::open(dir, LogConfig::plain(WriteMode::Buffered), sync, false)
            .await
            .unwrap();
        let batch = Bytes::from(BatchTemplate::new(3, 100).batch(1, segment::now_ms(), None));
        log.append(batch.clone()).await.unwrap();
        faults("read_eio=1");
        let copying = log.read(0, 1 << 20, true).await;
        assert!(matches!(copying, Err(ReadError::Io(_))), "{copying:?}");
        let zero_copy = log
            .read_chunks(0, 1 << 20, true, true, ReadBound::HighWatermark)
            .await;
        assert!(matches!(zero_copy, Err(ReadError::Io(_))), "{zero_copy:?}");
        assert!(!log.is_offline());
        faults("read_eio=0");
        let read = log.read(0, 1 << 20, true).await.unwrap();
        assert_eq!(
            read.concat()[batch::HEADER_SIZE..],
            batch[batch::HEADER_SIZE..]
        );
    });
}

/// Batches of `records` records each, as a client sends them.
fn client_batch(records: usize) -> Bytes {
    Bytes::from(BatchTemplate::new(records, 100).batch(records, segment::now_ms(), None))
}

/// Everything the log holds below its end, as stored.
async fn stored(log: &PartitionLog) -> Bytes {
    let chunks = log
        .read_chunks(
            log.offsets().log_start,
            1 << 30,
            true,
            false,
            ReadBound::LogEnd,
        )
        .await
        .unwrap();
    let mut all = Vec::new();
    for c in chunks {
        match c {
            Chunk::Bytes(b) => all.extend_from_slice(&b),
            Chunk::File(_) => unreachable!("not zero-copy"),
        }
    }
    Bytes::from(all)
}

/// A follower's copy of its leader's batches is byte for byte the leader's (offsets
/// and leader epochs included); a copy that does not start at the follower's log end
/// is refused.
#[test]
fn replicated_batches_keep_the_leaders_offsets_and_epochs() {
    on_executor_in_scratch_dir("replicated-append", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let plain = || LogConfig::plain(WriteMode::Buffered);
        let leader = PartitionLog::open(dir.join("leader"), plain(), sync.clone(), false)
            .await
            .unwrap();
        let follower = PartitionLog::open(dir.join("follower"), plain(), sync, false)
            .await
            .unwrap();
        leader.set_leader_epoch(LeaderEpoch(3));
        for n in [2, 1, 4] {
            leader.append(client_batch(n)).await.unwrap();
        }
        leader.set_leader_epoch(LeaderEpoch(5));
        leader.append(client_batch(1)).await.unwrap();
        let copy = stored(&leader).await;
        // A partial batch at the end (a fetch cut short) waits for the next fetch.
        let partial = Bytes::from([&copy[..], &copy[..20]].concat());
        assert_eq!(follower.append_replicated(partial).await.unwrap(), 8);
        assert_eq!(stored(&follower).await, copy);
        assert_eq!(follower.latest_epoch(), Some(5));
        assert_eq!(follower.end_offset_for_epoch(3), (3, 7));
        assert_eq!(follower.end_offset_for_epoch(4), (3, 7));
        let again = follower.append_replicated(copy.clone()).await;
        assert!(
            matches!(
                again,
                Err(AppendError::NotContiguous {
                    expected: 8,
                    found: 0
                })
            ),
            "{again:?}"
        );
        let mut corrupt = copy.to_vec();
        corrupt[70] ^= 1;
        let refused = follower.append_replicated(Bytes::from(corrupt)).await;
        assert!(matches!(refused, Err(AppendError::Batch(_))), "{refused:?}");
        assert_eq!(follower.offsets().log_end, 8);
    });
}

/// Truncation cuts at the start of the batch holding the offset, in whichever
/// segment, removes later segments, and the log goes on from there, also after a
/// restart that scans it.
#[test]
fn truncation_cuts_at_a_batch_and_the_log_goes_on() {
    on_executor_in_scratch_dir("truncate", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        // Segments of about two batches each.
        let config = LogConfig {
            segment_size_max_bytes: 2 * client_batch(2).len() as u64 + 1,
            ..LogConfig::plain(WriteMode::Buffered)
        };
        let log = PartitionLog::open(dir.clone(), config, sync.clone(), false)
            .await
            .unwrap();
        log.set_leader_epoch(LeaderEpoch(1));
        for _ in 0..3 {
            log.append(client_batch(2)).await.unwrap(); // offsets 0-1, 2-3, 4-5
        }
        log.set_leader_epoch(LeaderEpoch(2));
        for _ in 0..3 {
            log.append(client_batch(2)).await.unwrap(); // 6-7, 8-9, 10-11
        }
        let before = stored(&log).await;
        let segments = || {
            std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".log")
                })
                .count()
        };
        assert_eq!(segments(), 3);
        // Inside the batch 2-3, in the first segment: the log ends at 2.
        assert_eq!(log.truncate_to(3).await.unwrap(), 2);
        assert_eq!(segments(), 1);
        assert_eq!(log.offsets().log_end, 2);
        assert_eq!(log.latest_epoch(), Some(1));
        assert_eq!(log.end_offset_for_epoch(2), super::epochs::UNDEFINED);
        let one_batch = client_batch(2).len();
        assert_eq!(stored(&log).await, before.slice(..one_batch));
        // An offset at or past the end changes nothing.
        assert_eq!(log.truncate_to(9).await.unwrap(), 2);
        log.set_leader_epoch(LeaderEpoch(4));
        assert_eq!(log.append(client_batch(3)).await.unwrap().base_offset, 2);
        assert_eq!(log.end_offset_for_epoch(1), (1, 2));
        let after = stored(&log).await;
        drop(log);
        let reopened = PartitionLog::open(dir.clone(), config, sync, false)
            .await
            .unwrap();
        assert_eq!(reopened.offsets().log_end, 5);
        assert_eq!(stored(&reopened).await, after);
        assert_eq!(reopened.latest_epoch(), Some(4));
    });
}

/// Emptied to start at an offset past its end (a follower behind its leader's log
/// start), the log holds nothing of before, takes the leader's batches from there on,
/// and a restart finds it so.
#[test]
fn a_log_emptied_to_start_later_goes_on_from_there() {
    on_executor_in_scratch_dir("start-over", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let plain = || LogConfig::plain(WriteMode::Buffered);
        let leader = PartitionLog::open(dir.join("leader"), plain(), sync.clone(), false)
            .await
            .unwrap();
        let follower = PartitionLog::open(dir.join("follower"), plain(), sync.clone(), false)
            .await
            .unwrap();
        leader.set_leader_epoch(LeaderEpoch(2));
        for n in [3, 4, 2] {
            leader.append(client_batch(n)).await.unwrap(); // 0-2, 3-6, 7-8
        }
        let copy = stored(&leader).await;
        follower.set_leader_epoch(LeaderEpoch(1));
        follower.append(client_batch(5)).await.unwrap(); // its own 0-4
        let first = client_batch(3).len();
        follower.truncate_fully_and_start_at(3).await.unwrap();
        let o = follower.offsets();
        assert_eq!((o.log_start, o.log_end), (3, 3));
        assert_eq!(follower.latest_epoch(), None);
        assert_eq!(
            follower
                .append_replicated(copy.slice(first..))
                .await
                .unwrap(),
            9
        );
        assert_eq!(stored(&follower).await, copy.slice(first..));
        assert_eq!(follower.end_offset_for_epoch(2), (2, 9));
        drop(follower);
        let reopened = PartitionLog::open(dir.join("follower"), plain(), sync, false)
            .await
            .unwrap();
        let o = reopened.offsets();
        assert_eq!((o.log_start, o.log_end), (3, 9));
        assert_eq!(stored(&reopened).await, copy.slice(first..));
    });
}

/// The high watermark follows what replication says the replicas hold: consumers
/// read below it, followers up to the log end, and acks=all waits for it.
#[test]
fn the_high_watermark_follows_the_replicas() {
    on_executor_in_scratch_dir("replicated-hw", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let log = PartitionLog::open(dir, LogConfig::plain(WriteMode::Buffered), sync, false)
            .await
            .unwrap();
        log.set_replicated_end(0);
        log.append(client_batch(2)).await.unwrap();
        assert_eq!(log.offsets().high_watermark, 0);
        assert!(log.read(0, 1 << 20, true).await.unwrap().is_empty());
        assert!(
            !stored(&log).await.is_empty(),
            "followers read to the log end"
        );
        let done = Rc::new(Cell::new(false));
        let waiting = glommio::spawn_local({
            let (log, done) = (log.clone(), done.clone());
            async move {
                log.wait_for_high_watermark(2).await.unwrap();
                done.set(true);
            }
        });
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!done.get(), "acks=all waits while the replicas lag");
        log.set_replicated_end(2);
        waiting.await;
        assert!(done.get());
        assert_eq!(log.read(0, 1 << 20, true).await.unwrap().len(), 1);
        log.set_replicated_end(i64::MAX);
        assert_eq!(log.offsets().high_watermark, 2);
    });
}

/// A replicated log's high watermark survives a clean shutdown; after a crash only
/// the log start is known to be on the other replicas.
#[test]
fn the_replicated_high_watermark_is_recovered_from_a_clean_shutdown_only() {
    on_executor_in_scratch_dir("recovered-hw", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let plain = LogConfig::plain(WriteMode::Buffered);
        let log = PartitionLog::open(dir.clone(), plain, sync.clone(), false)
            .await
            .unwrap();
        for _ in 0..3 {
            log.append(client_batch(1)).await.unwrap();
        }
        log.set_replicated_end(2);
        assert!(log.quiesce().await);
        drop(log);
        let clean = PartitionLog::open(dir.clone(), plain, sync.clone(), true)
            .await
            .unwrap();
        assert_eq!(clean.recovered_high_watermark(), 2);
        assert_eq!(clean.offsets().log_end, 3);
        drop(clean);
        let crashed = PartitionLog::open(dir, plain, sync, false).await.unwrap();
        assert_eq!(crashed.recovered_high_watermark(), 0);
    });
}

//! Transactions in a partition log: the last stable offset, the aborted-transaction
//! index, markers and their checks, and what survives a restart.

use bytes::Bytes;

use super::*;
use crate::protocol::batch;
use crate::protocol::control::{self, Marker};
use crate::storage::producer_state::SequenceError;
use crate::storage::test_support::on_executor_in_scratch_dir;

/// A batch of `records` records from producer `pid` (epoch 0) at sequence `seq`,
/// transactional or not.
fn producer_batch(pid: i64, seq: i32, records: usize, transactional: bool) -> Bytes {
    let recs: Vec<batch::build::Record> = (0..records)
        .map(|_| batch::build::Record {
            key: None,
            value: Some(b"v"),
            headers: &[],
            timestamp: segment::now_ms(),
        })
        .collect();
    let mut b = batch::build::encode(&recs, Some((pid, 0, seq)));
    if transactional {
        batch::set_attributes(&mut b, 1 << 4);
    }
    Bytes::from(b)
}

fn marker(commit: bool, coordinator_epoch: i32) -> Marker {
    Marker {
        commit,
        coordinator_epoch,
    }
}

fn plain() -> LogConfig {
    LogConfig::plain(WriteMode::Buffered)
}

#[test]
fn open_transactions_hold_the_last_stable_offset_and_aborts_are_indexed() {
    on_executor_in_scratch_dir("txn-lso", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let log = PartitionLog::open(dir.clone(), plain(), sync.clone(), false)
            .await
            .unwrap();
        // Producer 7's transaction at 0..3, producer 8's plain batch at 3..5.
        log.append(producer_batch(7, 0, 3, true)).await.unwrap();
        log.append(producer_batch(8, 0, 2, false)).await.unwrap();
        let o = log.offsets();
        assert_eq!((o.high_watermark, o.last_stable), (5, 0));
        let visible = log
            .read_bounded(0, 1 << 20, true, ReadBound::LastStable)
            .await
            .unwrap();
        assert!(
            visible.is_empty(),
            "nothing is stable before the open transaction ends"
        );

        // Producer 7 may not write outside its transaction meanwhile.
        let refused = log.append(producer_batch(7, 3, 1, false)).await;
        assert!(matches!(
            refused,
            Err(AppendError::Sequence(SequenceError::InvalidTxnState))
        ));

        // ABORT at 5: everything is stable, and the abort is indexed.
        let end = log.append_marker((7, 0), marker(false, 1)).await.unwrap();
        assert_eq!(end.base_offset, 5);
        assert_eq!(log.offsets().last_stable, 6);
        assert_eq!(log.aborted_transactions(0, 6), vec![(7, 0)]);
        assert_eq!(log.aborted_transactions(6, 100), Vec::<(i64, i64)>::new());
        assert_eq!(log.aborted_transactions(0, 0), Vec::<(i64, i64)>::new());

        // The next transaction commits: stable, and not indexed.
        log.append(producer_batch(7, 3, 2, true)).await.unwrap();
        assert_eq!(log.offsets().last_stable, 6);
        log.append_marker((7, 0), marker(true, 1)).await.unwrap();
        assert_eq!(log.offsets().last_stable, 9);
        assert_eq!(log.aborted_transactions(0, 9), vec![(7, 0)]);

        // A marker from an older coordinator, or for an older producer epoch, is refused.
        let stale = log.append_marker((7, 0), marker(true, 0)).await;
        assert!(matches!(
            stale,
            Err(AppendError::Sequence(SequenceError::CoordinatorFenced))
        ));
        log.append_marker((7, 1), marker(false, 1)).await.unwrap();
        let old_epoch = log.append_marker((7, 0), marker(false, 1)).await;
        assert!(matches!(
            old_epoch,
            Err(AppendError::Sequence(SequenceError::StaleEpoch))
        ));

        // A client may not write a control batch.
        let mut forged = control::encode_marker((9, 0), marker(true, 0), segment::now_ms());
        batch::assign(&mut forged, 0, 0);
        assert!(matches!(
            log.append(Bytes::from(forged)).await,
            Err(AppendError::ControlBatchFromClient)
        ));
    });
}

#[test]
fn transactions_survive_a_crash_and_a_clean_shutdown() {
    on_executor_in_scratch_dir("txn-recovery", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        {
            let log = PartitionLog::open(dir.clone(), plain(), sync.clone(), false)
                .await
                .unwrap();
            log.append(producer_batch(7, 0, 2, true)).await.unwrap();
            log.append_marker((7, 0), marker(false, 3)).await.unwrap();
            log.append(producer_batch(8, 0, 2, true)).await.unwrap();
            assert_eq!(log.offsets().last_stable, 3);
        }
        // A crash (no snapshot): the scan rebuilds both.
        let log = PartitionLog::open(dir.clone(), plain(), sync.clone(), false)
            .await
            .unwrap();
        assert_eq!(
            log.offsets().last_stable,
            3,
            "producer 8's transaction is still open"
        );
        assert_eq!(log.aborted_transactions(0, 5), vec![(7, 0)]);
        // The rebuilt state still checks markers: coordinator epoch 3 was seen.
        let stale = log.append_marker((7, 0), marker(true, 2)).await;
        assert!(matches!(
            stale,
            Err(AppendError::Sequence(SequenceError::CoordinatorFenced))
        ));
        assert!(log.quiesce().await);
        drop(log);
        // A clean shutdown: the snapshot carries both.
        let log = PartitionLog::open(dir.clone(), plain(), sync.clone(), true)
            .await
            .unwrap();
        assert_eq!(log.offsets().last_stable, 3);
        assert_eq!(log.aborted_transactions(0, 5), vec![(7, 0)]);
        log.append_marker((8, 0), marker(true, 3)).await.unwrap();
        assert_eq!(log.offsets().last_stable, 6);
    });
}

#[test]
fn a_truncated_marker_reopens_its_transaction() {
    on_executor_in_scratch_dir("txn-truncate", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let log = PartitionLog::open(dir.clone(), plain(), sync.clone(), false)
            .await
            .unwrap();
        log.append(producer_batch(7, 0, 2, true)).await.unwrap();
        // Replication holds the high watermark at 2: the marker at 2 is not stable.
        log.set_replicated_end(2);
        log.append_marker((7, 0), marker(false, 1)).await.unwrap();
        assert_eq!(log.offsets().last_stable, 0);
        assert_eq!(log.truncate_to(2).await.unwrap(), 2);
        assert_eq!(log.offsets().last_stable, 0, "open again");
        assert_eq!(log.aborted_transactions(0, 10), Vec::<(i64, i64)>::new());
        log.set_replicated_end(i64::MAX);
        log.append_marker((7, 0), marker(true, 1)).await.unwrap();
        assert_eq!(log.offsets().last_stable, 3);
    });
}

//! Recovery points: a start after a crash that validates only what follows the last
//! one must find the log exactly as a start that validates everything does.

use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::protocol::batch;
use crate::protocol::control::Marker;
use crate::storage::test_support::on_executor_in_scratch_dir;

const T0: i64 = 1_700_000_000_000;

/// A one-record batch with timestamp `ts`: from producer `pid` at sequence `seq`
/// (transactional if asked), or from a plain producer if `pid` is `None`.
fn batch_at(ts: i64, producer: Option<(i64, i32, bool)>) -> Bytes {
    let recs = [batch::build::Record {
        key: None,
        value: Some(b"recovery point"),
        headers: &[],
        timestamp: ts,
    }];
    let mut b = batch::build::encode(&recs, producer.map(|(pid, seq, _)| (pid, 0, seq)));
    if producer.is_some_and(|(_, _, transactional)| transactional) {
        batch::set_attributes(&mut b, 1 << 4);
    }
    Bytes::from(b)
}

/// Every batch indexed; segments of about 1,000 batches, so that the active segment
/// of a long log holds more index entries than an append keeps in memory.
fn config() -> LogConfig {
    config_in(WriteMode::Buffered)
}

fn config_in(mode: WriteMode) -> LogConfig {
    let mut c = LogConfig::plain(mode);
    c.segment_size_max_bytes = 1_000 * batch_at(T0, None).len() as u64;
    c.segment.index_interval_bytes = 1;
    c
}

/// A copy of `from` without its recovery point, to be opened by a full scan.
fn copy_without_recovery_point(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name.to_string_lossy() != "recovery-point.json" {
            std::fs::copy(e.path(), to.join(name)).unwrap();
        }
    }
}

/// Everything the log holds, as stored.
async fn stored(log: &PartitionLog) -> Vec<u8> {
    let mut all = Vec::new();
    for b in log
        .read_bounded(log.offsets().log_start, 1 << 30, true, ReadBound::LogEnd)
        .await
        .unwrap()
    {
        all.extend_from_slice(&b);
    }
    all
}

/// What a client or a follower can see of the log, to compare two starts by.
async fn observed(log: &PartitionLog) -> String {
    let o = log.offsets();
    let mut seen = format!(
        "offsets {} {} {} {}; producers {:?}; aborted {:?}; epochs {:?}",
        o.log_start,
        o.log_end,
        o.high_watermark,
        o.last_stable,
        log.producers(),
        log.aborted_transactions(0, i64::MAX),
        (1..=4)
            .map(|e| log.end_offset_for_epoch(e))
            .collect::<Vec<_>>(),
    );
    seen += &format!(
        "; max ts {:?}",
        log.offset_of_max_timestamp().await.unwrap()
    );
    for ts in [
        T0 - 1,
        T0 + 5,
        T0 + 5_555,
        T0 + 16_005,
        T0 + 16_600,
        T0 + 99_999,
    ] {
        seen += &format!(
            "; ts {ts} {:?}",
            log.offset_for_timestamp(ts).await.unwrap()
        );
    }
    for offset in (o.log_start..o.log_end).step_by(97) {
        let read = log
            .read_bounded(offset, 200, true, ReadBound::LogEnd)
            .await
            .unwrap();
        seen += &format!(
            "; at {offset} {}",
            read.iter().map(Bytes::len).sum::<usize>()
        );
    }
    seen
}

/// A log of 1,700 batches in two segments (leader epochs, an idempotent producer,
/// transactions, a timestamp spike in the older segment), its recovery point taken at
/// 1,650, then a crash after 60 more batches that abort a transaction open at the
/// point and change the epoch: the start from the recovery point finds what a full
/// scan finds, byte for byte, and the producers' state goes on from there.
#[test]
fn a_start_from_the_recovery_point_finds_what_a_full_scan_finds() {
    on_executor_in_scratch_dir("recovery-point", |dir| {
        start_from_the_recovery_point(dir, WriteMode::Buffered)
    });
}

#[test]
fn a_start_from_the_recovery_point_finds_what_a_full_scan_finds_with_direct_io() {
    on_executor_in_scratch_dir("recovery-point-direct", |dir| {
        start_from_the_recovery_point(dir, WriteMode::Direct)
    });
}

async fn start_from_the_recovery_point(dir: std::path::PathBuf, mode: WriteMode) {
    let config = || config_in(mode);
    let sync = Rc::new(SyncGroup::default());
    let data = dir.join("p");
    let log = PartitionLog::open(data.clone(), config(), sync.clone(), false)
        .await
        .unwrap();
    let mut seq7 = 0;
    let mut seq9 = 0;
    let mut append = |i: i64, log: Rc<PartitionLog>| {
        let ts = if i == 900 { T0 + 50_000 } else { T0 + i * 10 };
        let producer = match i % 3 {
            0 => {
                seq7 += 1;
                Some((7, seq7 - 1, false))
            }
            // Producer 9: a transaction committed before the point, one open at it.
            1 if (1_200..1_300).contains(&i) || i >= 1_640 => {
                seq9 += 1;
                Some((9, seq9 - 1, true))
            }
            _ => None,
        };
        async move { log.append(batch_at(ts, producer)).await.unwrap() }
    };
    log.set_leader_epoch(crate::ids::LeaderEpoch(1));
    for i in 0..1_650 {
        if i == 500 {
            log.set_leader_epoch(crate::ids::LeaderEpoch(2));
        }
        if i == 1_300 {
            log.append_marker(
                (9, 0),
                Marker {
                    commit: true,
                    coordinator_epoch: 0,
                },
            )
            .await
            .unwrap();
        }
        append(i, log.clone()).await;
    }
    log.store_recovery_point_now().await;
    assert!(data.join("recovery-point.json").exists());
    log.set_leader_epoch(crate::ids::LeaderEpoch(3));
    for i in 1_650..1_700 {
        append(i, log.clone()).await;
    }
    log.append_marker(
        (9, 0),
        Marker {
            commit: false,
            coordinator_epoch: 0,
        },
    )
    .await
    .unwrap();
    for i in 1_700..1_710 {
        append(i, log.clone()).await;
    }
    let before = stored(&log).await;
    let end = log.offsets().log_end;
    // The crash: nothing more is written, index entries in memory are lost.
    drop(log);

    let scanned_dir = dir.join("scanned");
    copy_without_recovery_point(&data, &scanned_dir);
    let resumed = PartitionLog::open(data.clone(), config(), sync.clone(), false)
        .await
        .unwrap();
    let scanned = PartitionLog::open(scanned_dir, config(), sync.clone(), false)
        .await
        .unwrap();
    assert_eq!(resumed.opened_by(), OpenedBy::RecoveryPoint);
    assert_eq!(scanned.opened_by(), OpenedBy::FullScan);
    assert_eq!(resumed.offsets().log_end, end);
    assert_eq!(stored(&resumed).await, before);
    assert_eq!(observed(&resumed).await, observed(&scanned).await);
    assert_eq!(resumed.aborted_transactions(0, i64::MAX).len(), 1);

    // The index files are written apart: a time index that lags the offset index
    // (the rest of it lost with the crash) gives the same answers.
    let lagging_dir = dir.join("lagging");
    std::fs::create_dir_all(&lagging_dir).unwrap();
    for e in std::fs::read_dir(&data).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), lagging_dir.join(e.file_name())).unwrap();
    }
    let active_times = crate::storage::segment::time_index_path(&lagging_dir, 1_000);
    let mut times = std::fs::read(&active_times).unwrap();
    times[12 * 3..].fill(0);
    std::fs::write(&active_times, times).unwrap();
    let lagging = PartitionLog::open(lagging_dir, config(), sync.clone(), false)
        .await
        .unwrap();
    assert_eq!(lagging.opened_by(), OpenedBy::RecoveryPoint);
    assert_eq!(observed(&lagging).await, observed(&scanned).await);

    // Producer 7 goes on from its last sequence: a retry of its last batch is a
    // duplicate, its next batch is new, a gap is refused.
    let last7 = seq7 - 1;
    let retry = resumed
        .append(batch_at(T0, Some((7, last7, false))))
        .await
        .unwrap();
    assert!(
        retry.base_offset < end,
        "a duplicate gets its original's offset"
    );
    assert_eq!(resumed.offsets().log_end, end);
    let next = resumed
        .append(batch_at(T0, Some((7, seq7, false))))
        .await
        .unwrap();
    assert_eq!(next.base_offset, end);
    assert!(resumed
        .append(batch_at(T0, Some((7, seq7 + 5, false))))
        .await
        .is_err());
}

/// Past the recovery point the start validates as a full scan does: a torn tail of
/// the active segment is cut, the intact batches before it are kept.
#[test]
fn a_torn_tail_past_the_recovery_point_is_cut() {
    on_executor_in_scratch_dir("recovery-point-torn", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let log = PartitionLog::open(dir.clone(), config(), sync.clone(), false)
            .await
            .unwrap();
        for i in 0..30 {
            log.append(batch_at(T0 + i, None)).await.unwrap();
        }
        log.store_recovery_point_now().await;
        for i in 30..35 {
            log.append(batch_at(T0 + i, None)).await.unwrap();
        }
        let before = stored(&log).await;
        drop(log);
        let active = segment::log_path(&dir, 0);
        let mut torn = std::fs::read(&active).unwrap();
        torn.extend_from_slice(&batch_at(T0 + 35, None)[..40]);
        std::fs::write(&active, torn).unwrap();

        let log = PartitionLog::open(dir.clone(), config(), sync, false)
            .await
            .unwrap();
        assert_eq!(log.opened_by(), OpenedBy::RecoveryPoint);
        assert_eq!(log.offsets().log_end, 35);
        assert_eq!(stored(&log).await, before);
        assert_eq!(
            std::fs::metadata(&active).unwrap().len(),
            before.len() as u64,
            "the torn bytes are cut from the file"
        );
    });
}

/// Files that do not hold what the recovery point records (here: shorter than its
/// end, as if a flushed write were lost) are not trusted: the start scans them all.
#[test]
fn files_that_differ_from_the_recovery_point_are_scanned() {
    on_executor_in_scratch_dir("recovery-point-differs", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let log = PartitionLog::open(dir.clone(), config(), sync.clone(), false)
            .await
            .unwrap();
        for i in 0..30 {
            log.append(batch_at(T0 + i, None)).await.unwrap();
        }
        log.store_recovery_point_now().await;
        let one = batch_at(T0, None).len() as u64;
        drop(log);
        let active = segment::log_path(&dir, 0);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&active)
            .unwrap();
        file.set_len(20 * one).unwrap();

        let log = PartitionLog::open(dir.clone(), config(), sync, false)
            .await
            .unwrap();
        assert_eq!(log.opened_by(), OpenedBy::FullScan);
        assert_eq!(log.offsets().log_end, 20);
    });
}

/// A truncation below the recovery point removes it before cutting; the next one
/// describes the log as cut and grown again, and a start after a crash uses it.
/// Retention removing the oldest segment since the point does not void it.
#[test]
fn truncation_removes_the_recovery_point_and_retention_keeps_it() {
    on_executor_in_scratch_dir("recovery-point-truncate", |dir| async move {
        let sync = Rc::new(SyncGroup::default());
        let mut small = config();
        small.segment_size_max_bytes = 10 * batch_at(T0, None).len() as u64;
        let log = PartitionLog::open(dir.clone(), small, sync.clone(), false)
            .await
            .unwrap();
        for i in 0..45 {
            log.append(batch_at(T0 + i, None)).await.unwrap();
        }
        log.store_recovery_point_now().await;
        assert_eq!(log.truncate_to(38).await.unwrap(), 38);
        assert!(!dir.join("recovery-point.json").exists());
        for i in 38..52 {
            log.append(batch_at(T0 + 100 + i, None)).await.unwrap();
        }
        log.store_recovery_point_now().await;
        assert!(log.delete_records_before(25).await.is_ok());
        log.append(batch_at(T0 + 999, None)).await.unwrap();
        let before = stored(&log).await;
        drop(log);

        let log = PartitionLog::open(dir.clone(), small, sync, false)
            .await
            .unwrap();
        assert_eq!(log.opened_by(), OpenedBy::RecoveryPoint);
        assert_eq!(log.offsets().log_start, 25);
        assert_eq!(log.offsets().log_end, 53);
        assert_eq!(stored(&log).await, before);
    });
}

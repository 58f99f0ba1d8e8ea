//! ListOffsets (v0–v9): earliest, latest, max-timestamp, earliest-local, and by
//! timestamp, each answered by the partition's owner shard. v0 answers with a list of
//! segment start offsets, as Kafka 3.9 did (`old_style_offsets`).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use super::routing::{leader_epoch_check, leader_here, run_on_owners};
use super::{decode, encode_response, respond_with, Outcome};
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::old_versions::{self, OldStyleOffsets};
use crate::protocol::ErrorCode;
use crate::storage::Offsets;
use crate::storage::PartitionLog;

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;
pub const LATEST_TIERED: i64 = -5;

/// (offset, timestamp) for one partition; `read_committed` (isolation level 1) bounds
/// the answers by the last stable offset instead of the high watermark, as Kafka's
/// `Partition.fetchOffsetForTimestamp`.
async fn lookup(
    log: &PartitionLog,
    timestamp: i64,
    read_committed: bool,
) -> Result<(i64, i64), ErrorCode> {
    if log.is_offline() {
        return Err(ErrorCode::KafkaStorageError);
    }
    let offsets = log.offsets();
    let fetchable_end = if read_committed {
        offsets.last_stable
    } else {
        offsets.high_watermark
    };
    let io = |_| ErrorCode::KafkaStorageError;
    // Readers see the log up to that end; so do these answers.
    let visible = |found: Option<(i64, i64)>| {
        found
            .filter(|(offset, _)| *offset < fetchable_end)
            .unwrap_or((-1, -1))
    };
    Ok(match timestamp {
        LATEST => (fetchable_end, -1),
        EARLIEST | EARLIEST_LOCAL => (offsets.log_start, -1),
        // No tiered storage: nothing is tiered.
        LATEST_TIERED => (-1, -1),
        MAX_TIMESTAMP => visible(log.offset_of_max_timestamp().await.map_err(io)?),
        ts if ts >= 0 => visible(log.offset_for_timestamp(ts).await.map_err(io)?),
        _ => return Err(ErrorCode::InvalidRequest),
    })
}

/// The requester a consumer's ListOffsets names (Kafka's CONSUMER_REPLICA_ID).
const CONSUMER_REPLICA_ID: i32 = -1;

/// ListOffsets v0's answer for one partition, as Kafka 3.9's
/// `UnifiedLog.legacyFetchOffsetsBefore` and `Partition.legacyFetchOffsetsForTimestamp`
/// give it: the candidates are each segment's start (the log start for the first) with
/// its file's modification time, and the log end with `now_ms` if the last segment
/// holds data. LATEST starts from the last candidate, EARLIEST from the first, a
/// timestamp from the last candidate modified at or before it; up to `max` offsets
/// are taken from there backwards, newest first. For a consumer, offsets above the
/// high watermark give way to the high watermark.
fn old_style_offsets(
    segments: &[(i64, i64)],
    offsets: Offsets,
    now_ms: i64,
    timestamp: i64,
    max: usize,
    from_consumer: bool,
) -> Vec<i64> {
    let mut candidates: Vec<(i64, i64)> = segments
        .iter()
        .map(|&(base, modified)| (base.max(offsets.log_start), modified))
        .collect();
    if segments
        .last()
        .is_some_and(|&(base, _)| base < offsets.log_end)
    {
        candidates.push((offsets.log_end, now_ms));
    }
    let start = match timestamp {
        LATEST => candidates.len().checked_sub(1),
        EARLIEST => (!candidates.is_empty()).then_some(0),
        ts => candidates.iter().rposition(|&(_, modified)| modified <= ts),
    };
    let Some(start) = start else {
        return Vec::new();
    };
    let mut found: Vec<i64> = candidates[..=start]
        .iter()
        .rev()
        .take(max)
        .map(|&(offset, _)| offset)
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    let hw = offsets.high_watermark;
    if from_consumer && found.iter().any(|&o| o > hw) {
        found.retain(|&o| o <= hw);
        found.insert(0, hw);
    }
    found
}

/// ListOffsets v0 (Kafka 3.9's, which 4.0 dropped).
async fn handle_v0(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let old = match old_versions::decode_list_offsets_v0(body) {
        Ok(r) => r,
        Err(e) => return Outcome::Close(format!("cannot decode ListOffsets v0: {e}")),
    };
    let snapshot = core.metadata.load();
    let from_consumer = old.request.replica_id.0 == CONSUMER_REPLICA_ID;
    let mut results: Vec<Result<Vec<i64>, ErrorCode>> = Vec::new();
    let mut work = Vec::new();
    let mut max_num_offsets = old.max_num_offsets.iter();
    for t in &old.request.topics {
        let topic = snapshot.topic(t.name.0.as_str());
        for p in &t.partitions {
            let slot = results.len();
            let max = *max_num_offsets.next().expect("one per partition");
            results.push(Err(ErrorCode::UnknownTopicOrPartition));
            if p.timestamp < EARLIEST {
                results[slot] = Err(ErrorCode::UnsupportedVersion);
                continue;
            }
            if max < 0 {
                // Kafka fails to size its answer (NegativeArraySizeException).
                results[slot] = Err(ErrorCode::UnknownServerError);
                continue;
            }
            match leader_here(&snapshot, topic, p.partition_index) {
                Err(code) => results[slot] = Err(code),
                Ok((owner, key)) => {
                    work.push((
                        owner,
                        slot,
                        (key, (p.timestamp, max as usize, from_consumer)),
                    ));
                }
            }
        }
    }
    run_on_owners(
        core,
        work,
        &mut results,
        |log, (ts, max, from_consumer)| async move {
            if log.is_offline() {
                return Err(ErrorCode::KafkaStorageError);
            }
            let segments = log.segment_modification_times();
            let now = crate::storage::segment::now_ms();
            Ok(old_style_offsets(
                &segments,
                log.offsets(),
                now,
                ts,
                max,
                from_consumer,
            ))
        },
    )
    .await;
    let mut results = results.into_iter();
    let topics: Vec<_> = old
        .request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = results.next().unwrap_or(Err(ErrorCode::UnknownServerError));
                    let (error_code, offsets) = match r {
                        Ok(offsets) => (0, offsets),
                        Err(code) => (code.code(), Vec::new()),
                    };
                    OldStyleOffsets {
                        partition_index: p.partition_index,
                        error_code,
                        offsets,
                    }
                })
                .collect();
            (t.name.clone(), partitions)
        })
        .collect();
    respond_with(key::LIST_OFFSETS, 0, h.correlation_id, |buf| {
        old_versions::encode_list_offsets_v0_response(&topics, buf);
        Ok(())
    })
}

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    if h.api_version == 0 {
        return handle_v0(core, h, body).await;
    }
    let req: ListOffsetsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let snapshot = core.metadata.load();
    let mut results: Vec<Result<(i64, i64), ErrorCode>> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topics {
        let topic = snapshot.topic(t.name.0.as_str());
        for p in &t.partitions {
            let slot = results.len();
            results.push(Err(ErrorCode::UnknownTopicOrPartition));
            if let Err(code) = leader_epoch_check(topic, p.partition_index, p.current_leader_epoch)
            {
                results[slot] = Err(code);
                continue;
            }
            match leader_here(&snapshot, topic, p.partition_index) {
                Err(code) => results[slot] = Err(code),
                Ok((owner, key)) => {
                    work.push((owner, slot, (key, p.timestamp)));
                }
            }
        }
    }
    let read_committed = h.api_version >= 2 && req.isolation_level == 1;
    run_on_owners(core, work, &mut results, move |log, ts| async move {
        lookup(&log, ts, read_committed).await
    })
    .await;
    let mut results = results.into_iter();
    let mut resp = ListOffsetsResponse::default();
    for t in &req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            match results.next().unwrap_or(Err(ErrorCode::UnknownServerError)) {
                Ok((offset, timestamp)) => {
                    pr.offset = offset;
                    pr.timestamp = timestamp;
                    if h.api_version >= 4 {
                        pr.leader_epoch = snapshot
                            .topic(t.name.0.as_str())
                            .and_then(|m| m.partition(p.partition_index))
                            .map_or(-1, |a| a.leader_epoch.0);
                    }
                }
                Err(code) => {
                    pr.error_code = code.code();
                    pr.offset = -1;
                    pr.timestamp = -1;
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    encode_response(key::LIST_OFFSETS, h.api_version, h.correlation_id, &resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 10_000;

    fn offsets(log_start: i64, log_end: i64, high_watermark: i64) -> Offsets {
        Offsets {
            log_start,
            log_end,
            high_watermark,
            last_stable: high_watermark,
        }
    }

    #[test]
    fn v0_answers_as_kafkas_legacy_fetch_offsets_before() {
        // Segments at 0 (modified at 1000), 50 (2000), 120 (3000); data up to 150.
        let segments = [(0, 1000), (50, 2000), (120, 3000)];
        let o = offsets(0, 150, 150);
        let ask = |ts, max| old_style_offsets(&segments, o, NOW, ts, max, true);
        assert_eq!(ask(LATEST, 1), [150]);
        assert_eq!(ask(LATEST, 10), [150, 120, 50, 0]);
        assert_eq!(ask(LATEST, 2), [150, 120]);
        assert_eq!(ask(EARLIEST, 1), [0]);
        assert_eq!(ask(EARLIEST, 10), [0]);
        // By modification time: the newest segment modified at or before it.
        assert_eq!(ask(2500, 10), [50, 0]);
        assert_eq!(ask(2000, 1), [50]);
        assert_eq!(ask(999, 10), Vec::<i64>::new());
        assert_eq!(ask(NOW, 1), [150]);
        assert_eq!(ask(LATEST, 0), Vec::<i64>::new());
    }

    #[test]
    fn v0_starts_at_the_log_start_and_stops_at_the_high_watermark() {
        let segments = [(0, 1000), (50, 2000)];
        // Records below 30 deleted; records from 140 not yet visible.
        let o = offsets(30, 150, 140);
        assert_eq!(
            old_style_offsets(&segments, o, NOW, LATEST, 10, true),
            [140, 50, 30]
        );
        assert_eq!(
            old_style_offsets(&segments, o, NOW, LATEST, 10, false),
            [150, 50, 30]
        );
        assert_eq!(
            old_style_offsets(&segments, o, NOW, EARLIEST, 1, true),
            [30]
        );
        // An empty active segment is no candidate.
        let empty_tail = offsets(0, 50, 50);
        assert_eq!(
            old_style_offsets(&segments, empty_tail, NOW, LATEST, 10, true),
            [50, 0]
        );
    }
}

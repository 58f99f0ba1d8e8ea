//! ListOffsets (v1–v9): earliest, latest, max-timestamp, earliest-local, and by
//! timestamp, each answered by the partition's owner shard.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use super::routing::run_on_owners;
use super::{decode, encode_response, Outcome};
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;
use crate::shard::{PartitionKey, Shard};
use crate::storage::PartitionLog;

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;
pub const LATEST_TIERED: i64 = -5;

/// (offset, timestamp) for one partition.
async fn lookup(log: &PartitionLog, timestamp: i64) -> Result<(i64, i64), ErrorCode> {
    if log.is_offline() {
        return Err(ErrorCode::KafkaStorageError);
    }
    let offsets = log.offsets();
    let io = |_| ErrorCode::KafkaStorageError;
    // Readers see the log up to the high watermark; so do these answers.
    let visible = |found: Option<(i64, i64)>| {
        found
            .filter(|(offset, _)| *offset < offsets.high_watermark)
            .unwrap_or((-1, -1))
    };
    Ok(match timestamp {
        LATEST => (offsets.high_watermark, -1),
        EARLIEST | EARLIEST_LOCAL => (offsets.log_start, -1),
        // No tiered storage: nothing is tiered.
        LATEST_TIERED => (-1, -1),
        MAX_TIMESTAMP => visible(log.offset_of_max_timestamp().await.map_err(io)?),
        ts if ts >= 0 => visible(log.offset_for_timestamp(ts).await.map_err(io)?),
        _ => return Err(ErrorCode::InvalidRequest),
    })
}

pub async fn handle(shard: &Rc<Shard>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: ListOffsetsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let snapshot = shard.metadata.load();
    let mut results: Vec<Result<(i64, i64), ErrorCode>> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topics {
        let topic = snapshot.topic(t.name.0.as_str());
        for p in &t.partitions {
            let slot = results.len();
            results.push(Err(ErrorCode::UnknownTopicOrPartition));
            if p.current_leader_epoch > 0 {
                results[slot] = Err(ErrorCode::UnknownLeaderEpoch);
                continue;
            }
            if let Some((owner, id)) =
                topic.and_then(|t| t.owner(p.partition_index).map(|o| (o, t.id)))
            {
                let key: PartitionKey = (id, p.partition_index);
                work.push((owner, slot, (key, p.timestamp)));
            }
        }
    }
    run_on_owners(shard, work, &mut results, |log, ts| async move {
        lookup(&log, ts).await
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
                        pr.leader_epoch = 0;
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

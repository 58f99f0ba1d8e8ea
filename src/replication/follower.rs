//! A follower's side: the Fetch it sends its leader for the partitions it follows
//! there, and what it does with each partition's answer (KIP-320's diverging epoch
//! first, then the records, then the leader's high watermark).

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tracing::{info, warn};
use uuid::Uuid;

use crate::ids::{BrokerId, LeaderEpoch};
use crate::protocol::batch::BatchHeader;
use crate::protocol::ErrorCode;
use crate::storage::{AppendError, PartitionLog};

/// Fetch v15: replica ids travel in ReplicaState (KIP-903), topics by id, and answers
/// carry the diverging epoch (v12+).
pub const FETCH_VERSION: i16 = 15;

/// The replica fetch settings, under Kafka's names.
#[derive(Debug, Clone, Copy)]
pub struct FetchSettings {
    /// `replica.fetch.max.bytes`: per partition.
    pub partition_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`.
    pub response_max_bytes: i32,
    /// `replica.fetch.wait.max.ms`.
    pub max_wait_ms: i32,
    /// `replica.fetch.min.bytes`.
    pub min_bytes: i32,
}

/// A partition this broker follows, with its leader's epoch as the metadata says.
pub struct Followed {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: LeaderEpoch,
    pub log: Rc<PartitionLog>,
}

/// The request frame (length prefix included) asking the leader for everything
/// after each followed log's end.
pub fn fetch_frame(
    me: BrokerId,
    correlation_id: i32,
    followed: &[Followed],
    settings: FetchSettings,
) -> Bytes {
    let mut req = FetchRequest::default();
    req.replica_state.replica_id = kafka_protocol::messages::BrokerId(me.0);
    req.replica_state.replica_epoch = -1;
    req.max_wait_ms = settings.max_wait_ms;
    req.min_bytes = settings.min_bytes;
    req.max_bytes = settings.response_max_bytes;
    req.session_epoch = -1;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for f in followed {
        let offsets = f.log.offsets();
        let mut p = FetchPartition::default();
        p.partition = f.partition;
        p.current_leader_epoch = f.leader_epoch.0;
        p.fetch_offset = offsets.log_end;
        p.last_fetched_epoch = f.log.latest_epoch().unwrap_or(-1);
        p.log_start_offset = offsets.log_start;
        p.partition_max_bytes = settings.partition_max_bytes;
        match topics.iter_mut().find(|t| t.topic_id == f.topic_id) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = FetchTopic::default();
                t.topic_id = f.topic_id;
                t.partitions.push(p);
                topics.push(t);
            }
        }
    }
    req.topics = topics;
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Fetch as i16;
    header.request_api_version = FETCH_VERSION;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_string(format!("ringlog-replica-{}", me.0)));
    let mut body = BytesMut::new();
    header.encode(&mut body, 2).expect("a fetch header encodes");
    req.encode(&mut body, FETCH_VERSION)
        .expect("a fetch request encodes");
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame.freeze()
}

/// Decodes a response frame's body (after its length) to a fetch.
pub fn decode_response(mut body: Bytes, correlation_id: i32) -> Result<FetchResponse, String> {
    let header = ResponseHeader::decode(&mut body, 1).map_err(|e| e.to_string())?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "answer {} to request {correlation_id}",
            header.correlation_id
        ));
    }
    FetchResponse::decode(&mut body, FETCH_VERSION).map_err(|e| e.to_string())
}

/// What became of one partition's answer.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// Records appended (maybe none: nothing new).
    Appended,
    /// The log was cut where it diverged from the leader's; fetch again from there.
    Truncated { log_end: i64 },
    /// The leader refused, with this Kafka error code: back off, and wait for new
    /// metadata if it is about leadership.
    Refused(i16),
}

/// Applies the leader's answer for `f`: truncation where the logs diverge (KIP-320,
/// as Kafka's fetcher decides it), the records, then the leader's high watermark.
pub async fn apply(f: &Followed, answer: PartitionData) -> Result<Applied, AppendError> {
    let log_end = f.log.offsets().log_end;
    if answer.error_code == ErrorCode::OffsetOutOfRange.code() && answer.log_start_offset > log_end
    {
        // What the leader held between our end and its start is gone there (retention,
        // DeleteRecords): start over from its log start, as Kafka's fetcher does.
        f.log
            .truncate_fully_and_start_at(answer.log_start_offset)
            .await?;
        return Ok(Applied::Truncated {
            log_end: answer.log_start_offset,
        });
    }
    if answer.error_code != ErrorCode::None.code() {
        return Ok(Applied::Refused(answer.error_code));
    }
    let diverging = &answer.diverging_epoch;
    if diverging.epoch >= 0 && diverging.end_offset >= 0 {
        let (local_epoch, local_end) = f.log.end_offset_for_epoch(diverging.epoch);
        let cut = if local_epoch == diverging.epoch {
            local_end.min(diverging.end_offset)
        } else if local_epoch >= 0 {
            // Our epoch below the leader's is older: cut to its end and ask again.
            local_end
        } else {
            diverging.end_offset.min(f.log.offsets().log_end)
        };
        let log_end = f.log.truncate_to(cut).await?;
        info!(
            dir = %f.log.dir().display(), leader_epoch = diverging.epoch,
            leader_end_offset = diverging.end_offset, log_end,
            "the log diverged from the leader's; truncated"
        );
        return Ok(Applied::Truncated { log_end });
    }
    if let Some(records) = answer.records.filter(|r| !r.is_empty()) {
        let o = f.log.offsets();
        if let Some(h) = BatchHeader::new(&records) {
            if o.log_end == o.log_start
                && h.base_offset() < o.log_end
                && h.last_offset() >= o.log_end
            {
                // An empty log whose start falls inside the leader's first batch
                // (DeleteRecords moved the start there): the log starts at the batch,
                // as Kafka's follower starts it, and its start then follows the leader's.
                f.log.truncate_fully_and_start_at(h.base_offset()).await?;
            }
        }
        f.log.append_replicated(records).await?;
    }
    if answer.high_watermark >= 0 {
        f.log.set_replicated_end(answer.high_watermark);
    } else {
        warn!(dir = %f.log.dir().display(), "the leader sent no high watermark");
    }
    // The log start follows the leader's (its retention and DeleteRecords), as far as
    // this replica holds the leader's data (Kafka: up to the follower's high watermark).
    let offsets = f.log.offsets();
    if answer.log_start_offset > offsets.log_start
        && answer.log_start_offset <= offsets.high_watermark
    {
        if let Err(e) = f.log.delete_records_before(answer.log_start_offset).await {
            warn!(dir = %f.log.dir().display(), error = %e, "moving the log start to the leader's failed");
        }
    }
    Ok(Applied::Appended)
}

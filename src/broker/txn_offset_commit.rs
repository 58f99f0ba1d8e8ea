//! TxnOffsetCommit (v0–v4): a transactional producer commits a group's offsets in its
//! transaction, on the group's coordinator (`group::txn_offsets`); they count once
//! the transaction commits.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequest;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};

use super::groups::{on_coordinator, text};
use super::{decode, encode_response, Outcome};
use crate::group::offsets_topic::CommittedOffset;
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: TxnOffsetCommitRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let group = text(&req.group_id);
    let now = crate::storage::segment::now_ms();
    let entries: Vec<(String, i32, CommittedOffset)> = req
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
        .map(|(t, p)| {
            (
                t.name.0.to_string(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(text).unwrap_or_default(),
                    commit_timestamp: now,
                },
            )
        })
        .collect();
    let count = entries.len();
    let producer = (req.producer_id.0, req.producer_epoch);
    let member_id = text(&req.member_id);
    let instance_id = req.group_instance_id.as_ref().map(text);
    let generation = req.generation_id;
    let g = group.clone();
    let committed = on_coordinator(core, &group, move |s| async move {
        let member = (member_id.as_str(), instance_id.as_deref(), generation);
        s.groups
            .commit_transactional(&*s, &g, producer, member, entries)
            .await
    })
    .await
    .and_then(|r| r);
    let codes = committed.unwrap_or_else(|code| vec![code; count]);
    let mut codes = codes.into_iter();
    let mut resp = TxnOffsetCommitResponse::default();
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut rt = TxnOffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = TxnOffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = codes.next().unwrap_or(ErrorCode::None).code();
                    rp
                })
                .collect();
            rt
        })
        .collect();
    encode_response(
        key::TXN_OFFSET_COMMIT,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

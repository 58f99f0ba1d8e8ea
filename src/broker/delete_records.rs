//! DeleteRecords (v0–v2): moves partitions' log start offsets up, on the owner shards.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::DeleteRecordsRequest;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};

use super::routing::{leader_here, run_on_owners};
use super::storage_errors::read_error_code;
use super::{decode, encode_response, Outcome};
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: DeleteRecordsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let snapshot = core.metadata.load();
    let mut results: Vec<Result<i64, ErrorCode>> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topics {
        let topic = snapshot.topic(t.name.0.as_str());
        for p in &t.partitions {
            let slot = results.len();
            results.push(Err(ErrorCode::UnknownTopicOrPartition));
            match leader_here(&snapshot, topic, p.partition_index) {
                Err(code) => results[slot] = Err(code),
                Ok((owner, key)) => {
                    work.push((owner, slot, (key, p.offset)));
                }
            }
        }
    }
    run_on_owners(core, work, &mut results, |log, offset| async move {
        log.delete_records_before(offset)
            .await
            .map_err(|e| read_error_code(&e))
    })
    .await;
    let mut results = results.into_iter();
    let mut resp = DeleteRecordsResponse::default();
    for t in &req.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            match results.next().unwrap_or(Err(ErrorCode::UnknownServerError)) {
                Ok(low_watermark) => pr.low_watermark = low_watermark,
                Err(code) => {
                    pr.error_code = code.code();
                    pr.low_watermark = -1;
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    encode_response(key::DELETE_RECORDS, h.api_version, h.correlation_id, &resp)
}

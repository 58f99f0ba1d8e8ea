//! DeleteRecords (v0–v2): moves partitions' log start offsets up, on the owner shards.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::DeleteRecordsRequest;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};

use super::routing::group_by_owner;
use super::{decode, encode_response, Outcome};
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;
use crate::shard::{PartitionKey, Shard};

pub async fn handle(shard: &Rc<Shard>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: DeleteRecordsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let snapshot = shard.metadata.load();
    let mut results: Vec<Result<i64, ErrorCode>> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topics {
        let topic = snapshot.topic(t.name.0.as_str());
        for p in &t.partitions {
            let slot = results.len();
            results.push(Err(ErrorCode::UnknownTopicOrPartition));
            if let Some((owner, id)) =
                topic.and_then(|t| t.owner(p.partition_index).map(|o| (o, t.id)))
            {
                let key: PartitionKey = (id, p.partition_index);
                work.push((owner, slot, (key, p.offset)));
            }
        }
    }
    let deletions = group_by_owner(work).into_iter().map(|(owner, items)| {
        shard.submit_to(owner, move |s| async move {
            let mut out = Vec::with_capacity(items.len());
            for (slot, (key, offset)) in items {
                let r = match s.log(&key) {
                    Some(log) => log
                        .delete_records_before(offset)
                        .await
                        .map_err(|e| e.error_code()),
                    None => Err(ErrorCode::UnknownTopicOrPartition),
                };
                out.push((slot, r));
            }
            out
        })
    });
    for done in futures::future::join_all(deletions)
        .await
        .into_iter()
        .flatten()
    {
        for (slot, r) in done {
            results[slot] = r;
        }
    }
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

//! WriteTxnMarkers (v1): a transaction coordinator on another broker has this one,
//! as the leader of the named partitions, write a transaction's COMMIT or ABORT
//! marker on each (`node::txn_markers::write_here`).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::write_txn_markers_request::WriteTxnMarkersRequest;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    WriteTxnMarkersResponse,
};
use kafka_protocol::messages::TopicName;

use super::txn_markers;
use super::{decode, encode_response, str_bytes, Outcome};
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::control::Marker;
use crate::protocol::header::RequestHeader;

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: WriteTxnMarkersRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut resp = WriteTxnMarkersResponse::default();
    for m in &req.markers {
        let partitions: Vec<(String, i32)> = m
            .topics
            .iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(move |&p| (t.name.0.to_string(), p))
            })
            .collect();
        let marker = Marker {
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        let results = txn_markers::write_here(
            core.clone(),
            (m.producer_id.0, m.producer_epoch),
            marker,
            partitions,
        )
        .await;
        let mut r = WritableTxnMarkerResult::default();
        r.producer_id = m.producer_id;
        for t in &m.topics {
            let mut rt = WritableTxnMarkerTopicResult::default();
            rt.name = TopicName(str_bytes(t.name.0.as_str()));
            for &p in &t.partition_indexes {
                let code = results
                    .iter()
                    .find(|((name, q), _)| name == t.name.0.as_str() && *q == p)
                    .map_or(0, |(_, c)| c.code());
                let mut rp = WritableTxnMarkerPartitionResult::default();
                rp.partition_index = p;
                rp.error_code = code;
                rt.partitions.push(rp);
            }
            r.topics.push(rt);
        }
        resp.markers.push(r);
    }
    encode_response(
        key::WRITE_TXN_MARKERS,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

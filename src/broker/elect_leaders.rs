//! ElectLeaders (v0–v2, KIP-183 and KIP-460): preferred or unclean leader elections,
//! decided by the active controller (a broker that is not it forwards the request,
//! as Kafka's do). v0 asks for preferred elections only; a null topic list asks for
//! every partition.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::elect_leaders_request::ElectLeadersRequest;
use kafka_protocol::messages::elect_leaders_response::{
    ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
};
use kafka_protocol::messages::TopicName;

use super::{decode, encode_response, str_bytes, Outcome};
use crate::cluster::leader_election::{ElectionResults, ElectionType};
use crate::node::{controller_client, Core, CONTROLLER_SHARD};
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: ElectLeadersRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let asked: Option<Vec<(String, Vec<i32>)>> = req.topic_partitions.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect()
    });
    let answer = match ElectionType::from_wire(req.election_type) {
        None => Err((
            ErrorCode::InvalidRequest,
            format!("Unknown election type {}", req.election_type),
        )),
        // Kafka's controller: an empty list asks for nothing.
        Some(_) if asked.as_ref().is_some_and(|a| a.is_empty()) => Ok(Vec::new()),
        Some(election) => core
            .submit_to(CONTROLLER_SHARD, move |c| async move {
                controller_client::elect_leaders(&c, election, asked).await
            })
            .await
            .unwrap_or_else(|gone| Err((ErrorCode::UnknownServerError, gone.to_string()))),
    };
    let resp = match answer {
        Ok(results) => response(results),
        Err((code, message)) => refused(&req, code, &message),
    };
    encode_response(key::ELECT_LEADERS, h.api_version, h.correlation_id, &resp)
}

fn response(results: ElectionResults) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    for (topic, partitions) in results {
        let mut t = ReplicaElectionResult::default();
        t.topic = TopicName(str_bytes(&topic));
        for (p, r) in partitions {
            let mut pr = PartitionResult::default();
            pr.partition_id = p;
            if let Err((code, message)) = r {
                pr.error_code = code.code();
                pr.error_message = message.as_deref().map(str_bytes);
            }
            t.partition_result.push(pr);
        }
        resp.replica_election_results.push(t);
    }
    resp
}

/// Every partition asked for gets the error, and (v1+) the whole response does, as
/// Kafka's ElectLeadersRequest.getErrorResponse.
fn refused(req: &ElectLeadersRequest, code: ErrorCode, message: &str) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    resp.error_code = code.code();
    for t in req.topic_partitions.iter().flatten() {
        let mut r = ReplicaElectionResult::default();
        r.topic = t.topic.clone();
        for p in &t.partitions {
            let mut pr = PartitionResult::default();
            pr.partition_id = *p;
            pr.error_code = code.code();
            pr.error_message = Some(str_bytes(message));
            r.partition_result.push(pr);
        }
        resp.replica_election_results.push(r);
    }
    resp
}

//! CreatePartitions (v0–v3): grows topics, through the active controller (a broker
//! that is not it forwards the request, as Kafka's do). Existing partitions and their
//! data are untouched; the new ones are placed and opened like a new topic's.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};

use super::{decode, encode_response, str_bytes, Outcome};
use crate::cluster::controller::NewPartitions;
use crate::ids::BrokerId;
use crate::node::{controller_client, Core, CONTROLLER_SHARD};
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: CreatePartitionsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let asked: Vec<NewPartitions> = req
        .topics
        .iter()
        .map(|t| NewPartitions {
            name: t.name.0.to_string(),
            count: t.count,
            assignments: t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|r| r.broker_ids.iter().map(|b| BrokerId(b.0)).collect())
                    .collect()
            }),
        })
        .collect();
    let names: Vec<_> = req.topics.iter().map(|t| t.name.clone()).collect();
    let validate_only = req.validate_only;
    let results = core
        .submit_to(CONTROLLER_SHARD, move |c| async move {
            controller_client::create_partitions(&c, asked, validate_only).await
        })
        .await
        .unwrap_or_default();
    let mut resp = CreatePartitionsResponse::default();
    for (i, name) in names.into_iter().enumerate() {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = name;
        let result = results.get(i).cloned().unwrap_or(Err((
            ErrorCode::UnknownServerError,
            Some("controller unavailable".into()),
        )));
        if let Err((code, message)) = result {
            r.error_code = code.code();
            r.error_message = message.as_deref().map(str_bytes);
        }
        resp.results.push(r);
    }
    encode_response(
        key::CREATE_PARTITIONS,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

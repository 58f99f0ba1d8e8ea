//! CreateTopics (v0–v7), through the controller.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};

use super::{decode, encode_response, respond_with, str_bytes, Outcome};
use crate::cluster::controller::NewTopic;
use crate::ids::BrokerId;
use crate::node::{controller_client, Core, CONTROLLER_SHARD};
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::old_versions;
use crate::protocol::ErrorCode;

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: CreateTopicsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let topics: Vec<NewTopic> = req
        .topics
        .iter()
        .map(|t| NewTopic {
            name: t.name.0.to_string(),
            partitions: if t.assignments.is_empty() {
                t.num_partitions
            } else {
                t.assignments.len() as i32
            },
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| a.broker_ids.iter().map(|b| BrokerId(b.0)).collect())
                .collect(),
            configs: t
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    )
                })
                .collect(),
        })
        .collect();
    let asked = topics.clone();
    let validate_only = req.validate_only;
    let results = core
        .submit_to(CONTROLLER_SHARD, move |c| async move {
            controller_client::create_topics(&c, asked, validate_only).await
        })
        .await
        .unwrap_or_default();
    let mut results = results.into_iter();
    let mut resp = CreateTopicsResponse::default();
    for t in &topics {
        let outcome = results.next().unwrap_or(Err((
            ErrorCode::UnknownServerError,
            "controller unavailable".into(),
        )));
        let mut r = CreatableTopicResult::default();
        r.name = kafka_protocol::messages::TopicName(str_bytes(&t.name));
        match outcome {
            Ok(meta) => {
                // Null, as Kafka answers a success (the schema's default is "").
                r.error_message = None;
                if h.api_version >= 7 {
                    r.topic_id = meta.id;
                }
                if h.api_version >= 5 {
                    r.num_partitions = meta.partition_count();
                    r.replication_factor = meta
                        .partitions
                        .first()
                        .map_or(0, |p| p.replicas.len() as i16);
                }
            }
            Err((code, message)) => {
                r.error_code = code.code();
                r.error_message = Some(str_bytes(&message));
            }
        }
        resp.topics.push(r);
    }
    if h.api_version == 0 {
        // Names and codes only: a layout no version the schema crate has.
        return respond_with(key::CREATE_TOPICS, 0, h.correlation_id, |buf| {
            old_versions::encode_create_topics_v0_response(&resp, buf);
            Ok(())
        });
    }
    encode_response(key::CREATE_TOPICS, h.api_version, h.correlation_id, &resp)
}

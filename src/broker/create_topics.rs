//! CreateTopics (v0–v7), through the controller.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};

use super::{decode, encode_response, respond_with, str_bytes, Outcome};
use crate::cluster::controller::NewTopic;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::old_versions;
use crate::protocol::ErrorCode;
use crate::shard::{Shard, CONTROLLER_SHARD};

pub async fn handle(shard: &Rc<Shard>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: CreateTopicsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut early: Vec<Option<(ErrorCode, String)>> = Vec::new();
    let mut topics = Vec::new();
    for t in &req.topics {
        // Explicit replica assignments name brokers; only this one exists.
        let bad_assignment = t.assignments.iter().any(|a| {
            a.broker_ids.iter().any(|b| b.0 != shard.config.node_id) || a.broker_ids.len() != 1
        });
        early.push(bad_assignment.then(|| {
            (
                ErrorCode::InvalidReplicaAssignment,
                "Replica assignment names brokers other than this one.".to_string(),
            )
        }));
        let partitions = if t.assignments.is_empty() {
            t.num_partitions
        } else {
            t.assignments.len() as i32
        };
        topics.push(NewTopic {
            name: t.name.0.to_string(),
            partitions,
            replication_factor: if t.assignments.is_empty() {
                t.replication_factor
            } else {
                -1
            },
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
        });
    }
    let valid: Vec<NewTopic> = topics
        .iter()
        .zip(&early)
        .filter(|(_, e)| e.is_none())
        .map(|(t, _)| t.clone())
        .collect();
    let validate_only = req.validate_only;
    let results = shard
        .submit_to(CONTROLLER_SHARD, move |s| async move {
            s.controller().create_topics(&s, valid, validate_only).await
        })
        .await
        .unwrap_or_default();
    let mut results = results.into_iter();
    let mut resp = CreateTopicsResponse::default();
    for (t, early) in topics.iter().zip(early) {
        let outcome = match early {
            Some(e) => Err(e),
            None => results.next().unwrap_or(Err((
                ErrorCode::UnknownServerError,
                "controller unavailable".into(),
            ))),
        };
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
                    r.replication_factor = 1;
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

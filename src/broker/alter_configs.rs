//! IncrementalAlterConfigs (v0–v1) and AlterConfigs (v0–v2) of topics, through the
//! active controller (forwarded, as Kafka's brokers forward them): the changes are
//! TopicConfig records, so they survive restarts, and every node applies them to the
//! open logs when it publishes them. Broker settings are all static: changing one is
//! refused, as Kafka refuses a config it cannot update dynamically.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{alter_configs_request, alter_configs_response};
use kafka_protocol::messages::{
    incremental_alter_configs_request as incremental,
    incremental_alter_configs_response as incremental_response,
};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::{BROKER, TOPIC};
use super::{decode, encode_response, str_bytes, Outcome};
use crate::cluster::controller::{AdminResult, AlterOp, AlterTopicConfigs};
use crate::node::{controller_client, Core, CONTROLLER_SHARD};
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

/// The two APIs answer with types of one shape: a result per resource.
macro_rules! answer {
    ($resp:ty, $entry:ty, $entries:expr, $results:expr) => {{
        let mut resp = <$resp>::default();
        for (e, r) in $entries.iter().zip($results) {
            let mut out = <$entry>::default();
            out.resource_type = e.resource_type;
            out.resource_name = e.resource_name.clone();
            if let Err((code, message)) = r {
                out.error_code = code.code();
                out.error_message = message.as_deref().map(str_bytes);
            }
            resp.responses.push(out);
        }
        resp
    }};
}

/// One resource of either request: its type, name and (name, op, value) changes.
struct Entry {
    resource_type: i8,
    resource_name: StrBytes,
    ops: Result<Vec<(String, AlterOp, Option<String>)>, i8>,
}

/// Answers every entry: topics through the controller, the rest here.
async fn alter(
    core: &Rc<Core>,
    entries: &[Entry],
    incremental: bool,
    validate_only: bool,
) -> Vec<AdminResult> {
    let mut results: Vec<Option<AdminResult>> = Vec::with_capacity(entries.len());
    let mut topics = Vec::new();
    for e in entries {
        let result = match (&e.ops, e.resource_type) {
            (Err(op), _) => Some(Err((
                ErrorCode::InvalidRequest,
                Some(format!("Unknown config operation {op}")),
            ))),
            (Ok(ops), TOPIC) => {
                topics.push(AlterTopicConfigs {
                    topic: e.resource_name.to_string(),
                    ops: ops.clone(),
                });
                None
            }
            (Ok(ops), BROKER) => {
                let names: Vec<&str> = ops.iter().map(|(n, _, _)| n.as_str()).collect();
                Some(Err((
                    ErrorCode::InvalidRequest,
                    Some(format!(
                        "Cannot update these configs dynamically: {}",
                        names.join(", ")
                    )),
                )))
            }
            (Ok(_), other) => Some(Err((
                ErrorCode::InvalidRequest,
                Some(format!("Unsupported resource type {other}")),
            ))),
        };
        results.push(result);
    }
    let mut altered = if topics.is_empty() {
        Vec::new()
    } else {
        core.submit_to(CONTROLLER_SHARD, move |c| async move {
            controller_client::alter_topic_configs(&c, topics, incremental, validate_only).await
        })
        .await
        .unwrap_or_default()
    }
    .into_iter();
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                altered.next().unwrap_or(Err((
                    ErrorCode::UnknownServerError,
                    Some("controller unavailable".into()),
                )))
            })
        })
        .collect()
}

fn op_of(code: i8) -> Result<AlterOp, i8> {
    match code {
        0 => Ok(AlterOp::Set),
        1 => Ok(AlterOp::Delete),
        2 => Ok(AlterOp::Append),
        3 => Ok(AlterOp::Subtract),
        other => Err(other),
    }
}

pub async fn incremental(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: incremental::IncrementalAlterConfigsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let entries: Vec<Entry> = req
        .resources
        .iter()
        .map(|r| Entry {
            resource_type: r.resource_type,
            resource_name: r.resource_name.clone(),
            ops: r
                .configs
                .iter()
                .map(|c| {
                    op_of(c.config_operation).map(|op| {
                        (
                            c.name.to_string(),
                            op,
                            c.value.as_ref().map(|v| v.to_string()),
                        )
                    })
                })
                .collect(),
        })
        .collect();
    let results = alter(core, &entries, true, req.validate_only).await;
    let resp = answer!(
        incremental_response::IncrementalAlterConfigsResponse,
        incremental_response::AlterConfigsResourceResponse,
        entries,
        results
    );
    encode_response(
        key::INCREMENTAL_ALTER_CONFIGS,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

pub async fn legacy(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: alter_configs_request::AlterConfigsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let entries: Vec<Entry> = req
        .resources
        .iter()
        .map(|r| Entry {
            resource_type: r.resource_type,
            resource_name: r.resource_name.clone(),
            ops: Ok(r
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        AlterOp::Set,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect()),
        })
        .collect();
    let results = alter(core, &entries, false, req.validate_only).await;
    let resp = answer!(
        alter_configs_response::AlterConfigsResponse,
        alter_configs_response::AlterConfigsResourceResponse,
        entries,
        results
    );
    encode_response(key::ALTER_CONFIGS, h.api_version, h.correlation_id, &resp)
}

//! IncrementalAlterConfigs (v0–v1) and AlterConfigs (v0–v2) of topics and of dynamic
//! broker configs (`config::dynamic`), through the active controller (forwarded, as
//! Kafka's brokers forward them): the changes are TopicConfig and BrokerConfig
//! records, so they survive restarts, and every node applies them to its open logs
//! when it publishes them. A broker resource names this broker (clients send it to
//! the broker it names) or "" (the cluster-wide defaults, from any broker).

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
use crate::cluster::controller::{AdminResult, AlterConfigs, AlterOp, ConfigResource};
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

/// Answers every entry: those this broker can check here, the rest through the
/// controller.
async fn alter(
    core: &Rc<Core>,
    entries: &[Entry],
    incremental: bool,
    validate_only: bool,
) -> Vec<AdminResult> {
    let mut results: Vec<Option<AdminResult>> = Vec::with_capacity(entries.len());
    let mut forwarded = Vec::new();
    let me = core.node_id().0.to_string();
    for e in entries {
        let name = e.resource_name.to_string();
        let forward = match (&e.ops, e.resource_type) {
            (Err(op), _) => Err(format!("Unknown config operation {op}")),
            (Ok(ops), TOPIC) => Ok((ConfigResource::Topic(name), ops)),
            (Ok(ops), BROKER) if name.is_empty() || name == me => {
                Ok((ConfigResource::Broker(name), ops))
            }
            // As Kafka's brokers (ConfigAdminManager): a broker alters only itself.
            (Ok(_), BROKER) if name.parse::<i32>().is_err() => {
                Err(format!("Node id must be an integer, but it is: {name}"))
            }
            (Ok(_), BROKER) => Err(format!(
                "Unexpected broker id, expected {me}, but received {name}"
            )),
            (Ok(_), other) => Err(format!("Unsupported resource type {other}")),
        };
        match forward {
            Ok((resource, ops)) => {
                forwarded.push(AlterConfigs {
                    resource,
                    ops: ops.clone(),
                });
                results.push(None);
            }
            Err(m) => results.push(Some(Err((ErrorCode::InvalidRequest, Some(m))))),
        }
    }
    let mut altered = if forwarded.is_empty() {
        Vec::new()
    } else {
        core.submit_to(CONTROLLER_SHARD, move |c| async move {
            controller_client::alter_configs(&c, forwarded, incremental, validate_only).await
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

//! DescribeConfigs (v1–v4): a topic's configs (its own, then the broker settings and
//! Kafka defaults they fall back to, with sources and synonyms, as Kafka's
//! ConfigHelper answers), and this broker's settings (all static: read-only).
//! v0 (is_default instead of a source) is not served; Kafka 4.0 dropped it too.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};

use super::{decode, encode_response, str_bytes, Outcome};
use crate::config::topic::{ConfigType, Source, TOPIC_CONFIGS};
use crate::config::SETTINGS;
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

/// Kafka's ConfigResource types.
pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;

fn wanted(keys: &Option<Vec<kafka_protocol::protocol::StrBytes>>, name: &str) -> bool {
    keys.as_ref()
        .is_none_or(|k| k.is_empty() || k.iter().any(|k| k.as_str() == name))
}

/// A broker setting's type, read off its default (the settings table has no types).
fn broker_type(default: &str) -> ConfigType {
    if default == "true" || default == "false" {
        ConfigType::Boolean
    } else if !default.is_empty() && default.parse::<i64>().is_ok() {
        ConfigType::Long
    } else {
        ConfigType::String
    }
}

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: DescribeConfigsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let cluster = core.metadata.load().cluster.clone();
    let config = &core.config;
    let mut resp = DescribeConfigsResponse::default();
    for r in &req.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = r.resource_type;
        result.resource_name = r.resource_name.clone();
        let name = r.resource_name.as_str();
        match r.resource_type {
            TOPIC => match cluster.topic(name) {
                None => {
                    result.error_code = ErrorCode::UnknownTopicOrPartition.code();
                    result.error_message =
                        Some(str_bytes(&format!("The topic '{name}' does not exist.")));
                }
                Some(topic) => {
                    for c in TOPIC_CONFIGS
                        .iter()
                        .filter(|c| wanted(&r.configuration_keys, c.name))
                    {
                        let chain =
                            c.synonyms(config, topic.configs.get(c.name).map(String::as_str));
                        let mut e = DescribeConfigsResourceResult::default();
                        e.name = str_bytes(c.name);
                        e.value = Some(str_bytes(&chain[0].value));
                        e.config_source = chain[0].source as i8;
                        e.config_type = c.kind as i8;
                        if req.include_synonyms {
                            e.synonyms = chain
                                .iter()
                                .map(|s| {
                                    let mut y = DescribeConfigsSynonym::default();
                                    y.name = str_bytes(&s.name);
                                    y.value = Some(str_bytes(&s.value));
                                    y.source = s.source as i8;
                                    y
                                })
                                .collect();
                        }
                        result.configs.push(e);
                    }
                }
            },
            // The cluster-wide dynamic defaults (name ""): none are set.
            BROKER if name.is_empty() => {}
            BROKER if name == core.node_id().0.to_string() => {
                for s in SETTINGS
                    .iter()
                    .filter(|s| wanted(&r.configuration_keys, s.name))
                {
                    let given = config.given.get(s.name);
                    let source = if given.is_some() {
                        Source::StaticBroker
                    } else {
                        Source::Default
                    };
                    let value = given.map_or(s.default, String::as_str);
                    let mut e = DescribeConfigsResourceResult::default();
                    e.name = str_bytes(s.name);
                    e.value = Some(str_bytes(value));
                    // Nothing is dynamic yet: every broker setting needs a restart.
                    e.read_only = true;
                    e.config_source = source as i8;
                    e.config_type = broker_type(s.default) as i8;
                    if req.include_documentation {
                        e.documentation = Some(str_bytes(s.doc));
                    }
                    if req.include_synonyms {
                        let mut y = DescribeConfigsSynonym::default();
                        y.name = str_bytes(s.name);
                        y.value = Some(str_bytes(value));
                        y.source = source as i8;
                        e.synonyms = vec![y];
                    }
                    result.configs.push(e);
                }
            }
            BROKER => {
                // As Kafka's brokers: each describes itself (clients route by id).
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message = Some(str_bytes(&format!(
                    "Unexpected broker id, expected {} or empty string, but received {name}",
                    core.node_id().0
                )));
            }
            other => {
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message =
                    Some(str_bytes(&format!("Unsupported resource type {other}")));
            }
        }
        resp.results.push(result);
    }
    encode_response(
        key::DESCRIBE_CONFIGS,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

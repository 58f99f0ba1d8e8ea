//! DescribeConfigs (v1–v4): a topic's configs (its own, then the broker settings and
//! Kafka defaults they fall back to, with sources and synonyms, as Kafka's
//! ConfigHelper answers), this broker's settings (read-only but for the dynamic ones,
//! `config::dynamic`) and the cluster-wide dynamic defaults that are set.
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
use crate::config::{dynamic, SETTINGS};
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

fn synonym(name: &str, value: &str, source: Source) -> DescribeConfigsSynonym {
    let mut y = DescribeConfigsSynonym::default();
    y.name = str_bytes(name);
    y.value = Some(str_bytes(value));
    y.source = source as i8;
    y
}

/// A broker setting's entry. `chain`: its values, most specific first (not empty).
fn broker_entry(
    name: &str,
    chain: &[(Source, String)],
    req: &DescribeConfigsRequest,
) -> DescribeConfigsResourceResult {
    let setting = SETTINGS.iter().find(|s| s.name == name);
    let mut e = DescribeConfigsResourceResult::default();
    e.name = str_bytes(name);
    e.value = chain.first().map(|(_, v)| str_bytes(v));
    e.config_source = chain.first().map_or(Source::Default, |(s, _)| *s) as i8;
    e.read_only = !dynamic::is_dynamic(name);
    e.config_type = broker_type(setting.map_or("", |s| s.default)) as i8;
    if req.include_documentation {
        e.documentation = setting.map(|s| str_bytes(s.doc));
    }
    if req.include_synonyms {
        e.synonyms = chain.iter().map(|(s, v)| synonym(name, v, *s)).collect();
    }
    e
}

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: DescribeConfigsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let view = core.metadata.load();
    let cluster = &view.cluster;
    let layers = cluster.dynamic_configs(core.node_id());
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
                        let chain = c.synonyms(
                            &view.config,
                            layers,
                            topic.configs.get(c.name).map(String::as_str),
                        );
                        let mut e = DescribeConfigsResourceResult::default();
                        e.name = str_bytes(c.name);
                        e.value = Some(str_bytes(&c.value(&view.config, &chain)));
                        e.config_source = chain[0].source as i8;
                        e.config_type = c.kind as i8;
                        if req.include_synonyms {
                            e.synonyms = chain
                                .iter()
                                .map(|s| synonym(&s.name, &s.value, s.source))
                                .collect();
                        }
                        result.configs.push(e);
                    }
                }
            },
            // The cluster-wide dynamic defaults: those set, as Kafka lists them.
            BROKER if name.is_empty() => {
                let defaults = cluster.broker_configs.get("");
                for key in defaults
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .filter(|k| wanted(&r.configuration_keys, k))
                {
                    let defaults_only = dynamic::DynamicLayers {
                        broker: None,
                        ..layers
                    };
                    let chain = defaults_only.chain(&core.config, key);
                    result.configs.push(broker_entry(key, &chain, &req));
                }
            }
            BROKER if name == core.node_id().0.to_string() => {
                for s in SETTINGS
                    .iter()
                    .filter(|s| wanted(&r.configuration_keys, s.name))
                {
                    let chain = layers.chain(&core.config, s.name);
                    result.configs.push(broker_entry(s.name, &chain, &req));
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

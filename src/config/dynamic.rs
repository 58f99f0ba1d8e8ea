//! Dynamic broker configs: the broker settings that Kafka lets IncrementalAlterConfigs
//! and AlterConfigs change without a restart, and that ringlog applies at once. They
//! are stored in the metadata quorum (`BrokerConfig` records) as Kafka's KRaft stores
//! them: per broker (resource name = the broker's id) or as the cluster-wide default
//! (resource name ""). A broker's value comes from, most specific first: its own
//! dynamic value, the cluster-wide dynamic default, its static setting (file and
//! `--override`s), ringlog's default (Kafka's order, `DynamicBrokerConfig`).
//!
//! Built: the log settings that are each topic's defaults (Kafka's `DynamicLogConfig`).
//! Every other broker setting needs a restart and is read-only in DescribeConfigs.

use std::collections::BTreeMap;

use super::topic::Source;
use super::{Config, ConfigError, SETTINGS};

/// The dynamic settings ringlog applies without a restart. Each is dynamic in Kafka
/// too, at cluster level (per broker or as the default).
pub const DYNAMIC: &[&str] = &[
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.index.interval.bytes",
    "log.index.size.max.bytes",
    "log.message.timestamp.after.max.ms",
    "log.message.timestamp.before.max.ms",
    "log.retention.bytes",
    "log.retention.hours",
    "log.retention.minutes",
    "log.retention.ms",
    "log.roll.hours",
    "log.roll.ms",
    "log.segment.bytes",
    "message.max.bytes",
    "min.insync.replicas",
    "unclean.leader.election.enable",
];

pub fn is_dynamic(name: &str) -> bool {
    DYNAMIC.contains(&name)
}

/// A broker's dynamic configs as the metadata holds them: its own and the cluster-wide
/// defaults (either may be empty).
#[derive(Debug, Clone, Copy)]
pub struct DynamicLayers<'a> {
    pub broker: Option<&'a BTreeMap<String, String>>,
    pub default: Option<&'a BTreeMap<String, String>>,
}

impl DynamicLayers<'_> {
    /// Every value `name` has, most specific first, with its source; ringlog's own
    /// default last (it may be empty: unset).
    pub fn chain(&self, config: &Config, name: &str) -> Vec<(Source, String)> {
        let mut chain = Vec::new();
        if let Some(v) = self.broker.and_then(|m| m.get(name)) {
            chain.push((Source::DynamicBroker, v.clone()));
        }
        if let Some(v) = self.default.and_then(|m| m.get(name)) {
            chain.push((Source::DynamicDefaultBroker, v.clone()));
        }
        if let Some(v) = config.given.get(name) {
            chain.push((Source::StaticBroker, v.clone()));
        }
        if let Some(s) = SETTINGS.iter().find(|s| s.name == name) {
            chain.push((Source::Default, s.default.to_string()));
        }
        chain
    }
}

/// Checks one dynamic value as a broker would parse it, with the message a restart
/// would give (`invalid value "x" for message.max.bytes: not a number`).
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let props = BTreeMap::from([(name.to_string(), value.to_string())]);
    Config::from_properties(&props, &[0])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl Config {
    /// This broker's config with its dynamic values in effect. `given` stays the
    /// static settings (what DescribeConfigs reports as STATIC_BROKER_CONFIG).
    pub fn with_dynamic(&self, layers: DynamicLayers<'_>) -> Result<Config, ConfigError> {
        let mut props: BTreeMap<String, String> = self
            .given
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        for layer in [layers.default, layers.broker].into_iter().flatten() {
            for (k, v) in layer.iter().filter(|(k, _)| is_dynamic(k)) {
                props.insert(k.clone(), v.clone());
            }
        }
        let (mut config, _) = Config::from_properties(&props, &self.cpus)?;
        config.given = self.given.clone();
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[&str]) -> Config {
        let overrides: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        Config::load(None, &overrides, &[0, 1]).unwrap().0
    }

    #[test]
    fn every_dynamic_name_is_a_setting() {
        for name in DYNAMIC {
            assert!(SETTINGS.iter().any(|s| s.name == *name), "{name}");
        }
    }

    #[test]
    fn the_broker_value_beats_the_default_which_beats_the_static_one() {
        let c = config(&["message.max.bytes=2000", "ringlog.cpus=1"]);
        let default = BTreeMap::from([
            ("message.max.bytes".to_string(), "3000".to_string()),
            ("log.retention.ms".to_string(), "60000".to_string()),
        ]);
        let broker = BTreeMap::from([("message.max.bytes".to_string(), "4000".to_string())]);
        let layers = DynamicLayers {
            broker: Some(&broker),
            default: Some(&default),
        };
        let effective = c.with_dynamic(layers).unwrap();
        assert_eq!(effective.message_size_max_bytes, 4000);
        assert_eq!(effective.retention_ms, Some(60000));
        assert_eq!(effective.cpus, vec![1], "static settings stay");
        assert_eq!(effective.given, c.given);
        let sources: Vec<Source> = layers
            .chain(&c, "message.max.bytes")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(
            sources,
            vec![
                Source::DynamicBroker,
                Source::DynamicDefaultBroker,
                Source::StaticBroker,
                Source::Default
            ]
        );
        let only_default = DynamicLayers {
            broker: None,
            default: Some(&default),
        };
        assert_eq!(
            c.with_dynamic(only_default).unwrap().message_size_max_bytes,
            3000
        );
    }

    #[test]
    fn values_are_checked_as_at_start() {
        assert!(validate("log.retention.ms", "-1").is_ok());
        let e = validate("message.max.bytes", "big").unwrap_err();
        assert!(
            e.contains("message.max.bytes") && e.contains("not a number"),
            "{e}"
        );
        assert!(validate("log.segment.bytes", "10").is_err(), "below 14");
    }
}

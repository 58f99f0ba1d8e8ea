//! The topic configs ringlog accepts, as Kafka's LogConfig defines them: each one's
//! type, its broker-level synonyms (most specific first: the broker setting that
//! supplies a topic's value when the topic sets none) and Kafka's default. What
//! DescribeConfigs reports for a topic, and what CreateTopics accepts, come from here.

use std::collections::BTreeMap;

use super::dynamic::DynamicLayers;
use super::Config;

/// DescribeConfigs' config types (Kafka's ConfigType).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(i8)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

pub struct TopicConfig {
    pub name: &'static str,
    pub kind: ConfigType,
    /// Broker settings that set this config's default, most specific first.
    pub broker: &'static [&'static str],
    /// Kafka's default, where ringlog has no setting of its own for it.
    pub default: &'static str,
    /// The value this broker uses by default, if it has a setting for it.
    pub effective: fn(&Config) -> Option<String>,
}

const MAX: &str = "9223372036854775807";

fn none(_: &Config) -> Option<String> {
    None
}

fn or_max(v: Option<u64>) -> Option<String> {
    Some(v.map_or(MAX.to_string(), |v| v.to_string()))
}

fn or_minus_one(v: Option<u64>) -> Option<String> {
    Some(v.map_or("-1".to_string(), |v| v.to_string()))
}

/// Every topic config ringlog accepts, sorted by name (as Kafka lists them).
pub const TOPIC_CONFIGS: &[TopicConfig] = &[
    TopicConfig {
        name: "cleanup.policy",
        kind: ConfigType::List,
        broker: &["log.cleanup.policy"],
        default: "delete",
        effective: none,
    },
    TopicConfig {
        name: "compression.type",
        kind: ConfigType::String,
        broker: &["compression.type"],
        default: "producer",
        effective: none,
    },
    TopicConfig {
        name: "delete.retention.ms",
        kind: ConfigType::Long,
        broker: &["log.cleaner.delete.retention.ms"],
        default: "86400000",
        effective: none,
    },
    TopicConfig {
        name: "file.delete.delay.ms",
        kind: ConfigType::Long,
        broker: &["log.segment.delete.delay.ms"],
        default: "60000",
        effective: none,
    },
    TopicConfig {
        name: "flush.messages",
        kind: ConfigType::Long,
        broker: &["log.flush.interval.messages"],
        default: MAX,
        effective: |c| Some(c.flush_interval_messages.to_string()),
    },
    TopicConfig {
        name: "flush.ms",
        kind: ConfigType::Long,
        broker: &["log.flush.interval.ms"],
        default: MAX,
        effective: |c| or_max(c.flush_interval_ms),
    },
    TopicConfig {
        name: "index.interval.bytes",
        kind: ConfigType::Int,
        broker: &["log.index.interval.bytes"],
        default: "4096",
        effective: |c| Some(c.index_interval_bytes.to_string()),
    },
    TopicConfig {
        name: "max.compaction.lag.ms",
        kind: ConfigType::Long,
        broker: &["log.cleaner.max.compaction.lag.ms"],
        default: MAX,
        effective: none,
    },
    TopicConfig {
        name: "max.message.bytes",
        kind: ConfigType::Int,
        broker: &["message.max.bytes"],
        default: "1048588",
        effective: |c| Some(c.message_size_max_bytes.to_string()),
    },
    TopicConfig {
        name: "message.downconversion.enable",
        kind: ConfigType::Boolean,
        broker: &["log.message.downconversion.enable"],
        default: "true",
        effective: none,
    },
    TopicConfig {
        name: "message.timestamp.after.max.ms",
        kind: ConfigType::Long,
        broker: &["log.message.timestamp.after.max.ms"],
        default: "3600000",
        effective: |c| Some(c.timestamp_after_max_ms.to_string()),
    },
    TopicConfig {
        name: "message.timestamp.before.max.ms",
        kind: ConfigType::Long,
        broker: &["log.message.timestamp.before.max.ms"],
        default: MAX,
        effective: |c| Some(c.timestamp_before_max_ms.to_string()),
    },
    TopicConfig {
        name: "message.timestamp.difference.max.ms",
        kind: ConfigType::Long,
        broker: &["log.message.timestamp.difference.max.ms"],
        default: MAX,
        effective: none,
    },
    TopicConfig {
        name: "message.timestamp.type",
        kind: ConfigType::String,
        broker: &["log.message.timestamp.type"],
        default: "CreateTime",
        effective: none,
    },
    TopicConfig {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigType::Double,
        broker: &["log.cleaner.min.cleanable.ratio"],
        default: "0.5",
        effective: none,
    },
    TopicConfig {
        name: "min.compaction.lag.ms",
        kind: ConfigType::Long,
        broker: &["log.cleaner.min.compaction.lag.ms"],
        default: "0",
        effective: none,
    },
    TopicConfig {
        name: "min.insync.replicas",
        kind: ConfigType::Int,
        broker: &["min.insync.replicas"],
        default: "1",
        effective: |c| Some(c.min_insync_replicas.to_string()),
    },
    TopicConfig {
        name: "preallocate",
        kind: ConfigType::Boolean,
        broker: &["log.preallocate"],
        default: "false",
        effective: none,
    },
    TopicConfig {
        name: "retention.bytes",
        kind: ConfigType::Long,
        broker: &["log.retention.bytes"],
        default: "-1",
        effective: |c| or_minus_one(c.retention_bytes),
    },
    TopicConfig {
        name: "retention.ms",
        kind: ConfigType::Long,
        broker: &[
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ],
        default: "604800000",
        effective: |c| or_minus_one(c.retention_ms),
    },
    TopicConfig {
        name: "segment.bytes",
        kind: ConfigType::Int,
        broker: &["log.segment.bytes"],
        default: "1073741824",
        effective: |c| Some(c.segment_size_max_bytes.to_string()),
    },
    TopicConfig {
        name: "segment.index.bytes",
        kind: ConfigType::Int,
        broker: &["log.index.size.max.bytes"],
        default: "10485760",
        effective: |c| Some(c.index_size_max_bytes.to_string()),
    },
    TopicConfig {
        name: "segment.jitter.ms",
        kind: ConfigType::Long,
        broker: &["log.roll.jitter.ms", "log.roll.jitter.hours"],
        default: "0",
        effective: none,
    },
    TopicConfig {
        name: "segment.ms",
        kind: ConfigType::Long,
        broker: &["log.roll.ms", "log.roll.hours"],
        default: "604800000",
        effective: |c| or_max(c.roll_ms),
    },
    TopicConfig {
        name: "unclean.leader.election.enable",
        kind: ConfigType::Boolean,
        broker: &["unclean.leader.election.enable"],
        default: "false",
        effective: |c| Some(c.unclean_leader_election_enable.to_string()),
    },
];

/// Checks a value for `config`, with Kafka's messages (ConfigDef's parse and
/// validators).
pub fn validate(config: &TopicConfig, value: &str) -> Result<(), String> {
    let invalid = |why: &str| {
        Err(format!(
            "Invalid value {value} for configuration {}: {why}",
            config.name
        ))
    };
    let one_of = |allowed: &[&str], v: &str| allowed.contains(&v);
    match config.kind {
        ConfigType::Int if value.trim().parse::<i32>().is_err() => {
            invalid("Not a number of type INT")
        }
        ConfigType::Long if value.trim().parse::<i64>().is_err() => {
            invalid("Not a number of type LONG")
        }
        ConfigType::Double if value.trim().parse::<f64>().is_err() => {
            invalid("Not a number of type DOUBLE")
        }
        ConfigType::Boolean
            if !value.trim().eq_ignore_ascii_case("true")
                && !value.trim().eq_ignore_ascii_case("false") =>
        {
            invalid("Expected value to be either true or false")
        }
        _ => match config.name {
            "cleanup.policy"
                if !value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .all(|p| one_of(&["compact", "delete"], p)) =>
            {
                invalid("String must be one of: compact, delete")
            }
            "compression.type"
                if !one_of(
                    &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
                    value,
                ) =>
            {
                invalid("String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer")
            }
            "message.timestamp.type" if !one_of(&["CreateTime", "LogAppendTime"], value) => {
                invalid("String must be one of: CreateTime, LogAppendTime")
            }
            _ => Ok(()),
        },
    }
}

pub fn find(name: &str) -> Option<&'static TopicConfig> {
    TOPIC_CONFIGS.iter().find(|c| c.name == name)
}

/// Where a config's value comes from (DescribeConfigs' ConfigSource).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(i8)]
pub enum Source {
    Topic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

/// One link of a config's synonym chain: the name, its value, where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Synonym {
    pub name: String,
    pub value: String,
    pub source: Source,
}

impl TopicConfig {
    /// The chain of values for this config, most specific first, as given: the
    /// topic's own (`set`); for each source in Kafka's order (this broker's dynamic
    /// values, the cluster-wide dynamic defaults, the static settings) each broker
    /// synonym set there; Kafka's default. The first decides the value (`value`).
    pub fn synonyms(
        &self,
        effective: &Config,
        dynamic: DynamicLayers<'_>,
        set: Option<&str>,
    ) -> Vec<Synonym> {
        let mut chain = Vec::new();
        if let Some(v) = set {
            chain.push(Synonym {
                name: self.name.to_string(),
                value: v.to_string(),
                source: Source::Topic,
            });
        }
        let layers: [(Source, Option<&BTreeMap<String, String>>); 2] = [
            (Source::DynamicBroker, dynamic.broker),
            (Source::DynamicDefaultBroker, dynamic.default),
        ];
        for (source, layer) in layers {
            for b in self.broker {
                if let Some(v) = layer.and_then(|m| m.get(*b)) {
                    chain.push(Synonym {
                        name: b.to_string(),
                        value: v.clone(),
                        source,
                    });
                }
            }
        }
        for b in self.broker {
            if let Some(v) = effective.given.get(b) {
                chain.push(Synonym {
                    name: b.to_string(),
                    value: v.clone(),
                    source: Source::StaticBroker,
                });
            }
        }
        let default = self.broker.first().copied().unwrap_or(self.name);
        chain.push(Synonym {
            name: default.to_string(),
            value: self.default.to_string(),
            source: Source::Default,
        });
        chain
    }

    /// The value in effect, given its `chain` (from `synonyms`): the topic's own, or
    /// what the broker computed from its settings (as Kafka reports the LogConfig in
    /// use, while the synonyms keep the values as given).
    pub fn value(&self, effective: &Config, chain: &[Synonym]) -> String {
        match chain.first() {
            Some(s) if s.source == Source::Topic || s.source == Source::Default => s.value.clone(),
            Some(s) => (self.effective)(effective).unwrap_or_else(|| s.value.clone()),
            None => self.default.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_with_kafkas_messages() {
        let check = |name: &str, value: &str| validate(find(name).unwrap(), value);
        assert!(check("retention.ms", "-1").is_ok());
        assert_eq!(
            check("retention.ms", "soon"),
            Err(
                "Invalid value soon for configuration retention.ms: Not a number of type LONG"
                    .into()
            )
        );
        assert!(check("segment.bytes", "9999999999").is_err(), "past INT");
        assert!(check("preallocate", "TRUE").is_ok() && check("preallocate", "yes").is_err());
        assert!(check("cleanup.policy", "compact,delete").is_ok());
        assert!(check("cleanup.policy", "shred").is_err());
        assert!(
            check("compression.type", "zstd").is_ok() && check("compression.type", "xz").is_err()
        );
        assert!(check("min.cleanable.dirty.ratio", "0.3").is_ok());
    }

    const NO_DYNAMIC: DynamicLayers<'static> = DynamicLayers {
        broker: None,
        default: None,
    };

    fn config(pairs: &[&str]) -> Config {
        let overrides: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        Config::load(None, &overrides, &[0]).unwrap().0
    }

    #[test]
    fn a_topic_value_then_broker_settings_then_kafkas_default() {
        assert!(
            TOPIC_CONFIGS.windows(2).all(|w| w[0].name < w[1].name),
            "sorted"
        );
        let c = config(&["log.retention.hours=1"]);
        let retention = find("retention.ms").unwrap();
        let chain = retention.synonyms(&c, NO_DYNAMIC, None);
        assert_eq!(
            chain,
            vec![
                Synonym {
                    name: "log.retention.hours".into(),
                    value: "1".into(),
                    source: Source::StaticBroker
                },
                Synonym {
                    name: "log.retention.ms".into(),
                    value: "604800000".into(),
                    source: Source::Default
                },
            ]
        );
        assert_eq!(
            retention.value(&c, &chain),
            "3600000",
            "as the broker uses it"
        );
        let chain = retention.synonyms(&c, NO_DYNAMIC, Some("5"));
        assert_eq!(
            (chain[0].value.as_str(), chain[0].source),
            ("5", Source::Topic)
        );
        assert_eq!(chain.len(), 3);
        let plain = find("cleanup.policy")
            .unwrap()
            .synonyms(&config(&[]), NO_DYNAMIC, None);
        assert_eq!(
            plain,
            vec![Synonym {
                name: "log.cleanup.policy".into(),
                value: "delete".into(),
                source: Source::Default
            }]
        );
    }

    #[test]
    fn dynamic_broker_values_come_before_static_ones() {
        let c = config(&["log.retention.hours=1"]);
        let default = BTreeMap::from([("log.retention.ms".to_string(), "1000".to_string())]);
        let broker = BTreeMap::from([("log.retention.minutes".to_string(), "2".to_string())]);
        let layers = DynamicLayers {
            broker: Some(&broker),
            default: Some(&default),
        };
        let effective = c.with_dynamic(layers).unwrap();
        let chain = find("retention.ms")
            .unwrap()
            .synonyms(&effective, layers, None);
        let links: Vec<(&str, &str, Source)> = chain
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_str(), s.source))
            .collect();
        assert_eq!(
            links,
            vec![
                ("log.retention.minutes", "2", Source::DynamicBroker),
                ("log.retention.ms", "1000", Source::DynamicDefaultBroker),
                ("log.retention.hours", "1", Source::StaticBroker),
                ("log.retention.ms", "604800000", Source::Default),
            ]
        );
        // What the broker uses: Kafka's ms > minutes > hours, over the merged settings.
        assert_eq!(
            find("retention.ms").unwrap().value(&effective, &chain),
            "1000"
        );
    }
}

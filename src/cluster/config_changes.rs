//! Plans (Incremental)AlterConfigs as Kafka's controller does
//! (`ConfigurationControlManager`): topic configs become TopicConfig records, dynamic
//! broker configs (`config::dynamic`) BrokerConfig records. Each entry is checked
//! whole before any of its records is planned, so an entry that fails leaves its
//! resource as it was; the other entries go on.

use std::collections::BTreeMap;

use super::controller::{AdminResult, AlterConfigs, AlterOp, ConfigResource, Plan};
use super::metadata::ClusterMetadata;
use super::records::MetadataRecord;
use crate::config::{dynamic, topic, SETTINGS};
use crate::protocol::ErrorCode;

type Failure = (ErrorCode, Option<String>);

/// One result per entry, in order, and the records of those that succeed (none if
/// `validate_only`). Incremental: each op changes the resource's configs (APPEND and
/// SUBTRACT on LIST configs only, from the current value or the default); otherwise
/// the entry's configs replace all of the resource's.
pub fn plan_alter_configs(
    current: &ClusterMetadata,
    entries: &[AlterConfigs],
    incremental: bool,
    validate_only: bool,
) -> Plan<AdminResult> {
    let mut records = Vec::new();
    let results = entries
        .iter()
        .map(|e| {
            let planned = match &e.resource {
                ConfigResource::Topic(name) => plan_topic(current, name, &e.ops, incremental),
                ConfigResource::Broker(name) => plan_broker(current, name, &e.ops, incremental),
            }?;
            if !validate_only {
                records.extend(planned);
            }
            Ok(())
        })
        .collect();
    Plan { results, records }
}

fn invalid_config(message: String) -> Failure {
    (ErrorCode::InvalidConfig, Some(message))
}

/// The configs after `ops`: from `old` if incremental, else from none.
fn apply_ops(
    old: &BTreeMap<String, String>,
    ops: &[(String, AlterOp, Option<String>)],
    incremental: bool,
    list_default: impl Fn(&str) -> Option<&'static str>,
) -> Result<BTreeMap<String, String>, Failure> {
    let mut next = if incremental {
        old.clone()
    } else {
        BTreeMap::new()
    };
    for (name, op, value) in ops {
        match op {
            AlterOp::Set => {
                let Some(v) = value else {
                    return Err(invalid_config(format!(
                        "Null value not supported for : {name}"
                    )));
                };
                next.insert(name.clone(), v.clone());
            }
            AlterOp::Delete => {
                next.remove(name);
            }
            AlterOp::Append | AlterOp::Subtract => {
                let Some(default) = list_default(name) else {
                    let verb = if *op == AlterOp::Append {
                        "APPEND"
                    } else {
                        "SUBTRACT"
                    };
                    return Err(invalid_config(format!(
                        "Can't {verb} to key {name} because its type is not LIST."
                    )));
                };
                let old = next.get(name).map_or(default, String::as_str);
                let mut items: Vec<String> = old
                    .split(',')
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .map(String::from)
                    .collect();
                for item in value
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                {
                    if *op == AlterOp::Append {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                next.insert(name.clone(), items.join(","));
            }
        }
    }
    Ok(next)
}

/// The records that turn `old` into `next`: a value per change, `None` per removal.
fn changes(
    old: &BTreeMap<String, String>,
    next: &BTreeMap<String, String>,
    record: impl Fn(&str, Option<&str>) -> MetadataRecord,
) -> Vec<MetadataRecord> {
    let set = next
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| record(k, Some(v)));
    let removed = old
        .keys()
        .filter(|k| !next.contains_key(*k))
        .map(|k| record(k, None));
    set.chain(removed).collect()
}

fn plan_topic(
    current: &ClusterMetadata,
    name: &str,
    ops: &[(String, AlterOp, Option<String>)],
    incremental: bool,
) -> Result<Vec<MetadataRecord>, Failure> {
    let Some(t) = current.topic(name) else {
        return Err((
            ErrorCode::UnknownTopicOrPartition,
            Some(format!("The topic '{name}' does not exist.")),
        ));
    };
    if let Some((unknown, _, _)) = ops.iter().find(|(n, _, _)| topic::find(n).is_none()) {
        return Err(invalid_config(format!(
            "Unknown topic config name: {unknown}"
        )));
    }
    let next = apply_ops(&t.configs, ops, incremental, |n| {
        topic::find(n)
            .filter(|spec| spec.kind == topic::ConfigType::List)
            .map(|spec| spec.default)
    })?;
    for (k, v) in next.iter().filter(|(k, v)| t.configs.get(*k) != Some(*v)) {
        let spec = topic::find(k).expect("names are checked above");
        topic::validate(spec, v).map_err(invalid_config)?;
    }
    Ok(changes(&t.configs, &next, |name, value| {
        MetadataRecord::TopicConfig {
            topic_id: t.id,
            name: name.to_string(),
            value: value.map(String::from),
        }
    }))
}

fn plan_broker(
    current: &ClusterMetadata,
    resource: &str,
    ops: &[(String, AlterOp, Option<String>)],
    incremental: bool,
) -> Result<Vec<MetadataRecord>, Failure> {
    let invalid_request = |m: String| (ErrorCode::InvalidRequest, Some(m));
    if !resource.is_empty() && resource.parse::<i32>().is_err() {
        return Err(invalid_request(format!(
            "Node id must be an integer, but it is: {resource}"
        )));
    }
    let known = |n: &str| {
        SETTINGS
            .iter()
            .any(|s| s.name == n || s.aliases.contains(&n))
    };
    if let Some((unknown, _, _)) = ops.iter().find(|(n, _, _)| !known(n)) {
        return Err(invalid_config(format!(
            "Unknown broker config name: {unknown}"
        )));
    }
    let fixed: Vec<&str> = ops
        .iter()
        .map(|(n, _, _)| n.as_str())
        .filter(|n| !dynamic::is_dynamic(n))
        .collect();
    if !fixed.is_empty() {
        // Kafka's message (a Scala Set), with INVALID_REQUEST as its brokers answer
        // for a broker config that fails validation (KAFKA-13609).
        return Err(invalid_request(format!(
            "Cannot update these configs dynamically: Set({})",
            fixed.join(", ")
        )));
    }
    let empty = BTreeMap::new();
    let old = current.broker_configs.get(resource).unwrap_or(&empty);
    let next = apply_ops(old, ops, incremental, |_| None)?;
    for (k, v) in next.iter().filter(|(k, v)| old.get(*k) != Some(*v)) {
        dynamic::validate(k, v).map_err(invalid_request)?;
    }
    Ok(changes(old, &next, |name, value| {
        MetadataRecord::BrokerConfig {
            resource: resource.to_string(),
            name: name.to_string(),
            value: value.map(String::from),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metadata::{test_image, TopicMeta};

    type Ops<'a> = Vec<(&'a str, AlterOp, Option<&'a str>)>;

    /// Plans one entry on `image`; its result and the image after its records.
    fn alter(
        image: &ClusterMetadata,
        resource: ConfigResource,
        ops: Ops<'_>,
        incremental: bool,
    ) -> (AdminResult, ClusterMetadata) {
        let entry = AlterConfigs {
            resource,
            ops: ops
                .into_iter()
                .map(|(n, o, v)| (n.to_string(), o, v.map(String::from)))
                .collect(),
        };
        let mut plan = plan_alter_configs(image, &[entry], incremental, false);
        let mut next = image.clone();
        for r in &plan.records {
            next.apply(r).unwrap();
        }
        (plan.results.remove(0), next)
    }

    #[test]
    fn topic_configs_each_op_as_kafka() {
        let mut image = test_image(&[1], "t", &[&[1]]);
        let mut t = TopicMeta::clone(image.topic("t").unwrap());
        t.configs.insert("retention.ms".into(), "1000".into());
        image.insert(t);
        let topic = || ConfigResource::Topic("t".into());
        let configs = |m: &ClusterMetadata| m.topic("t").unwrap().configs.clone();
        let (r, next) = alter(
            &image,
            topic(),
            vec![
                ("segment.bytes", AlterOp::Set, Some("2000")),
                ("retention.ms", AlterOp::Delete, None),
            ],
            true,
        );
        assert_eq!(r, Ok(()));
        assert_eq!(
            configs(&next),
            BTreeMap::from([("segment.bytes".to_string(), "2000".to_string())])
        );
        let append = vec![("cleanup.policy", AlterOp::Append, Some("compact"))];
        let (_, next) = alter(&image, topic(), append, true);
        assert_eq!(configs(&next)["cleanup.policy"], "delete,compact");
        let subtract = vec![("cleanup.policy", AlterOp::Subtract, Some("delete"))];
        let (r, next) = alter(&next, topic(), subtract, true);
        assert_eq!(r, Ok(()));
        assert_eq!(configs(&next)["cleanup.policy"], "compact");
        let (r, _) = alter(
            &image,
            topic(),
            vec![("retention.ms", AlterOp::Append, Some("5"))],
            true,
        );
        assert_eq!(
            r,
            Err(invalid_config(
                "Can't APPEND to key retention.ms because its type is not LIST.".into()
            ))
        );
        let bad = vec![
            ("segment.bytes", AlterOp::Set, Some("2000")),
            ("retention.ms", AlterOp::Set, Some("later")),
        ];
        let (r, next) = alter(&image, topic(), bad, true);
        assert_eq!(r.unwrap_err().0, ErrorCode::InvalidConfig);
        assert_eq!(configs(&next), configs(&image), "nothing of a failed entry");
        let (r, _) = alter(
            &image,
            topic(),
            vec![("no.such", AlterOp::Set, Some("1"))],
            true,
        );
        assert_eq!(
            r,
            Err(invalid_config("Unknown topic config name: no.such".into()))
        );
        // Not incremental: exactly the given set.
        let (_, next) = alter(
            &image,
            topic(),
            vec![("flush.ms", AlterOp::Set, Some("10"))],
            false,
        );
        assert_eq!(
            configs(&next),
            BTreeMap::from([("flush.ms".to_string(), "10".to_string())])
        );
        let (r, _) = alter(&image, ConfigResource::Topic("nope".into()), vec![], true);
        assert_eq!(r.unwrap_err().0, ErrorCode::UnknownTopicOrPartition);
    }

    #[test]
    fn broker_configs_only_the_dynamic_ones_with_kafkas_errors() {
        let image = test_image(&[1], "t", &[&[1]]);
        let broker = |name: &str| ConfigResource::Broker(name.into());
        let (r, next) = alter(
            &image,
            broker(""),
            vec![
                ("log.retention.ms", AlterOp::Set, Some("60000")),
                ("message.max.bytes", AlterOp::Set, Some("5000")),
            ],
            true,
        );
        assert_eq!(r, Ok(()));
        assert_eq!(next.broker_configs[""]["log.retention.ms"], "60000");
        let (r, next) = alter(
            &next,
            broker("1"),
            vec![("message.max.bytes", AlterOp::Set, Some("6000"))],
            true,
        );
        assert_eq!(r, Ok(()));
        assert_eq!(next.broker_configs["1"]["message.max.bytes"], "6000");
        let (_, after) = alter(
            &next,
            broker(""),
            vec![("log.retention.ms", AlterOp::Delete, None)],
            true,
        );
        assert_eq!(
            after.broker_configs[""],
            BTreeMap::from([("message.max.bytes".into(), "5000".into())])
        );
        // Not incremental: the given set replaces the broker's.
        let (_, after) = alter(
            &next,
            broker(""),
            vec![("log.segment.bytes", AlterOp::Set, Some("1048576"))],
            false,
        );
        assert_eq!(
            after.broker_configs[""],
            BTreeMap::from([("log.segment.bytes".into(), "1048576".into())])
        );

        let refused = |resource: &str, ops: Ops<'_>| {
            let (r, after) = alter(&next, broker(resource), ops, true);
            assert_eq!(after.broker_configs, next.broker_configs, "nothing applied");
            r.unwrap_err()
        };
        assert_eq!(
            refused("1", vec![("num.partitions", AlterOp::Set, Some("3"))]),
            (
                ErrorCode::InvalidRequest,
                Some("Cannot update these configs dynamically: Set(num.partitions)".into())
            )
        );
        assert_eq!(
            refused("1", vec![("num.io.threads", AlterOp::Set, Some("3"))]),
            invalid_config("Unknown broker config name: num.io.threads".into())
        );
        let (code, message) = refused("", vec![("message.max.bytes", AlterOp::Set, Some("x"))]);
        assert_eq!(code, ErrorCode::InvalidRequest);
        assert!(message.unwrap().contains("message.max.bytes"));
        assert_eq!(
            refused("b1", vec![]),
            (
                ErrorCode::InvalidRequest,
                Some("Node id must be an integer, but it is: b1".into())
            )
        );
        assert_eq!(
            refused("1", vec![("log.retention.ms", AlterOp::Append, Some("1"))]).0,
            ErrorCode::InvalidConfig
        );
        let validated = plan_alter_configs(
            &next,
            &[AlterConfigs {
                resource: broker(""),
                ops: vec![("log.retention.ms".into(), AlterOp::Set, Some("1".into()))],
            }],
            true,
            true,
        );
        assert!(validated.results[0].is_ok() && validated.records.is_empty());
    }
}

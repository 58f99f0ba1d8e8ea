//! The metadata quorum's records, after KRaft's (`metadata/src/main/resources/common/
//! metadata/*Record.json`): every change to the cluster image is a batch of these,
//! appended to the quorum's log and applied in order on every node. A record states
//! a fact the active controller decided (a topic exists with this id, a partition has
//! this leader); applying it is deterministic and never decides anything, so every
//! node that applies the same log holds the same image.
//!
//! Records are stored as JSON: they are rare and small, and a person can read the log.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::metadata::{BrokerInfo, ClusterMetadata, PartitionAssignment, TopicMeta};
use crate::ids::{BrokerId, LeaderEpoch};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// The cluster's id, written once by the first active controller (Kafka formats
    /// every node with it; here the quorum decides it).
    ClusterId {
        id: String,
    },
    /// A broker (re)registers: a new incarnation, fenced until it catches up
    /// (RegisterBrokerRecord).
    RegisterBroker {
        broker: BrokerInfo,
    },
    /// FenceBrokerRecord / UnfenceBrokerRecord, for the incarnation `epoch`.
    FenceBroker {
        id: BrokerId,
        epoch: i64,
    },
    UnfenceBroker {
        id: BrokerId,
        epoch: i64,
    },
    /// A topic with its configs (TopicRecord and its ConfigRecords); its
    /// partitions follow as `Partition` records.
    Topic {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// Partition `partition` of a topic (PartitionRecord): the next one, or a
    /// replacement of an existing one.
    Partition {
        topic_id: Uuid,
        partition: i32,
        assignment: PartitionAssignment,
    },
    /// A change of leader or ISR (PartitionChangeRecord). A new leader bumps the
    /// leader epoch; every change bumps the partition epoch.
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        leader: LeaderChange,
        isr: Option<Vec<BrokerId>>,
    },
    /// A topic config set, or removed (`None`: back to the broker's default)
    /// (ConfigRecord).
    TopicConfig {
        topic_id: Uuid,
        name: String,
        value: Option<String>,
    },
    /// A dynamic broker config set, or removed (`None`) (ConfigRecord of a BROKER
    /// resource): `resource` is a broker's id, or "" for the cluster-wide default.
    BrokerConfig {
        resource: String,
        name: String,
        value: Option<String>,
    },
    /// RemoveTopicRecord.
    RemoveTopic {
        id: Uuid,
    },
    /// Producer ids below `next` are handed out (ProducerIdsRecord): `broker`
    /// holds `[next - block, next)`.
    ProducerIds {
        broker: BrokerId,
        next: i64,
    },
}

/// What a `PartitionChange` does to the leader (Kafka writes -2 for no change, -1 for
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum LeaderChange {
    Keep,
    /// No replica can lead: the partition is offline.
    Offline,
    To(BrokerId),
}

/// A record that does not fit the image it is applied to: the log is not one this
/// node can follow (a bug, or a log from another cluster).
#[derive(Debug, PartialEq)]
pub struct ApplyError(pub String);

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ClusterMetadata {
    /// Applies one record. The image's `version` is the caller's to set (the log
    /// index of the batch).
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        let missing = |what: String| Err(ApplyError(format!("{what} does not exist")));
        match record {
            MetadataRecord::ClusterId { id } => {
                if !self.cluster_id.is_empty() && self.cluster_id != *id {
                    return Err(ApplyError(format!(
                        "the cluster id is {}, not {id}",
                        self.cluster_id
                    )));
                }
                self.cluster_id = id.clone();
            }
            MetadataRecord::RegisterBroker { broker } => {
                self.brokers.insert(broker.id, broker.clone());
            }
            MetadataRecord::FenceBroker { id, epoch }
            | MetadataRecord::UnfenceBroker { id, epoch } => {
                let Some(b) = self.brokers.get_mut(id).filter(|b| b.epoch == *epoch) else {
                    return missing(format!("broker {id} epoch {epoch}"));
                };
                b.fenced = matches!(record, MetadataRecord::FenceBroker { .. });
            }
            MetadataRecord::Topic { name, id, configs } => {
                if self.topic(name).is_some() || self.topic_by_id(id).is_some() {
                    return Err(ApplyError(format!("topic {name} ({id}) exists")));
                }
                self.insert(TopicMeta {
                    name: name.clone(),
                    id: *id,
                    partitions: Vec::new(),
                    configs: configs.clone(),
                });
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                assignment,
            } => {
                let Some(topic) = self.topic_by_id(topic_id) else {
                    return missing(format!("topic {topic_id}"));
                };
                let mut t = TopicMeta::clone(topic);
                match usize::try_from(*partition) {
                    Ok(p) if p < t.partitions.len() => t.partitions[p] = assignment.clone(),
                    Ok(p) if p == t.partitions.len() => t.partitions.push(assignment.clone()),
                    _ => return missing(format!("partition {partition} of {topic_id}")),
                }
                self.insert(t);
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
            } => {
                let Some(mut t) = self.topic_by_id(topic_id).map(|t| TopicMeta::clone(t)) else {
                    return missing(format!("topic {topic_id}"));
                };
                let Some(a) = usize::try_from(*partition)
                    .ok()
                    .and_then(|p| t.partitions.get_mut(p))
                else {
                    return missing(format!("partition {partition} of {topic_id}"));
                };
                let new_leader = match leader {
                    LeaderChange::Keep => a.leader,
                    LeaderChange::Offline => None,
                    LeaderChange::To(b) => Some(*b),
                };
                if new_leader != a.leader {
                    a.leader = new_leader;
                    a.leader_epoch = LeaderEpoch(a.leader_epoch.0 + 1);
                }
                if let Some(isr) = isr {
                    a.isr = isr.clone();
                }
                a.partition_epoch += 1;
                self.insert(t);
            }
            MetadataRecord::TopicConfig {
                topic_id,
                name,
                value,
            } => {
                let Some(mut t) = self.topic_by_id(topic_id).map(|t| TopicMeta::clone(t)) else {
                    return missing(format!("topic {topic_id}"));
                };
                match value {
                    Some(v) => t.configs.insert(name.clone(), v.clone()),
                    None => t.configs.remove(name),
                };
                self.insert(t);
            }
            MetadataRecord::BrokerConfig {
                resource,
                name,
                value,
            } => {
                let configs = self.broker_configs.entry(resource.clone()).or_default();
                match value {
                    Some(v) => configs.insert(name.clone(), v.clone()),
                    None => configs.remove(name),
                };
                if configs.is_empty() {
                    self.broker_configs.remove(resource);
                }
            }
            MetadataRecord::RemoveTopic { id } => {
                let Some(name) = self.topic_by_id(id).map(|t| t.name.clone()) else {
                    return missing(format!("topic {id}"));
                };
                self.remove(&name);
            }
            MetadataRecord::ProducerIds { next, .. } => {
                if *next < self.next_producer_id {
                    return Err(ApplyError(format!(
                        "producer ids would go back from {} to {next}",
                        self.next_producer_id
                    )));
                }
                self.next_producer_id = *next;
            }
        }
        Ok(())
    }

    /// The records that build this image from an empty one (a snapshot's content).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records: Vec<MetadataRecord> = Vec::new();
        if !self.cluster_id.is_empty() {
            records.push(MetadataRecord::ClusterId {
                id: self.cluster_id.clone(),
            });
        }
        records.extend(
            self.brokers
                .values()
                .map(|b| MetadataRecord::RegisterBroker { broker: b.clone() }),
        );
        for t in self.topics.values() {
            records.push(MetadataRecord::Topic {
                name: t.name.clone(),
                id: t.id,
                configs: t.configs.clone(),
            });
            records.extend(t.partitions.iter().enumerate().map(|(p, a)| {
                MetadataRecord::Partition {
                    topic_id: t.id,
                    partition: p as i32,
                    assignment: a.clone(),
                }
            }));
        }
        for (resource, configs) in &self.broker_configs {
            records.extend(
                configs
                    .iter()
                    .map(|(name, value)| MetadataRecord::BrokerConfig {
                        resource: resource.clone(),
                        name: name.clone(),
                        value: Some(value.clone()),
                    }),
            );
        }
        if self.next_producer_id > 0 {
            records.push(MetadataRecord::ProducerIds {
                broker: BrokerId(-1),
                next: self.next_producer_id,
            });
        }
        records
    }
}

/// The records that create a topic.
pub fn topic_records(topic: &Arc<TopicMeta>) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::Topic {
        name: topic.name.clone(),
        id: topic.id,
        configs: topic.configs.clone(),
    }];
    records.extend(
        topic
            .partitions
            .iter()
            .enumerate()
            .map(|(p, a)| MetadataRecord::Partition {
                topic_id: topic.id,
                partition: p as i32,
                assignment: a.clone(),
            }),
    );
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            id: BrokerId(id),
            host: "127.0.0.1".into(),
            port: 9092 + id as u16,
            rack: None,
            epoch: 7,
            fenced: true,
        }
    }

    #[test]
    fn records_build_the_image_and_its_records_rebuild_it() {
        let mut m = ClusterMetadata::default();
        let id = Uuid::from_u128(5);
        let records = vec![
            MetadataRecord::ClusterId { id: "c1".into() },
            MetadataRecord::RegisterBroker { broker: broker(1) },
            MetadataRecord::RegisterBroker { broker: broker(2) },
            MetadataRecord::UnfenceBroker {
                id: BrokerId(1),
                epoch: 7,
            },
            MetadataRecord::Topic {
                name: "t".into(),
                id,
                configs: BTreeMap::from([("retention.ms".into(), "1".into())]),
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 0,
                assignment: PartitionAssignment::new(vec![BrokerId(1), BrokerId(2)]),
            },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                leader: LeaderChange::To(BrokerId(2)),
                isr: Some(vec![BrokerId(2)]),
            },
            MetadataRecord::ProducerIds {
                broker: BrokerId(1),
                next: 1000,
            },
            MetadataRecord::BrokerConfig {
                resource: "".into(),
                name: "log.retention.ms".into(),
                value: Some("60000".into()),
            },
            MetadataRecord::BrokerConfig {
                resource: "2".into(),
                name: "message.max.bytes".into(),
                value: Some("5000".into()),
            },
        ];
        for r in &records {
            m.apply(r).unwrap();
        }
        assert!(!m.brokers[&BrokerId(1)].fenced);
        assert!(m.brokers[&BrokerId(2)].fenced);
        let a = m.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!(a.leader, Some(BrokerId(2)));
        assert_eq!(a.leader_epoch, LeaderEpoch(1));
        assert_eq!(a.partition_epoch, 1);
        assert_eq!(a.isr, vec![BrokerId(2)]);
        // An ISR change alone keeps the leader epoch.
        m.apply(&MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            leader: LeaderChange::Keep,
            isr: Some(vec![BrokerId(2), BrokerId(1)]),
        })
        .unwrap();
        let a = m.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!((a.leader_epoch, a.partition_epoch), (LeaderEpoch(1), 2));

        let mut rebuilt = ClusterMetadata::default();
        for r in m.to_records() {
            rebuilt.apply(&r).unwrap();
        }
        assert_eq!(rebuilt.brokers, m.brokers);
        assert_eq!(rebuilt.topics, m.topics);
        assert_eq!(rebuilt.next_producer_id, 1000);
        assert_eq!(rebuilt.cluster_id, "c1");
        assert_eq!(rebuilt.topic_by_id(&id).unwrap().name, "t");
        assert_eq!(rebuilt.broker_configs, m.broker_configs);
        let layers = m.dynamic_configs(BrokerId(2));
        assert_eq!(layers.broker.unwrap()["message.max.bytes"], "5000");
        assert_eq!(layers.default.unwrap()["log.retention.ms"], "60000");
        assert!(m.dynamic_configs(BrokerId(1)).broker.is_none());
        m.apply(&MetadataRecord::BrokerConfig {
            resource: "2".into(),
            name: "message.max.bytes".into(),
            value: None,
        })
        .unwrap();
        assert!(!m.broker_configs.contains_key("2"), "no empty maps");

        let set = |name: &str, value: Option<&str>| MetadataRecord::TopicConfig {
            topic_id: id,
            name: name.into(),
            value: value.map(String::from),
        };
        m.apply(&set("segment.bytes", Some("1000"))).unwrap();
        m.apply(&set("retention.ms", None)).unwrap();
        let configs = &m.topic("t").unwrap().configs;
        assert_eq!(
            configs.get("segment.bytes").map(String::as_str),
            Some("1000")
        );
        assert!(!configs.contains_key("retention.ms"));

        m.apply(&MetadataRecord::RemoveTopic { id }).unwrap();
        assert!(m.topic("t").is_none() && m.topic_by_id(&id).is_none());
    }

    #[test]
    fn records_that_do_not_fit_the_image_are_errors() {
        let mut m = ClusterMetadata::default();
        let id = Uuid::from_u128(5);
        let topic = MetadataRecord::Topic {
            name: "t".into(),
            id,
            configs: BTreeMap::new(),
        };
        assert!(m.apply(&MetadataRecord::RemoveTopic { id }).is_err());
        m.apply(&topic).unwrap();
        assert!(m.apply(&topic).is_err(), "a topic twice");
        let gap = MetadataRecord::Partition {
            topic_id: id,
            partition: 1,
            assignment: PartitionAssignment::new(vec![BrokerId(1)]),
        };
        assert!(m.apply(&gap).is_err(), "partition 1 before 0");
        m.apply(&MetadataRecord::RegisterBroker { broker: broker(1) })
            .unwrap();
        let stale = MetadataRecord::UnfenceBroker {
            id: BrokerId(1),
            epoch: 6,
        };
        assert!(m.apply(&stale).is_err(), "an older incarnation");
        m.apply(&MetadataRecord::ProducerIds {
            broker: BrokerId(1),
            next: 10,
        })
        .unwrap();
        let back = MetadataRecord::ProducerIds {
            broker: BrokerId(1),
            next: 5,
        };
        assert!(m.apply(&back).is_err());
    }

    #[test]
    fn records_read_back_from_json() {
        let r = MetadataRecord::PartitionChange {
            topic_id: Uuid::from_u128(1),
            partition: 3,
            leader: LeaderChange::Offline,
            isr: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<MetadataRecord>(&json).unwrap(), r);
    }
}

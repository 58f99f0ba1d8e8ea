//! The cluster metadata image: brokers, topics with their ids and configs, and each
//! partition's assignment (replicas, leader, leader epoch, ISR), as KRaft's metadata
//! records describe them. Immutable once published; a change builds a new image with
//! the next `version` that is swapped in whole, so every shard reads a consistent
//! view without locks. Where a partition lives *inside* a broker (its shard) is not
//! cluster metadata: each broker decides that itself (`node::view`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{BrokerId, LeaderEpoch};

/// A broker as the cluster knows it (KRaft's RegisterBrokerRecord).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: BrokerId,
    /// The advertised client listener.
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// Bumped on each registration, so a restarted broker is told apart.
    pub epoch: i64,
    /// A fenced broker leads nothing and is not shown to clients.
    pub fenced: bool,
}

/// One partition's replicas and leadership (KRaft's PartitionRecord).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Preferred leader first.
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// `None`: offline (no live replica can lead).
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    /// Bumped on every change of this assignment.
    pub partition_epoch: i32,
}

impl PartitionAssignment {
    /// A new partition on `replicas`, led by the first.
    pub fn new(replicas: Vec<BrokerId>) -> PartitionAssignment {
        PartitionAssignment {
            isr: replicas.clone(),
            leader: replicas.first().copied(),
            replicas,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    /// Entry `p` is partition `p`.
    pub partitions: Vec<PartitionAssignment>,
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }
    pub fn partition(&self, partition: i32) -> Option<&PartitionAssignment> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.partitions.get(p))
    }
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClusterMetadata {
    pub cluster_id: String,
    /// Counts applied changes; a newer image has a larger version.
    pub version: u64,
    /// The active controller, as clients are told.
    pub controller: Option<BrokerId>,
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    /// Producer ids below this are handed out.
    pub next_producer_id: i64,
    /// Dynamic broker configs by resource name: a broker's id, or "" for the
    /// cluster-wide defaults (`config::dynamic`). No empty maps.
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    topic_names_by_id: HashMap<Uuid, String>,
}

impl ClusterMetadata {
    pub fn new(cluster_id: String, topics: impl IntoIterator<Item = TopicMeta>) -> Self {
        let mut m = ClusterMetadata {
            cluster_id,
            ..Default::default()
        };
        for t in topics {
            m.insert(t);
        }
        m
    }
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.topic_names_by_id
            .get(id)
            .and_then(|n| self.topics.get(n))
    }
    pub fn insert(&mut self, t: TopicMeta) {
        self.topic_names_by_id.insert(t.id, t.name.clone());
        self.topics.insert(t.name.clone(), Arc::new(t));
    }
    pub fn remove(&mut self, name: &str) -> Option<Arc<TopicMeta>> {
        let t = self.topics.remove(name)?;
        self.topic_names_by_id.remove(&t.id);
        Some(t)
    }
    /// The dynamic configs that apply to `broker`: its own and the defaults.
    pub fn dynamic_configs(&self, broker: BrokerId) -> crate::config::dynamic::DynamicLayers<'_> {
        crate::config::dynamic::DynamicLayers {
            broker: self.broker_configs.get(&broker.0.to_string()),
            default: self.broker_configs.get(""),
        }
    }
    /// Brokers that may lead and hold new replicas.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }
}

/// Kafka's topic name rules: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name {name:?} is illegal"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters long, the limit is 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} contains {c:?}; legal characters are [a-zA-Z0-9._-]"
        ));
    }
    Ok(())
}

/// A test image: `brokers` live, and `topic` (id 1) with a replica list per partition.
#[cfg(test)]
pub fn test_image(brokers: &[i32], topic: &str, replicas: &[&[i32]]) -> ClusterMetadata {
    let mut m = ClusterMetadata::default();
    for &b in brokers {
        m.brokers.insert(
            BrokerId(b),
            BrokerInfo {
                id: BrokerId(b),
                host: "h".into(),
                port: 1,
                rack: None,
                epoch: 1,
                fenced: false,
            },
        );
    }
    m.insert(TopicMeta {
        name: topic.into(),
        id: Uuid::from_u128(1),
        partitions: replicas
            .iter()
            .map(|r| PartitionAssignment::new(r.iter().map(|b| BrokerId(*b)).collect()))
            .collect(),
        configs: BTreeMap::new(),
    });
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_name_and_id() {
        let id = Uuid::from_u128(9);
        let mut m = ClusterMetadata::new(
            "c".into(),
            [TopicMeta {
                name: "t".into(),
                id,
                partitions: vec![PartitionAssignment::new(vec![BrokerId(1)]); 2],
                configs: BTreeMap::new(),
            }],
        );
        assert_eq!(m.topic_by_id(&id).unwrap().name, "t");
        let t = m.topic("t").unwrap();
        assert_eq!(t.partition(1).unwrap().leader, Some(BrokerId(1)));
        assert_eq!(t.partition(1).unwrap().isr, vec![BrokerId(1)]);
        assert!(t.partition(2).is_none());
        assert!(t.partition(-1).is_none());
        m.remove("t");
        assert!(m.topic_by_id(&id).is_none());
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}

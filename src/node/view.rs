//! The metadata view every core of this node reads: the cluster image and where this
//! node's replicas live (partition → core). Both are immutable; a change builds the
//! next view and swaps it in whole (`ViewHandle`), so requests read a consistent view
//! without locks.
//!
//! Placement inside a node is this node's own decision, not cluster metadata (as in
//! Redpanda since node-local core assignment): a replica keeps its core for as long as
//! the process runs; a new one goes to the core with the fewest; at start, replicas
//! are dealt out over the cores in (topic, partition) order. Partition directories do
//! not depend on the core, so a different core count at the next start needs nothing.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use uuid::Uuid;

use crate::cluster::metadata::{ClusterMetadata, TopicMeta};
use crate::config::Config;
use crate::ids::BrokerId;
use crate::shard::ShardId;

#[derive(Debug)]
pub struct MetadataView {
    pub cluster: Arc<ClusterMetadata>,
    /// This node's broker config with its dynamic values (`config::dynamic`) in
    /// effect: what partition logs take their defaults from.
    pub config: Arc<Config>,
    /// The config as this node was started with it.
    static_config: Arc<Config>,
    /// This node's replicas: per topic id, the core of each partition (`None`: the
    /// partition has no replica here).
    placement: HashMap<Uuid, Vec<Option<ShardId>>>,
    /// This node.
    me: BrokerId,
}

/// Why this node cannot serve a partition's reads and writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NotServed {
    /// No such topic or partition.
    Unknown,
    /// Another broker leads it, or none does (as Kafka: NOT_LEADER_OR_FOLLOWER).
    NotLeader,
}

impl MetadataView {
    /// The view before any metadata: no topics, this node's static config.
    pub fn empty(config: Arc<Config>) -> Self {
        MetadataView {
            cluster: Arc::default(),
            me: BrokerId(config.node_id),
            static_config: config.clone(),
            config,
            placement: HashMap::new(),
        }
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.cluster.topic(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.cluster.topic_by_id(id)
    }

    /// The topic's `min.insync.replicas`, or this broker's (dynamic) setting.
    pub fn min_insync_replicas(&self, topic: &TopicMeta) -> usize {
        topic
            .configs
            .get("min.insync.replicas")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.config.min_insync_replicas)
    }

    /// The core holding this node's replica of `partition`, if it has one.
    pub fn shard_of(&self, topic: &TopicMeta, partition: i32) -> Option<ShardId> {
        let shards = self.placement.get(&topic.id)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| shards.get(p).copied().flatten())
    }

    /// The core of this node's replica of `partition` if this node leads it: the
    /// only replica that takes produce and serves consumers (followers do not, as
    /// Kafka's without KIP-392 follower fetching).
    pub fn leader_shard(&self, topic: &TopicMeta, partition: i32) -> Result<ShardId, NotServed> {
        let assignment = topic.partition(partition).ok_or(NotServed::Unknown)?;
        if assignment.leader != Some(self.me) {
            return Err(NotServed::NotLeader);
        }
        self.shard_of(topic, partition).ok_or(NotServed::NotLeader)
    }

    /// The replicas this view places on `shard`.
    pub fn replicas_on(&self, shard: ShardId) -> Vec<(Arc<TopicMeta>, i32)> {
        let mut out = Vec::new();
        for t in self.cluster.topics.values() {
            if let Some(shards) = self.placement.get(&t.id) {
                for (p, s) in shards.iter().enumerate() {
                    if *s == Some(shard) {
                        out.push((t.clone(), p as i32));
                    }
                }
            }
        }
        out
    }

    /// The next view: `cluster`, with this node's replicas placed over `shard_count`
    /// cores. Replicas already placed keep their core; new ones go to the core with
    /// the fewest (ties to the lowest index).
    pub fn next(&self, cluster: Arc<ClusterMetadata>, shard_count: usize) -> Self {
        assert!(shard_count > 0, "at least one core");
        let me = self.me;
        let mut load = vec![0usize; shard_count];
        let mut placement = HashMap::new();
        let mut new = Vec::new();
        for t in cluster.topics.values() {
            let before = self.placement.get(&t.id);
            let mut shards = vec![None; t.partitions.len()];
            for (p, assignment) in t.partitions.iter().enumerate() {
                if !assignment.replicas.contains(&me) {
                    continue;
                }
                match before.and_then(|b| b.get(p).copied().flatten()) {
                    Some(s) if s.0 < shard_count => {
                        load[s.0] += 1;
                        shards[p] = Some(s);
                    }
                    _ => new.push((t.id, p)),
                }
            }
            placement.insert(t.id, shards);
        }
        for (id, p) in new {
            let (least, _) = load
                .iter()
                .enumerate()
                .min_by_key(|(i, l)| (**l, *i))
                .expect("non-empty");
            load[least] += 1;
            placement.get_mut(&id).expect("placed above")[p] = Some(ShardId(least));
        }
        MetadataView {
            config: self.next_config(&cluster),
            static_config: self.static_config.clone(),
            cluster,
            placement,
            me,
        }
    }

    /// The effective config under `cluster`: recomputed only when this node's dynamic
    /// configs change. Values the controller let through always parse; if one does
    /// not (a bug), the node keeps the config it has and says so.
    fn next_config(&self, cluster: &ClusterMetadata) -> Arc<Config> {
        let layers = cluster.dynamic_configs(self.me);
        let before = self.cluster.dynamic_configs(self.me);
        if (layers.broker, layers.default) == (before.broker, before.default) {
            return self.config.clone();
        }
        match self.static_config.with_dynamic(layers) {
            Ok(c) => {
                tracing::info!(?layers, "dynamic broker configs in effect");
                Arc::new(c)
            }
            Err(e) => {
                tracing::error!(error = %e, "dynamic broker configs do not parse; keeping the ones in effect");
                self.config.clone()
            }
        }
    }
}

/// The published view, swapped atomically.
pub struct ViewHandle(ArcSwap<MetadataView>);

impl ViewHandle {
    pub fn new(view: MetadataView) -> Self {
        ViewHandle(ArcSwap::from_pointee(view))
    }
    pub fn load(&self) -> Arc<MetadataView> {
        self.0.load_full()
    }
    pub fn publish(&self, view: Arc<MetadataView>) {
        self.0.store(view);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::metadata::PartitionAssignment;
    use crate::cluster::records::MetadataRecord;

    fn node_config(id: i32) -> Arc<Config> {
        let overrides = [format!("node.id={id}")];
        Arc::new(Config::load(None, &overrides, &[0]).unwrap().0)
    }

    fn topic(name: &str, id: u128, replicas: &[&[i32]]) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: Uuid::from_u128(id),
            partitions: replicas
                .iter()
                .map(|r| PartitionAssignment::new(r.iter().map(|b| BrokerId(*b)).collect()))
                .collect(),
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn replicas_spread_over_cores_and_keep_their_core() {
        let a = topic("a", 1, &[&[1], &[1], &[1]]);
        let first = Arc::new(ClusterMetadata::new("c".into(), [a.clone()]));
        let v1 = MetadataView::empty(node_config(1)).next(first, 2);
        let shards: Vec<_> = (0..3).map(|p| v1.shard_of(&a, p)).collect();
        assert_eq!(
            shards,
            vec![Some(ShardId(0)), Some(ShardId(1)), Some(ShardId(0))]
        );
        // A new topic fills the emptier core first; old replicas stay put. Partitions
        // without a replica here have no core.
        let b = topic("b", 2, &[&[1], &[2], &[2, 1]]);
        let second = Arc::new(ClusterMetadata::new("c".into(), [a.clone(), b.clone()]));
        let v2 = v1.next(second, 2);
        assert_eq!(v2.shard_of(&a, 1), Some(ShardId(1)));
        assert_eq!(v2.shard_of(&b, 0), Some(ShardId(1)));
        assert_eq!(v2.shard_of(&b, 1), None);
        assert_eq!(v2.shard_of(&b, 2), Some(ShardId(0)));
        assert_eq!(v2.shard_of(&b, 3), None);
        assert_eq!(v2.shard_of(&b, -1), None);
        assert_eq!(v2.replicas_on(ShardId(1)).len(), 2);
        // Only the leader's replica serves: b-2 is led by 2, with a follower here.
        assert_eq!(v2.leader_shard(&b, 0), Ok(ShardId(1)));
        assert_eq!(v2.leader_shard(&b, 1), Err(NotServed::NotLeader));
        assert_eq!(v2.leader_shard(&b, 2), Err(NotServed::NotLeader));
        assert_eq!(v2.leader_shard(&b, 3), Err(NotServed::Unknown));
        // Fewer cores at the next start: everything lands on what is there.
        let v3 = v2.next(v2.cluster.clone(), 1);
        assert_eq!(v3.replicas_on(ShardId(0)).len(), 5);
    }

    #[test]
    fn dynamic_configs_of_this_node_take_effect_in_the_next_view() {
        let v0 = MetadataView::empty(node_config(1));
        let set = |resource: &str, value: &str, cluster: &ClusterMetadata| {
            let mut c = cluster.clone();
            c.apply(&MetadataRecord::BrokerConfig {
                resource: resource.into(),
                name: "message.max.bytes".into(),
                value: Some(value.into()),
            })
            .unwrap();
            Arc::new(c)
        };
        let other = v0.next(set("2", "100", &v0.cluster), 1);
        assert!(Arc::ptr_eq(&other.config, &v0.config), "another broker's");
        let default = other.next(set("", "200", &other.cluster), 1);
        assert_eq!(default.config.message_size_max_bytes, 200);
        let mine = default.next(set("1", "300", &default.cluster), 1);
        assert_eq!(mine.config.message_size_max_bytes, 300);
        let same = mine.next(mine.cluster.clone(), 1);
        assert!(Arc::ptr_eq(&same.config, &mine.config), "not rebuilt");
    }
}

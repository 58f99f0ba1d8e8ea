//! The cluster metadata snapshot: topics, their ids, partition counts, configs and the
//! placement table (partition → owning shard). Immutable once published; changes build
//! a new snapshot that is swapped in whole (`MetadataHandle`), so every shard reads a
//! consistent view without locks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Index of a shard (one per pinned core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId(pub usize);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    /// Placement table of this topic: entry `p` is the shard owning partition `p`.
    pub placement: Vec<ShardId>,
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    pub fn partition_count(&self) -> i32 {
        self.placement.len() as i32
    }
    pub fn owner(&self, partition: i32) -> Option<ShardId> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.placement.get(p).copied())
    }
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClusterMetadata {
    pub cluster_id: String,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
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
    /// Number of partitions each shard owns.
    pub fn shard_load(&self, shard_count: usize) -> Vec<usize> {
        let mut load = vec![0; shard_count];
        for t in self.topics.values() {
            for s in &t.placement {
                if s.0 < shard_count {
                    load[s.0] += 1;
                }
            }
        }
        load
    }
}

/// Places `count` new partitions on the least-loaded shards (ties to the lowest id),
/// updating `load`. Placement is decided once, here, and recorded.
pub fn place(count: usize, load: &mut [usize]) -> Vec<ShardId> {
    assert!(!load.is_empty(), "at least one shard");
    (0..count)
        .map(|_| {
            let (shard, _) = load
                .iter()
                .enumerate()
                .min_by_key(|(i, l)| (**l, *i))
                .expect("non-empty");
            load[shard] += 1;
            ShardId(shard)
        })
        .collect()
}

/// The published snapshot, swapped atomically.
pub struct MetadataHandle(ArcSwap<ClusterMetadata>);

impl MetadataHandle {
    pub fn new(m: ClusterMetadata) -> Self {
        MetadataHandle(ArcSwap::from_pointee(m))
    }
    pub fn load(&self) -> Arc<ClusterMetadata> {
        self.0.load_full()
    }
    pub fn publish(&self, m: ClusterMetadata) {
        self.0.store(Arc::new(m));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_balances_across_shards() {
        let mut load = vec![0, 0];
        assert_eq!(
            place(3, &mut load),
            vec![ShardId(0), ShardId(1), ShardId(0)]
        );
        assert_eq!(
            place(3, &mut load),
            vec![ShardId(1), ShardId(0), ShardId(1)]
        );
        assert_eq!(load, vec![3, 3]);
        let mut skewed = vec![5, 0, 1];
        assert_eq!(place(2, &mut skewed), vec![ShardId(1), ShardId(1)]);
    }

    #[test]
    fn lookup_by_name_and_id() {
        let id = Uuid::from_u128(9);
        let mut m = ClusterMetadata::new(
            "c".into(),
            [TopicMeta {
                name: "t".into(),
                id,
                placement: vec![ShardId(1), ShardId(0)],
                configs: BTreeMap::new(),
            }],
        );
        assert_eq!(m.topic_by_id(&id).unwrap().name, "t");
        assert_eq!(m.topic("t").unwrap().owner(1), Some(ShardId(0)));
        assert_eq!(m.topic("t").unwrap().owner(2), None);
        assert_eq!(m.topic("t").unwrap().owner(-1), None);
        assert_eq!(m.shard_load(2), vec![1, 1]);
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

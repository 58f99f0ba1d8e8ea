//! The controller: the one place that decides changes to cluster metadata (create and
//! delete topics, hand out producer ids) and makes them durable. It runs on one shard
//! (`node::CONTROLLER_SHARD`); what it decides reaches every shard through
//! `node::publisher`, which opens and removes partition logs. The controller itself
//! touches no partition and no shard: it turns the current image and a request into
//! the next image (`plan_*`), and `commit`s it. Changes are serialised by a one-permit
//! gate that the caller holds from plan to publish.
//!
//! (The Raft controller quorum will take the place of `commit`'s metadata file.)

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use glommio::sync::{Permit, Semaphore};
use uuid::Uuid;

use super::metadata::{validate_topic_name, ClusterMetadata, PartitionAssignment, TopicMeta};
use super::store::{self, StoredMetadata};
use crate::ids::BrokerId;
use crate::protocol::ErrorCode;

/// Producer ids are reserved on disk in blocks of this many.
pub const PRODUCER_ID_BLOCK: i64 = 1_000_000;

pub const TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.difference.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
    "message.downconversion.enable",
];

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker default.
    pub partitions: i32,
    /// -1: the broker default.
    pub replication_factor: i16,
    /// Explicit replicas per partition (CreateTopics `assignments`); empty: the
    /// controller places them.
    pub assignments: Vec<Vec<BrokerId>>,
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with the broker's defaults and no configs.
    pub fn with_defaults(name: String) -> NewTopic {
        NewTopic {
            name,
            partitions: -1,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: BTreeMap::new(),
        }
    }
}

pub type TopicResult = Result<Arc<TopicMeta>, (ErrorCode, String)>;
pub type DeleteResult = Result<(String, Uuid), (ErrorCode, String)>;

/// Broker defaults a topic takes when its request leaves them unset.
#[derive(Debug, Clone, Copy)]
pub struct TopicDefaults {
    pub partitions: i32,
    pub replication_factor: i16,
}

pub struct Controller {
    log_dir: PathBuf,
    defaults: TopicDefaults,
    gate: Semaphore,
    producer_id_next: Cell<i64>,
    producer_id_block_end: Cell<i64>,
}

/// A plan: one result per request entry, in order, and the image to commit if
/// anything changed.
pub struct Plan<R> {
    pub results: Vec<R>,
    pub next: Option<ClusterMetadata>,
}

/// Replicas for `count` new partitions of `rf` copies each over `brokers` (sorted):
/// striped, so partition `p`'s preferred leader is broker `p % n` and leadership
/// spreads evenly, as Kafka's StripedReplicaPlacer does without racks.
pub fn assign_replicas(brokers: &[BrokerId], count: usize, rf: usize) -> Vec<Vec<BrokerId>> {
    assert!(rf <= brokers.len(), "replication factor within the brokers");
    (0..count)
        .map(|p| (0..rf).map(|i| brokers[(p + i) % brokers.len()]).collect())
        .collect()
}

impl Controller {
    pub fn new(
        log_dir: PathBuf,
        defaults: TopicDefaults,
        producer_id_next: i64,
        producer_id_block_end: i64,
    ) -> Self {
        Controller {
            log_dir,
            defaults,
            gate: Semaphore::new(1),
            producer_id_next: Cell::new(producer_id_next),
            producer_id_block_end: Cell::new(producer_id_block_end),
        }
    }

    /// Serialises changes: hold the permit from plan through publish.
    pub async fn lock(&self) -> Option<Permit<'_>> {
        self.gate.acquire_permit(1).await.ok()
    }

    /// Makes `next` durable; a change is published only after this.
    pub async fn commit(&self, next: &ClusterMetadata) -> std::io::Result<()> {
        let stored = StoredMetadata {
            topics: next.topics.values().map(|t| (**t).clone()).collect(),
            producer_id_next_block: self.producer_id_block_end.get(),
        };
        let dir = self.log_dir.clone();
        glommio::executor()
            .spawn_blocking(move || store::save(&dir, &stored))
            .await
    }

    fn check_new_topic(
        &self,
        current: &ClusterMetadata,
        t: &NewTopic,
    ) -> Result<Vec<Vec<BrokerId>>, (ErrorCode, String)> {
        validate_topic_name(&t.name).map_err(|m| (ErrorCode::InvalidTopicException, m))?;
        if current.topic(&t.name).is_some() {
            return Err((
                ErrorCode::TopicAlreadyExists,
                format!("Topic '{}' already exists.", t.name),
            ));
        }
        if let Some(key) = t
            .configs
            .keys()
            .find(|k| !TOPIC_CONFIGS.contains(&k.as_str()))
        {
            return Err((
                ErrorCode::InvalidConfig,
                format!("Unknown topic config name: {key}"),
            ));
        }
        if !t.assignments.is_empty() {
            return check_assignments(current, &t.assignments).map(|()| t.assignments.clone());
        }
        let partitions = if t.partitions == -1 {
            self.defaults.partitions
        } else {
            t.partitions
        };
        if partitions <= 0 {
            return Err((
                ErrorCode::InvalidPartitions,
                "Number of partitions must be larger than 0.".into(),
            ));
        }
        let rf = if t.replication_factor == -1 {
            self.defaults.replication_factor
        } else {
            t.replication_factor
        };
        if rf <= 0 {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                "Replication factor must be larger than 0.".into(),
            ));
        }
        let live: Vec<BrokerId> = current.live_brokers().map(|b| b.id).collect();
        if rf as usize > live.len() {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {} broker(s) are registered.", live.len()),
            ));
        }
        Ok(assign_replicas(&live, partitions as usize, rf as usize))
    }

    /// Plans the creation of `topics`: one result per entry, in order.
    pub fn plan_create(
        &self,
        current: &ClusterMetadata,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Plan<TopicResult> {
        let mut next = current.clone();
        let mut changed = false;
        let results = topics
            .iter()
            .map(|t| {
                let replicas = self.check_new_topic(&next, t)?;
                let meta = TopicMeta {
                    name: t.name.clone(),
                    id: Uuid::new_v4(),
                    partitions: replicas.into_iter().map(PartitionAssignment::new).collect(),
                    configs: t.configs.clone(),
                };
                if !validate_only {
                    next.insert(meta.clone());
                    changed = true;
                }
                Ok(Arc::new(meta))
            })
            .collect();
        Plan {
            results,
            next: changed.then(|| bump(next)),
        }
    }

    /// Plans the deletion of topics by name or id: one result per entry, in order.
    pub fn plan_delete(
        &self,
        current: &ClusterMetadata,
        topics: &[(Option<String>, Uuid)],
    ) -> Plan<DeleteResult> {
        let mut next = current.clone();
        let mut changed = false;
        let results = topics
            .iter()
            .map(|(name, id)| {
                let found = match name {
                    Some(n) => next.topic(n).cloned(),
                    None => next.topic_by_id(id).cloned(),
                };
                match found {
                    None if name.is_none() => Err((
                        ErrorCode::UnknownTopicId,
                        "This server does not host this topic ID.".into(),
                    )),
                    None => Err((
                        ErrorCode::UnknownTopicOrPartition,
                        "This server does not host this topic-partition.".into(),
                    )),
                    Some(t) => {
                        next.remove(&t.name);
                        changed = true;
                        Ok((t.name.clone(), t.id))
                    }
                }
            })
            .collect();
        Plan {
            results,
            next: changed.then(|| bump(next)),
        }
    }

    /// Hands out a new producer id, reserving a new block on disk when one runs out.
    pub async fn allocate_producer_id(&self, current: &ClusterMetadata) -> std::io::Result<i64> {
        let _permit = self
            .lock()
            .await
            .ok_or_else(|| std::io::Error::other("controller stopped"))?;
        if self.producer_id_next.get() >= self.producer_id_block_end.get() {
            self.producer_id_block_end
                .set(self.producer_id_next.get() + PRODUCER_ID_BLOCK);
            self.commit(current).await?;
        }
        let id = self.producer_id_next.get();
        self.producer_id_next.set(id + 1);
        Ok(id)
    }
}

fn bump(mut next: ClusterMetadata) -> ClusterMetadata {
    next.version += 1;
    next
}

/// An explicit assignment must name registered brokers, each once per partition, the
/// same number for every partition (as Kafka's ReplicationControlManager checks).
fn check_assignments(
    current: &ClusterMetadata,
    assignments: &[Vec<BrokerId>],
) -> Result<(), (ErrorCode, String)> {
    let invalid = |m: String| Err((ErrorCode::InvalidReplicaAssignment, m));
    let rf = assignments[0].len();
    for (p, replicas) in assignments.iter().enumerate() {
        if replicas.is_empty() {
            return invalid(format!(
                "The manual partition assignment includes an empty replica list for partition {p}."
            ));
        }
        if replicas.len() != rf {
            return invalid(format!("The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {rf} replica(s).", replicas.len()));
        }
        if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
            return invalid(format!(
                "The manual partition assignment includes the partition {p} with duplicate broker ids."
            ));
        }
        if let Some(b) = replicas.iter().find(|b| !current.brokers.contains_key(b)) {
            return invalid(format!(
                "The manual partition assignment includes broker {b}, but no such broker is registered."
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_striped_so_leaders_spread() {
        let b = [BrokerId(1), BrokerId(2), BrokerId(3)];
        let a = assign_replicas(&b, 4, 2);
        assert_eq!(
            a,
            vec![
                vec![BrokerId(1), BrokerId(2)],
                vec![BrokerId(2), BrokerId(3)],
                vec![BrokerId(3), BrokerId(1)],
                vec![BrokerId(1), BrokerId(2)],
            ]
        );
    }
}

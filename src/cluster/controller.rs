//! The controller: the one place that changes cluster metadata (create and delete
//! topics, hand out producer ids). It runs on shard 0; other shards reach it with
//! `submit_to(CONTROLLER_SHARD, ..)`. Changes are serialised by a one-permit gate.
//!
//! Order of a change, so that no client sees a partition without an open log and no
//! crash leaves an acknowledged topic behind: create = open logs on the owning shards,
//! persist, publish; delete = publish, persist, then remove logs.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;
use tracing::{info, warn};
use uuid::Uuid;

use super::metadata::{place, validate_topic_name, ClusterMetadata, ShardId, TopicMeta};
use super::store::{self, StoredMetadata};
use crate::protocol::ErrorCode;
use crate::shard::Shard;
use crate::storage::segment::SegmentSpec;
use crate::storage::{LogConfig, PartitionLog};

/// Producer ids are reserved on disk in blocks of this many.
pub const PRODUCER_ID_BLOCK: i64 = 1_000_000;

/// Topic-level configs accepted by CreateTopics (stored; enforced as features land).
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
    pub configs: BTreeMap<String, String>,
}

pub type TopicResult = Result<Arc<TopicMeta>, (ErrorCode, String)>;

pub struct Controller {
    log_dir: PathBuf,
    gate: Semaphore,
    producer_id_next: Cell<i64>,
    producer_id_block_end: Cell<i64>,
}

/// A topic override that may be -1 (Kafka's "unlimited").
fn signed(topic: &TopicMeta, key: &str) -> Option<i64> {
    topic.configs.get(key).and_then(|v| v.parse().ok())
}

/// Log settings of a partition, from broker defaults and topic overrides.
pub fn log_config(config: &crate::config::Config, topic: &TopicMeta) -> LogConfig {
    let get = |key: &str, default: u64| {
        topic
            .configs
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    LogConfig {
        segment_size_max_bytes: get("segment.bytes", config.segment_size_max_bytes),
        segment: SegmentSpec {
            write_mode: config.write_mode,
            index_interval_bytes: get("index.interval.bytes", config.index_interval_bytes),
            index_size_max_bytes: get("segment.index.bytes", config.index_size_max_bytes).max(12),
        },
        tail_cache_bytes: config.tail_cache_bytes,
        batch_size_max_bytes: get("max.message.bytes", config.message_size_max_bytes as u64)
            as usize,
        flush_interval_messages: get("flush.messages", config.flush_interval_messages).max(1),
        flush_interval_ms: topic
            .configs
            .get("flush.ms")
            .and_then(|v| v.parse().ok())
            .or(config.flush_interval_ms),
        roll_ms: signed(topic, "segment.ms")
            .map_or(config.roll_ms, |v| (v >= 0).then_some(v as u64)),
        retention_ms: signed(topic, "retention.ms")
            .map_or(config.retention_ms, |v| (v >= 0).then_some(v as u64)),
        retention_bytes: signed(topic, "retention.bytes")
            .map_or(config.retention_bytes, |v| (v >= 0).then_some(v as u64)),
        timestamp_before_max_ms: signed(topic, "message.timestamp.before.max.ms")
            .filter(|v| *v >= 0)
            .unwrap_or(config.timestamp_before_max_ms),
        timestamp_after_max_ms: signed(topic, "message.timestamp.after.max.ms")
            .filter(|v| *v >= 0)
            .unwrap_or(config.timestamp_after_max_ms),
        check_records: config.produce_check_records,
    }
}

/// Opens (recovering or creating) a partition's log on the current shard and records
/// the topic id beside it, as Kafka's `partition.metadata` does. `clean_shutdown`:
/// the broker's clean-shutdown marker was found, so the log may skip its scan.
pub async fn open_partition(
    shard: &Rc<Shard>,
    topic: &TopicMeta,
    partition: i32,
    clean_shutdown: bool,
) -> std::io::Result<()> {
    let dir = store::partition_dir(&shard.config.log_dir, &topic.name, partition);
    let marker = dir.join("partition.metadata");
    let expected = format!("version: 0\ntopic_id: {}\n", topic.id);
    match std::fs::read_to_string(&marker) {
        Ok(found) if found != expected => {
            warn!(dir = %dir.display(), "directory belongs to an older topic of the same name; removing it");
            std::fs::remove_dir_all(&dir)?;
        }
        _ => {}
    }
    let log = PartitionLog::open(
        dir.clone(),
        log_config(&shard.config, topic),
        shard.sync_group.clone(),
        clean_shutdown,
    )
    .await?;
    if !marker.exists() {
        // A new partition: its directory entry must be durable too.
        store::write_atomic(&dir, "partition.metadata", expected.as_bytes())?;
        std::fs::File::open(&shard.config.log_dir)?.sync_all()?;
    }
    shard.insert_log((topic.id, partition), log);
    Ok(())
}

impl Controller {
    pub fn new(log_dir: PathBuf, producer_id_next: i64, producer_id_block_end: i64) -> Self {
        Controller {
            log_dir,
            gate: Semaphore::new(1),
            producer_id_next: Cell::new(producer_id_next),
            producer_id_block_end: Cell::new(producer_id_block_end),
        }
    }

    async fn persist(&self, m: &ClusterMetadata) -> std::io::Result<()> {
        let stored = StoredMetadata {
            topics: m.topics.values().map(|t| (**t).clone()).collect(),
            producer_id_next_block: self.producer_id_block_end.get(),
        };
        let dir = self.log_dir.clone();
        glommio::executor()
            .spawn_blocking(move || store::save(&dir, &stored))
            .await
    }

    fn check_new_topic(
        &self,
        shard: &Shard,
        current: &ClusterMetadata,
        t: &NewTopic,
    ) -> Result<(i32, i16), (ErrorCode, String)> {
        validate_topic_name(&t.name).map_err(|m| (ErrorCode::InvalidTopicException, m))?;
        if current.topic(&t.name).is_some() {
            return Err((
                ErrorCode::TopicAlreadyExists,
                format!("Topic '{}' already exists.", t.name),
            ));
        }
        let partitions = if t.partitions == -1 {
            shard.config.num_partitions
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
            shard.config.default_replication_factor
        } else {
            t.replication_factor
        };
        if rf <= 0 {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                "Replication factor must be larger than 0.".into(),
            ));
        }
        if rf > 1 {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only 1 broker(s) are registered."),
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
        Ok((partitions, rf))
    }

    /// Creates topics; one result per request entry, in order.
    pub async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<TopicResult> {
        let Ok(_permit) = self.gate.acquire_permit(1).await else {
            return topics
                .iter()
                .map(|_| Err((ErrorCode::UnknownServerError, "controller stopped".into())))
                .collect();
        };
        let current = shard.metadata.load();
        let mut next = (*current).clone();
        let mut load = next.shard_load(shard.shard_count);
        let mut results = Vec::with_capacity(topics.len());
        let mut created = Vec::new();
        for t in &topics {
            let checked = self.check_new_topic(shard, &next, t);
            results.push(match checked {
                Err(e) => Err(e),
                Ok((partitions, _)) => {
                    let meta = TopicMeta {
                        name: t.name.clone(),
                        id: Uuid::new_v4(),
                        placement: place(partitions as usize, &mut load),
                        configs: t.configs.clone(),
                    };
                    if !validate_only {
                        next.insert(meta.clone());
                        created.push(meta.clone());
                    }
                    Ok(Arc::new(meta))
                }
            });
        }
        if created.is_empty() {
            return results;
        }
        if let Err(e) = self.open_on_owners(shard, &created).await {
            warn!(error = %e, "opening new partition logs failed");
            return fail_all(
                results,
                &created,
                ErrorCode::KafkaStorageError,
                e.to_string(),
            );
        }
        if let Err(e) = self.persist(&next).await {
            warn!(error = %e, "persisting metadata failed");
            return fail_all(
                results,
                &created,
                ErrorCode::KafkaStorageError,
                e.to_string(),
            );
        }
        shard.metadata.publish(next);
        for t in &created {
            info!(topic = %t.name, id = %t.id, partitions = t.placement.len(), "created topic");
        }
        results
    }

    async fn open_on_owners(&self, shard: &Rc<Shard>, topics: &[TopicMeta]) -> std::io::Result<()> {
        let mut by_shard: BTreeMap<ShardId, Vec<(TopicMeta, i32)>> = BTreeMap::new();
        for t in topics {
            for (p, owner) in t.placement.iter().enumerate() {
                by_shard
                    .entry(*owner)
                    .or_default()
                    .push((t.clone(), p as i32));
            }
        }
        let opens = by_shard.into_iter().map(|(owner, parts)| {
            shard.submit_to(owner, move |s| async move {
                for (t, p) in parts {
                    open_partition(&s, &t, p, false)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        });
        for r in futures::future::join_all(opens).await {
            r.map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Deletes topics by name or id; one result per entry, in order.
    pub async fn delete_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<(Option<String>, Uuid)>,
    ) -> Vec<Result<(String, Uuid), (ErrorCode, String)>> {
        let Ok(_permit) = self.gate.acquire_permit(1).await else {
            return topics
                .iter()
                .map(|_| Err((ErrorCode::UnknownServerError, "controller stopped".into())))
                .collect();
        };
        let mut next = (*shard.metadata.load()).clone();
        let mut removed = Vec::new();
        let mut results = Vec::new();
        for (name, id) in topics {
            let found = match &name {
                Some(n) => next.topic(n).cloned(),
                None => next.topic_by_id(&id).cloned(),
            };
            results.push(match found {
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
                    removed.push(t.clone());
                    Ok((t.name.clone(), t.id))
                }
            });
        }
        if removed.is_empty() {
            return results;
        }
        shard.metadata.publish(next.clone());
        if let Err(e) = self.persist(&next).await {
            warn!(error = %e, "persisting metadata after delete failed");
        }
        for t in removed {
            for (p, owner) in t.placement.iter().enumerate() {
                let id = t.id;
                let name = t.name.clone();
                let done = shard
                    .submit_to(*owner, move |s| async move {
                        if let Some(log) = s.remove_log(&(id, p as i32)) {
                            if let Err(e) = log.delete().await {
                                warn!(topic = %name, partition = p, error = %e, "removing partition directory failed");
                            }
                        }
                    })
                    .await;
                if done.is_err() {
                    warn!(topic = %t.name, partition = p, "owner shard gone while deleting");
                }
            }
            info!(topic = %t.name, id = %t.id, "deleted topic");
        }
        results
    }

    /// Hands out a new producer id, reserving a new block on disk when one runs out.
    pub async fn allocate_producer_id(&self, shard: &Rc<Shard>) -> std::io::Result<i64> {
        let _permit = self
            .gate
            .acquire_permit(1)
            .await
            .map_err(|_| std::io::Error::other("controller stopped"))?;
        if self.producer_id_next.get() >= self.producer_id_block_end.get() {
            self.producer_id_block_end
                .set(self.producer_id_next.get() + PRODUCER_ID_BLOCK);
            self.persist(&shard.metadata.load()).await?;
        }
        let id = self.producer_id_next.get();
        self.producer_id_next.set(id + 1);
        Ok(id)
    }
}

fn fail_all(
    results: Vec<TopicResult>,
    created: &[TopicMeta],
    code: ErrorCode,
    message: String,
) -> Vec<TopicResult> {
    results
        .into_iter()
        .map(|r| match r {
            Ok(t) if created.iter().any(|c| c.id == t.id) => Err((code, message.clone())),
            other => other,
        })
        .collect()
}

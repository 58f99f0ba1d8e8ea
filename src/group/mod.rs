//! Consumer group coordination (Kafka's classic protocol, and KIP-848's in `consumer`)
//! and committed offsets.
//!
//! Placement is Kafka's: a group belongs to partition `Utils.abs(hash(group)) %
//! offsets.topic.num.partitions` of the internal topic `__consumer_offsets` (created
//! on first use, by the broker layer, replicated like any topic), and its coordinator
//! is the leader of that partition, on the core holding it. Each core's `Coordinator`
//! holds the groups of the partitions it leads: it loads a partition when this node
//! becomes its leader (`load_partition`, before the view saying so is published) and
//! drops its groups when it stops leading (`unload_partition`); between the two the
//! partition's groups get COORDINATOR_LOAD_IN_PROGRESS. It reaches the cluster image
//! and its logs through `Host`.
//!
//! What is stored, as records of the group's partition in Kafka's formats
//! (`offsets_topic`), each appended, and held by every in-sync replica (Kafka's
//! acks=-1, within `offsets.commit.timeout.ms`), before the request that caused it (if
//! any) is answered, and replayed when a core gains the partition's leadership, so it
//! survives restarts, SIGKILL and the loss of the coordinator's broker:
//! - committed offsets, and their tombstones (OffsetDelete, DeleteGroups, retention);
//! - classic group metadata (generation, protocol, leader, members with subscription
//!   and assignment), written when a rebalance completes (`store_pending`: the
//!   leader's assignment is stored before any SyncGroup is answered with it) and when
//!   a group empties, with a tombstone from DeleteGroups. Replay restores members with
//!   their sessions starting at load, so they keep their generation across a restart.
//!
//! KIP-848 membership lives in memory only: after a restart those members get
//! UNKNOWN_MEMBER_ID and rejoin with epoch 0 (their committed offsets are stored).
//!
//! Invariants: a group is only touched on its coordinator shard (other shards reach it
//! with `submit_to`); `state` does no I/O, so every record is appended here.

pub mod consumer;
pub mod offsets_topic;
pub mod state;
mod txn_offsets;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponse;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::metadata::{ClusterMetadata, TopicMeta};
use crate::config::Config;
use crate::protocol::batch::build::{encode, Record};
use crate::protocol::batch::BatchHeader;
use crate::protocol::records::for_each_record;
use crate::protocol::ErrorCode;
use crate::storage::{AppendError, PartitionLog};
use offsets_topic::{CommittedOffset, OffsetsRecord, StoredGroup, OFFSETS_TOPIC};
use state::{join_error, Group, GroupConfig, GroupState, JoinRequest, Reply, SyncRequest};

/// How often each shard expires sessions and completes timed-out rebalances.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// A group as DescribeGroups shows it.
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// One partition's committed offset as OffsetFetch reports it (`None`: none).
pub type FetchedOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

pub struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
    /// Offsets of open transactions, by producer id (`txn_offsets`).
    pending_txn_offsets: RefCell<txn_offsets::PendingOffsets>,
    /// The `__consumer_offsets` partitions whose groups are loaded here.
    loaded: RefCell<HashSet<i32>>,
    /// `offsets.commit.timeout.ms`: how long a stored record waits for the ISR.
    commit_timeout: Duration,
    cfg: GroupConfig,
    offset_metadata_max_bytes: usize,
    offsets_retention_ms: i64,
    consumer_session_timeout: Duration,
    pub consumer_heartbeat_interval_ms: i32,
}

/// What a coordinator needs from the core it runs on: the cluster image and the
/// partition logs it leads there. (The core implements it; this module does not know it.)
pub trait Host {
    fn cluster(&self) -> Arc<ClusterMetadata>;
    /// The partition's log if this node leads it and it is open on this core.
    fn led_log(&self, topic: Uuid, partition: i32) -> Option<Rc<PartitionLog>>;
    /// The topic's `min.insync.replicas` in effect.
    fn min_insync_replicas(&self, topic: &TopicMeta) -> usize;
}

impl Coordinator {
    pub fn new(config: &Config) -> Coordinator {
        Coordinator {
            groups: RefCell::new(HashMap::new()),
            pending_txn_offsets: RefCell::new(HashMap::new()),
            loaded: RefCell::new(HashSet::new()),
            commit_timeout: Duration::from_millis(config.offsets_commit_timeout_ms),
            cfg: GroupConfig {
                initial_rebalance_delay: Duration::from_millis(
                    config.group_initial_rebalance_delay_ms,
                ),
                session_timeout_min_ms: config.group_min_session_timeout_ms,
                session_timeout_max_ms: config.group_max_session_timeout_ms,
                group_size_max: config.group_max_size,
            },
            offset_metadata_max_bytes: config.offset_metadata_max_bytes,
            offsets_retention_ms: config.offsets_retention_ms,
            consumer_session_timeout: Duration::from_millis(
                config.group_consumer_session_timeout_ms,
            ),
            consumer_heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms as i32,
        }
    }

    /// The `__consumer_offsets` log holding `group`, if this shard coordinates it:
    /// NOT_COORDINATOR if this node does not lead its partition, and
    /// COORDINATOR_LOAD_IN_PROGRESS while the partition's groups are not loaded.
    fn offsets_log(&self, host: &dyn Host, group: &str) -> Result<Rc<PartitionLog>, ErrorCode> {
        let snapshot = host.cluster();
        let topic = snapshot
            .topic(OFFSETS_TOPIC)
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        let partition = offsets_topic::partition_for(group, topic.partition_count());
        let log = host
            .led_log(topic.id, partition)
            .ok_or(ErrorCode::NotCoordinator)?;
        if !self.loaded.borrow().contains(&partition) {
            return Err(ErrorCode::CoordinatorLoadInProgress);
        }
        Ok(log)
    }

    /// Appends records (key, value or tombstone) to `group`'s partition as one batch
    /// and waits until every in-sync replica holds it, as Kafka's coordinator appends
    /// with acks=-1; failures map as Kafka 4's GroupCoordinatorService maps them.
    async fn store(
        &self,
        host: &dyn Host,
        group: &str,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), ErrorCode> {
        if records.is_empty() {
            return Ok(());
        }
        let log = self.offsets_log(host, group)?;
        self.store_batch(host, group, &log, records_batch(records))
            .await
    }

    /// Appends `batch` to `group`'s partition `log` and waits as `store` does.
    async fn store_batch(
        &self,
        host: &dyn Host,
        group: &str,
        log: &Rc<PartitionLog>,
        batch: Bytes,
    ) -> Result<(), ErrorCode> {
        let in_sync_enough = || {
            let snapshot = host.cluster();
            let Some(topic) = snapshot.topic(OFFSETS_TOPIC) else {
                return false;
            };
            let partition = offsets_topic::partition_for(group, topic.partition_count());
            topic
                .partition(partition)
                .is_some_and(|a| a.isr.len() >= host.min_insync_replicas(topic))
        };
        // NOT_ENOUGH_REPLICAS, before and after the append.
        if !in_sync_enough() {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        let end = append_batch(log, batch).await?;
        let held = Box::pin(log.wait_for_high_watermark(end));
        let timeout = Box::pin(glommio::timer::sleep(self.commit_timeout));
        let outcome = futures::future::select(held, timeout).await;
        match outcome {
            futures::future::Either::Left((Ok(()), _)) if in_sync_enough() => Ok(()),
            futures::future::Either::Left((Ok(()), _)) => Err(ErrorCode::CoordinatorNotAvailable),
            // The partition closed or went offline: it moved, or its disk failed.
            futures::future::Either::Left((Err(_), _)) => Err(ErrorCode::NotCoordinator),
            // REQUEST_TIMED_OUT, as Kafka 4 maps it.
            futures::future::Either::Right(_) => Err(ErrorCode::CoordinatorNotAvailable),
        }
    }

    pub async fn join(
        &self,
        host: &dyn Host,
        group: String,
        req: JoinRequest,
    ) -> JoinGroupResponse {
        let member_id = req.member_id.clone();
        if group.is_empty() {
            return join_error(ErrorCode::InvalidGroupId, &member_id);
        }
        if let Err(code) = self.offsets_log(host, &group) {
            return join_error(code, &member_id);
        }
        let group_id = group.clone();
        let reply = {
            let mut groups = self.groups.borrow_mut();
            if !groups.contains_key(&group) && !member_id.is_empty() {
                return join_error(ErrorCode::UnknownMemberId, &member_id);
            }
            groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(group))
                .join(req, &self.cfg, Instant::now())
        };
        match reply {
            Reply::Now(r) => r,
            // The member was removed while it waited, or the group moved away.
            Reply::Later(rx) => rx.await.unwrap_or_else(|_| {
                let code = self.offsets_log(host, &group_id).err();
                join_error(code.unwrap_or(ErrorCode::UnknownMemberId), &member_id)
            }),
        }
    }

    pub async fn sync(&self, host: &dyn Host, group: &str, req: SyncRequest) -> SyncGroupResponse {
        if let Err(code) = self.offsets_log(host, group) {
            return state::sync_error(code);
        }
        let reply = match self.groups.borrow_mut().get_mut(group) {
            None => return state::sync_error(ErrorCode::UnknownMemberId),
            Some(g) => g.sync(req, Instant::now()),
        };
        // The leader's assignment is stored before anyone gets it.
        self.store_pending(host).await;
        match reply {
            Reply::Now(r) => r,
            Reply::Later(rx) => rx.await.unwrap_or_else(|_| {
                let code = self.offsets_log(host, group).err();
                state::sync_error(code.unwrap_or(ErrorCode::UnknownMemberId))
            }),
        }
    }

    pub fn heartbeat(
        &self,
        host: &dyn Host,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> ErrorCode {
        if let Err(code) = self.offsets_log(host, group) {
            return code;
        }
        match self.groups.borrow_mut().get_mut(group) {
            None => ErrorCode::UnknownMemberId,
            Some(g) => g.heartbeat(member_id, instance_id, generation, Instant::now()),
        }
    }

    /// LeaveGroup: a result per member (member id, instance id).
    pub fn leave(
        &self,
        host: &dyn Host,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.offsets_log(host, group)?;
        let mut groups = self.groups.borrow_mut();
        let g = groups.get_mut(group).ok_or(ErrorCode::UnknownMemberId)?;
        let now = Instant::now();
        Ok(members
            .iter()
            .map(|(id, instance)| g.leave(id, instance.as_deref(), &self.cfg, now))
            .collect())
    }

    /// OffsetCommit: a result per entry (topic, partition, offset), in order. The
    /// offsets are appended to `__consumer_offsets` before they take effect.
    pub async fn commit(
        &self,
        host: &dyn Host,
        group: &str,
        member: (&str, Option<&str>, i32),
        entries: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.offsets_log(host, group)?;
        let (member_id, instance_id, generation) = member;
        {
            let mut groups = self.groups.borrow_mut();
            match groups.get_mut(group) {
                Some(g) => g.check_commit(member_id, instance_id, generation, Instant::now())?,
                // Not using Kafka for membership: a standalone consumer or a tool.
                None if generation < 0 => {
                    groups.insert(group.to_string(), Group::new(group.to_string()));
                }
                None => return Err(ErrorCode::IllegalGeneration),
            }
        }
        let (mut results, accepted) = self.accept_offsets(host, entries);
        if accepted.is_empty() {
            return Ok(results);
        }
        let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = accepted
            .iter()
            .map(|(_, topic, partition, c)| {
                (
                    offsets_topic::offset_key(group, topic, *partition),
                    Some(offsets_topic::offset_value(c)),
                )
            })
            .collect();
        if let Err(code) = self.store(host, group, &records).await {
            for (slot, ..) in &accepted {
                results[*slot] = code;
            }
            return Ok(results);
        }
        let mut groups = self.groups.borrow_mut();
        let g = groups
            .entry(group.to_string())
            .or_insert_with(|| Group::new(group.to_string()));
        for (_, topic, partition, c) in accepted {
            g.offsets.insert((topic, partition), c);
        }
        Ok(results)
    }

    /// The entries of a commit that may be stored, with their slots, and a code per
    /// entry: UNKNOWN_TOPIC_OR_PARTITION, OFFSET_METADATA_TOO_LARGE, or NONE.
    #[allow(clippy::type_complexity)]
    fn accept_offsets(
        &self,
        host: &dyn Host,
        entries: Vec<(String, i32, CommittedOffset)>,
    ) -> (Vec<ErrorCode>, Vec<(usize, String, i32, CommittedOffset)>) {
        let snapshot = host.cluster();
        let mut results = Vec::with_capacity(entries.len());
        let mut accepted = Vec::new();
        for (topic, partition, c) in entries {
            let known = snapshot
                .topic(&topic)
                .is_some_and(|t| (0..t.partition_count()).contains(&partition));
            let code = if !known {
                ErrorCode::UnknownTopicOrPartition
            } else if c.metadata.len() > self.offset_metadata_max_bytes {
                ErrorCode::OffsetMetadataTooLarge
            } else {
                accepted.push((results.len(), topic, partition, c));
                ErrorCode::None
            };
            results.push(code);
        }
        (results, accepted)
    }

    /// OffsetFetch for one group: `topics` `None` means every committed partition.
    pub fn fetch_offsets(
        &self,
        host: &dyn Host,
        group: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<FetchedOffsets, ErrorCode> {
        self.offsets_log(host, group)?;
        let groups = self.groups.borrow();
        let offsets = groups.get(group).map(|g| &g.offsets);
        let lookup = |t: &str, p: i32| offsets.and_then(|o| o.get(&(t.to_string(), p)).cloned());
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, parts)| {
                    let found = parts.into_iter().map(|p| (p, lookup(&t, p))).collect();
                    (t, found)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> =
                    BTreeMap::new();
                for ((t, p), c) in offsets.into_iter().flatten() {
                    by_topic
                        .entry(t.clone())
                        .or_default()
                        .push((*p, Some(c.clone())));
                }
                by_topic
                    .into_iter()
                    .map(|(t, mut parts)| {
                        parts.sort_by_key(|(p, _)| *p);
                        (t, parts)
                    })
                    .collect()
            }
        })
    }

    /// ListGroups: (group id, protocol type, state, group type) of this shard's groups.
    pub fn list(&self) -> Vec<(String, String, &'static str, &'static str)> {
        self.groups
            .borrow()
            .values()
            .map(|g| {
                let protocol_type = if g.group_type() == "consumer" {
                    "consumer".to_string()
                } else {
                    g.protocol_type.clone().unwrap_or_default()
                };
                (g.id.clone(), protocol_type, g.state_name(), g.group_type())
            })
            .collect()
    }

    /// ConsumerGroupHeartbeat (KIP-848).
    pub fn consumer_heartbeat(
        &self,
        host: &dyn Host,
        group: &str,
        req: consumer::HeartbeatIn,
    ) -> consumer::HeartbeatOut {
        let fail =
            |code, message: &str| consumer::HeartbeatOut::error(&req.member_id, code, message);
        if group.is_empty() {
            return fail(ErrorCode::InvalidGroupId, "the group id is empty");
        }
        if let Err(code) = self.offsets_log(host, group) {
            return fail(code, "not the coordinator");
        }
        let snapshot = host.cluster();
        let topics = |name: &str| snapshot.topic(name).map(|t| (t.id, t.partition_count()));
        let mut groups = self.groups.borrow_mut();
        // Only a join creates a group. (After a broker restart a consumer-protocol
        // group is gone; its members are told they are unknown, and rejoin.)
        if req.member_epoch != 0 && !groups.contains_key(group) {
            return fail(ErrorCode::UnknownMemberId, "unknown member");
        }
        let g = groups
            .entry(group.to_string())
            .or_insert_with(|| Group::new(group.to_string()));
        if !g.members.is_empty() {
            return fail(
                ErrorCode::GroupIdNotFound,
                &format!("Group {group} is not a consumer group."),
            );
        }
        g.consumer
            .heartbeat(req, &topics, self.consumer_session_timeout, Instant::now())
    }

    /// ConsumerGroupDescribe: the consumer-protocol view of one group.
    pub fn consumer_describe<R>(
        &self,
        host: &dyn Host,
        group: &str,
        f: impl FnOnce(Option<&consumer::ConsumerGroup>, &str) -> R,
    ) -> Result<R, ErrorCode> {
        self.offsets_log(host, group)?;
        let groups = self.groups.borrow();
        Ok(match groups.get(group) {
            Some(g) if g.group_type() == "consumer" => f(Some(&g.consumer), g.state_name()),
            _ => f(None, "Dead"),
        })
    }

    /// DescribeGroups for one group; an unknown group is "Dead", as in Kafka.
    pub fn describe(&self, host: &dyn Host, group: &str) -> Result<GroupDescription, ErrorCode> {
        self.offsets_log(host, group)?;
        let groups = self.groups.borrow();
        let Some(g) = groups.get(group) else {
            return Ok(GroupDescription {
                state: "Dead",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        };
        let stable = g.state == GroupState::Stable;
        Ok(GroupDescription {
            state: g.state_name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            members: g
                .members
                .iter()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        m.metadata_for(g.protocol.as_deref()),
                        // Assignments are only meaningful once the group is stable.
                        if stable {
                            m.assignment.clone()
                        } else {
                            Bytes::new()
                        },
                    )
                })
                .collect(),
        })
    }

    /// DeleteGroups for one group: only an empty group can go; its offsets are
    /// deleted with tombstones first.
    pub async fn delete(&self, host: &dyn Host, group: &str) -> ErrorCode {
        if let Err(code) = self.offsets_log(host, group) {
            return code;
        }
        let keys: Vec<(String, i32)> = match self.groups.borrow().get(group) {
            None => return ErrorCode::GroupIdNotFound,
            Some(g) if g.state != GroupState::Empty || !g.consumer.is_empty() => {
                return ErrorCode::NonEmptyGroup
            }
            Some(g) => g.offsets.keys().cloned().collect(),
        };
        if let Err(code) = self.delete_offset_records(host, group, &keys).await {
            return code;
        }
        let tombstone = (offsets_topic::group_key(group), None);
        if let Err(code) = self.store(host, group, &[tombstone]).await {
            return code;
        }
        let mut groups = self.groups.borrow_mut();
        if groups
            .get(group)
            .is_some_and(|g| g.state == GroupState::Empty)
        {
            groups.remove(group);
        }
        ErrorCode::None
    }

    /// OffsetDelete: a result per partition; partitions of topics the group still
    /// subscribes to are refused.
    pub async fn delete_offsets(
        &self,
        host: &dyn Host,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.offsets_log(host, group)?;
        let (results, doomed) = {
            let groups = self.groups.borrow();
            let g = groups.get(group).ok_or(ErrorCode::GroupIdNotFound)?;
            let subscribed = if g.state == GroupState::Empty {
                Vec::new()
            } else {
                g.subscribed_topics()
            };
            let mut results = Vec::new();
            let mut doomed = Vec::new();
            for (t, p) in partitions {
                if subscribed.contains(&t) {
                    results.push(ErrorCode::GroupSubscribedToTopic);
                } else {
                    results.push(ErrorCode::None);
                    if g.offsets.contains_key(&(t.clone(), p)) {
                        doomed.push((t, p));
                    }
                }
            }
            (results, doomed)
        };
        self.delete_offset_records(host, group, &doomed).await?;
        if let Some(g) = self.groups.borrow_mut().get_mut(group) {
            for k in &doomed {
                g.offsets.remove(k);
            }
        }
        Ok(results)
    }

    /// Session expiry and rebalance deadlines, every `TICK_INTERVAL`; then stores
    /// what changed.
    pub async fn tick(&self, host: &dyn Host) {
        let now = Instant::now();
        for g in self.groups.borrow_mut().values_mut() {
            g.tick(&self.cfg, now);
        }
        self.store_pending(host).await;
    }

    /// Writes the membership of every group whose rebalance completed to
    /// `__consumer_offsets` (Kafka's group metadata record), then lets the group
    /// answer the SyncGroups waiting for it.
    async fn store_pending(&self, host: &dyn Host) {
        let due: Vec<(String, StoredGroup)> = self
            .groups
            .borrow_mut()
            .values_mut()
            .filter_map(|g| g.take_store().map(|s| (g.id.clone(), s)))
            .collect();
        for (group, stored) in due {
            let record = (
                offsets_topic::group_key(&group),
                Some(offsets_topic::group_value(&stored)),
            );
            let result = self.store(host, &group, &[record]).await;
            if let Some(g) = self.groups.borrow_mut().get_mut(&group) {
                g.finish_store(stored.generation, result, &self.cfg, Instant::now());
            }
        }
    }

    /// Deletes offsets past `offsets.retention.minutes`, and empty groups left with no
    /// offsets (run every `offsets.retention.check.interval.ms`).
    pub async fn expire_offsets(&self, host: &dyn Host) {
        let now_ms = crate::storage::segment::now_ms();
        let expired: Vec<(String, Vec<(String, i32)>)> = self
            .groups
            .borrow()
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.expired_offsets(now_ms, self.offsets_retention_ms),
                )
            })
            .filter(|(_, e)| !e.is_empty())
            .collect();
        for (group, keys) in expired {
            if self
                .delete_offset_records(host, &group, &keys)
                .await
                .is_err()
            {
                continue;
            }
            info!(%group, partitions = keys.len(), "expired committed offsets");
            if let Some(g) = self.groups.borrow_mut().get_mut(&group) {
                for k in &keys {
                    g.offsets.remove(k);
                }
            }
        }
        self.groups.borrow_mut().retain(|_, g| !g.is_idle());
    }

    /// Tombstones for `group`'s committed offsets of `keys`.
    async fn delete_offset_records(
        &self,
        host: &dyn Host,
        group: &str,
        keys: &[(String, i32)],
    ) -> Result<(), ErrorCode> {
        let tombstones: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys
            .iter()
            .map(|(t, p)| (offsets_topic::offset_key(group, t, *p), None))
            .collect();
        self.store(host, group, &tombstones).await
    }

    /// Whether the groups of `__consumer_offsets` partition `partition` are loaded.
    pub fn is_loaded(&self, partition: i32) -> bool {
        self.loaded.borrow().contains(&partition)
    }

    /// Replays `__consumer_offsets` partition `partition` (of `partition_count`)
    /// when this node becomes its leader (at startup, before any client is served,
    /// on creation, or on a leadership change), up to its log end: a new leader's
    /// whole log becomes the high watermark. Returns the records applied.
    pub async fn load_partition(
        &self,
        log: &PartitionLog,
        partition: i32,
        partition_count: i32,
    ) -> std::io::Result<u64> {
        self.drop_groups_of(partition, partition_count);
        let applied = self.replay(log, partition, partition_count).await?;
        self.loaded.borrow_mut().insert(partition);
        Ok(applied)
    }

    /// Drops the groups of a partition this node no longer leads (or holds); their
    /// members' waiting requests get NOT_COORDINATOR and they find the new one.
    /// `partition_count` `None`: the topic is gone, and every group with it.
    pub fn unload_partition(&self, partition: i32, partition_count: Option<i32>) {
        if !self.loaded.borrow_mut().remove(&partition) {
            return;
        }
        match partition_count {
            Some(count) => self.drop_groups_of(partition, count),
            None => {
                self.groups.borrow_mut().clear();
                self.pending_txn_offsets.borrow_mut().clear();
            }
        }
    }

    fn drop_groups_of(&self, partition: i32, partition_count: i32) {
        self.groups
            .borrow_mut()
            .retain(|id, _| offsets_topic::partition_for(id, partition_count) != partition);
        self.drop_pending_of(partition, partition_count);
    }

    async fn replay(
        &self,
        log: &PartitionLog,
        partition: i32,
        partition_count: i32,
    ) -> std::io::Result<u64> {
        let mut applied = 0u64;
        log.for_each_batch(|batch| {
            if self.replay_transactional(batch, partition, partition_count) {
                return;
            }
            let mut groups = self.groups.borrow_mut();
            let walked = for_each_record(batch, |r| {
                let Some(key) = r.key else { return };
                match offsets_topic::decode(key, r.value) {
                    Some(OffsetsRecord::Offset {
                        group,
                        topic,
                        partition,
                        value,
                    }) => {
                        applied += 1;
                        let g = groups
                            .entry(group.clone())
                            .or_insert_with(|| Group::new(group));
                        match value {
                            Some(c) => {
                                g.offsets.insert((topic, partition), c);
                            }
                            None => {
                                g.offsets.remove(&(topic, partition));
                            }
                        }
                    }
                    Some(OffsetsRecord::Group { group, value }) => {
                        applied += 1;
                        groups
                            .entry(group.clone())
                            .or_insert_with(|| Group::new(group))
                            .restore(value, Instant::now());
                    }
                    None => {}
                }
            });
            if let Err(e) = walked {
                let offset = BatchHeader::new(batch).map_or(-1, |h| h.base_offset());
                warn!(error = %e, offset, "skipping an unreadable batch of __consumer_offsets");
            }
        })
        .await?;
        Ok(applied)
    }
}

/// Records (key, value or tombstone) as one batch of `__consumer_offsets`.
fn records_batch(records: &[(Vec<u8>, Option<Vec<u8>>)]) -> Bytes {
    let now = crate::storage::segment::now_ms();
    let views: Vec<Record<'_>> = records
        .iter()
        .map(|(k, v)| Record {
            key: Some(k),
            value: v.as_deref(),
            headers: &[],
            timestamp: now,
        })
        .collect();
    Bytes::from(encode(&views, None))
}

/// Appends a batch to a `__consumer_offsets` log, mapping failures as Kafka's group
/// coordinator does; the offset after it.
async fn append_batch(log: &Rc<PartitionLog>, batch: Bytes) -> Result<i64, ErrorCode> {
    match log.append(batch).await {
        Ok(info) => Ok(info.end_offset),
        Err(e) => {
            warn!(error = %e, "appending to __consumer_offsets failed");
            // As Kafka's GroupMetadataManager maps a failed offsets append.
            Err(match e {
                AppendError::Batch(b)
                    if matches!(
                        b.error_code(),
                        ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge
                    ) =>
                {
                    ErrorCode::InvalidCommitOffsetSize
                }
                AppendError::Io(_) | AppendError::Offline => ErrorCode::NotCoordinator,
                // A transactional commit of a fenced producer, as Kafka passes it on.
                AppendError::Sequence(
                    crate::storage::producer_state::SequenceError::StaleEpoch,
                ) => ErrorCode::InvalidProducerEpoch,
                _ => ErrorCode::CoordinatorNotAvailable,
            })
        }
    }
}

//! Shared lookups: where a partition is led (and KIP-951 hints when not here),
//! auto-creation, a group's coordinator, grouping work by owner core.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::controller::NewTopic;
use crate::cluster::metadata::{BrokerInfo, TopicMeta};
use crate::group::offsets_topic::{self, OFFSETS_TOPIC};
use crate::ids::{BrokerId, EpochMismatch};
use crate::node::view::{MetadataView, NotServed};
use crate::node::{controller_client, Core, PartitionKey, CONTROLLER_SHARD};
use crate::protocol::ErrorCode;
use crate::shard::ShardId;
use crate::storage::PartitionLog;
use crate::txn::TRANSACTION_TOPIC;

/// The error a client gets for a partition this node does not serve.
pub fn not_served(why: NotServed) -> ErrorCode {
    match why {
        NotServed::Unknown => ErrorCode::UnknownTopicOrPartition,
        NotServed::NotLeader => ErrorCode::NotLeaderOrFollower,
    }
}

/// Where a request for `partition` of `topic` (if the topic exists) goes: the core
/// of this node's leading replica and its key, or the error the client gets.
pub fn leader_here(
    view: &MetadataView,
    topic: Option<&Arc<TopicMeta>>,
    partition: i32,
) -> Result<(ShardId, PartitionKey), ErrorCode> {
    let topic = topic.ok_or(ErrorCode::UnknownTopicOrPartition)?;
    view.leader_shard(topic, partition)
        .map(|owner| (owner, (topic.id, partition)))
        .map_err(not_served)
}

/// KIP-951 hints for one response: who leads each refused partition now, and where
/// to reach those leaders, so a client can move without refreshing its metadata.
#[derive(Default)]
pub struct LeaderHints {
    leaders: BTreeSet<BrokerId>,
}

impl LeaderHints {
    /// `partition`'s (leader id, leader epoch) as this node knows them (-1: unknown);
    /// its leader is named among the endpoints.
    pub fn hint(&mut self, topic: Option<&TopicMeta>, partition: i32) -> (i32, i32) {
        let assignment = topic.and_then(|t| t.partition(partition));
        let leader = assignment.and_then(|a| a.leader);
        self.leaders.extend(leader);
        (
            leader.map_or(-1, |b| b.0),
            assignment.map_or(-1, |a| a.leader_epoch.0),
        )
    }

    /// The named leaders that are live, by id.
    pub fn endpoints<'a>(&self, view: &'a MetadataView) -> Vec<&'a BrokerInfo> {
        self.leaders
            .iter()
            .filter_map(|id| view.cluster.brokers.get(id))
            .filter(|b| !b.fenced)
            .collect()
    }
}

/// Creates `names` with broker defaults through the controller (auto-creation, which
/// only a Metadata request may ask for, as in Kafka); `client` names who asked, for the
/// log. Results are by name; a topic someone else created meanwhile counts as success.
pub async fn auto_create(
    core: &Rc<Core>,
    names: Vec<String>,
    client: &str,
) -> BTreeMap<String, Result<Arc<TopicMeta>, ErrorCode>> {
    // Internal topics are created by their owners (the group coordinator), with their
    // own settings, never by a client's request.
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| n != OFFSETS_TOPIC && n != TRANSACTION_TOPIC)
        .collect();
    if !names.is_empty() {
        tracing::info!(topics = ?names, client, "auto-creating topics a Metadata request names");
    }
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::with_defaults(n.clone()))
        .collect();
    let results = core
        .submit_to(CONTROLLER_SHARD, move |s| async move {
            crate::node::controller_client::create_topics(&s, topics, false).await
        })
        .await;
    let mut out = BTreeMap::new();
    match results {
        Err(_) => {
            for n in names {
                out.insert(n, Err(ErrorCode::UnknownServerError));
            }
        }
        Ok(results) => {
            let snapshot = core.metadata.load();
            for (n, r) in names.into_iter().zip(results) {
                let r = match r {
                    Ok(t) => Ok(t),
                    Err((ErrorCode::TopicAlreadyExists, _)) => snapshot
                        .topic(&n)
                        .cloned()
                        .ok_or(ErrorCode::UnknownTopicOrPartition),
                    Err((code, _)) => Err(code),
                };
                out.insert(n, r);
            }
        }
    }
    out
}

/// Which internal topic holds a coordinator's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorKind {
    /// Consumer groups, in `__consumer_offsets`.
    Group,
    /// Transactional ids, in `__transaction_state`.
    Transaction,
}

impl CoordinatorKind {
    fn topic_name(self) -> &'static str {
        match self {
            CoordinatorKind::Group => OFFSETS_TOPIC,
            CoordinatorKind::Transaction => TRANSACTION_TOPIC,
        }
    }

    /// The topic as Kafka creates it: its broker settings, compacted.
    fn new_topic(self, core: &Core, live_brokers: usize) -> NewTopic {
        let c = &core.config;
        let (partitions, replication_factor, segment_bytes, mut configs) = match self {
            CoordinatorKind::Group => (
                c.offsets_topic_partitions,
                c.offsets_topic_replication_factor,
                c.offsets_topic_segment_bytes,
                BTreeMap::new(),
            ),
            CoordinatorKind::Transaction => {
                let t = &c.transactions;
                let rf = t.state_log_replication_factor.min(live_brokers);
                (
                    t.state_log_partitions,
                    t.state_log_replication_factor,
                    t.state_log_segment_bytes,
                    BTreeMap::from([
                        (
                            "min.insync.replicas".to_string(),
                            t.state_log_min_isr.min(rf).to_string(),
                        ),
                        (
                            "unclean.leader.election.enable".to_string(),
                            "false".to_string(),
                        ),
                    ]),
                )
            }
        };
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("segment.bytes".to_string(), segment_bytes.to_string());
        NewTopic {
            name: self.topic_name().to_string(),
            partitions,
            // The setting, or every live broker when there are fewer.
            replication_factor: replication_factor.min(live_brokers) as i16,
            assignments: Vec::new(),
            configs,
        }
    }

    fn partition_for(self, key: &str, partitions: i32) -> i32 {
        match self {
            CoordinatorKind::Group => offsets_topic::partition_for(key, partitions),
            CoordinatorKind::Transaction => crate::txn::log_format::partition_for(key, partitions),
        }
    }
}

/// A coordinator's internal topic, created through the controller on first use (as
/// Kafka creates it on the first FindCoordinator), replicated like any topic.
async fn internal_topic(
    core: &Rc<Core>,
    kind: CoordinatorKind,
) -> Result<Arc<TopicMeta>, ErrorCode> {
    let view = core.metadata.load();
    if let Some(t) = view.topic(kind.topic_name()) {
        return Ok(t.clone());
    }
    let live = view.cluster.live_brokers().count().max(1);
    let topic = kind.new_topic(core, live);
    let created = core
        .submit_to(CONTROLLER_SHARD, move |c| async move {
            controller_client::create_topics(&c, vec![topic], false).await
        })
        .await
        .map_err(|_| ErrorCode::CoordinatorNotAvailable)?;
    match created.into_iter().next() {
        Some(Ok(t)) => Ok(t),
        // Created meanwhile by another request.
        _ => core
            .metadata
            .load()
            .topic(kind.topic_name())
            .cloned()
            .ok_or(ErrorCode::CoordinatorNotAvailable),
    }
}

/// Where a coordinator is: the leader of its key's partition, and the core holding
/// that partition if the leader is this broker.
pub struct CoordinatorLocation {
    pub broker: BrokerId,
    pub local_shard: Option<ShardId>,
}

/// The coordinator of `key` of `kind`. COORDINATOR_NOT_AVAILABLE while its partition
/// has no leader.
pub async fn locate_coordinator(
    core: &Rc<Core>,
    kind: CoordinatorKind,
    key: &str,
) -> Result<CoordinatorLocation, ErrorCode> {
    let topic = internal_topic(core, kind).await?;
    let partition = kind.partition_for(key, topic.partition_count());
    let broker = topic
        .partition(partition)
        .and_then(|a| a.leader)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let local_shard = if broker == core.node_id() {
        let shard = core.metadata.load().shard_of(&topic, partition);
        Some(shard.ok_or(ErrorCode::CoordinatorNotAvailable)?)
    } else {
        None
    };
    Ok(CoordinatorLocation {
        broker,
        local_shard,
    })
}

/// Runs `f` on the core coordinating `key` of `kind`: NOT_COORDINATOR if this
/// broker does not.
pub async fn on_coordinator<R, F, Fut>(
    core: &Rc<Core>,
    kind: CoordinatorKind,
    key: &str,
    f: F,
) -> Result<R, ErrorCode>
where
    R: Send + 'static,
    F: FnOnce(Rc<Core>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let owner = locate_coordinator(core, kind, key)
        .await?
        .local_shard
        .ok_or(ErrorCode::NotCoordinator)?;
    core.submit_to(owner, f)
        .await
        .map_err(|_| ErrorCode::CoordinatorNotAvailable)
}

/// As `on_coordinator`, for transactional id `id`.
pub async fn on_transaction_coordinator<R, F, Fut>(
    core: &Rc<Core>,
    id: &str,
    f: F,
) -> Result<R, ErrorCode>
where
    R: Send + 'static,
    F: FnOnce(Rc<Core>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    on_coordinator(core, CoordinatorKind::Transaction, id, f).await
}

/// Kafka's check of a request's `current_leader_epoch` for a partition this broker
/// serves (`Partition.checkCurrentLeaderEpoch`); a topic or partition it does not
/// know passes here and is answered by the caller.
pub fn leader_epoch_check(
    topic: Option<&Arc<TopicMeta>>,
    partition: i32,
    requested: i32,
) -> Result<(), ErrorCode> {
    let Some(assignment) = topic.and_then(|t| t.partition(partition)) else {
        return Ok(());
    };
    assignment
        .leader_epoch
        .check_request(requested)
        .map_err(|mismatch| match mismatch {
            EpochMismatch::Fenced => ErrorCode::FencedLeaderEpoch,
            EpochMismatch::Unknown => ErrorCode::UnknownLeaderEpoch,
        })
}

/// Work items grouped by owner core, each remembering its slot in the response.
pub fn group_by_owner<T>(
    items: impl IntoIterator<Item = (ShardId, usize, T)>,
) -> BTreeMap<ShardId, Vec<(usize, T)>> {
    let mut by_shard: BTreeMap<ShardId, Vec<(usize, T)>> = BTreeMap::new();
    for (owner, slot, item) in items {
        by_shard.entry(owner).or_default().push((slot, item));
    }
    by_shard
}

/// Runs `op` on the owner shard of each work item's partition (one message per owner;
/// an owner's items run one after another) and stores each result in its slot of
/// `results`. A partition without a log on its owner gets UNKNOWN_TOPIC_OR_PARTITION.
pub async fn run_on_owners<T, R, F, Fut>(
    core: &Rc<Core>,
    work: Vec<(ShardId, usize, (PartitionKey, T))>,
    results: &mut [Result<R, ErrorCode>],
    op: F,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Rc<PartitionLog>, T) -> Fut + Send + Copy + 'static,
    Fut: Future<Output = Result<R, ErrorCode>> + 'static,
{
    let runs = group_by_owner(work).into_iter().map(|(owner, items)| {
        core.submit_to(owner, move |s| async move {
            let mut out = Vec::with_capacity(items.len());
            for (slot, (key, arg)) in items {
                let r = match s.log(&key) {
                    Some(log) => op(log, arg).await,
                    None => Err(ErrorCode::UnknownTopicOrPartition),
                };
                out.push((slot, r));
            }
            out
        })
    });
    for done in futures::future::join_all(runs).await.into_iter().flatten() {
        for (slot, r) in done {
            results[slot] = r;
        }
    }
}

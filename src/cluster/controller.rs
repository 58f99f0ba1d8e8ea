//! The controller: the one place that decides changes to cluster metadata (create and
//! delete topics, register brokers, hand out producer ids). It runs on one core
//! (`node::CONTROLLER_SHARD`) and writes what it decides as records to the metadata
//! quorum (`quorum`), which replicates and applies them on every node; `node::publisher`
//! then reconciles each core. The controller itself touches no partition and no core:
//! it turns the current image and a request into records (`plan_*`). Changes are
//! serialised by a one-permit gate that the caller holds from plan until the records
//! are applied, so each plan sees the image its predecessor left.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::sync::{Permit, Semaphore};
use uuid::Uuid;

use super::metadata::{validate_topic_name, ClusterMetadata, PartitionAssignment, TopicMeta};
use super::quorum::Quorum;
use super::records::{topic_records, LeaderChange, MetadataRecord};
use crate::ids::BrokerId;
use crate::protocol::ErrorCode;

/// Producer ids are reserved in the quorum in blocks of this many.
pub const PRODUCER_ID_BLOCK: i64 = 1_000_000;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

pub use super::rpc::{
    AdminResult, AlterConfigs, AlterIsr, AlterOp, ConfigResource, DeleteResult, NewPartitions,
    PartitionsResult, TopicResult,
};

/// Broker defaults a topic takes when its request leaves them unset.
#[derive(Debug, Clone, Copy)]
pub struct TopicDefaults {
    pub partitions: i32,
    pub replication_factor: i16,
}

pub struct Controller {
    defaults: TopicDefaults,
    gate: Semaphore,
    pub quorum: Quorum,
    /// This node's cluster id (`meta.properties`): the quorum's, if the quorum has
    /// none yet when this node becomes its active controller.
    cluster_id: RefCell<String>,
    producer_id_next: Cell<i64>,
    producer_id_block_end: Cell<i64>,
    /// Last heartbeat per broker, kept by the active controller.
    heartbeats: RefCell<HashMap<BrokerId, Instant>>,
}

/// A plan: one result per request entry, in order, and the records to append (none
/// if nothing changes).
pub struct Plan<R> {
    pub results: Vec<R>,
    pub records: Vec<MetadataRecord>,
}

/// Replicas for `count` new partitions of `rf` copies each over `brokers` (sorted),
/// with no racks: striped, so partition `p`'s preferred leader is broker `p % n` and
/// leadership spreads evenly, as Kafka's StripedReplicaPlacer does without racks.
pub fn assign_replicas(brokers: &[BrokerId], count: usize, rf: usize) -> Vec<Vec<BrokerId>> {
    assign_replicas_from(&[brokers.to_vec()], 0, count, rf)
}

/// The live brokers grouped by rack (`broker.rack`; brokers without one are one
/// rack), racks by name and brokers by id.
pub fn racks_of(current: &ClusterMetadata) -> Vec<Vec<BrokerId>> {
    let mut racks: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
    for b in current.live_brokers() {
        racks.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    racks.into_values().collect()
}

/// Replicas for partitions `first..first + count` (CreatePartitions continues the
/// stripe where it ended), `rf` copies each. Partition `p` starts at rack `p % R`
/// and takes each next replica from the next rack, so its replicas span as many
/// racks as there are (as Kafka's StripedReplicaPlacer); within a rack, brokers take
/// turns by partition. With one rack this is the plain stripe: broker `(p + i) % n`.
pub fn assign_replicas_from(
    racks: &[Vec<BrokerId>],
    first: usize,
    count: usize,
    rf: usize,
) -> Vec<Vec<BrokerId>> {
    let all: Vec<BrokerId> = racks.iter().flatten().copied().collect();
    assert!(rf <= all.len(), "replication factor within the brokers");
    let r = racks.len();
    (first..first + count)
        .map(|p| {
            let mut replicas: Vec<BrokerId> = Vec::with_capacity(rf);
            for i in 0..rf {
                let rack = &racks[(p + i) % r];
                let round = (p + i) / r;
                // A small rack may come round again: the next broker not yet taken.
                let pick = (0..rack.len())
                    .map(|k| rack[(round + k) % rack.len()])
                    .chain(all.iter().copied())
                    .find(|b| !replicas.contains(b))
                    .expect("rf within the brokers");
                replicas.push(pick);
            }
            replicas
        })
        .collect()
}

impl Controller {
    pub fn new(defaults: TopicDefaults, quorum: Quorum, cluster_id: String) -> Self {
        Controller {
            defaults,
            gate: Semaphore::new(1),
            quorum,
            cluster_id: RefCell::new(cluster_id),
            producer_id_next: Cell::new(0),
            producer_id_block_end: Cell::new(0),
            heartbeats: RefCell::new(HashMap::new()),
        }
    }

    pub fn cluster_id(&self) -> String {
        self.cluster_id.borrow().clone()
    }

    pub fn set_cluster_id(&self, id: String) {
        *self.cluster_id.borrow_mut() = id;
    }

    /// Serialises changes: hold the permit from plan through publish.
    pub async fn lock(&self) -> Option<Permit<'_>> {
        self.gate.acquire_permit(1).await.ok()
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
        for (key, value) in &t.configs {
            let Some(spec) = crate::config::topic::find(key) else {
                return Err((
                    ErrorCode::InvalidConfig,
                    format!("Unknown topic config name: {key}"),
                ));
            };
            crate::config::topic::validate(spec, value)
                .map_err(|m| (ErrorCode::InvalidConfig, m))?;
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
        let racks = racks_of(current);
        let live: usize = racks.iter().map(Vec::len).sum();
        if rf as usize > live {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {live} broker(s) are registered."),
            ));
        }
        Ok(assign_replicas_from(
            &racks,
            0,
            partitions as usize,
            rf as usize,
        ))
    }

    /// Plans the creation of `topics`: one result per entry, in order.
    pub fn plan_create(
        &self,
        current: &ClusterMetadata,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Plan<TopicResult> {
        // Later entries are checked against the image with the earlier ones in it
        // (the same name twice in one request: the second already exists).
        let mut next = current.clone();
        let mut records = Vec::new();
        let results = topics
            .iter()
            .map(|t| {
                let replicas = self.check_new_topic(&next, t)?;
                let meta = Arc::new(TopicMeta {
                    name: t.name.clone(),
                    id: Uuid::new_v4(),
                    partitions: replicas.into_iter().map(PartitionAssignment::new).collect(),
                    configs: t.configs.clone(),
                });
                if !validate_only {
                    next.insert(TopicMeta::clone(&meta));
                    records.extend(topic_records(&meta));
                }
                Ok(meta)
            })
            .collect();
        Plan { results, records }
    }

    /// Plans the deletion of topics by name or id: one result per entry, in order.
    pub fn plan_delete(
        &self,
        current: &ClusterMetadata,
        topics: &[(Option<String>, Uuid)],
    ) -> Plan<DeleteResult> {
        let mut next = current.clone();
        let mut records = Vec::new();
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
                        records.push(MetadataRecord::RemoveTopic { id: t.id });
                        Ok((t.name.clone(), t.id))
                    }
                }
            })
            .collect();
        Plan { results, records }
    }

    /// The next producer id of this node's block, if one is left.
    pub fn take_producer_id(&self) -> Option<i64> {
        let id = self.producer_id_next.get();
        (id < self.producer_id_block_end.get()).then(|| {
            self.producer_id_next.set(id + 1);
            id
        })
    }

    /// This node's block of producer ids is now `[next - PRODUCER_ID_BLOCK, next)`.
    pub fn set_producer_id_block(&self, next: i64) {
        self.producer_id_next.set(next - PRODUCER_ID_BLOCK);
        self.producer_id_block_end.set(next);
    }

    /// When `id` last heartbeated (or registered), as the active controller saw it.
    pub fn heard_from(&self, id: BrokerId, at: Instant) {
        self.heartbeats.borrow_mut().insert(id, at);
    }

    /// Forgets heartbeats: a new active controller gives every broker a full
    /// session from when it takes over.
    pub fn reset_heartbeats(&self) {
        self.heartbeats.borrow_mut().clear();
    }

    /// The unfenced brokers (other than `me`) not heard from within `timeout`.
    pub fn expired(
        &self,
        current: &ClusterMetadata,
        me: BrokerId,
        now: Instant,
        timeout: Duration,
    ) -> Vec<BrokerId> {
        let mut heard = self.heartbeats.borrow_mut();
        current
            .live_brokers()
            .filter(|b| b.id != me)
            .filter(|b| now.duration_since(*heard.entry(b.id).or_insert(now)) > timeout)
            .map(|b| b.id)
            .collect()
    }
}

/// Plans CreatePartitions: one result per entry, in order, with Kafka's
/// (ReplicationControlManager.createPartitions) errors and messages.
pub fn plan_create_partitions(
    current: &ClusterMetadata,
    topics: &[NewPartitions],
    validate_only: bool,
) -> Plan<PartitionsResult> {
    let mut records = Vec::new();
    let mut seen = BTreeSet::new();
    let duplicated: BTreeSet<&str> = topics
        .iter()
        .filter(|t| !seen.insert(t.name.as_str()))
        .map(|t| t.name.as_str())
        .collect();
    let results = topics
        .iter()
        .map(|t| {
            if duplicated.contains(t.name.as_str()) {
                return Err((ErrorCode::InvalidRequest, Some("Duplicate topic in request.".into())));
            }
            let Some(topic) = current.topic(&t.name) else {
                return Err((ErrorCode::UnknownTopicOrPartition, None));
            };
            let have = topic.partitions.len();
            let want = usize::try_from(t.count).unwrap_or(0);
            if want < have {
                return Err((
                    ErrorCode::InvalidPartitions,
                    Some(format!(
                        "The topic {} currently has {have} partition(s); {} would not be an increase.",
                        t.name, t.count
                    )),
                ));
            }
            if want == have {
                return Err((
                    ErrorCode::InvalidPartitions,
                    Some(format!("Topic already has {have} partition(s).")),
                ));
            }
            let added = want - have;
            let rf = topic.partitions.first().map_or(1, |a| a.replicas.len());
            let replicas = match &t.assignments {
                Some(given) => {
                    if given.len() != added {
                        return Err((
                            ErrorCode::InvalidReplicaAssignment,
                            Some(format!("Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.", given.len())),
                        ));
                    }
                    let mut all: Vec<Vec<BrokerId>> =
                        topic.partitions.iter().map(|a| a.replicas.clone()).collect();
                    all.extend(given.iter().cloned());
                    check_assignments(current, &all).map_err(|(c, m)| (c, Some(m)))?;
                    given.clone()
                }
                None => {
                    let racks = racks_of(current);
                    let live: usize = racks.iter().map(Vec::len).sum();
                    if rf > live {
                        return Err((
                            ErrorCode::InvalidReplicationFactor,
                            Some(format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {live} broker(s) are registered.")),
                        ));
                    }
                    assign_replicas_from(&racks, have, added, rf)
                }
            };
            if !validate_only {
                records.extend(replicas.into_iter().enumerate().map(|(i, r)| {
                    MetadataRecord::Partition {
                        topic_id: topic.id,
                        partition: (have + i) as i32,
                        assignment: PartitionAssignment::new(r),
                    }
                }));
            }
            Ok(())
        })
        .collect();
    Plan { results, records }
}

/// The block of producer ids for `broker` after the image's last one.
pub fn plan_producer_ids(current: &ClusterMetadata, broker: BrokerId) -> (MetadataRecord, i64) {
    let next = current.next_producer_id + PRODUCER_ID_BLOCK;
    (MetadataRecord::ProducerIds { broker, next }, next)
}

/// Fences `broker`, as Kafka's controller does when its session expires: it leaves
/// every ISR it is in, and the partitions it led get a new leader from the rest of
/// the ISR, or none (offline) if no other in-sync replica is live.
pub fn plan_fence(
    current: &ClusterMetadata,
    broker: BrokerId,
    unclean: &dyn Fn(&TopicMeta) -> bool,
) -> Vec<MetadataRecord> {
    let Some(info) = current.brokers.get(&broker) else {
        return Vec::new();
    };
    let mut records = vec![MetadataRecord::FenceBroker {
        id: broker,
        epoch: info.epoch,
    }];
    let live = |b: &BrokerId| *b != broker && current.brokers.get(b).is_some_and(|i| !i.fenced);
    for t in current.topics.values() {
        for (p, a) in t.partitions.iter().enumerate() {
            if !a.isr.contains(&broker) {
                continue;
            }
            let rest: Vec<BrokerId> = a.isr.iter().copied().filter(|b| *b != broker).collect();
            let change = if a.leader == Some(broker) {
                match rest.iter().find(|b| live(b)) {
                    Some(next) => (LeaderChange::To(*next), Some(rest)),
                    None => match a.replicas.iter().find(|b| live(b)).filter(|_| unclean(t)) {
                        // Unclean election: an out-of-sync replica leads, with what
                        // it has; what only the ISR held is lost (as Kafka).
                        Some(next) => (LeaderChange::To(*next), Some(vec![*next])),
                        // Nobody else in sync: the partition waits for this one, which
                        // stays the last member of the ISR (as Kafka keeps it).
                        None => (LeaderChange::Offline, None),
                    },
                }
            } else {
                (LeaderChange::Keep, Some(rest))
            };
            records.push(MetadataRecord::PartitionChange {
                topic_id: t.id,
                partition: p as i32,
                leader: change.0,
                isr: change.1,
            });
        }
    }
    records
}

/// Plans a leader's ISR change as Kafka's controller checks one
/// (`ReplicationControlManager.alterPartition`): the asker must lead the partition at
/// the epochs it saw; the ISR holds the leader, only replicas, and no fenced broker
/// joins it (KIP-841).
pub fn plan_alter_isr(
    current: &ClusterMetadata,
    change: &AlterIsr,
) -> Result<Vec<MetadataRecord>, ErrorCode> {
    let a = current
        .topic_by_id(&change.topic_id)
        .and_then(|t| t.partition(change.partition))
        .ok_or(ErrorCode::UnknownTopicOrPartition)?;
    if a.leader != Some(change.leader) {
        return Err(ErrorCode::NotLeaderOrFollower);
    }
    if change.leader_epoch != a.leader_epoch.0 {
        return Err(ErrorCode::FencedLeaderEpoch);
    }
    if change.partition_epoch != a.partition_epoch {
        return Err(ErrorCode::InvalidUpdateVersion);
    }
    let fenced = |b: &BrokerId| current.brokers.get(b).is_none_or(|i| i.fenced);
    let joining_fenced = change.isr.iter().any(|b| !a.isr.contains(b) && fenced(b));
    if !change.isr.contains(&change.leader)
        || change.isr.iter().any(|b| !a.replicas.contains(b))
        || joining_fenced
    {
        return Err(ErrorCode::IneligibleReplica);
    }
    if change.isr == a.isr {
        return Ok(Vec::new());
    }
    Ok(vec![MetadataRecord::PartitionChange {
        topic_id: change.topic_id,
        partition: change.partition,
        leader: LeaderChange::Keep,
        isr: Some(change.isr.clone()),
    }])
}

/// Unfences `broker` and gives it back the partitions that have no leader and
/// whose ISR holds it (it was their last in-sync replica), and, where `unclean`
/// allows it, those it is only a replica of.
pub fn plan_unfence(
    current: &ClusterMetadata,
    broker: BrokerId,
    unclean: &dyn Fn(&TopicMeta) -> bool,
) -> Vec<MetadataRecord> {
    let Some(info) = current.brokers.get(&broker) else {
        return Vec::new();
    };
    let mut records = vec![MetadataRecord::UnfenceBroker {
        id: broker,
        epoch: info.epoch,
    }];
    for t in current.topics.values() {
        for (p, a) in t.partitions.iter().enumerate() {
            if a.leader.is_some() || !a.replicas.contains(&broker) {
                continue;
            }
            let isr = if a.isr.contains(&broker) {
                None
            } else if unclean(t) {
                // Unclean election of a replica that was not in sync.
                Some(vec![broker])
            } else {
                continue;
            };
            records.push(MetadataRecord::PartitionChange {
                topic_id: t.id,
                partition: p as i32,
                leader: LeaderChange::To(broker),
                isr,
            });
        }
    }
    records
}

/// Whether a topic may elect a leader out of the ISR
/// (`unclean.leader.election.enable`: the topic's, else `default`).
pub fn unclean_election(topic: &TopicMeta, default: bool) -> bool {
    topic
        .configs
        .get("unclean.leader.election.enable")
        .map_or(default, |v| v.trim().eq_ignore_ascii_case("true"))
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
    use crate::cluster::metadata::test_image as image_with;

    #[test]
    fn create_partitions_answers_as_kafka_and_extends_the_stripe() {
        let image = image_with(&[1, 2, 3], "t", &[&[1, 2], &[2, 3]]);
        let ask = |name: &str, count: i32, assignments: Option<Vec<Vec<i32>>>| NewPartitions {
            name: name.into(),
            count,
            assignments: assignments.map(|a| {
                a.into_iter()
                    .map(|r| r.into_iter().map(BrokerId).collect())
                    .collect()
            }),
        };
        let plan =
            plan_create_partitions(&image, &[ask("t", 4, None), ask("missing", 2, None)], false);
        assert_eq!(plan.results[0], Ok(()));
        assert_eq!(
            plan.results[1],
            Err((ErrorCode::UnknownTopicOrPartition, None))
        );
        let added: Vec<(i32, Vec<BrokerId>)> = plan
            .records
            .iter()
            .map(|r| match r {
                MetadataRecord::Partition {
                    partition,
                    assignment,
                    ..
                } => (*partition, assignment.replicas.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        // Two more, RF 2 as partition 0, continuing the stripe.
        assert_eq!(
            added,
            vec![
                (2, vec![BrokerId(3), BrokerId(1)]),
                (3, vec![BrokerId(1), BrokerId(2)])
            ]
        );
        let refusals =
            plan_create_partitions(&image, &[ask("t", 1, None), ask("t", 2, None)], false);
        assert_eq!(
            refusals.results[0].as_ref().unwrap_err().0,
            ErrorCode::InvalidRequest
        );
        let one = |a| {
            plan_create_partitions(&image, &[a], false)
                .results
                .remove(0)
        };
        assert_eq!(
            one(ask("t", 1, None)),
            Err((
                ErrorCode::InvalidPartitions,
                Some(
                    "The topic t currently has 2 partition(s); 1 would not be an increase.".into()
                )
            ))
        );
        assert_eq!(
            one(ask("t", 2, None)),
            Err((
                ErrorCode::InvalidPartitions,
                Some("Topic already has 2 partition(s).".into())
            ))
        );
        assert_eq!(
            one(ask("t", 4, Some(vec![vec![1, 2]]))),
            Err((ErrorCode::InvalidReplicaAssignment, Some("Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified.".into())))
        );
        assert_eq!(
            one(ask("t", 3, Some(vec![vec![1, 9]]))).unwrap_err().0,
            ErrorCode::InvalidReplicaAssignment
        );
        assert_eq!(
            one(ask("t", 3, Some(vec![vec![3]]))).unwrap_err().0,
            ErrorCode::InvalidReplicaAssignment
        );
        let validated = plan_create_partitions(&image, &[ask("t", 3, None)], true);
        assert!(validated.results[0].is_ok() && validated.records.is_empty());
    }

    #[test]
    fn with_racks_every_partition_spans_the_racks() {
        let mut image = image_with(&[1, 2, 3], "t", &[&[1]]);
        for (id, rack) in [(1, "east"), (2, "west"), (3, "west")] {
            image.brokers.get_mut(&BrokerId(id)).unwrap().rack = Some(rack.into());
        }
        let racks = racks_of(&image);
        assert_eq!(
            racks,
            vec![vec![BrokerId(1)], vec![BrokerId(2), BrokerId(3)]]
        );
        let rack = |b: &BrokerId| image.brokers[b].rack.clone();
        let assigned = assign_replicas_from(&racks, 0, 6, 2);
        for replicas in &assigned {
            assert_ne!(rack(&replicas[0]), rack(&replicas[1]), "{assigned:?}");
        }
        // Every broker leads some partition.
        let leaders: BTreeSet<BrokerId> = assigned.iter().map(|r| r[0]).collect();
        assert_eq!(leaders.len(), 3, "{assigned:?}");
        // RF 3 over two racks: all three brokers, no broker twice.
        for replicas in assign_replicas_from(&racks, 0, 4, 3) {
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        }
        // Without racks: the plain stripe, by id.
        let plain = image_with(&[3, 1, 2], "t", &[&[1]]);
        assert_eq!(
            assign_replicas_from(&racks_of(&plain), 0, 3, 2),
            assign_replicas(&[BrokerId(1), BrokerId(2), BrokerId(3)], 3, 2)
        );
    }

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

    #[test]
    fn alter_isr_is_checked_as_kafka_checks_alter_partition() {
        let image = image_with(&[1, 2, 3], "t", &[&[1, 2, 3]]);
        let t = image.topic("t").unwrap().id;
        let ask = |leader: i32, leader_epoch: i32, partition_epoch: i32, isr: &[i32]| AlterIsr {
            leader: BrokerId(leader),
            topic_id: t,
            partition: 0,
            leader_epoch,
            partition_epoch,
            isr: isr.iter().map(|b| BrokerId(*b)).collect(),
        };
        let records = plan_alter_isr(&image, &ask(1, 0, 0, &[1, 2])).unwrap();
        let mut next = image.clone();
        for r in &records {
            next.apply(r).unwrap();
        }
        let a = next.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!(a.isr, vec![BrokerId(1), BrokerId(2)]);
        assert_eq!((a.leader_epoch.0, a.partition_epoch), (0, 1));
        let refused = |change: AlterIsr| plan_alter_isr(&next, &change).unwrap_err();
        assert_eq!(refused(ask(2, 0, 1, &[2])), ErrorCode::NotLeaderOrFollower);
        assert_eq!(refused(ask(1, 3, 1, &[1])), ErrorCode::FencedLeaderEpoch);
        assert_eq!(
            refused(ask(1, 0, 0, &[1])),
            ErrorCode::InvalidUpdateVersion,
            "a stale state"
        );
        assert_eq!(
            refused(ask(1, 0, 1, &[2])),
            ErrorCode::IneligibleReplica,
            "without the leader"
        );
        assert_eq!(
            refused(ask(1, 0, 1, &[1, 4])),
            ErrorCode::IneligibleReplica,
            "not a replica"
        );
        let mut fenced = next.clone();
        fenced.brokers.get_mut(&BrokerId(3)).unwrap().fenced = true;
        assert_eq!(
            plan_alter_isr(&fenced, &ask(1, 0, 1, &[1, 2, 3])).unwrap_err(),
            ErrorCode::IneligibleReplica,
            "a fenced broker does not join"
        );
        assert_eq!(
            plan_alter_isr(&next, &ask(1, 0, 1, &[1, 2, 3]))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn unclean_election_only_where_allowed() {
        let mut image = image_with(&[1, 2, 3], "t", &[&[1, 2, 3]]);
        let mut t = TopicMeta::clone(image.topic("t").unwrap());
        t.partitions[0].isr = vec![BrokerId(1)];
        image.insert(t);
        let after = |image: &ClusterMetadata, records: Vec<MetadataRecord>| {
            let mut next = image.clone();
            for r in &records {
                next.apply(r).unwrap();
            }
            next.topic("t").unwrap().partitions[0].clone()
        };
        let clean = after(&image, plan_fence(&image, BrokerId(1), &|_| false));
        assert_eq!((clean.leader, clean.isr.clone()), (None, vec![BrokerId(1)]));
        let unclean = after(&image, plan_fence(&image, BrokerId(1), &|_| true));
        assert_eq!(
            (unclean.leader, unclean.isr),
            (Some(BrokerId(2)), vec![BrokerId(2)])
        );
        assert_eq!(unclean.leader_epoch.0, 1);

        // Offline, its last in-sync replica gone: a returning out-of-sync replica
        // leads only if allowed; the in-sync one always.
        let mut offline = image.clone();
        for r in plan_fence(&image, BrokerId(1), &|_| false) {
            offline.apply(&r).unwrap();
        }
        offline.brokers.get_mut(&BrokerId(3)).unwrap().fenced = true;
        let waits = after(&offline, plan_unfence(&offline, BrokerId(3), &|_| false));
        assert_eq!(waits.leader, None);
        let elected = after(&offline, plan_unfence(&offline, BrokerId(3), &|_| true));
        assert_eq!(
            (elected.leader, elected.isr),
            (Some(BrokerId(3)), vec![BrokerId(3)])
        );
        let back = after(&offline, plan_unfence(&offline, BrokerId(1), &|_| false));
        assert_eq!(
            (back.leader, back.isr),
            (Some(BrokerId(1)), vec![BrokerId(1)])
        );
        let mut t = TopicMeta::clone(image.topic("t").unwrap());
        t.configs
            .insert("unclean.leader.election.enable".into(), "true".into());
        assert!(unclean_election(&t, false) && !unclean_election(image.topic("t").unwrap(), false));
        assert!(unclean_election(image.topic("t").unwrap(), true));
    }
}

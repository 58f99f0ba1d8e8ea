//! What the active controller does, on the controller core of the node that leads
//! the metadata quorum: it answers brokers' requests (its own node's directly, other
//! nodes' over the controller listener) by planning records against the published
//! image under the controller's gate, proposing them, and answering once they are
//! published here. It fences brokers whose heartbeats stop, and, sooner, those a
//! follower reports unreachable whose listener refuses this controller too; it
//! elects leaders when asked, and returns leaderships to preferred replicas.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use uuid::Uuid;

use super::Core;
use crate::cluster::config_changes::plan_alter_configs;
use crate::cluster::controller::{
    plan_alter_isr, plan_create_partitions, plan_fence, plan_producer_ids, plan_unfence,
    unclean_election, DeleteResult, NewTopic, TopicResult,
};
use crate::cluster::controller::{AdminResult, Plan};
use crate::cluster::leader_election::{
    plan_elect_leaders, plan_preferred_leaders, BALANCE_ELECTIONS_MAX,
};
use crate::cluster::metadata::ClusterMetadata;
use crate::cluster::metadata::{BrokerInfo, TopicMeta};
use crate::cluster::quorum::ProposeError;
use crate::cluster::records::MetadataRecord;
use crate::cluster::rpc::{ControllerRequest, ControllerResponse};
use crate::ids::BrokerId;
use crate::protocol::ErrorCode;

/// How often the active controller looks for expired broker sessions.
const FENCE_CHECK: Duration = Duration::from_millis(250);

fn refused<R>(n: usize, e: &ProposeError) -> Vec<Result<R, (ErrorCode, String)>> {
    let code = match e {
        ProposeError::NotController => ErrorCode::NotController,
        ProposeError::Stopped => ErrorCode::UnknownServerError,
    };
    (0..n).map(|_| Err((code, e.to_string()))).collect()
}

fn with_failure<R>(
    results: Vec<Result<R, (ErrorCode, String)>>,
    e: &ProposeError,
) -> Vec<Result<R, (ErrorCode, String)>> {
    let failed = refused(results.len(), e);
    results
        .into_iter()
        .zip(failed)
        .map(|(r, f)| r.and(f))
        .collect()
}

/// Answers a request from a broker (`ControllerResponse::NotController` unless this
/// node is the active controller).
pub async fn handle(core: &Rc<Core>, request: ControllerRequest) -> ControllerResponse {
    if !core.controller().quorum.is_active() {
        return ControllerResponse::NotController;
    }
    match request {
        ControllerRequest::Register { broker } => match register(core, broker).await {
            Ok(epoch) => ControllerResponse::Registered { epoch },
            Err(e) => failure(e),
        },
        ControllerRequest::Heartbeat { id, epoch } => match heartbeat(core, id, epoch).await {
            Ok(stale) => ControllerResponse::Heartbeat { stale },
            Err(e) => failure(e),
        },
        ControllerRequest::CreateTopics {
            topics,
            validate_only,
        } => ControllerResponse::Created(create_topics(core, topics, validate_only).await),
        ControllerRequest::DeleteTopics { topics } => {
            ControllerResponse::Deleted(delete_topics(core, topics).await)
        }
        ControllerRequest::CreatePartitions {
            topics,
            validate_only,
        } => {
            let results = decide_each(core, topics.len(), |image| {
                plan_create_partitions(image, &topics, validate_only)
            })
            .await;
            for (t, r) in topics.iter().zip(&results) {
                if r.is_ok() && !validate_only {
                    info!(topic = %t.name, partitions = t.count, "created partitions");
                }
            }
            ControllerResponse::Partitioned(results)
        }
        ControllerRequest::AlterConfigs {
            entries,
            incremental,
            validate_only,
        } => {
            let results = decide_each(core, entries.len(), |image| {
                plan_alter_configs(image, &entries, incremental, validate_only)
            })
            .await;
            for (e, r) in entries.iter().zip(&results) {
                if r.is_ok() && !validate_only {
                    info!(resource = ?e.resource, ops = ?e.ops, "altered configs");
                }
            }
            ControllerResponse::Altered(results)
        }
        ControllerRequest::AlterPartition(change) => {
            let decided = decide(core, |image| match plan_alter_isr(image, &change) {
                Ok(records) => (records, Ok(())),
                Err(code) => (Vec::new(), Err(code)),
            })
            .await;
            match decided {
                Ok(result) => {
                    if result.is_ok() {
                        info!(topic_id = %change.topic_id, partition = change.partition, isr = ?change.isr, "ISR changed");
                    }
                    ControllerResponse::PartitionAltered(result)
                }
                Err(e) => failure(e),
            }
        }
        ControllerRequest::ControlledShutdown { id, epoch } => {
            // A clean stop never elects uncleanly: the partition waits for it.
            match fence(core, id, Some(epoch), &|_| false).await {
                Ok(moved) => {
                    if moved {
                        info!(broker = %id, epoch, "fenced a broker that is stopping; its leaderships moved");
                    }
                    ControllerResponse::ShutDown
                }
                Err(e) => failure(e),
            }
        }
        ControllerRequest::ReportUnreachable {
            reporter,
            broker,
            epoch,
        } => match check_reported(core, reporter, broker, epoch).await {
            Ok(fenced) => ControllerResponse::Checked { fenced },
            Err(e) => failure(e),
        },
        ControllerRequest::ElectLeaders {
            election,
            partitions,
        } => {
            let decided = decide(core, |image| {
                plan_elect_leaders(image, election, partitions.as_deref())
            })
            .await;
            match decided {
                Ok(results) => {
                    let elected: Vec<_> = results
                        .iter()
                        .flat_map(|(t, ps)| {
                            ps.iter()
                                .filter(|(_, r)| r.is_ok())
                                .map(move |(p, _)| format!("{t}-{p}"))
                        })
                        .collect();
                    if !elected.is_empty() {
                        info!(?election, partitions = ?elected, "elected leaders as asked");
                    }
                    ControllerResponse::Elected(results)
                }
                Err(e) => failure(e),
            }
        }
        ControllerRequest::AllocateProducerIds { broker } => {
            match allocate_producer_ids(core, broker).await {
                Ok(next) => ControllerResponse::ProducerIds { next },
                Err(e) => failure(e),
            }
        }
    }
}

/// Whether a topic may elect uncleanly: its config, else this controller's setting
/// (dynamic defaults included).
fn unclean_policy(core: &Core) -> impl Fn(&TopicMeta) -> bool {
    let default = core.metadata.load().config.unclean_leader_election_enable;
    move |t| unclean_election(t, default)
}

fn failure(e: ProposeError) -> ControllerResponse {
    match e {
        ProposeError::NotController => ControllerResponse::NotController,
        ProposeError::Stopped => ControllerResponse::Failed(e.to_string()),
    }
}

/// Proposes what `plan` makes of the published image, under the gate.
async fn decide<R>(
    core: &Rc<Core>,
    plan: impl FnOnce(&crate::cluster::metadata::ClusterMetadata) -> (Vec<MetadataRecord>, R),
) -> Result<R, ProposeError> {
    let controller = core.controller();
    let _permit = controller.lock().await.ok_or(ProposeError::Stopped)?;
    if !controller.quorum.is_active() {
        return Err(ProposeError::NotController);
    }
    let image = core.metadata.load().cluster.clone();
    let (mut records, result) = plan(&image);
    if !records.is_empty() {
        if image.cluster_id.is_empty() {
            // The first change of a new cluster names it.
            let id = controller.cluster_id();
            records.insert(0, MetadataRecord::ClusterId { id });
        }
        controller.quorum.propose(records).await?;
    }
    Ok(result)
}

/// Decides a change planned per entry (`plan`): one result per entry, all refused if
/// the records cannot be committed.
async fn decide_each(
    core: &Rc<Core>,
    n: usize,
    plan: impl FnOnce(&ClusterMetadata) -> Plan<AdminResult>,
) -> Vec<AdminResult> {
    let decided = decide(core, |image| {
        let plan = plan(image);
        (plan.records, plan.results)
    })
    .await;
    decided.unwrap_or_else(|e| {
        refused(n, &e)
            .into_iter()
            .map(|r| r.map_err(|(c, m)| (c, Some(m))))
            .collect()
    })
}

/// A broker starts: its new epoch (one past its last), unfenced.
pub async fn register(core: &Rc<Core>, mut broker: BrokerInfo) -> Result<i64, ProposeError> {
    let id = broker.id;
    let epoch = decide(core, |image| {
        broker.epoch = image.brokers.get(&broker.id).map_or(0, |b| b.epoch) + 1;
        broker.fenced = false;
        let epoch = broker.epoch;
        let mut records = vec![MetadataRecord::RegisterBroker {
            broker: broker.clone(),
        }];
        // Partitions left without a leader while it was away come back to it.
        records.extend(
            plan_unfence(&with_broker(image, &broker), id, &unclean_policy(core))
                .into_iter()
                .skip(1),
        );
        (records, epoch)
    })
    .await?;
    core.controller().heard_from(id, Instant::now());
    info!(broker = %id, epoch, "registered a broker");
    Ok(epoch)
}

/// The image with `broker` registered (for planning what follows its registration).
fn with_broker(
    image: &crate::cluster::metadata::ClusterMetadata,
    broker: &BrokerInfo,
) -> crate::cluster::metadata::ClusterMetadata {
    let mut next = image.clone();
    next.brokers.insert(broker.id, broker.clone());
    next
}

/// A broker's heartbeat; `Ok(true)` if its epoch is not the registered one. A fenced
/// broker that heartbeats is unfenced.
async fn heartbeat(core: &Rc<Core>, id: BrokerId, epoch: i64) -> Result<bool, ProposeError> {
    let image = core.metadata.load().cluster.clone();
    let Some(b) = image.brokers.get(&id).filter(|b| b.epoch == epoch) else {
        return Ok(true);
    };
    core.controller().heard_from(id, Instant::now());
    if b.fenced {
        decide(core, |image| {
            let fenced = image
                .brokers
                .get(&id)
                .is_some_and(|b| b.fenced && b.epoch == epoch);
            (
                if fenced {
                    plan_unfence(image, id, &unclean_policy(core))
                } else {
                    Vec::new()
                },
                (),
            )
        })
        .await?;
        info!(broker = %id, epoch, "unfenced a broker that heartbeats again");
    }
    Ok(false)
}

async fn allocate_producer_ids(core: &Rc<Core>, broker: BrokerId) -> Result<i64, ProposeError> {
    decide(core, |image| {
        let (record, next) = plan_producer_ids(image, broker);
        (vec![record], next)
    })
    .await
}

/// Creates topics; one result per request entry, in order.
pub async fn create_topics(
    core: &Rc<Core>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<TopicResult> {
    let n = topics.len();
    let decided = decide(core, |image| {
        let plan = core.controller().plan_create(image, &topics, validate_only);
        (plan.records, plan.results)
    })
    .await;
    match decided {
        Ok(results) => {
            if !validate_only {
                for t in results.iter().flatten() {
                    info!(topic = %t.name, id = %t.id, partitions = t.partitions.len(), "created topic");
                }
            }
            results
        }
        Err(e) => refused(n, &e),
    }
}

/// Deletes topics by name or id; one result per entry, in order.
pub async fn delete_topics(
    core: &Rc<Core>,
    topics: Vec<(Option<String>, Uuid)>,
) -> Vec<DeleteResult> {
    let n = topics.len();
    let mut planned = Vec::new();
    let decided = decide(core, |image| {
        let plan = core.controller().plan_delete(image, &topics);
        planned = plan.results.clone();
        (plan.records, plan.results)
    })
    .await;
    match decided {
        Ok(results) => {
            for (name, id) in results.iter().flatten() {
                info!(topic = %name, id = %id, "deleted topic");
            }
            results
        }
        Err(e) if planned.is_empty() => refused(n, &e),
        Err(e) => with_failure(planned, &e),
    }
}

/// How long the check of a reported broker waits for its listener to answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Fences incarnation `epoch` (`None`: any) of broker `id` if it is still live
/// (unfenced, that epoch): its leaderships move to in-sync replicas, or uncleanly
/// where `unclean` allows it. Whether it was fenced now.
async fn fence(
    core: &Rc<Core>,
    id: BrokerId,
    epoch: Option<i64>,
    unclean: &dyn Fn(&TopicMeta) -> bool,
) -> Result<bool, ProposeError> {
    decide(core, |image| {
        let live = image
            .brokers
            .get(&id)
            .is_some_and(|b| !b.fenced && epoch.is_none_or(|e| b.epoch == e));
        if live {
            (plan_fence(image, id, unclean), true)
        } else {
            (Vec::new(), false)
        }
    })
    .await
}

/// A follower found broker `id`'s listener refusing or resetting its connection.
/// The controller connects itself: a refusal means no process listens there any
/// more (a crash, a kill), so incarnation `epoch` is fenced now instead of after
/// `broker.session.timeout.ms`. Anything else (it answers, or the network is slow
/// or cut) leaves the decision to the heartbeat session, as in Kafka: one follower's
/// report alone never fences a broker.
async fn check_reported(
    core: &Rc<Core>,
    reporter: BrokerId,
    id: BrokerId,
    epoch: i64,
) -> Result<bool, ProposeError> {
    let image = core.metadata.load().cluster.clone();
    let Some(b) = image
        .brokers
        .get(&id)
        .filter(|b| !b.fenced && b.epoch == epoch && id != core.node_id())
    else {
        return Ok(false);
    };
    // The connection, if any, is closed at once.
    let refused = match super::connect_to_broker(&b.host, b.port, PROBE_TIMEOUT).await {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    };
    if !refused {
        return Ok(false);
    }
    let fenced = fence(core, id, Some(epoch), &unclean_policy(core)).await?;
    if fenced {
        warn!(broker = %id, epoch, reporter = %reporter, "fenced a broker whose listener refuses connections");
    }
    Ok(fenced)
}

/// While this node is the active controller and `auto.leader.rebalance.enable` is
/// set: every `leader.imbalance.check.interval.seconds`, leaderships go back to their
/// preferred replicas where those are in sync and live (as Kafka's KRaft controller,
/// which does not use `leader.imbalance.per.broker.percentage`). Runs on the
/// controller core for the life of the process.
pub async fn balance_leaders(core: Rc<Core>) {
    let settings = &core.config.cluster;
    if !settings.auto_leader_rebalance_enable {
        return;
    }
    let interval = Duration::from_millis(settings.leader_imbalance_check_interval_ms);
    loop {
        glommio::timer::sleep(interval).await;
        // A full pass may leave more for the next one at once (Kafka reschedules
        // immediately).
        loop {
            if !core.controller().quorum.is_active() {
                break;
            }
            match decide(&core, |image| (plan_preferred_leaders(image), ())).await {
                Ok(()) => {}
                Err(e) => {
                    warn!(error = %e, "balancing leaderships failed");
                    break;
                }
            }
            let image = core.metadata.load().cluster.clone();
            if plan_preferred_leaders(&image).len() < BALANCE_ELECTIONS_MAX {
                break;
            }
        }
    }
}

/// While this node is the active controller: fences brokers whose session expired.
/// Runs on the controller core for the life of the process.
pub async fn fence_expired_brokers(core: Rc<Core>) {
    let timeout = Duration::from_millis(core.config.cluster.session_timeout_ms);
    let mut was_active = false;
    loop {
        glommio::timer::sleep(FENCE_CHECK).await;
        let controller = core.controller();
        let active = controller.quorum.is_active();
        if active && !was_active {
            // A new active controller gives every broker a full session.
            controller.reset_heartbeats();
        }
        was_active = active;
        if !active {
            continue;
        }
        let image = core.metadata.load().cluster.clone();
        for id in controller.expired(&image, core.node_id(), Instant::now(), timeout) {
            match fence(&core, id, None, &unclean_policy(&core)).await {
                Ok(true) => {
                    warn!(broker = %id, ?timeout, "fenced a broker whose heartbeats stopped")
                }
                Ok(false) => {}
                Err(e) => warn!(broker = %id, error = %e, "fencing a broker failed"),
            }
        }
    }
}

//! How a broker reaches the active controller, from its controller core: directly
//! when this node leads the quorum, else over the controller listener of the node
//! that does (every node follows the quorum, so it knows the leader). A request
//! that finds no active controller is retried until `ASK_DEADLINE`, as Kafka's
//! brokers retry a controller that moved.
//!
//! Also the broker's side of its lifecycle: register once per process start, then
//! heartbeat; register again if the controller no longer knows this incarnation.

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use uuid::Uuid;

use super::active_controller;
use super::Core;
use crate::cluster::controller::{
    AdminResult, AlterConfigs, AlterIsr, DeleteResult, NewPartitions, NewTopic, PartitionsResult,
    TopicResult,
};
use crate::cluster::leader_election::{ElectionResults, ElectionType};
use crate::cluster::metadata::BrokerInfo;
use crate::cluster::quorum::{node_of, ProposeError};
use crate::cluster::rpc::{ControllerRequest, ControllerResponse};
use crate::cluster::transport;
use crate::ids::BrokerId;
use crate::protocol::ErrorCode;

/// How long a request looks for an active controller before it fails.
const ASK_DEADLINE: Duration = Duration::from_secs(15);
const ASK_RETRY: Duration = Duration::from_millis(50);

/// The controller listener of voter `id`.
fn voter_addr(core: &Core, id: BrokerId) -> Option<SocketAddr> {
    let v = core.config.cluster.voters.iter().find(|v| v.id == id.0)?;
    (v.host.as_str(), v.port).to_socket_addrs().ok()?.next()
}

/// Sends `request` to the active controller (this node's own, if it is); retries
/// while there is none or it moves, until `ASK_DEADLINE`.
pub async fn ask(core: &Rc<Core>, request: ControllerRequest) -> ControllerResponse {
    ask_within(core, request, transport::RPC_TIMEOUT).await
}

/// As `ask`, with each attempt at a remote controller given up after `attempt`
/// (then the leader is looked up again).
async fn ask_within(
    core: &Rc<Core>,
    request: ControllerRequest,
    attempt: Duration,
) -> ControllerResponse {
    let deadline = Instant::now() + ASK_DEADLINE;
    loop {
        let quorum = &core.controller().quorum;
        let answer = if quorum.is_active() {
            active_controller::handle(core, request.clone()).await
        } else {
            match quorum.status().leader.map(node_of) {
                Some(leader) if leader != core.node_id() => match voter_addr(core, leader) {
                    Some(addr) => transport::call(addr, &request, attempt)
                        .await
                        .unwrap_or(ControllerResponse::NotController),
                    None => ControllerResponse::NotController,
                },
                // No leader yet, or this node leads but has not caught up.
                _ => ControllerResponse::NotController,
            }
        };
        match answer {
            ControllerResponse::NotController if Instant::now() < deadline => {
                glommio::timer::sleep(ASK_RETRY).await;
            }
            answer => return answer,
        }
    }
}

fn unexpected<R>(n: usize, answer: ControllerResponse) -> Vec<Result<R, (ErrorCode, String)>> {
    let (code, message) = match answer {
        ControllerResponse::NotController => (
            ErrorCode::NotController,
            ProposeError::NotController.to_string(),
        ),
        ControllerResponse::Failed(m) => (ErrorCode::UnknownServerError, m),
        other => (
            ErrorCode::UnknownServerError,
            format!("unexpected {other:?}"),
        ),
    };
    (0..n).map(|_| Err((code, message.clone()))).collect()
}

/// Creates topics; one result per request entry, in order. Runs on the controller
/// core.
pub async fn create_topics(
    core: &Rc<Core>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<TopicResult> {
    let n = topics.len();
    let request = ControllerRequest::CreateTopics {
        topics,
        validate_only,
    };
    match ask(core, request).await {
        ControllerResponse::Created(results) if results.len() == n => results,
        other => unexpected(n, other),
    }
}

/// Deletes topics by name or id; one result per entry, in order. Runs on the
/// controller core.
pub async fn delete_topics(
    core: &Rc<Core>,
    topics: Vec<(Option<String>, Uuid)>,
) -> Vec<DeleteResult> {
    let n = topics.len();
    match ask(core, ControllerRequest::DeleteTopics { topics }).await {
        ControllerResponse::Deleted(results) if results.len() == n => results,
        other => unexpected(n, other),
    }
}

/// Adds partitions to topics; one result per request entry, in order. Runs on the
/// controller core.
pub async fn create_partitions(
    core: &Rc<Core>,
    topics: Vec<NewPartitions>,
    validate_only: bool,
) -> Vec<PartitionsResult> {
    let n = topics.len();
    let request = ControllerRequest::CreatePartitions {
        topics,
        validate_only,
    };
    match ask(core, request).await {
        ControllerResponse::Partitioned(results) if results.len() == n => results,
        other => unexpected(n, other)
            .into_iter()
            .map(|r: Result<(), _>| r.map_err(|(c, m)| (c, Some(m))))
            .collect(),
    }
}

/// Alters topic and dynamic broker configs; one result per request entry, in order.
/// Runs on the controller core.
pub async fn alter_configs(
    core: &Rc<Core>,
    entries: Vec<AlterConfigs>,
    incremental: bool,
    validate_only: bool,
) -> Vec<AdminResult> {
    let n = entries.len();
    let request = ControllerRequest::AlterConfigs {
        entries,
        incremental,
        validate_only,
    };
    match ask(core, request).await {
        ControllerResponse::Altered(results) if results.len() == n => results,
        other => unexpected(n, other)
            .into_iter()
            .map(|r: Result<(), _>| r.map_err(|(c, m)| (c, Some(m))))
            .collect(),
    }
}

/// Elects leaders (ElectLeaders); the controller's answer per topic and partition, or
/// why there is none. Runs on the controller core.
pub async fn elect_leaders(
    core: &Rc<Core>,
    election: ElectionType,
    partitions: Option<Vec<(String, Vec<i32>)>>,
) -> Result<ElectionResults, (ErrorCode, String)> {
    let request = ControllerRequest::ElectLeaders {
        election,
        partitions,
    };
    match ask(core, request).await {
        ControllerResponse::Elected(results) => Ok(results),
        other => Err(unexpected::<()>(1, other).remove(0).unwrap_err()),
    }
}

/// Asks the active controller for a new ISR. Runs on the controller core.
pub async fn alter_isr(core: &Rc<Core>, change: AlterIsr) -> Result<(), ErrorCode> {
    match ask(core, ControllerRequest::AlterPartition(change)).await {
        ControllerResponse::PartitionAltered(result) => result,
        ControllerResponse::NotController => Err(ErrorCode::NotController),
        _ => Err(ErrorCode::UnknownServerError),
    }
}

/// Tells the active controller that broker `broker` (incarnation `epoch`) refused or
/// reset this node's connection; whether the controller fenced it. Runs on the
/// controller core.
pub async fn report_unreachable(core: &Rc<Core>, broker: BrokerId, epoch: i64) -> bool {
    let request = ControllerRequest::ReportUnreachable {
        reporter: core.node_id(),
        broker,
        epoch,
    };
    matches!(
        ask(core, request).await,
        ControllerResponse::Checked { fenced: true }
    )
}

/// Hands out a new producer id from this node's block, asking the controller for a
/// new block when it runs out. Runs on the controller core.
pub async fn allocate_producer_id(core: &Rc<Core>) -> Result<i64, String> {
    let controller = core.controller();
    if let Some(id) = controller.take_producer_id() {
        return Ok(id);
    }
    let request = ControllerRequest::AllocateProducerIds {
        broker: core.node_id(),
    };
    match ask(core, request).await {
        ControllerResponse::ProducerIds { next } => {
            // Another allocation may have taken a block meanwhile; the newer wins,
            // and ids of the older are simply never used.
            controller.set_producer_id_block(next);
            controller
                .take_producer_id()
                .ok_or_else(|| "an empty block of producer ids".to_string())
        }
        other => Err(format!("no producer ids: {other:?}")),
    }
}

/// Before a clean stop: stops heartbeating (a heartbeat would unfence this broker
/// again), asks the active controller to fence it, which moves its leaderships to
/// other in-sync replicas, and returns once this node's view shows it fenced, or
/// after `wait`. Skipped when no other broker could take over or the quorum has no
/// leader. Runs on the controller core.
pub async fn controlled_shutdown(core: &Rc<Core>, wait: Duration) {
    core.stopping.set(true);
    let me = core.node_id();
    let view = core.metadata.load();
    let others = view.cluster.live_brokers().any(|b| b.id != me);
    let Some(epoch) = view.cluster.brokers.get(&me).map(|b| b.epoch) else {
        return;
    };
    // Nobody to take over, or no quorum to record it: stop as before.
    if !others || core.controller().quorum.status().leader.is_none() {
        return;
    }
    let deadline = Instant::now() + wait;
    let asked = glommio::timer::timeout(wait, async {
        Ok(ask(
            core,
            ControllerRequest::ControlledShutdown { id: me, epoch },
        )
        .await)
    })
    .await;
    if !matches!(asked, Ok(ControllerResponse::ShutDown)) {
        warn!(answer = ?asked.ok(), "controlled shutdown was not done; stopping anyway");
        return;
    }
    while Instant::now() < deadline {
        let fenced = core
            .metadata
            .load()
            .cluster
            .brokers
            .get(&me)
            .is_none_or(|b| b.fenced);
        if fenced {
            info!("controlled shutdown: this broker leads nothing now");
            return;
        }
        glommio::timer::sleep(ASK_RETRY.min(Duration::from_millis(20))).await;
    }
    warn!("controlled shutdown: the fence did not reach this node in time; stopping anyway");
}

/// Registers this broker (a new incarnation), then heartbeats for the life of the
/// process, until it stops. Runs on the controller core.
pub async fn register_and_heartbeat(core: Rc<Core>) {
    let every = Duration::from_millis(core.config.cluster.heartbeat_interval_ms);
    let mut epoch = None;
    while !core.stopping.get() {
        match epoch {
            None => {
                let broker = BrokerInfo {
                    id: core.node_id(),
                    host: core.config.advertised.host.clone(),
                    port: core.config.advertised.port,
                    rack: core.config.cluster.rack.clone(),
                    epoch: 0,
                    fenced: false,
                };
                match ask(&core, ControllerRequest::Register { broker }).await {
                    ControllerResponse::Registered { epoch: e } => {
                        info!(broker = %core.node_id(), epoch = e, "registered with the controller");
                        epoch = Some(e);
                    }
                    other => warn!(answer = ?other, "registering this broker failed; retrying"),
                }
            }
            Some(e) => {
                let request = ControllerRequest::Heartbeat {
                    id: core.node_id(),
                    epoch: e,
                };
                // A heartbeat stuck on a frozen controller must not outlast the
                // session that a new controller starts: each attempt gets one
                // heartbeat interval, then the quorum's leader is looked up again.
                match ask_within(&core, request, every).await {
                    ControllerResponse::Heartbeat { stale: false } => {}
                    ControllerResponse::Heartbeat { stale: true } => {
                        warn!(
                            epoch = e,
                            "the controller does not know this incarnation; registering again"
                        );
                        epoch = None;
                        continue;
                    }
                    other => warn!(answer = ?other, "a heartbeat failed"),
                }
            }
        }
        glommio::timer::sleep(if epoch.is_some() { every } else { ASK_RETRY }).await;
    }
}

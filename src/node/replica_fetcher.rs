//! Replica fetchers: on each core, one task per leader broker that the core's
//! follower replicas copy from, pulling all of them in one Fetch per round over one
//! connection to that leader's client listener (Kafka's ReplicaFetcherThread, per
//! core and leader). Each round it takes the partitions to fetch from the current
//! view, so leadership changes reach it without a restart; with none left it ends.
//!
//! A leader whose listener refuses the fetcher's connection is reported to the
//! active controller (at most once per `REPORT_EVERY`), which checks it and fences it
//! at once if it is gone: failover then waits for no heartbeat session.
//!
//! A view that gives a running fetcher partitions its round in flight lacks (a new
//! topic, a new leadership) kicks it: it drops that round's connection and starts a
//! new one at once, rather than after the leader's `replica.fetch.wait.max.ms`, which
//! acks=all produces to the new partitions would otherwise wait out.
//!
//! Runs on the core that owns the follower logs (it appends to them directly), in
//! that core's replication task queue (`Core::replication_queue`).

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, Either};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use tracing::{debug, info, warn};

use super::view::MetadataView;
use super::{controller_client, Core, CONTROLLER_SHARD};
use crate::ids::BrokerId;
use crate::replication::follower::{self, Applied, Followed};

/// Connecting to a leader gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer may take the fetch's wait and this much more before the connection is
/// given up (Kafka's `replica.socket.timeout.ms` is 30 s).
const ANSWER_SLACK: Duration = Duration::from_secs(30);
/// How often a new fetcher looks for the view it was started for.
const PUBLISH_POLL: Duration = Duration::from_millis(5);
/// Largest answer frame accepted from a leader.
const FRAME_MAX: usize = 256 << 20;
/// A leader that keeps refusing connections is reported again after this long (a
/// new active controller may not have heard the first report).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How the reconciler tells a running fetcher that the view of `version` is being
/// published.
pub struct Kick {
    version: Cell<u64>,
    wake: LocalSender<()>,
}

impl Kick {
    fn new(version: u64) -> (Rc<Kick>, LocalReceiver<()>) {
        let (wake, woken) = local_channel::new_bounded(1);
        let kick = Kick {
            version: Cell::new(version),
            wake,
        };
        (Rc::new(kick), woken)
    }

    fn send(&self, version: u64) {
        self.version.set(self.version.get().max(version));
        // Full: a wake is pending already, and it will read the newest version.
        let _ = self.wake.try_send(());
    }
}

/// The partitions on this core that follow `leader`, with their open logs.
fn followed(core: &Core, view: &MetadataView, leader: BrokerId) -> Vec<Followed> {
    let me = core.node_id();
    let mut out = Vec::new();
    for (topic, p) in view.replicas_on(core.id()) {
        let Some(a) = topic.partition(p) else {
            continue;
        };
        if a.leader != Some(leader) || leader == me {
            continue;
        }
        if let Some(log) = core.log(&(topic.id, p)) {
            out.push(Followed {
                topic_id: topic.id,
                partition: p,
                leader_epoch: a.leader_epoch,
                log,
            });
        }
    }
    out
}

/// Starts a fetcher for each leader that this core's followers copy from and that
/// has none yet. Runs on the core.
pub fn start(core: &Rc<Core>, view: &MetadataView) {
    let me = core.node_id();
    let mut leaders: Vec<BrokerId> = view
        .replicas_on(core.id())
        .iter()
        .filter_map(|(t, p)| t.partition(*p).and_then(|a| a.leader))
        .filter(|l| *l != me)
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    let version = view.cluster.version;
    for leader in leaders {
        if let Some(kick) = core.fetchers.borrow().get(&leader) {
            kick.send(version);
            continue;
        }
        let (kick, woken) = Kick::new(version);
        core.fetchers.borrow_mut().insert(leader, kick.clone());
        {
            let fetcher = run(core.clone(), leader, kick, woken);
            match glommio::spawn_local_into(fetcher, core.replication_queue()) {
                Ok(task) => {
                    task.detach();
                }
                Err(e) => {
                    warn!(leader = leader.0, error = %e, "starting a replica fetcher failed");
                    core.fetchers.borrow_mut().remove(&leader);
                }
            }
        }
    }
}

/// Fetches from `leader` for as long as this core has followers of it. Started
/// while the view of `kick.version` is being published: until it is, the published
/// view may not show the followers yet.
async fn run(core: Rc<Core>, leader: BrokerId, kick: Rc<Kick>, woken: LocalReceiver<()>) {
    let settings = core.config.replica_fetch;
    let backoff = Duration::from_millis(core.config.replica_fetch_backoff_ms);
    let mut connection: Option<TcpStream> = None;
    let mut correlation = 0i32;
    // After a failed round, reconnect at once: a dead leader's refusal is news.
    let mut reconnect_now = false;
    let mut last_report: Option<std::time::Instant> = None;
    info!(leader = leader.0, "replica fetcher started");
    loop {
        let view = core.metadata.load();
        let partitions = followed(&core, &view, leader);
        if partitions.is_empty() {
            if view.cluster.version < kick.version.get() {
                glommio::timer::sleep(PUBLISH_POLL).await;
                continue;
            }
            break;
        }
        let Some((addr, epoch)) = view
            .cluster
            .brokers
            .get(&leader)
            .filter(|b| !b.fenced)
            .map(|b| ((b.host.clone(), b.port), b.epoch))
        else {
            glommio::timer::sleep(backoff).await;
            continue;
        };
        if connection.is_none() {
            match super::connect_to_broker(&addr.0, addr.1, CONNECT_TIMEOUT).await {
                Ok(s) => connection = Some(s),
                Err(e) => {
                    debug!(leader = leader.0, error = %e, "cannot reach the leader; retrying");
                    let due = last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY);
                    if e.kind() == io::ErrorKind::ConnectionRefused && due {
                        last_report = Some(std::time::Instant::now());
                        report(&core, leader, epoch);
                    }
                    reconnect_now = false;
                    glommio::timer::sleep(backoff).await;
                    continue;
                }
            }
        }
        correlation = correlation.wrapping_add(1);
        let frame = follower::fetch_frame(core.node_id(), correlation, &partitions, settings);
        let wait = Duration::from_millis(settings.max_wait_ms as u64) + ANSWER_SLACK;
        let stream = connection.as_mut().expect("connected");
        let answer = {
            let round = std::pin::pin!(exchange(stream, frame, wait));
            let kicked =
                std::pin::pin!(gains_partitions(&core, leader, &kick, &woken, &partitions));
            match future::select(round, kicked).await {
                Either::Left((Ok(body), _)) => Some(follower::decode_response(body, correlation)),
                Either::Left((Err(e), _)) => Some(Err(e.to_string())),
                Either::Right(((), _)) => None,
            }
        };
        let Some(answer) = answer else {
            debug!(
                leader = leader.0,
                "new partitions to follow: starting a new round"
            );
            connection = None;
            continue;
        };
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                debug!(leader = leader.0, error = %e, "a replica fetch failed; reconnecting");
                connection = None;
                if !std::mem::replace(&mut reconnect_now, true) {
                    continue;
                }
                glommio::timer::sleep(backoff).await;
                continue;
            }
        };
        reconnect_now = false;
        let mut back_off = false;
        for topic in response.responses {
            for data in topic.partitions {
                let Some(f) = partitions
                    .iter()
                    .find(|f| f.topic_id == topic.topic_id && f.partition == data.partition_index)
                else {
                    continue;
                };
                match follower::apply(f, data).await {
                    Ok(Applied::Appended) | Ok(Applied::Truncated { .. }) => {}
                    Ok(Applied::Refused(code)) => {
                        debug!(
                            leader = leader.0,
                            partition = f.partition,
                            code,
                            "the leader refused a replica fetch"
                        );
                        back_off = true;
                    }
                    Err(e) => {
                        warn!(dir = %f.log.dir().display(), error = %e, "appending a replica's copy failed");
                        back_off = true;
                    }
                }
            }
        }
        if back_off {
            glommio::timer::sleep(backoff).await;
        }
    }
    core.fetchers.borrow_mut().remove(&leader);
    info!(
        leader = leader.0,
        "replica fetcher stopped: nothing left to follow there"
    );
}

/// Resolves once a published view has this core follow a partition from `leader`
/// that `fetching` lacks, or follow one at another leader epoch.
async fn gains_partitions(
    core: &Core,
    leader: BrokerId,
    kick: &Kick,
    woken: &LocalReceiver<()>,
    fetching: &[Followed],
) {
    loop {
        if woken.recv().await.is_none() {
            return future::pending().await;
        }
        while core.metadata.load().cluster.version < kick.version.get() {
            glommio::timer::sleep(PUBLISH_POLL).await;
        }
        let now = followed(core, &core.metadata.load(), leader);
        let gained = now.iter().any(|f| {
            !fetching.iter().any(|g| {
                g.topic_id == f.topic_id
                    && g.partition == f.partition
                    && g.leader_epoch == f.leader_epoch
            })
        });
        if gained {
            return;
        }
    }
}

/// Reports `leader` (incarnation `epoch`) unreachable to the active controller,
/// without waiting for the answer.
fn report(core: &Rc<Core>, leader: BrokerId, epoch: i64) {
    let core = core.clone();
    glommio::spawn_local(async move {
        let fenced = core
            .submit_to(CONTROLLER_SHARD, move |c| async move {
                controller_client::report_unreachable(&c, leader, epoch).await
            })
            .await;
        if matches!(fenced, Ok(true)) {
            info!(
                leader = leader.0,
                "reported the leader unreachable; the controller fenced it"
            );
        }
    })
    .detach();
}

/// Sends `frame` and reads the answer's body (after its length), within `wait`.
async fn exchange(stream: &mut TcpStream, frame: Bytes, wait: Duration) -> io::Result<Bytes> {
    let round = async {
        stream.write_all(&frame).await?;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > FRAME_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a fetch answer of {len} bytes"),
            ));
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Ok(Bytes::from(body))
    };
    glommio::timer::timeout(wait, async {
        round.await.map_err(glommio::GlommioError::from)
    })
    .await
    .map_err(|e| io::Error::new(io::ErrorKind::TimedOut, e.to_string()))
}

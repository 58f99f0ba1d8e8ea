//! Process runtime: one glommio executor per chosen CPU, pinned, joined by a channel
//! mesh; startup recovery; signals.
//!
//! Startup is two-phase so that no shard serves a client before every shard has opened
//! (and recovered) its partitions and bound its listener: each shard reports ready to
//! the main thread, which then releases them all. A failure in any shard stops the
//! process with the cause.

use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use tracing::{error, info, warn};

use crate::cluster::controller::{Controller, TopicDefaults};
use crate::cluster::metadata::ClusterMetadata;
use crate::cluster::quorum::{self, raft_id, Opened, QuorumSettings};
use crate::cluster::records::MetadataRecord;
use crate::cluster::store;
use crate::cluster::transport;
use crate::config::Config;
use crate::ids::BrokerId;
use crate::net::limits::ConnectionCounts;
use crate::node::reconciler::open_missing;
use crate::node::view::{MetadataView, ViewHandle};
use crate::node::{active_controller, controller_client, hw_checkpoint, publisher};
use crate::node::{Core, CONTROLLER_SHARD};
use crate::shard::{serve_jobs, Job, Mesh, ShardId, MESH_CHANNEL_CAPACITY};

/// Set by the signal thread; shards poll it.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);
/// Set by the controller core once a stopping node's leaderships have moved (or that
/// was not possible): the shards serve until then, so clients move without errors.
static LEADERSHIPS_MOVED: AtomicBool = AtomicBool::new(false);
/// How long a clean stop waits for its leaderships to move.
const CONTROLLED_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);
/// How long a clean shutdown may take before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Written in the log directory after a clean shutdown (every partition flushed,
/// sealed and its state recorded), removed at start before anything is appended: its
/// presence lets the next start skip the recovery scan, as Kafka's
/// `.kafka_cleanshutdown`.
const CLEAN_SHUTDOWN_MARKER: &str = ".ringlog-clean-shutdown";
/// How long a shard stops accepting after accept fails (out of descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How often each shard looks for partitions whose `flush.ms` has passed.
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("log directory {dir}: {source}")]
    LogDir { dir: String, source: std::io::Error },
    #[error("{0}")]
    Shard(String),
    #[error("cannot start the io_uring executor on CPU {cpu}: {reason} (is io_uring enabled, and is `ulimit -l` large enough? see tuning/)")]
    Executor { cpu: usize, reason: String },
}

/// io_uring registers buffers, which counts against RLIMIT_MEMLOCK. Raise it if we
/// may; otherwise say so plainly instead of failing obscurely later.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit/getrlimit read and write rlimit structs we own.
    let raised = unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 || {
            // Without CAP_SYS_RESOURCE, the soft limit can still go up to the hard one.
            libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut current);
            current.rlim_cur = current.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &current) == 0
                && current.rlim_max == libc::RLIM_INFINITY
        }
    };
    if !raised {
        info!(
            memlock_bytes = current.rlim_cur,
            "RLIMIT_MEMLOCK stays limited; glommio usually runs within it"
        );
    }
}

/// Every connection and every open segment, index and time index is a descriptor:
/// raise the soft limit to the hard one (systemd's LimitNOFILE sets the hard one).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write an rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    info!(open_files_max = limit.rlim_cur, "descriptor limit");
}

/// The other voters' controller listeners, by raft id.
fn quorum_peers(
    config: &Config,
) -> Result<std::collections::HashMap<u64, std::net::SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    config
        .cluster
        .voters
        .iter()
        .filter(|v| v.id != config.node_id)
        .map(|v| {
            let addr = (v.host.as_str(), v.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    format!(
                        "controller.quorum.voters: cannot resolve {}:{}",
                        v.host, v.port
                    )
                })?;
            Ok((raft_id(BrokerId(v.id)), addr))
        })
        .collect()
}

/// How often the metadata quorum ticks; elections start after 10 ticks without a
/// leader (randomised up to 20), and a leader heartbeats every 2.
const QUORUM_TICK: Duration = Duration::from_millis(50);

/// Opens the metadata quorum's log (formatting it on first start) and removes
/// directories of deleted topics. A log directory from before the quorum
/// (`ringlog-metadata.json`) is upgraded: its topics and producer ids become the new
/// log's first snapshot, and the file is renamed `*.upgraded`.
fn open_metadata(config: &Config) -> Result<(Opened, QuorumSettings, String), std::io::Error> {
    let dir = &config.log_dir;
    let me = BrokerId(config.node_id);
    std::fs::create_dir_all(dir)?;
    let cluster_id = store::ensure_meta_properties(dir, config.node_id)?;
    let settings = QuorumSettings {
        node_id: raft_id(me),
        voters: if config.cluster.voters.is_empty() {
            vec![raft_id(me)]
        } else {
            config
                .cluster
                .voters
                .iter()
                .map(|v| raft_id(BrokerId(v.id)))
                .collect()
        },
        tick: QUORUM_TICK,
        election_ticks: 10,
        heartbeat_ticks: 2,
    };
    let old = store::load(dir, me)?;
    let opened = quorum::open(dir, &settings, || match &old {
        Some(old) => {
            info!(
                topics = old.topics.len(),
                "upgrading {} into the metadata log",
                store::METADATA_FILE
            );
            let mut records = vec![MetadataRecord::ClusterId {
                id: cluster_id.clone(),
            }];
            records.extend(old.records());
            records
        }
        None => Vec::new(),
    })?;
    if old.is_some() {
        let from = dir.join(store::METADATA_FILE);
        std::fs::rename(
            &from,
            dir.join(format!("{}.upgraded", store::METADATA_FILE)),
        )?;
    }
    remove_stale_partition_dirs(dir, me, &opened.image)?;
    Ok((opened, settings, cluster_id))
}

fn remove_stale_partition_dirs(
    dir: &Path,
    me: BrokerId,
    image: &ClusterMetadata,
) -> std::io::Result<()> {
    let expected: std::collections::HashSet<String> = image
        .topics
        .values()
        .flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .filter(move |(_, a)| a.replicas.contains(&me))
                .map(move |(p, _)| format!("{}-{p}", t.name))
        })
        .collect();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let looks_like_partition = name
            .rsplit_once('-')
            .is_some_and(|(_, p)| p.parse::<u32>().is_ok());
        let retired = name.ends_with(crate::storage::log::RETIRED_SUFFIX);
        if name == crate::cluster::raft_log::DIR {
            continue;
        }
        if entry.file_type()?.is_dir()
            && (retired || looks_like_partition && !expected.contains(&name))
        {
            warn!(dir = %entry.path().display(), "removing the directory of a deleted topic");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask manipulation on a set we own. Threads spawned after
    // this inherit the mask, so only the main thread receives SIGTERM/SIGINT.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: sigwait reads the set and writes the signal number.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

async fn shutdown_requested() {
    while !SHUTDOWN.load(Ordering::Relaxed) {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
}

/// Returns when this shard should stop serving: on the controller core once its
/// controlled shutdown is done, on the others once that is.
async fn stop_serving(shard: &Rc<Core>) {
    shutdown_requested().await;
    if shard.controller_here().is_some() {
        controller_client::controlled_shutdown(shard, CONTROLLED_SHUTDOWN_WAIT).await;
        LEADERSHIPS_MOVED.store(true, Ordering::Relaxed);
    }
    while !LEADERSHIPS_MOVED.load(Ordering::Relaxed) {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
}

/// The CPUs this process may run on (its affinity mask), in order; CPU 0 if the mask
/// cannot be read.
pub fn available_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

/// Runs the broker until SIGTERM/SIGINT. Returns after a clean shutdown.
pub fn serve(config: Config) -> Result<(), StartError> {
    raise_memlock_limit();
    raise_open_files_limit();
    let shard_count = config.cpus.len();
    let (opened, quorum_settings, cluster_id) =
        open_metadata(&config).map_err(|source| StartError::LogDir {
            dir: config.log_dir.display().to_string(),
            source,
        })?;
    let metadata = opened.image.clone();
    let peers = quorum_peers(&config).map_err(StartError::Shard)?;
    // Taken by the controller core, which runs the quorum.
    let opened = Arc::new(std::sync::Mutex::new(Some(opened)));
    let addr = config
        .bind_addr()
        .map_err(|e| StartError::Shard(format!("listeners: {e}")))?;
    let faults = match std::env::var(crate::storage::fault::ENV) {
        Ok(spec) => {
            let rates = crate::storage::fault::parse(&spec).map_err(StartError::Shard)?;
            warn!(?rates, "storage fault injection is ON (testing only)");
            Some(rates)
        }
        Err(_) => None,
    };
    let marker = config.log_dir.join(CLEAN_SHUTDOWN_MARKER);
    let clean_shutdown = marker.exists();
    if clean_shutdown {
        info!("the last shutdown was clean: partitions load their recorded state without a scan");
    }
    let connections = ConnectionCounts::new(config.max_connections, config.max_connections_per_ip);
    let config = Arc::new(config);
    let view = MetadataView::empty(config.clone()).next(Arc::new(metadata), shard_count);
    let metadata = Arc::new(ViewHandle::new(view));
    let signals = block_signals();
    crate::storage::log::start_reaper();
    let mesh = MeshBuilder::<Job<Core>, _>::full(shard_count, MESH_CHANNEL_CAPACITY);
    let go = Arc::new(Barrier::new(shard_count + 1));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (done_tx, done_rx) = mpsc::channel::<bool>();
    for (index, &cpu) in config.cpus.iter().enumerate() {
        let connections = connections.clone();
        let (opened, quorum_settings, peers, cluster_id) = (
            opened.clone(),
            quorum_settings.clone(),
            peers.clone(),
            cluster_id.clone(),
        );
        let (config, metadata, mesh, go, ready_tx, done_tx) = (
            config.clone(),
            metadata.clone(),
            mesh.clone(),
            go.clone(),
            ready_tx.clone(),
            done_tx.clone(),
        );
        LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{index}"))
            .spin_before_park(Duration::from_micros(config.idle_spin_us))
            .spawn(move || async move {
                let id = ShardId(index);
                let (senders, receivers) = match mesh.join().await {
                    Ok(joined) => joined,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!(
                            "shard {index}: joining the channel mesh failed: {e}"
                        )));
                        return;
                    }
                };
                let mut published = None;
                let mut controller_listener = None;
                let controller = if id == CONTROLLER_SHARD {
                    if let Some(l) = &config.cluster.controller_listener {
                        let host = if l.host.is_empty() { "0.0.0.0" } else { l.host.as_str() };
                        match TcpListener::bind((host, l.port)) {
                            Ok(bound) => controller_listener = Some(bound),
                            Err(e) => {
                                let _ = ready_tx.send(Err(format!(
                                    "cannot listen for the controller quorum on {host}:{}: {e}",
                                    l.port
                                )));
                                return;
                            }
                        }
                    }
                    let defaults = TopicDefaults {
                        partitions: config.num_partitions,
                        replication_factor: config.default_replication_factor,
                    };
                    let opened = opened.lock().expect("not poisoned").take().expect("taken once");
                    let send = transport::start_peers(peers.clone());
                    match quorum::start(opened, quorum_settings, send) {
                        Ok((quorum, applied)) => {
                            published = Some(applied);
                            Some(Controller::new(defaults, quorum, cluster_id.clone()))
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("metadata quorum: {e}")));
                            return;
                        }
                    }
                } else {
                    None
                };
                let shard = Core::new(
                    Mesh::new(id, shard_count, senders),
                    config.clone(),
                    metadata.clone(),
                    controller,
                );
                serve_jobs(&shard, receivers);
                let started: Result<TcpListener, String> = async {
                    open_missing(&shard, &metadata.load(), clean_shutdown)
                        .await
                        .map_err(|e| format!("shard {index}: {e}"))?;
                    TcpListener::bind(addr)
                        .map_err(|e| format!("shard {index}: cannot listen on {addr}: {e}"))
                }
                .await;
                let listener = match started {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Phase two: everyone is ready. Blocking here is fine: nothing else
                // runs on this shard yet.
                go.wait();
                // After recovery, so that only serving is faulted.
                if let Some(rates) = faults {
                    crate::storage::fault::install(rates, index as u64);
                }
                if let Some(applied) = published.take() {
                    glommio::spawn_local(publisher::run(shard.clone(), applied)).detach();
                    glommio::spawn_local(controller_client::register_and_heartbeat(shard.clone()))
                        .detach();
                    glommio::spawn_local(active_controller::fence_expired_brokers(shard.clone()))
                        .detach();
                    glommio::spawn_local(active_controller::balance_leaders(shard.clone()))
                        .detach();
                    glommio::spawn_local(hw_checkpoint::run(shard.clone())).detach();
                    if let Some(listener) = controller_listener.take() {
                        let handler_core = shard.clone();
                        let handler: transport::RpcHandler = Rc::new(move |request| {
                            let core = handler_core.clone();
                            Box::pin(async move { active_controller::handle(&core, request).await })
                        });
                        let quorum = shard.controller().quorum.clone();
                        glommio::spawn_local(transport::serve(listener, quorum, handler)).detach();
                    }
                }
                let retainer = shard.clone();
                glommio::spawn_local(async move {
                    let every = Duration::from_millis(retainer.config.retention_check_interval_ms);
                    loop {
                        glommio::timer::sleep(every).await;
                        let now_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64);
                        for log in retainer.all_logs() {
                            log.apply_retention(now_ms);
                        }
                    }
                })
                .detach();
                let recorder = shard.clone();
                glommio::spawn_local(async move {
                    let every = Duration::from_millis(recorder.config.recovery_point_interval_ms);
                    loop {
                        glommio::timer::sleep(every).await;
                        for log in recorder.all_logs() {
                            log.take_recovery_point();
                        }
                    }
                })
                .detach();
                let coordinator = shard.clone();
                glommio::spawn_local(async move {
                    let every = Duration::from_millis(
                        coordinator.config.offsets_retention_check_interval_ms,
                    );
                    let mut last_expiry = std::time::Instant::now();
                    loop {
                        glommio::timer::sleep(crate::group::TICK_INTERVAL).await;
                        coordinator.groups.tick(&*coordinator).await;
                        if last_expiry.elapsed() >= every {
                            last_expiry = std::time::Instant::now();
                            coordinator.groups.expire_offsets(&*coordinator).await;
                        }
                    }
                })
                .detach();
                let txn_core = shard.clone();
                glommio::spawn_local(async move {
                    let t = txn_core.config.transactions;
                    let every = Duration::from_millis(
                        t.abort_timed_out_interval_ms.min(t.remove_expired_interval_ms),
                    );
                    let producers_every =
                        Duration::from_millis(t.producer_id_expiration_check_interval_ms);
                    let mut last_producer_expiry = std::time::Instant::now();
                    loop {
                        glommio::timer::sleep(every).await;
                        txn_core.txns.tick(&txn_core).await;
                        if last_producer_expiry.elapsed() >= producers_every {
                            last_producer_expiry = std::time::Instant::now();
                            let now_ms = crate::storage::segment::now_ms();
                            for log in txn_core.all_logs() {
                                log.expire_producers(now_ms, t.producer_id_expiration_ms);
                            }
                        }
                    }
                })
                .detach();
                let flusher = shard.clone();
                glommio::spawn_local(async move {
                    loop {
                        glommio::timer::sleep(FLUSH_CHECK_INTERVAL).await;
                        for log in flusher.all_logs() {
                            if let Err(e) = log.flush_if_due().await {
                                warn!(dir = %log.dir().display(), error = %e, "periodic flush failed");
                            }
                        }
                    }
                })
                .detach();
                let accept = async {
                    // Clients wait in the backlog until this broker is in the
                    // metadata, as Kafka's brokers serve once registered.
                    publisher::registered(&shard).await;
                    loop {
                        match listener.accept().await {
                            Ok(stream) => {
                                let ip = stream.peer_addr().map_or(
                                    std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                                    |a| a.ip(),
                                );
                                match connections.admit(ip) {
                                    Ok(slot) => {
                                        glommio::spawn_local(crate::net::connection::serve(
                                            shard.clone(),
                                            stream,
                                            slot,
                                        ))
                                        .detach();
                                    }
                                    Err(refused) => {
                                        // Logged at powers of two: a flood must not
                                        // become a flood of log lines.
                                        let n = connections.refused();
                                        if n.is_power_of_two() {
                                            warn!(%ip, reason = %refused, refused_so_far = n, "refusing connection");
                                        }
                                        drop(stream);
                                    }
                                }
                            }
                            Err(e) => {
                                // Out of descriptors (EMFILE) or similar: retrying at
                                // once would spin; connections closing will make room.
                                warn!(error = %e, "accept failed; pausing accepts for 100 ms");
                                glommio::timer::sleep(ACCEPT_ERROR_PAUSE).await;
                            }
                        }
                    }
                };
                futures::future::select(Box::pin(accept), Box::pin(stop_serving(&shard))).await;
                drop(listener);
                if let Some(controller) = shard.controller_here() {
                    controller.quorum.stop().await;
                }
                let mut all_recorded = true;
                for log in shard.all_logs() {
                    all_recorded &= log.quiesce().await;
                }
                let (rounds, requests) = shard.sync_group.counts();
                info!(
                    shard = index,
                    sync_rounds = rounds,
                    sync_requests = requests,
                    remote_jobs_sent = shard.mesh.remote_jobs_sent(),
                    faults_injected = crate::storage::fault::injected(),
                    "shard stopped"
                );
                let _ = done_tx.send(all_recorded);
            })
            .map_err(|e| StartError::Executor {
                cpu,
                reason: e.to_string(),
            })?;
    }
    drop(ready_tx);
    for _ in 0..shard_count {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StartError::Shard(e)),
            Err(_) => return Err(StartError::Shard("a shard stopped during startup".into())),
        }
    }
    // Nothing has been appended yet. From here on the recorded state goes stale, so
    // the marker must be gone (durably) before any shard serves.
    if clean_shutdown {
        std::fs::remove_file(&marker)
            .and_then(|()| std::fs::File::open(&config.log_dir)?.sync_all())
            .map_err(|source| StartError::LogDir {
                dir: config.log_dir.display().to_string(),
                source,
            })?;
    }
    go.wait();
    info!(%addr, shards = shard_count, cpus = ?config.cpus, advertised = %format!("{}:{}", config.advertised.host, config.advertised.port), "ringlog is serving");
    let sig = wait_signal(&signals);
    info!(
        signal = sig,
        "shutting down: no new connections, finishing appends in flight"
    );
    SHUTDOWN.store(true, Ordering::Relaxed);
    std::thread::spawn(move || {
        let again = wait_signal(&signals);
        error!(signal = again, "second signal: exiting now");
        std::process::exit(1);
    });
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    let mut clean = true;
    for _ in 0..shard_count {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(all_recorded) => clean &= all_recorded,
            Err(_) => {
                warn!("shutdown grace period over; exiting with appends possibly in flight");
                clean = false;
                break;
            }
        }
    }
    if clean {
        if let Err(e) = store::write_atomic(&config.log_dir, CLEAN_SHUTDOWN_MARKER, b"") {
            warn!(error = %e, "writing the clean-shutdown marker failed; the next start scans");
        }
    } else {
        info!("not every partition recorded its state: the next start scans the logs");
    }
    info!("stopped");
    Ok(())
}

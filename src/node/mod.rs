//! This node's per-core context (`Core`): what one core owns and the services that run
//! on it, beside the shard transport (`shard::Mesh`) that reaches the other cores.
//!
//! Control flow, as Redpanda's controller backend: the controller decides a change
//! and commits it; `publisher` turns the new cluster image into a `MetadataView` (the
//! cluster image plus where this node's replicas live) and swaps it in; each core's
//! `reconciler` opens, configures and removes the partition logs the view places on
//! it, and tells the services on that core (the group coordinator) what they gained.
//! Nothing below this layer (`cluster`, `group`, `storage`) reaches up into it.
//!
//! Invariants: a `PartitionLog` is only touched on the thread of the core that owns
//! it; the view is read-only and swapped whole; only the controller core changes it.

pub mod active_controller;
pub mod controller_client;
pub mod fetch_sessions;
pub mod hw_checkpoint;
pub mod isr_manager;
pub mod publisher;
pub mod reconciler;
pub mod replica_fetcher;
pub mod view;

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use uuid::Uuid;

use crate::cluster::controller::Controller;
use crate::cluster::metadata::{ClusterMetadata, TopicMeta};
use crate::config::Config;
use crate::ids::BrokerId;
use crate::shard::{Mesh, ShardContext, ShardGone, ShardId};
use crate::storage::sync_group::SyncGroup;
use crate::storage::PartitionLog;
use view::ViewHandle;

/// A partition replica, by topic id so that a re-created topic never aliases the old.
pub type PartitionKey = (Uuid, i32);

/// The core the controller runs on: it serialises metadata changes.
pub const CONTROLLER_SHARD: ShardId = ShardId(0);

pub struct Core {
    pub mesh: Mesh<Core>,
    pub config: Arc<Config>,
    /// The published metadata view, shared by every core of this node.
    pub metadata: Arc<ViewHandle>,
    logs: RefCell<FxHashMap<PartitionKey, Rc<PartitionLog>>>,
    /// The incremental fetch sessions this core holds (KIP-227).
    pub fetch_sessions: RefCell<fetch_sessions::FetchSessions>,
    /// Present on the controller core only.
    controller: Option<Controller>,
    /// Group commit for every partition log on this core.
    pub sync_group: Rc<SyncGroup>,
    /// The consumer groups of the `__consumer_offsets` partitions this core leads.
    pub groups: crate::group::Coordinator,
    /// The transactional ids of the `__transaction_state` partitions this core leads.
    pub txns: crate::txn::Coordinator,
    /// Bytes of request frames this core's connections may hold at once
    /// (`queued.max.request.bytes`): a frame takes its size before its body is read.
    pub request_budget: Rc<glommio::sync::Semaphore>,
    /// Serialises reconciliation on this core.
    reconciling: glommio::sync::Semaphore,
    /// What this core's leading replicas of replicated partitions know of their
    /// followers.
    pub leaders: RefCell<HashMap<PartitionKey, crate::replication::leader::LeaderState>>,
    /// The leaders this core's followers fetch from, each by a task of its own,
    /// with the way to tell that task of a new view.
    pub fetchers: RefCell<HashMap<BrokerId, Rc<replica_fetcher::Kick>>>,
    /// The task that asks for ISR changes of this core's leaderships runs.
    pub isr_manager_running: std::cell::Cell<bool>,
    /// The node is stopping: the controller core heartbeats no more.
    pub stopping: std::cell::Cell<bool>,
    /// The high-watermark checkpoint found at start, read on first use.
    checkpointed: std::cell::OnceCell<hw_checkpoint::HighWatermarks>,
    /// The task queue replica fetchers run in, made on first use.
    replication_queue: std::cell::Cell<Option<glommio::TaskQueueHandle>>,
}

impl ShardContext for Core {
    fn mesh(&self) -> &Mesh<Core> {
        &self.mesh
    }
}

impl Core {
    pub fn new(
        mesh: Mesh<Core>,
        config: Arc<Config>,
        metadata: Arc<ViewHandle>,
        controller: Option<Controller>,
    ) -> Rc<Core> {
        let request_budget = config.queued_max_request_bytes;
        let fetch_sessions = fetch_sessions::FetchSessions::new(
            mesh.id.0,
            mesh.shard_count,
            config.fetch_session_cache_slots,
        );
        Rc::new(Core {
            fetch_sessions: RefCell::new(fetch_sessions),
            mesh,
            groups: crate::group::Coordinator::new(&config),
            txns: crate::txn::Coordinator::new(&config),
            config,
            metadata,
            logs: RefCell::new(FxHashMap::default()),
            controller,
            sync_group: Rc::new(SyncGroup::default()),
            request_budget: Rc::new(glommio::sync::Semaphore::new(request_budget)),
            reconciling: glommio::sync::Semaphore::new(1),
            leaders: RefCell::new(HashMap::new()),
            fetchers: RefCell::new(HashMap::new()),
            isr_manager_running: std::cell::Cell::new(false),
            stopping: std::cell::Cell::new(false),
            checkpointed: std::cell::OnceCell::new(),
            replication_queue: std::cell::Cell::new(None),
        })
    }

    pub fn id(&self) -> ShardId {
        self.mesh.id
    }

    pub fn shard_count(&self) -> usize {
        self.mesh.shard_count
    }

    pub fn node_id(&self) -> BrokerId {
        BrokerId(self.config.node_id)
    }

    /// Runs `f` on core `target` with that core's context (see `shard::submit_to`).
    pub async fn submit_to<R, F, Fut>(
        self: &Rc<Self>,
        target: ShardId,
        f: F,
    ) -> Result<R, ShardGone>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Core>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        crate::shard::submit_to(self, target, f).await
    }

    /// The controller, on the controller core only.
    pub fn controller_here(&self) -> Option<&Controller> {
        self.controller.as_ref()
    }

    pub fn controller(&self) -> &Controller {
        self.controller
            .as_ref()
            .expect("controller calls are routed to the controller core")
    }

    pub fn log(&self, key: &PartitionKey) -> Option<Rc<PartitionLog>> {
        self.logs.borrow().get(key).cloned()
    }

    /// The high watermark the node's checkpoint held for `key` when it started.
    pub fn checkpointed_high_watermark(&self, key: &PartitionKey) -> Option<i64> {
        self.checkpointed
            .get_or_init(|| hw_checkpoint::read(&self.config.log_dir))
            .get(key)
            .copied()
    }

    /// The high watermark of every replicated partition on this core.
    pub fn replicated_high_watermarks(&self) -> Vec<(PartitionKey, i64)> {
        self.logs
            .borrow()
            .iter()
            .filter(|(_, log)| log.is_replicated())
            .map(|(key, log)| (*key, log.offsets().high_watermark))
            .collect()
    }

    fn insert_log(&self, key: PartitionKey, log: Rc<PartitionLog>) {
        self.logs.borrow_mut().insert(key, log);
    }

    fn remove_log(&self, key: &PartitionKey) -> Option<Rc<PartitionLog>> {
        self.logs.borrow_mut().remove(key)
    }

    fn log_keys(&self) -> Vec<PartitionKey> {
        self.logs.borrow().keys().copied().collect()
    }

    /// The task queue for replica fetchers: the same shares as the default queue,
    /// so that when both are busy replication gets half of the core and clients the
    /// other half; neither starves the other. Runs on this core.
    pub fn replication_queue(&self) -> glommio::TaskQueueHandle {
        if let Some(q) = self.replication_queue.get() {
            return q;
        }
        let q = glommio::executor().create_task_queue(
            glommio::Shares::Static(1000),
            glommio::Latency::NotImportant,
            "replication",
        );
        self.replication_queue.set(Some(q));
        q
    }

    pub fn all_logs(&self) -> Vec<Rc<PartitionLog>> {
        self.logs.borrow().values().cloned().collect()
    }
}

/// Connects to a broker's client listener (`host`, `port`, as it registered them),
/// giving up after `timeout`.
pub async fn connect_to_broker(
    host: &str,
    port: u16,
    timeout: std::time::Duration,
) -> std::io::Result<glommio::net::TcpStream> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} does not resolve")))?;
    let stream = glommio::net::TcpStream::connect_timeout(addr, timeout).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl crate::group::Host for Core {
    fn cluster(&self) -> Arc<ClusterMetadata> {
        self.metadata.load().cluster.clone()
    }
    fn led_log(&self, topic: Uuid, partition: i32) -> Option<Rc<PartitionLog>> {
        let view = self.metadata.load();
        let leader = view.topic_by_id(&topic)?.partition(partition)?.leader;
        if leader != Some(self.node_id()) {
            return None;
        }
        self.log(&(topic, partition))
    }
    fn min_insync_replicas(&self, topic: &TopicMeta) -> usize {
        self.metadata.load().min_insync_replicas(topic)
    }
}

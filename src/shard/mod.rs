//! Shards: one per pinned core, shared nothing. A shard owns the partition logs the
//! placement table gives it and runs work for them; other shards reach it only by
//! `submit_to`, which sends an owned, `Send` job (ids, `Bytes`, ranges — never a copy
//! of record data) over glommio's channel mesh and awaits its reply.
//!
//! Invariants: a `PartitionLog` is only ever touched on its owning shard's thread;
//! the metadata snapshot is read-only and swapped whole by the controller.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use glommio::channels::channel_mesh::{Receivers, Senders};
use std::panic::AssertUnwindSafe;
use uuid::Uuid;

use crate::cluster::controller::Controller;
use crate::cluster::metadata::{MetadataHandle, ShardId};
use crate::config::Config;
use crate::storage::sync_group::SyncGroup;
use crate::storage::PartitionLog;

/// A unit of work sent to another shard: runs there with that shard's context.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, ()> + Send>;

/// A reply travelling back to the shard that asked: `None` if the job panicked.
type Reply = Option<Box<dyn Any + Send>>;

/// A partition replica, by topic id so that a re-created topic never aliases the old.
pub type PartitionKey = (Uuid, i32);

/// Capacity of each shard→shard channel; senders wait when it is full.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

pub struct Shard {
    pub id: ShardId,
    pub shard_count: usize,
    pub config: Arc<Config>,
    pub metadata: Arc<MetadataHandle>,
    logs: RefCell<HashMap<PartitionKey, Rc<PartitionLog>>>,
    senders: Senders<Job>,
    /// Present on the controller shard (shard 0) only.
    controller: Option<Controller>,
    /// Group commit for every partition log on this shard.
    pub sync_group: Rc<SyncGroup>,
    /// The consumer groups of the `__consumer_offsets` partitions on this shard.
    pub groups: crate::group::Coordinator,
    /// Callers on this shard waiting for replies from other shards.
    pending_replies: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    next_reply_id: Cell<u64>,
    /// Bytes of request frames this shard's connections may hold at once
    /// (`queued.max.request.bytes`): a frame takes its size before its body is read.
    pub request_budget: Rc<glommio::sync::Semaphore>,
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0:?} is gone (shutting down)")]
pub struct ShardGone(pub ShardId);

impl Shard {
    pub fn new(
        id: ShardId,
        shard_count: usize,
        config: Arc<Config>,
        metadata: Arc<MetadataHandle>,
        senders: Senders<Job>,
        controller: Option<Controller>,
    ) -> Rc<Shard> {
        let request_budget = config.queued_max_request_bytes;
        Rc::new(Shard {
            id,
            shard_count,
            groups: crate::group::Coordinator::new(&config),
            config,
            metadata,
            logs: RefCell::new(HashMap::new()),
            senders,
            controller,
            sync_group: Rc::new(SyncGroup::default()),
            pending_replies: RefCell::new(HashMap::new()),
            next_reply_id: Cell::new(0),
            request_budget: Rc::new(glommio::sync::Semaphore::new(request_budget)),
        })
    }

    /// Jobs this shard has sent to other shards (each one a cross-shard round trip).
    pub fn remote_jobs_sent(&self) -> u64 {
        self.next_reply_id.get()
    }

    /// Runs `f` on shard `target` and returns its result. Local work runs directly.
    ///
    /// The reply comes back over the mesh too, as a job that completes a oneshot on
    /// *this* thread: no waker ever crosses threads. (glommio's task wakers are not
    /// thread-safe — glommio issue #194 — and waking a task from another shard's
    /// thread crashed the broker under load.) A job that panics replies with an
    /// error, so the caller never waits forever.
    pub async fn submit_to<R, F, Fut>(
        self: &Rc<Self>,
        target: ShardId,
        f: F,
    ) -> Result<R, ShardGone>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if target == self.id {
            return Ok(f(self.clone()).await);
        }
        let (tx, rx) = oneshot::channel();
        let reply_id = self.next_reply_id.get();
        self.next_reply_id.set(reply_id + 1);
        self.pending_replies.borrow_mut().insert(reply_id, tx);
        let origin = self.id;
        let job: Job = Box::new(move |shard: Rc<Shard>| {
            Box::pin(async move {
                let result: Reply = match AssertUnwindSafe(f(shard.clone())).catch_unwind().await {
                    Ok(value) => Some(Box::new(value)),
                    Err(_) => {
                        tracing::error!(
                            from = origin.0,
                            "a job sent from another shard panicked (bug)"
                        );
                        None
                    }
                };
                let reply: Job = Box::new(move |origin_shard: Rc<Shard>| {
                    Box::pin(async move { origin_shard.complete_reply(reply_id, result) })
                });
                // If the origin is gone (shutting down), nobody waits for this reply.
                let _ = shard.senders.send_to(origin.0, reply).await;
            })
        });
        if self.senders.send_to(target.0, job).await.is_err() {
            self.pending_replies.borrow_mut().remove(&reply_id);
            return Err(ShardGone(target));
        }
        match rx.await {
            Ok(Some(value)) => Ok(*value
                .downcast::<R>()
                .expect("a reply has its request's type")),
            _ => Err(ShardGone(target)),
        }
    }

    /// Runs on the origin shard when a reply arrives; the waiting caller may already
    /// have given up (its receiver dropped), which is fine.
    fn complete_reply(&self, reply_id: u64, result: Reply) {
        if let Some(tx) = self.pending_replies.borrow_mut().remove(&reply_id) {
            let _ = tx.send(result);
        }
    }

    /// Runs, on this shard, every job other shards send it (for as long as they can).
    pub fn serve_jobs(self: &Rc<Self>, mut receivers: Receivers<Job>) {
        for (_, rx) in receivers.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(job) = rx.recv().await {
                    glommio::spawn_local(job(shard.clone())).detach();
                }
            })
            .detach();
        }
    }

    pub fn controller(&self) -> &Controller {
        self.controller
            .as_ref()
            .expect("controller calls are routed to the controller shard")
    }

    pub fn log(&self, key: &PartitionKey) -> Option<Rc<PartitionLog>> {
        self.logs.borrow().get(key).cloned()
    }

    pub fn insert_log(&self, key: PartitionKey, log: Rc<PartitionLog>) {
        self.logs.borrow_mut().insert(key, log);
    }

    pub fn remove_log(&self, key: &PartitionKey) -> Option<Rc<PartitionLog>> {
        self.logs.borrow_mut().remove(key)
    }

    pub fn all_logs(&self) -> Vec<Rc<PartitionLog>> {
        self.logs.borrow().values().cloned().collect()
    }
}

/// The controller shard: it serialises metadata changes.
pub const CONTROLLER_SHARD: ShardId = ShardId(0);

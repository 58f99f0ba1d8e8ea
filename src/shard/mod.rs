//! Shards: one per pinned core, shared nothing. A shard owns the partition logs the
//! placement table gives it and runs work for them; other shards reach it only by
//! `submit_to`, which sends an owned, `Send` job (ids, `Bytes`, ranges — never a copy
//! of record data) over glommio's channel mesh and awaits its reply.
//!
//! Invariants: a `PartitionLog` is only ever touched on its owning shard's thread;
//! the metadata snapshot is read-only and swapped whole by the controller.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use glommio::channels::channel_mesh::Senders;
use uuid::Uuid;

use crate::cluster::controller::Controller;
use crate::cluster::metadata::{MetadataHandle, ShardId};
use crate::config::Config;
use crate::storage::sync_group::SyncGroup;
use crate::storage::PartitionLog;

/// A unit of work sent to another shard: runs there with that shard's context.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, ()> + Send>;

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
        Rc::new(Shard {
            id,
            shard_count,
            config,
            metadata,
            logs: RefCell::new(HashMap::new()),
            senders,
            controller,
            sync_group: Rc::new(SyncGroup::default()),
        })
    }

    /// Runs `f` on shard `target` and returns its result. Local work runs directly.
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
        let job: Job = Box::new(move |shard| {
            Box::pin(async move {
                let _ = tx.send(f(shard).await);
            })
        });
        self.senders
            .send_to(target.0, job)
            .await
            .map_err(|_| ShardGone(target))?;
        rx.await.map_err(|_| ShardGone(target))
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

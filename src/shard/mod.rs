//! Shards: one per pinned core, shared nothing. This module is only the transport
//! between them: `submit_to` sends an owned, `Send` job (ids, `Bytes`, ranges — never
//! a copy of record data) over glommio's channel mesh to another shard, runs it there
//! with that shard's per-core context, and awaits its reply.
//!
//! The context (`C`) is whatever a core owns — for the broker, `node::Core` with its
//! partition logs and services. The transport knows nothing of it but how to reach
//! its `Mesh`, so nothing here depends on what the shards do.
//!
//! Invariants: a job runs on its target shard's thread, with that shard's context; a
//! reply completes its caller on the caller's thread (no waker crosses threads).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use glommio::channels::channel_mesh::{Receivers, Senders};

/// Index of a shard (one per pinned core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// A unit of work sent to another shard: runs there with that shard's context.
pub type Job<C> = Box<dyn FnOnce(Rc<C>) -> LocalBoxFuture<'static, ()> + Send>;

/// A reply travelling back to the shard that asked: `None` if the job panicked.
type Reply = Option<Box<dyn Any + Send>>;

/// Capacity of each shard→shard channel; senders wait when it is full.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// A per-core context that jobs run with; it carries its shard's end of the mesh.
pub trait ShardContext: Sized + 'static {
    fn mesh(&self) -> &Mesh<Self>;
}

/// One shard's end of the channel mesh.
pub struct Mesh<C: 'static> {
    pub id: ShardId,
    pub shard_count: usize,
    senders: Senders<Job<C>>,
    /// Callers on this shard waiting for replies from other shards.
    pending_replies: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    next_reply_id: Cell<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0:?} is gone (shutting down)")]
pub struct ShardGone(pub ShardId);

impl<C: ShardContext> Mesh<C> {
    pub fn new(id: ShardId, shard_count: usize, senders: Senders<Job<C>>) -> Mesh<C> {
        Mesh {
            id,
            shard_count,
            senders,
            pending_replies: RefCell::new(HashMap::new()),
            next_reply_id: Cell::new(0),
        }
    }

    /// Jobs this shard has sent to other shards (each one a cross-shard round trip).
    pub fn remote_jobs_sent(&self) -> u64 {
        self.next_reply_id.get()
    }

    /// Runs on the origin shard when a reply arrives; the waiting caller may already
    /// have given up (its receiver dropped), which is fine.
    fn complete_reply(&self, reply_id: u64, result: Reply) {
        if let Some(tx) = self.pending_replies.borrow_mut().remove(&reply_id) {
            let _ = tx.send(result);
        }
    }
}

/// Runs `f` on shard `target` with that shard's context and returns its result.
/// Local work runs directly.
///
/// The reply comes back over the mesh too, as a job that completes a oneshot on
/// *this* thread: no waker ever crosses threads. (glommio's task wakers are not
/// thread-safe — glommio issue #194 — and waking a task from another shard's thread
/// crashed the broker under load.) A job that panics replies with an error, so the
/// caller never waits forever.
pub async fn submit_to<C, R, F, Fut>(ctx: &Rc<C>, target: ShardId, f: F) -> Result<R, ShardGone>
where
    C: ShardContext,
    R: Send + 'static,
    F: FnOnce(Rc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let mesh = ctx.mesh();
    if target == mesh.id {
        return Ok(f(ctx.clone()).await);
    }
    let (tx, rx) = oneshot::channel();
    let reply_id = mesh.next_reply_id.get();
    mesh.next_reply_id.set(reply_id + 1);
    mesh.pending_replies.borrow_mut().insert(reply_id, tx);
    let origin = mesh.id;
    let job: Job<C> = Box::new(move |there: Rc<C>| {
        Box::pin(async move {
            let result: Reply = match AssertUnwindSafe(f(there.clone())).catch_unwind().await {
                Ok(value) => Some(Box::new(value)),
                Err(_) => {
                    tracing::error!(
                        from = origin.0,
                        "a job sent from another shard panicked (bug)"
                    );
                    None
                }
            };
            let reply: Job<C> = Box::new(move |back: Rc<C>| {
                Box::pin(async move { back.mesh().complete_reply(reply_id, result) })
            });
            // If the origin is gone (shutting down), nobody waits for this reply.
            let _ = there.mesh().senders.send_to(origin.0, reply).await;
        })
    });
    if mesh.senders.send_to(target.0, job).await.is_err() {
        mesh.pending_replies.borrow_mut().remove(&reply_id);
        return Err(ShardGone(target));
    }
    match rx.await {
        Ok(Some(value)) => Ok(*value
            .downcast::<R>()
            .expect("a reply has its request's type")),
        _ => Err(ShardGone(target)),
    }
}

/// Runs, on this shard, every job other shards send it (for as long as they can).
pub fn serve_jobs<C: ShardContext>(ctx: &Rc<C>, mut receivers: Receivers<Job<C>>) {
    for (_, rx) in receivers.streams() {
        let ctx = ctx.clone();
        glommio::spawn_local(async move {
            while let Some(job) = rx.recv().await {
                glommio::spawn_local(job(ctx.clone())).detach();
            }
        })
        .detach();
    }
}

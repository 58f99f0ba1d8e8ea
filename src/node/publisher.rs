//! How the controller's decisions reach every core of this node. Runs on the
//! controller core, holding the controller's gate from plan to publish:
//!
//! 1. the controller plans the next cluster image;
//! 2. every core opens the replicas the next view places on it (`open_missing`), so
//!    that no client is ever shown a partition without an open log;
//! 3. the controller commits the image (durable from here on);
//! 4. the view is published (swapped for every core at once);
//! 5. every core removes the logs the view no longer places on it (`remove_extra`).
//!
//! If 2 or 3 fails, nothing is published and the logs opened in 2 are removed: the
//! change fails whole, with KAFKA_STORAGE_ERROR.

use std::rc::Rc;
use std::sync::Arc;

use futures::future::join_all;
use tracing::{info, warn};
use uuid::Uuid;

use super::reconciler::{open_missing, remove_extra};
use super::view::MetadataView;
use super::Core;
use crate::cluster::controller::{DeleteResult, NewTopic, TopicResult};
use crate::cluster::metadata::ClusterMetadata;
use crate::protocol::ErrorCode;
use crate::shard::ShardId;

fn controller_stopped<R>(n: usize) -> Vec<Result<R, (ErrorCode, String)>> {
    (0..n)
        .map(|_| Err((ErrorCode::UnknownServerError, "controller stopped".into())))
        .collect()
}

/// Runs `job` with the view on every core of this node; the first error, if any.
async fn on_every_core<F, Fut>(
    core: &Rc<Core>,
    view: &Arc<MetadataView>,
    job: F,
) -> Result<(), String>
where
    F: Fn(Rc<Core>, Arc<MetadataView>) -> Fut + Send + Copy + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + 'static,
{
    let runs = (0..core.shard_count()).map(|s| {
        let view = view.clone();
        core.submit_to(ShardId(s), move |c| job(c, view))
    });
    for r in join_all(runs).await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Steps 2–5 above for `next`, planned under the gate the caller holds.
async fn apply(core: &Rc<Core>, next: ClusterMetadata) -> Result<(), (ErrorCode, String)> {
    let current = core.metadata.load();
    let view = Arc::new(current.next(Arc::new(next), core.node_id(), core.shard_count()));
    let prepared = match on_every_core(core, &view, |c, v| async move {
        open_missing(&c, &v, false).await
    })
    .await
    {
        Ok(()) => core
            .controller()
            .commit(&view.cluster)
            .await
            .map_err(|e| format!("persisting metadata: {e}")),
        Err(e) => Err(e),
    };
    if let Err(e) = prepared {
        warn!(error = %e, "a metadata change failed; undoing it");
        let undone = on_every_core(core, &current, |c, v| async move {
            remove_extra(&c, &v).await;
            Ok(())
        })
        .await;
        if let Err(u) = undone {
            warn!(error = %u, "undoing a failed metadata change failed");
        }
        return Err((ErrorCode::KafkaStorageError, e));
    }
    core.metadata.publish(view.clone());
    let removed = on_every_core(core, &view, |c, v| async move {
        remove_extra(&c, &v).await;
        Ok(())
    })
    .await;
    if let Err(e) = removed {
        warn!(error = %e, "a core is gone while removing partitions");
    }
    Ok(())
}

/// Creates topics; one result per request entry, in order. Runs on the controller core.
pub async fn create_topics(
    core: &Rc<Core>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<TopicResult> {
    let controller = core.controller();
    let Some(_permit) = controller.lock().await else {
        return controller_stopped(topics.len());
    };
    let current = core.metadata.load();
    let plan = controller.plan_create(&current.cluster, &topics, validate_only);
    let Some(next) = plan.next else {
        return plan.results;
    };
    if let Err((code, message)) = apply(core, next).await {
        let failed = |r: TopicResult| r.and_then(|_| Err((code, message.clone())));
        return plan.results.into_iter().map(failed).collect();
    }
    for t in plan.results.iter().flatten() {
        info!(topic = %t.name, id = %t.id, partitions = t.partitions.len(), "created topic");
    }
    plan.results
}

/// Deletes topics by name or id; one result per entry, in order. Runs on the
/// controller core.
pub async fn delete_topics(
    core: &Rc<Core>,
    topics: Vec<(Option<String>, Uuid)>,
) -> Vec<DeleteResult> {
    let controller = core.controller();
    let Some(_permit) = controller.lock().await else {
        return controller_stopped(topics.len());
    };
    let current = core.metadata.load();
    let plan = controller.plan_delete(&current.cluster, &topics);
    let Some(next) = plan.next else {
        return plan.results;
    };
    if let Err((code, message)) = apply(core, next).await {
        let failed = |r: DeleteResult| r.and_then(|_| Err((code, message.clone())));
        return plan.results.into_iter().map(failed).collect();
    }
    for (name, id) in plan.results.iter().flatten() {
        info!(topic = %name, id = %id, "deleted topic");
    }
    plan.results
}

/// Hands out a new producer id. Runs on the controller core.
pub async fn allocate_producer_id(core: &Rc<Core>) -> std::io::Result<i64> {
    let current = core.metadata.load();
    core.controller()
        .allocate_producer_id(&current.cluster)
        .await
}

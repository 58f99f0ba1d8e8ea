//! How the metadata quorum's images reach every core of this node, and how the
//! controller's decisions reach the quorum. Runs on the controller core.
//!
//! Publishing (`run`), for each image the quorum applies, in log order:
//! 1. every core opens the replicas the new view places on it (`open_missing`), so
//!    that no client is ever shown a partition without an open log;
//! 2. the view is published (swapped for every core at once);
//! 3. every core removes the logs the view no longer places on it (`remove_extra`);
//! 4. the proposals of that batch are answered.
//!
//! The records are committed before step 1, so a log that cannot be opened does not
//! undo the change: that replica stays closed on this node (its requests fail with
//! KAFKA_STORAGE_ERROR or UNKNOWN_TOPIC_OR_PARTITION) and the failure is logged.
//!
//! What is decided reaches the quorum through `active_controller` (on the node that
//! leads it) and `controller_client` (on every node).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use glommio::channels::local_channel::LocalReceiver;
use tracing::{error, warn};

use super::reconciler::{open_missing, remove_extra};
use super::view::MetadataView;
use super::Core;
use crate::cluster::quorum::Applied;
use crate::shard::ShardId;

const REGISTER_POLL: Duration = Duration::from_millis(5);

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

/// Publishes every image the quorum applies (steps 1–4 above), until the quorum stops.
pub async fn run(core: Rc<Core>, applied: LocalReceiver<Applied>) {
    while let Some(a) = applied.recv().await {
        let current = core.metadata.load();
        let version = a.image.version;
        let view = Arc::new(current.next(a.image, core.shard_count()));
        if let Err(e) = on_every_core(&core, &view, |c, v| async move {
            open_missing(&c, &v, false).await
        })
        .await
        {
            error!(error = %e, version, "a replica of the new metadata cannot be opened on this node");
        }
        core.metadata.publish(view.clone());
        core.controller().quorum.published(version);
        if let Err(e) = on_every_core(&core, &view, |c, v| async move {
            remove_extra(&c, &v).await;
            Ok(())
        })
        .await
        {
            warn!(error = %e, "a core is gone while removing partitions");
        }
        if !cluster_id_matches(&core, &view) {
            record_cluster_id(&core, &view.cluster.cluster_id).await;
        }
        for done in a.done {
            let _ = done.send(Ok(()));
        }
    }
}

/// Resolves once the published metadata holds this broker, unfenced, a controller
/// and the cluster's id.
pub async fn registered(core: &Rc<Core>) {
    loop {
        let view = core.metadata.load();
        let me = view.cluster.brokers.get(&core.node_id());
        if me.is_some_and(|b| !b.fenced)
            && view.cluster.controller.is_some()
            && !view.cluster.cluster_id.is_empty()
        {
            return;
        }
        glommio::timer::sleep(REGISTER_POLL).await;
    }
}

fn cluster_id_matches(core: &Core, view: &MetadataView) -> bool {
    view.cluster.cluster_id.is_empty() || core.controller().cluster_id() == view.cluster.cluster_id
}

/// The quorum names the cluster: `meta.properties` follows it (a node formatted on
/// its own start holds an id of its own until it learns the cluster's).
async fn record_cluster_id(core: &Core, id: &str) {
    let (dir, node, id_owned) = (
        core.config.log_dir.clone(),
        core.config.node_id,
        id.to_string(),
    );
    let written = glommio::executor()
        .spawn_blocking(move || crate::cluster::store::write_meta_properties(&dir, &id_owned, node))
        .await;
    match written {
        Ok(()) => {
            core.controller().set_cluster_id(id.to_string());
            tracing::info!(cluster_id = id, "this node joined the cluster");
        }
        Err(e) => error!(error = %e, "recording the cluster id in meta.properties failed"),
    }
}

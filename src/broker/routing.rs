//! Shared lookups: topic by name or id, auto-creation, grouping work by owner shard.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use std::future::Future;

use crate::cluster::controller::NewTopic;
use crate::cluster::metadata::{ShardId, TopicMeta};
use crate::protocol::ErrorCode;
use crate::shard::{PartitionKey, Shard, CONTROLLER_SHARD};
use crate::storage::PartitionLog;

/// Creates `names` with broker defaults through the controller (auto-creation, which
/// only a Metadata request may ask for, as in Kafka); `client` names who asked, for the
/// log. Results are by name; a topic someone else created meanwhile counts as success.
pub async fn auto_create(
    shard: &Rc<Shard>,
    names: Vec<String>,
    client: &str,
) -> BTreeMap<String, Result<Arc<TopicMeta>, ErrorCode>> {
    // Internal topics are created by their owners (the group coordinator), with their
    // own settings, never by a client's request.
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| n != crate::group::offsets_topic::OFFSETS_TOPIC)
        .collect();
    if !names.is_empty() {
        tracing::info!(topics = ?names, client, "auto-creating topics a Metadata request names");
    }
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic {
            name: n.clone(),
            partitions: -1,
            replication_factor: -1,
            configs: BTreeMap::new(),
        })
        .collect();
    let results = shard
        .submit_to(CONTROLLER_SHARD, move |s| async move {
            s.controller().create_topics(&s, topics, false).await
        })
        .await;
    let mut out = BTreeMap::new();
    match results {
        Err(_) => {
            for n in names {
                out.insert(n, Err(ErrorCode::UnknownServerError));
            }
        }
        Ok(results) => {
            let snapshot = shard.metadata.load();
            for (n, r) in names.into_iter().zip(results) {
                let r = match r {
                    Ok(t) => Ok(t),
                    Err((ErrorCode::TopicAlreadyExists, _)) => snapshot
                        .topic(&n)
                        .cloned()
                        .ok_or(ErrorCode::UnknownTopicOrPartition),
                    Err((code, _)) => Err(code),
                };
                out.insert(n, r);
            }
        }
    }
    out
}

/// Work items grouped by owner shard, each remembering its slot in the response.
pub fn group_by_owner<T>(
    items: impl IntoIterator<Item = (ShardId, usize, T)>,
) -> BTreeMap<ShardId, Vec<(usize, T)>> {
    let mut by_shard: BTreeMap<ShardId, Vec<(usize, T)>> = BTreeMap::new();
    for (owner, slot, item) in items {
        by_shard.entry(owner).or_default().push((slot, item));
    }
    by_shard
}

/// Runs `op` on the owner shard of each work item's partition (one message per owner;
/// an owner's items run one after another) and stores each result in its slot of
/// `results`. A partition without a log on its owner gets UNKNOWN_TOPIC_OR_PARTITION.
pub async fn run_on_owners<T, R, F, Fut>(
    shard: &Rc<Shard>,
    work: Vec<(ShardId, usize, (PartitionKey, T))>,
    results: &mut [Result<R, ErrorCode>],
    op: F,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Rc<PartitionLog>, T) -> Fut + Send + Copy + 'static,
    Fut: Future<Output = Result<R, ErrorCode>> + 'static,
{
    let runs = group_by_owner(work).into_iter().map(|(owner, items)| {
        shard.submit_to(owner, move |s| async move {
            let mut out = Vec::with_capacity(items.len());
            for (slot, (key, arg)) in items {
                let r = match s.log(&key) {
                    Some(log) => op(log, arg).await,
                    None => Err(ErrorCode::UnknownTopicOrPartition),
                };
                out.push((slot, r));
            }
            out
        })
    });
    for done in futures::future::join_all(runs).await.into_iter().flatten() {
        for (slot, r) in done {
            results[slot] = r;
        }
    }
}

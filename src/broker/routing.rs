//! Shared lookups: topic by name or id, auto-creation, grouping work by owner shard.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::controller::NewTopic;
use crate::cluster::metadata::{ShardId, TopicMeta};
use crate::protocol::ErrorCode;
use crate::shard::{Shard, CONTROLLER_SHARD};

/// Creates `names` with broker defaults through the controller (auto-creation).
/// Results are by name; a topic someone else created meanwhile counts as success.
pub async fn auto_create(
    shard: &Rc<Shard>,
    names: Vec<String>,
) -> BTreeMap<String, Result<Arc<TopicMeta>, ErrorCode>> {
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

//! The reconciler: makes the partition logs open on one core match what the
//! published view places there. `open_missing` opens (recovering or creating) the
//! replicas the view places on this core and sets their leader epochs; `remove_extra`
//! closes and removes the logs of replicas it no longer places here. The group
//! coordinator loads a `__consumer_offsets` partition whose leadership this node
//! gains and drops the groups of one it loses (`reconcile_groups`).
//!
//! Runs on the core it reconciles, one pass at a time (`Core::reconciling`).

use std::rc::Rc;

use tracing::{info, warn};

use super::view::MetadataView;
use super::{isr_manager, replica_fetcher, Core, PartitionKey};
use crate::cluster::metadata::{PartitionAssignment, TopicMeta};
use crate::cluster::store;
use crate::group::offsets_topic::OFFSETS_TOPIC;
use crate::replication::leader::LeaderState;
use crate::storage::segment::SegmentSpec;
use crate::storage::{LogConfig, PartitionLog};
use crate::txn::TRANSACTION_TOPIC;

/// A topic override that may be -1 (Kafka's "unlimited").
fn signed(topic: &TopicMeta, key: &str) -> Option<i64> {
    topic.configs.get(key).and_then(|v| v.parse().ok())
}

/// Log settings of a partition, from broker defaults and topic overrides.
pub fn log_config(config: &crate::config::Config, topic: &TopicMeta) -> LogConfig {
    let get = |key: &str, default: u64| {
        topic
            .configs
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    LogConfig {
        segment_size_max_bytes: get("segment.bytes", config.segment_size_max_bytes),
        segment: SegmentSpec {
            write_mode: config.write_mode,
            index_interval_bytes: get("index.interval.bytes", config.index_interval_bytes),
            index_size_max_bytes: get("segment.index.bytes", config.index_size_max_bytes).max(12),
        },
        tail_cache_bytes: config.tail_cache_bytes,
        batch_size_max_bytes: get("max.message.bytes", config.message_size_max_bytes as u64)
            as usize,
        flush_interval_messages: get("flush.messages", config.flush_interval_messages).max(1),
        flush_interval_ms: topic
            .configs
            .get("flush.ms")
            .and_then(|v| v.parse().ok())
            .or(config.flush_interval_ms),
        roll_ms: signed(topic, "segment.ms")
            .map_or(config.roll_ms, |v| (v >= 0).then_some(v as u64)),
        retention_ms: signed(topic, "retention.ms")
            .map_or(config.retention_ms, |v| (v >= 0).then_some(v as u64)),
        retention_bytes: signed(topic, "retention.bytes")
            .map_or(config.retention_bytes, |v| (v >= 0).then_some(v as u64)),
        timestamp_before_max_ms: signed(topic, "message.timestamp.before.max.ms")
            .filter(|v| *v >= 0)
            .unwrap_or(config.timestamp_before_max_ms),
        timestamp_after_max_ms: signed(topic, "message.timestamp.after.max.ms")
            .filter(|v| *v >= 0)
            .unwrap_or(config.timestamp_after_max_ms),
        check_records: config.produce_check_records,
    }
}

/// Opens (recovering or creating) a partition's log on the current core and records
/// the topic id beside it, as Kafka's `partition.metadata` does. `clean_shutdown`:
/// the broker's clean-shutdown marker was found, so the log may skip its scan.
async fn open_partition(
    core: &Core,
    config: &crate::config::Config,
    topic: &TopicMeta,
    partition: i32,
    clean_shutdown: bool,
) -> std::io::Result<Rc<PartitionLog>> {
    let dir = store::partition_dir(&core.config.log_dir, &topic.name, partition);
    let marker = dir.join("partition.metadata");
    let expected = format!("version: 0\ntopic_id: {}\n", topic.id);
    match std::fs::read_to_string(&marker) {
        Ok(found) if found != expected => {
            warn!(dir = %dir.display(), "directory belongs to an older topic of the same name; removing it");
            std::fs::remove_dir_all(&dir)?;
        }
        _ => {}
    }
    let log = PartitionLog::open(
        dir.clone(),
        log_config(config, topic),
        core.sync_group.clone(),
        clean_shutdown,
    )
    .await?;
    if let Some(hw) = core.checkpointed_high_watermark(&(topic.id, partition)) {
        log.raise_recovered_high_watermark(hw);
        info!(dir = %dir.display(), checkpointed = hw, high_watermark = log.recovered_high_watermark(), "the high watermark starts from the checkpoint");
    }
    if !marker.exists() {
        // A new partition: its directory entry must be durable too.
        store::write_atomic(&dir, "partition.metadata", expected.as_bytes())?;
        std::fs::File::open(&core.config.log_dir)?.sync_all()?;
    }
    Ok(log)
}

/// Opens every replica `view` places on this core that is not open yet, and sets each
/// one's leader epoch and configs. Stops at the first that fails, with its name and the cause.
pub async fn open_missing(
    core: &Rc<Core>,
    view: &MetadataView,
    clean_shutdown: bool,
) -> Result<(), String> {
    let _pass = core.reconciling.acquire_permit(1).await;
    for (topic, p) in view.replicas_on(core.id()) {
        let key = (topic.id, p);
        let assignment = topic.partition(p).expect("placed partitions exist");
        if let Some(log) = core.log(&key) {
            log.set_leader_epoch(assignment.leader_epoch);
            // Topic and dynamic broker config changes take effect here.
            log.set_config(log_config(&view.config, &topic));
            reconcile_role(core, key, assignment, &log);
            reconcile_groups(core, &topic, p, &log).await?;
            reconcile_transactions(core, &topic, p, &log).await?;
            continue;
        }
        let log = open_partition(core, &view.config, &topic, p, clean_shutdown)
            .await
            .map_err(|e| format!("opening {}-{p}: {e}", topic.name))?;
        log.set_leader_epoch(assignment.leader_epoch);
        reconcile_role(core, key, assignment, &log);
        reconcile_groups(core, &topic, p, &log).await?;
        reconcile_transactions(core, &topic, p, &log).await?;
        core.insert_log(key, log);
    }
    replica_fetcher::start(core, view);
    Ok(())
}

/// The group coordinator follows the leadership of `__consumer_offsets` partitions:
/// it loads one this node now leads, before the view saying so is published, and
/// drops the groups of one it no longer leads.
async fn reconcile_groups(
    core: &Rc<Core>,
    topic: &TopicMeta,
    partition: i32,
    log: &PartitionLog,
) -> Result<(), String> {
    if topic.name != OFFSETS_TOPIC {
        return Ok(());
    }
    let leads = topic.partition(partition).and_then(|a| a.leader) == Some(core.node_id());
    let loaded = core.groups.is_loaded(partition);
    if leads && !loaded {
        let records = core
            .groups
            .load_partition(log, partition, topic.partition_count())
            .await
            .map_err(|e| format!("loading the groups of {}-{partition}: {e}", topic.name))?;
        info!(
            partition,
            records, "leading __consumer_offsets: groups loaded"
        );
    } else if !leads && loaded {
        core.groups
            .unload_partition(partition, Some(topic.partition_count()));
        info!(
            partition,
            "no longer leading __consumer_offsets: groups dropped"
        );
    }
    Ok(())
}

/// The transaction coordinator follows the leadership of `__transaction_state`
/// partitions: it loads one this node now leads (or leads at a new epoch, its
/// coordinator epoch) and resumes the transactions it finds ending; it drops the ids
/// of one it no longer leads.
async fn reconcile_transactions(
    core: &Rc<Core>,
    topic: &TopicMeta,
    partition: i32,
    log: &PartitionLog,
) -> Result<(), String> {
    if topic.name != TRANSACTION_TOPIC {
        return Ok(());
    }
    let Some(assignment) = topic.partition(partition) else {
        return Ok(());
    };
    let epoch = assignment.leader_epoch.0;
    let leads = assignment.leader == Some(core.node_id());
    if leads && !core.txns.is_loaded(partition, epoch) {
        let ending = core
            .txns
            .load_partition(log, partition, topic.partition_count(), epoch)
            .await
            .map_err(|e| {
                format!(
                    "loading the transactions of {}-{partition}: {e}",
                    topic.name
                )
            })?;
        info!(
            partition,
            coordinator_epoch = epoch,
            ending = ending.len(),
            "leading __transaction_state: transactional ids loaded"
        );
        core.txns.resume(core, partition, epoch, ending);
    } else if !leads
        && core
            .txns
            .loaded_partitions()
            .iter()
            .any(|(p, _)| *p == partition)
    {
        core.txns
            .unload_partition(partition, Some(topic.partition_count()));
        info!(
            partition,
            "no longer leading __transaction_state: transactional ids dropped"
        );
    }
    Ok(())
}

/// Sets a replica up for its role: the leader of a replicated partition tracks its
/// followers and caps its high watermark by what they hold; a leader alone lifts the
/// cap; a follower keeps its high watermark until its leader says more.
fn reconcile_role(
    core: &Rc<Core>,
    key: PartitionKey,
    assignment: &PartitionAssignment,
    log: &PartitionLog,
) {
    let me = core.node_id();
    let mut leaders = core.leaders.borrow_mut();
    if assignment.leader != Some(me) {
        leaders.remove(&key);
        if !log.is_replicated() {
            log.set_replicated_end(log.recovered_high_watermark());
        }
        return;
    }
    if assignment.replicas.len() < 2 {
        leaders.remove(&key);
        log.set_replicated_end(i64::MAX);
        return;
    }
    // A log nobody replicated since it opened knows only what its recovery recorded:
    // showing its whole log could show records no follower holds.
    if !log.is_replicated() {
        log.set_replicated_end(log.recovered_high_watermark());
    }
    let hw = log.offsets().high_watermark;
    let a = assignment;
    let new = || {
        LeaderState::new(
            me,
            a.leader_epoch,
            a.partition_epoch,
            &a.replicas,
            &a.isr,
            hw,
        )
    };
    let state = leaders.entry(key).or_insert_with(new);
    if state.leader_epoch == a.leader_epoch {
        state.update(a.partition_epoch, &a.replicas, &a.isr);
    } else {
        *state = new();
    }
    log.set_replicated_end(state.replicated_end(hw));
    drop(leaders);
    isr_manager::start(core);
}

/// Closes and removes the logs of replicas `view` does not place on this core (their
/// files go after a rename, see `PartitionLog::delete`).
pub async fn remove_extra(core: &Core, view: &MetadataView) {
    let _pass = core.reconciling.acquire_permit(1).await;
    for key in core.log_keys() {
        let kept = view
            .topic_by_id(&key.0)
            .and_then(|t| view.shard_of(t, key.1))
            == Some(core.id());
        if kept {
            continue;
        }
        core.leaders.borrow_mut().remove(&key);
        if let Some(log) = core.remove_log(&key) {
            let offsets = view.topic(OFFSETS_TOPIC);
            if offsets.is_none_or(|t| t.id == key.0) {
                core.groups
                    .unload_partition(key.1, offsets.map(|t| t.partition_count()));
            }
            let txns = view.topic(TRANSACTION_TOPIC);
            if txns.is_none_or(|t| t.id == key.0) {
                core.txns
                    .unload_partition(key.1, txns.map(|t| t.partition_count()));
            }
            if let Err(e) = log.delete().await {
                warn!(dir = %log.dir().display(), error = %e, "removing partition directory failed");
            }
        }
    }
}

//! Fetch (v4–v17): reads on the owner shards, long-polls on `max_wait_ms`/`min_bytes`
//! woken by appends, and writes the response with our own writer so record bytes are
//! never copied into it.
//!
//! Limits follow Kafka (KIP-74): `partition_max_bytes` and the response's `max_bytes`
//! bound the data, except that the first batch of the first non-empty partition is
//! always returned whole, so a consumer can make progress past a large batch.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{select, select_all};
use futures::FutureExt;
use kafka_protocol::messages::fetch_request::FetchRequest;

use super::fetch_session;
use super::routing::{group_by_owner, leader_epoch_check, not_served, LeaderHints};
use super::storage_errors::read_error_code;
use super::{decode, Outcome};
use crate::cluster::metadata::TopicMeta;
use crate::ids::BrokerId;
use crate::node::fetch_sessions::{Answered, FetchParams};
use crate::node::view::MetadataView;
use crate::node::{Core, PartitionKey};
use crate::protocol::chunk::Chunk;
use crate::protocol::fetch_writer::{
    write_fetch_response, FetchPartitionData, FetchTopicData, LeaderHint, NodeEndpoint,
    FETCH_LEADER_HINTS_FROM, FETCH_TOPIC_IDS_FROM,
};
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;
use crate::shard::ShardId;
use crate::storage::log::AppendWatcher;
use crate::storage::{PartitionLog, ReadBound};

/// Upper bound on how long one fetch may wait, whatever the client asks.
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(60);
/// Upper bound on the data one fetch reads per partition and in all, whatever the
/// client asks (Kafka's broker setting `fetch.max.bytes` defaults to this).
pub const FETCH_BYTES_MAX: usize = 55 << 20;

struct Slot {
    /// The partition's topic, if it exists.
    topic: Option<Arc<TopicMeta>>,
    target: Option<(ShardId, PartitionKey)>,
    params: FetchParams,
    partition_max_bytes: usize,
    result: FetchPartitionData,
}

#[derive(Clone, Copy)]
struct ReadRequest {
    key: PartitionKey,
    offset: i64,
    max_bytes: usize,
    /// A follower's fetch: it reads to the log end, and its fetch offset tells the
    /// leader what it holds.
    replica: Option<BrokerId>,
    /// The follower's newest epoch (-1: none), to find where its log diverges.
    last_fetched_epoch: i32,
    /// A read_committed consumer: it reads up to the last stable offset and is told
    /// the aborted transactions among what it gets.
    read_committed: bool,
}

impl ReadRequest {
    fn bound(&self) -> ReadBound {
        if self.replica.is_some() {
            ReadBound::LogEnd
        } else if self.read_committed {
            ReadBound::LastStable
        } else {
            ReadBound::HighWatermark
        }
    }
}

struct ReadResult {
    error: ErrorCode,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    aborted_transactions: Option<Vec<(i64, i64)>>,
    records: Vec<Chunk>,
    diverging_epoch: Option<(i32, i64)>,
}

/// Where a follower's log diverges from this leader's (KIP-320, as Kafka's
/// `Partition.fetchRecords` decides): its last epoch ends earlier here than its
/// fetch offset, or is not an epoch of this log.
fn divergence(log: &PartitionLog, r: &ReadRequest) -> Option<(i32, i64)> {
    if r.last_fetched_epoch < 0 {
        return None;
    }
    let (epoch, end) = log.end_offset_for_epoch(r.last_fetched_epoch);
    (end < r.offset || epoch < r.last_fetched_epoch).then_some((epoch, end))
}

/// A follower's fetch from `offset`: it holds the log below it. The leader's high
/// watermark moves to what every in-sync replica holds.
fn note_follower_fetch(core: &Core, r: &ReadRequest, follower: BrokerId, log: &PartitionLog) {
    let mut leaders = core.leaders.borrow_mut();
    if let Some(state) = leaders.get_mut(&r.key) {
        let offsets = log.offsets();
        state.note_fetch(follower, r.offset, offsets.log_end, Instant::now());
        log.set_replicated_end(state.replicated_end(offsets.high_watermark));
    }
}

async fn read_on_owner(
    core: Rc<Core>,
    items: Vec<(usize, ReadRequest)>,
) -> Vec<(usize, ReadResult)> {
    let logs = items.iter().map(|(_, r)| core.log(&r.key)).collect();
    read_logs(&core, items, logs).await
}

/// Reads each of `items` from its log (`logs`, in the same order: `None` for a
/// partition this shard no longer has).
async fn read_logs(
    core: &Core,
    items: Vec<(usize, ReadRequest)>,
    logs: Vec<Option<Rc<PartitionLog>>>,
) -> Vec<(usize, ReadResult)> {
    let mut out = Vec::with_capacity(items.len());
    for ((slot, r), log) in items.into_iter().zip(logs) {
        let result = match log {
            None => ReadResult {
                error: ErrorCode::UnknownTopicOrPartition,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                aborted_transactions: None,
                records: Vec::new(),
                diverging_epoch: None,
            },
            Some(log) => {
                let diverging_epoch = r.replica.and_then(|_| divergence(&log, &r));
                if let (Some(follower), None) = (r.replica, diverging_epoch) {
                    note_follower_fetch(core, &r, follower, &log);
                }
                let offsets = log.offsets();
                let bound = r.bound();
                let read = match diverging_epoch {
                    Some(_) => Ok(Vec::new()),
                    None => {
                        log.read_chunks(
                            r.offset,
                            r.max_bytes,
                            true,
                            core.config.fetch_zero_copy,
                            bound,
                        )
                        .await
                    }
                };
                // Over-inclusive past the records returned (up to the last stable
                // offset), which consumers ignore; read from the index, not the data.
                let aborted_transactions = (r.read_committed)
                    .then(|| log.aborted_transactions(r.offset, offsets.last_stable));
                match read {
                    Ok(records) => ReadResult {
                        error: ErrorCode::None,
                        high_watermark: offsets.high_watermark,
                        last_stable_offset: offsets.last_stable,
                        log_start_offset: offsets.log_start,
                        aborted_transactions,
                        records,
                        diverging_epoch,
                    },
                    Err(e) => ReadResult {
                        error: read_error_code(&e),
                        high_watermark: offsets.high_watermark,
                        last_stable_offset: offsets.last_stable,
                        log_start_offset: offsets.log_start,
                        aborted_transactions: None,
                        records: Vec::new(),
                        diverging_epoch: None,
                    },
                }
            }
        };
        out.push((slot, result));
    }
    out
}

/// Returns when the end visible to any of `items` (slot, (read, end seen): the high
/// watermark, or for read_committed the last stable offset) grows past what was
/// seen, or after `timeout`. `logs` are the items' logs, in the same order.
async fn wait_on_owner(
    items: &[(usize, (ReadRequest, i64))],
    logs: &[Option<Rc<PartitionLog>>],
    timeout: Duration,
) {
    let watcher = AppendWatcher::new();
    for ((_, (r, seen)), log) in items.iter().zip(logs) {
        let Some(log) = log else { return };
        if has_news(log, r, *seen) {
            return;
        }
        log.watch_appends(&watcher);
    }
    if items.is_empty() {
        return;
    }
    let sleep = glommio::timer::sleep(timeout).boxed_local();
    let _ = select(watcher.appended(), sleep).await;
}

/// Whether a partition has something a read of it did not: a follower waits for the
/// log end to pass its fetch offset; a consumer for the end visible to it to pass
/// what it saw.
fn has_news(log: &PartitionLog, r: &ReadRequest, seen: i64) -> bool {
    match r.bound() {
        ReadBound::LogEnd => log.offsets().log_end > r.offset,
        ReadBound::LastStable => log.offsets().last_stable > seen,
        ReadBound::HighWatermark => log.high_watermark() > seen,
    }
}

/// A long poll's wait on one owner, and the read after it, in one job: the owner
/// reads as soon as an append wakes it, so a fetch woken by new data takes one
/// cross-shard round trip instead of two (a wake-up, then a read). It reads only
/// partitions with news (the others' first reads stand: a fetch of many quiet
/// partitions reads each once per round, not twice), and nothing if the fetch is
/// done meanwhile (another owner answered first).
async fn wait_then_read_on_owner(
    core: Rc<Core>,
    items: Vec<(usize, (ReadRequest, i64))>,
    timeout: Duration,
    fetch_done: Arc<AtomicBool>,
) -> Vec<(usize, ReadResult)> {
    let logs: Vec<_> = items.iter().map(|(_, (r, _))| core.log(&r.key)).collect();
    wait_on_owner(&items, &logs, timeout).await;
    if fetch_done.load(Ordering::Relaxed) {
        return Vec::new();
    }
    // A partition gone from this shard is read too: the read reports it.
    let (items, logs) = items
        .into_iter()
        .zip(logs)
        .filter(|((_, (r, seen)), log)| log.as_ref().is_none_or(|l| has_news(l, r, *seen)))
        .map(|((slot, (r, _)), log)| ((slot, r), log))
        .unzip();
    read_logs(&core, items, logs).await
}

/// Sets the flag when dropped: the fetch no longer wants the owners' answers.
struct DoneOnDrop(Arc<AtomicBool>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Puts an owner's read results into their slots.
fn store_results(slots: &mut [Slot], answer: impl IntoIterator<Item = (usize, ReadResult)>) {
    for (slot, r) in answer {
        let out = &mut slots[slot].result;
        out.error = r.error;
        out.high_watermark = r.high_watermark;
        out.last_stable_offset = r.last_stable_offset;
        out.log_start_offset = r.log_start_offset;
        out.aborted_transactions = r.aborted_transactions;
        out.records = r.records;
        out.diverging_epoch = r.diverging_epoch;
    }
}

/// Whether the fetch can be answered before its wait is over: `min_bytes` (at least
/// one) are ready, or a partition has an error to report. A follower's partition
/// this node cannot route yet (a topic its metadata has not reached) counts too: the
/// follower asks again soon, rather than park a round whose new partition no append
/// here could wake.
fn slots_satisfy(slots: &[Slot], min_bytes: usize, from_replica: bool) -> bool {
    let mut bytes_ready = 0usize;
    for s in slots.iter().filter(|s| s.target.is_some() || from_replica) {
        if s.result.error != ErrorCode::None || s.result.diverging_epoch.is_some() {
            return true;
        }
        bytes_ready += s.result.records.iter().map(Chunk::len).sum::<usize>();
    }
    bytes_ready >= min_bytes.max(1)
}

/// The slot of one partition to fetch: where it is read, or the error it gets.
fn slot_for(
    snapshot: &MetadataView,
    by_id: bool,
    replica: Option<BrokerId>,
    response_max_bytes: usize,
    p: FetchParams,
) -> Slot {
    let meta = if by_id {
        snapshot.topic_by_id(&p.topic_id)
    } else {
        snapshot.topic(&p.topic_name)
    };
    let missing = if by_id {
        ErrorCode::UnknownTopicId
    } else {
        ErrorCode::UnknownTopicOrPartition
    };
    let mut result = FetchPartitionData {
        partition: p.partition,
        error: ErrorCode::None,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        aborted_transactions: None,
        records: Vec::new(),
        current_leader: None,
        diverging_epoch: None,
    };
    let target = match meta.map(|m| {
        snapshot
            .leader_shard(m, p.partition)
            .map(|o| (o, (m.id, p.partition)))
    }) {
        None => {
            result.error = missing;
            None
        }
        Some(Err(why)) => {
            result.error = not_served(why);
            None
        }
        Some(Ok(found)) => {
            let not_a_replica = replica.is_some_and(|r| {
                meta.and_then(|m| m.partition(p.partition))
                    .is_none_or(|a| !a.replicas.contains(&r))
            });
            match leader_epoch_check(meta, p.partition, p.current_leader_epoch) {
                Err(code) => {
                    result.error = code;
                    None
                }
                // As Kafka: a broker fetches only what it is a replica of.
                Ok(()) if not_a_replica => {
                    result.error = ErrorCode::NotLeaderOrFollower;
                    None
                }
                Ok(()) => Some(found),
            }
        }
    };
    Slot {
        topic: meta.cloned(),
        target,
        partition_max_bytes: (p.partition_max_bytes.max(0) as usize).min(response_max_bytes),
        params: p,
        result,
    }
}

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: FetchRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let deadline =
        Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let min_bytes = req.min_bytes.max(0) as usize;
    let response_max_bytes = if req.max_bytes <= 0 {
        FETCH_BYTES_MAX
    } else {
        (req.max_bytes as usize).min(FETCH_BYTES_MAX)
    };
    let snapshot = core.metadata.load();
    let by_id = h.api_version >= FETCH_TOPIC_IDS_FROM;
    // A broker's follower fetch names its replica id (in ReplicaState from v15).
    let replica_id = if h.api_version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let replica = (replica_id >= 0).then_some(BrokerId(replica_id));
    // isolation_level 1: READ_COMMITTED (a follower reads everything regardless).
    let read_committed = replica.is_none() && req.isolation_level == 1;
    let (session, wanted) = match fetch_session::begin(core, h, &req).await {
        Ok(begun) => begun,
        Err(answer) => return answer,
    };
    let mut slots: Vec<Slot> = wanted
        .into_iter()
        .map(|p| slot_for(&snapshot, by_id, replica, response_max_bytes, p))
        .collect();
    let read_request = |s: &Slot| ReadRequest {
        key: s.target.expect("only slots with an owner are read").1,
        offset: s.params.fetch_offset,
        max_bytes: s.partition_max_bytes,
        replica,
        last_fetched_epoch: s.params.last_fetched_epoch,
        read_committed,
    };
    let reads = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.target.map(|(owner, _)| (owner, i, read_request(s))));
    let rounds = group_by_owner(reads)
        .into_iter()
        .map(|(owner, items)| core.submit_to(owner, move |s| read_on_owner(s, items)));
    for answer in futures::future::join_all(rounds).await {
        store_results(&mut slots, answer.into_iter().flatten());
    }
    loop {
        let now = Instant::now();
        if slots_satisfy(&slots, min_bytes, replica.is_some()) || now >= deadline {
            break;
        }
        // Wait on every owner; the first to see an append (or its timeout) reads its
        // partitions and answers, and the check above decides whether that is enough.
        let remaining = deadline - now;
        let fetch_done = Arc::new(AtomicBool::new(false));
        let _done_on_drop = DoneOnDrop(fetch_done.clone());
        let waits = slots.iter().enumerate().filter_map(|(i, s)| {
            let seen = if read_committed {
                s.result.last_stable_offset
            } else {
                s.result.high_watermark
            };
            s.target
                .map(|(owner, _)| (owner, i, (read_request(s), seen)))
        });
        let waiting: Vec<_> = group_by_owner(waits)
            .into_iter()
            .map(|(owner, items)| {
                let fetch_done = fetch_done.clone();
                core.submit_to(owner, move |s| {
                    wait_then_read_on_owner(s, items, remaining, fetch_done)
                })
                .boxed_local()
            })
            .collect();
        if waiting.is_empty() {
            glommio::timer::sleep(remaining).await;
            break;
        }
        let timer = glommio::timer::sleep(remaining).boxed_local();
        match select(select_all(waiting), timer).await {
            futures::future::Either::Left(((Ok(answer), _, _), _)) => {
                store_results(&mut slots, answer)
            }
            // An owner is gone (shutting down) or time ran out: answer with what was read.
            _ => break,
        }
    }
    // Response-level max_bytes: later partitions give way once the budget is spent.
    let mut total = 0usize;
    for s in &mut slots {
        let len: usize = s.result.records.iter().map(Chunk::len).sum();
        if total > 0 && total + len > response_max_bytes {
            s.result.records = Vec::new();
        } else {
            total += len;
        }
    }
    // KIP-951: refused partitions say who leads them now (v16+, as Kafka).
    let mut hints = LeaderHints::default();
    if h.api_version >= FETCH_LEADER_HINTS_FROM {
        for s in &mut slots {
            if matches!(
                s.result.error,
                ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch
            ) {
                let (leader_id, leader_epoch) = hints.hint(s.topic.as_deref(), s.result.partition);
                s.result.current_leader = Some(LeaderHint {
                    leader_id,
                    leader_epoch,
                });
            }
        }
    }
    let endpoints: Vec<NodeEndpoint> = hints
        .endpoints(&snapshot)
        .into_iter()
        .map(|b| NodeEndpoint {
            node_id: b.id.0,
            host: b.host.clone(),
            port: b.port as i32,
            rack: b.rack.clone(),
        })
        .collect();
    let answered = slots
        .iter()
        .map(|s| {
            let r = &s.result;
            Answered {
                high_watermark: r.high_watermark,
                log_start_offset: r.log_start_offset,
                has_records: !r.records.is_empty(),
                must_send: r.error != ErrorCode::None || r.diverging_epoch.is_some(),
            }
        })
        .collect();
    let params = || slots.iter().map(|s| s.params.clone()).collect();
    let finished =
        fetch_session::finish(core, h, session, replica.is_some(), answered, params).await;
    let (session_id, sent) = match finished {
        Ok(finished) => finished,
        Err(answer) => return answer,
    };
    // Consecutive partitions of one topic share a topic entry (as Kafka's
    // FetchResponse.toMessage: a session's order may name a topic twice).
    let mut topics: Vec<FetchTopicData> = Vec::new();
    for (s, send) in slots.into_iter().zip(sent) {
        if !send {
            continue;
        }
        let same = topics
            .last()
            .is_some_and(|t| t.topic_id == s.params.topic_id && *t.name == *s.params.topic_name);
        if !same {
            topics.push(FetchTopicData {
                name: s.params.topic_name.to_string(),
                topic_id: s.params.topic_id,
                partitions: Vec::new(),
            });
        }
        topics
            .last_mut()
            .expect("just pushed")
            .partitions
            .push(s.result);
    }
    Outcome::Respond(write_fetch_response(
        h.correlation_id,
        h.api_version,
        ErrorCode::None,
        session_id,
        topics,
        &endpoints,
    ))
}

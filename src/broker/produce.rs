//! Produce (v3–v11; v0–v2 advertised for librdkafka and answered UNSUPPORTED_VERSION).
//!
//! The connection's shard splits the request by owner shard; each owner validates and
//! appends its partitions; the response is assembled in the request's order. Record
//! bytes travel as `Bytes` slices of the request frame, never copied on the way.

use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    NodeEndpoint, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::BrokerId;

use super::routing::{group_by_owner, leader_here, LeaderHints};
use super::storage_errors::append_error_code;
use super::{decode, encode_response, str_bytes, Outcome};
use crate::node::{Core, PartitionKey};
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;
use crate::storage::{AppendInfo, PartitionLog};

type PartitionResult = Result<AppendInfo, (ErrorCode, Option<String>)>;

/// Waits, at most `wait`, until the in-sync replicas hold the appended batch; then, as
/// Kafka's delayed produce, fails it if the ISR has shrunk below `min_isr` meanwhile.
async fn wait_for_replicas(
    core: &Core,
    key: PartitionKey,
    log: &PartitionLog,
    info: AppendInfo,
    wait: Duration,
    min_isr: usize,
) -> PartitionResult {
    let held = Box::pin(log.wait_for_high_watermark(info.end_offset));
    match futures::future::select(held, Box::pin(glommio::timer::sleep(wait))).await {
        futures::future::Either::Left((Ok(()), _)) => {
            let view = core.metadata.load();
            let isr = view
                .topic_by_id(&key.0)
                .and_then(|t| t.partition(key.1))
                .map_or(0, |a| a.isr.len());
            if isr < min_isr {
                return Err((
                    ErrorCode::NotEnoughReplicasAfterAppend,
                    Some(format!(
                        "The size of the current ISR : {isr} is insufficient to satisfy the min.isr requirement of {min_isr}"
                    )),
                ));
            }
            Ok(info)
        }
        futures::future::Either::Left((Err(e), _)) => {
            Err((append_error_code(&e), Some(e.to_string())))
        }
        futures::future::Either::Right(_) => Err((
            ErrorCode::RequestTimedOut,
            Some("the in-sync replicas did not acknowledge the batch in time".into()),
        )),
    }
}

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: ProduceRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let acks = req.acks;
    // An unknown topic gets UNKNOWN_TOPIC_OR_PARTITION and is never auto-created, as
    // in Kafka (KafkaApis.handleProduceRequest): only Metadata creates topics, so a
    // Produce still in flight for a deleted topic cannot bring it back.
    let snapshot = core.metadata.load();
    // One slot per (topic, partition) in request order.
    let mut results: Vec<Option<PartitionResult>> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topic_data {
        let topic = snapshot.topic(t.name.0.as_str());
        for p in &t.partition_data {
            let slot = results.len();
            results.push(None);
            if !matches!(acks, -1..=1) {
                results[slot] = Some(Err((ErrorCode::InvalidRequiredAcks, None)));
                continue;
            }
            let name = t.name.0.as_str();
            if name == crate::group::offsets_topic::OFFSETS_TOPIC
                || name == crate::txn::TRANSACTION_TOPIC
            {
                // As Kafka: clients may not append to an internal topic.
                let why = format!("Cannot append to internal topic {name}");
                results[slot] = Some(Err((ErrorCode::InvalidTopicException, Some(why))));
                continue;
            }
            let min_isr = topic.map_or(1, |t| snapshot.min_insync_replicas(t));
            match (leader_here(&snapshot, topic, p.index), &p.records) {
                (Err(code), _) => results[slot] = Some(Err((code, None))),
                (Ok(_), None) => {
                    results[slot] = Some(Err((ErrorCode::InvalidRecord, Some("no records".into()))))
                }
                (Ok((owner, key)), Some(records)) => {
                    let isr = topic
                        .and_then(|t| t.partition(p.index))
                        .map_or(0, |a| a.isr.len());
                    if acks == -1 && isr < min_isr {
                        // As Kafka: refused before the append.
                        let why = format!(
                            "The size of the current ISR : {isr} is insufficient to satisfy the min.isr requirement of {min_isr} for partition {}-{}",
                            t.name.0, p.index
                        );
                        results[slot] = Some(Err((ErrorCode::NotEnoughReplicas, Some(why))));
                        continue;
                    }
                    work.push((owner, slot, (key, records.clone(), min_isr)));
                }
            }
        }
    }
    // acks=all on a replicated partition: the answer waits until every in-sync
    // replica holds the batch (the high watermark passes it), for at most the
    // request's timeout, as Kafka's delayed produce.
    let replicas_wait = (acks == -1).then(|| Duration::from_millis(req.timeout_ms.max(0) as u64));
    let appends = group_by_owner(work).into_iter().map(|(owner, items)| {
        core.submit_to(owner, move |s| async move {
            // Each append takes its place in its partition's line here, in request
            // order, before any of them is polled.
            let appends: Vec<_> = items
                .into_iter()
                .map(|(slot, (key, records, min_isr))| {
                    let append = s.log(&key).map(|log| (log.append(records), log));
                    let s = s.clone();
                    async move {
                        let r = match append {
                            None => Err((ErrorCode::UnknownTopicOrPartition, None)),
                            Some((append, log)) => match append.await {
                                Ok(info) => match replicas_wait {
                                    Some(wait) if log.is_replicated() => {
                                        wait_for_replicas(&s, key, &log, info, wait, min_isr).await
                                    }
                                    _ => Ok(info),
                                },
                                Err(e) => Err((append_error_code(&e), Some(e.to_string()))),
                            },
                        };
                        (slot, r)
                    }
                })
                .collect();
            futures::future::join_all(appends).await
        })
    });
    for shard_results in futures::future::join_all(appends).await {
        match shard_results {
            Ok(items) => {
                for (slot, r) in items {
                    results[slot] = Some(r);
                }
            }
            Err(gone) => tracing::warn!(error = %gone, "produce to a stopped core"),
        }
    }
    if acks == 0 {
        return Outcome::NoResponse;
    }
    let mut results = results.into_iter();
    let mut resp = ProduceResponse::default();
    let mut hints = LeaderHints::default();
    for t in &req.topic_data {
        let mut tr = TopicProduceResponse::default();
        tr.name = t.name.clone();
        for p in &t.partition_data {
            let r = results
                .next()
                .flatten()
                .unwrap_or(Err((ErrorCode::KafkaStorageError, None)));
            let mut pr = PartitionProduceResponse::default();
            pr.index = p.index;
            pr.log_append_time_ms = -1;
            match r {
                Ok(info) => {
                    pr.base_offset = info.base_offset;
                    if h.api_version >= 5 {
                        pr.log_start_offset = info.log_start_offset;
                    }
                }
                Err((code, message)) => {
                    pr.error_code = code.code();
                    pr.base_offset = -1;
                    if h.api_version >= 8 {
                        pr.error_message = message.map(|m| str_bytes(&m));
                    }
                    if code == ErrorCode::NotLeaderOrFollower && h.api_version >= 10 {
                        // KIP-951: where the partition is led now, so the client
                        // need not refresh its metadata first.
                        let topic = snapshot.topic(t.name.0.as_str()).map(|t| &**t);
                        let (leader_id, leader_epoch) = hints.hint(topic, p.index);
                        pr.current_leader.leader_id = BrokerId(leader_id);
                        pr.current_leader.leader_epoch = leader_epoch;
                    }
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    resp.node_endpoints = hints
        .endpoints(&snapshot)
        .into_iter()
        .map(|b| {
            let mut e = NodeEndpoint::default();
            e.node_id = BrokerId(b.id.0);
            e.host = str_bytes(&b.host);
            e.port = b.port as i32;
            e.rack = b.rack.as_deref().map(str_bytes);
            e
        })
        .collect();
    encode_response(key::PRODUCE, h.api_version, h.correlation_id, &resp)
}

/// Produce v0–v2: Kafka 4.0 keeps them advertised (librdkafka needs that) and answers
/// every partition with UNSUPPORTED_VERSION. Their schemas are decoded by hand here,
/// since the schema crate starts at v3.
pub fn unsupported_old_version(h: &RequestHeader, mut body: Bytes) -> Outcome {
    fn string(b: &mut Bytes) -> Option<Bytes> {
        if b.remaining() < 2 {
            return None;
        }
        let len = b.get_i16();
        if len < 0 || b.remaining() < len as usize {
            return None;
        }
        Some(b.split_to(len as usize))
    }
    fn count(b: &mut Bytes, min_item: usize) -> Option<usize> {
        if b.remaining() < 4 {
            return None;
        }
        let n = b.get_i32();
        (n >= 0 && (n as usize).saturating_mul(min_item) <= b.remaining()).then_some(n as usize)
    }
    /// acks, then (topic name, partition indexes) per topic.
    type OldProduce = (i16, Vec<(Bytes, Vec<i32>)>);
    let parse = |b: &mut Bytes| -> Option<OldProduce> {
        if b.remaining() < 6 {
            return None;
        }
        let acks = b.get_i16();
        b.advance(4);
        let mut topics = Vec::new();
        for _ in 0..count(b, 6)? {
            let name = string(b)?;
            let mut partitions = Vec::new();
            for _ in 0..count(b, 8)? {
                if b.remaining() < 8 {
                    return None;
                }
                partitions.push(b.get_i32());
                let len = b.get_i32();
                if len > 0 {
                    if b.remaining() < len as usize {
                        return None;
                    }
                    b.advance(len as usize);
                }
            }
            topics.push((name, partitions));
        }
        Some((acks, topics))
    };
    let Some((acks, topics)) = parse(&mut body) else {
        return Outcome::Close(format!("malformed Produce v{} request", h.api_version));
    };
    if acks == 0 {
        return Outcome::Close(format!("Produce v{} is not supported", h.api_version));
    }
    let mut b = BytesMut::new();
    b.put_i32(0);
    b.put_i32(h.correlation_id);
    b.put_i32(topics.len() as i32);
    for (name, partitions) in topics {
        b.put_i16(name.len() as i16);
        b.put_slice(&name);
        b.put_i32(partitions.len() as i32);
        for p in partitions {
            b.put_i32(p);
            b.put_i16(ErrorCode::UnsupportedVersion.code());
            b.put_i64(-1);
            if h.api_version >= 2 {
                b.put_i64(-1);
            }
        }
    }
    if h.api_version >= 1 {
        b.put_i32(0);
    }
    let size = (b.len() - 4) as i32;
    b[0..4].copy_from_slice(&size.to_be_bytes());
    Outcome::Respond(vec![b.freeze().into()])
}

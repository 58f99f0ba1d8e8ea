//! The transaction coordinator's host (`txn::Host` for the core) and transaction
//! markers on their way: the coordinator's `write_markers` (each
//! partition's leader writes the marker: this node on the owner core, another broker
//! by a WriteTxnMarkers request), and a partition leader's side of it (`write_here`),
//! which WriteTxnMarkers requests reach too.

use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use glommio::net::TcpStream;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic, WriteTxnMarkersRequest,
};
use kafka_protocol::messages::write_txn_markers_response::WriteTxnMarkersResponse;
use kafka_protocol::messages::{ApiKey, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use tracing::debug;

use super::routing::leader_here;
use super::storage_errors::append_error_code;
use crate::group::offsets_topic::OFFSETS_TOPIC;
use crate::ids::BrokerId;
use crate::node::{controller_client, Core, CONTROLLER_SHARD};
use crate::protocol::control::Marker;
use crate::protocol::ErrorCode;
use crate::txn::MarkerRequest;

/// The WriteTxnMarkers version sent to other brokers (Kafka 4.0's).
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a peer.
const ANSWER_MAX: usize = 16 << 20;

pub type MarkerResults = Vec<((String, i32), ErrorCode)>;

/// Has each partition's leader write `m`'s marker; an error code per partition
/// (retriable ones when its leader is unknown or unreachable).
pub async fn write(core: Rc<Core>, m: MarkerRequest) -> MarkerResults {
    let view = core.metadata.load();
    let mut by_leader: BTreeMap<BrokerId, Vec<(String, i32)>> = BTreeMap::new();
    let mut out = Vec::new();
    for (t, p) in m.partitions {
        let leader = view
            .topic(&t)
            .and_then(|meta| meta.partition(p))
            .and_then(|a| a.leader);
        match leader {
            Some(l) => by_leader.entry(l).or_default().push((t, p)),
            None => out.push(((t, p), ErrorCode::NotLeaderOrFollower)),
        }
    }
    let marker = Marker {
        commit: m.commit,
        coordinator_epoch: m.coordinator_epoch,
    };
    let producer = (m.producer_id, m.producer_epoch);
    let sends = by_leader.into_iter().map(|(leader, parts)| {
        if leader == core.node_id() {
            write_here(core.clone(), producer, marker, parts).boxed_local()
        } else {
            send(core.clone(), leader, producer, marker, parts).boxed_local()
        }
    });
    for r in futures::future::join_all(sends).await {
        out.extend(r);
    }
    out
}

/// Writes the marker on each partition this node leads (on its owner core) and waits
/// until the in-sync replicas hold it (acks=-1, as Kafka); a marker on
/// `__consumer_offsets` also ends the producer's pending offset commits there.
pub async fn write_here(
    core: Rc<Core>,
    producer: (i64, i16),
    marker: Marker,
    partitions: Vec<(String, i32)>,
) -> MarkerResults {
    let view = core.metadata.load();
    let wait = Duration::from_millis(core.config.offsets_commit_timeout_ms);
    let writes = partitions.into_iter().map(|(t, p)| {
        let topic = view.topic(&t).cloned();
        let routed = leader_here(&view, topic.as_ref(), p);
        let core = core.clone();
        async move {
            let (owner, key) = match routed {
                Ok(found) => found,
                Err(code) => return ((t, p), code),
            };
            let offsets_partitions = (t == OFFSETS_TOPIC)
                .then(|| topic.as_ref().map(|m| m.partition_count()))
                .flatten();
            let code = core
                .submit_to(owner, move |s| async move {
                    let Some(log) = s.log(&key) else {
                        return ErrorCode::UnknownTopicOrPartition;
                    };
                    let info = match log.append_marker(producer, marker).await {
                        Ok(info) => info,
                        Err(e) => return append_error_code(&e),
                    };
                    let held = Box::pin(log.wait_for_high_watermark(info.end_offset));
                    let timeout = Box::pin(glommio::timer::sleep(wait));
                    match futures::future::select(held, timeout).await {
                        futures::future::Either::Left((Ok(()), _)) => {}
                        futures::future::Either::Left((Err(e), _)) => return append_error_code(&e),
                        futures::future::Either::Right(_) => return ErrorCode::RequestTimedOut,
                    }
                    if let Some(count) = offsets_partitions {
                        s.groups
                            .complete_transaction(key.1, count, producer.0, marker.commit);
                    }
                    ErrorCode::None
                })
                .await
                .unwrap_or(ErrorCode::NotLeaderOrFollower);
            ((t, p), code)
        }
    });
    futures::future::join_all(writes).await
}

/// Sends the marker to `leader` as a WriteTxnMarkers request.
async fn send(
    core: Rc<Core>,
    leader: BrokerId,
    producer: (i64, i16),
    marker: Marker,
    partitions: Vec<(String, i32)>,
) -> MarkerResults {
    let unreachable = |parts: &[(String, i32)]| -> MarkerResults {
        parts
            .iter()
            .map(|p| (p.clone(), ErrorCode::NotLeaderOrFollower))
            .collect()
    };
    let Some((host, port)) = core
        .metadata
        .load()
        .cluster
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .map(|b| (b.host.clone(), b.port))
    else {
        return unreachable(&partitions);
    };
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            )]);
    let wait = Duration::from_millis(core.config.offsets_commit_timeout_ms) + CONNECT_TIMEOUT;
    let answer = glommio::timer::timeout(wait, async {
        exchange(&host, port, &request)
            .await
            .map_err(glommio::GlommioError::from)
    })
    .await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            debug!(leader = leader.0, error = %e, "sending transaction markers failed");
            return unreachable(&partitions);
        }
    };
    let mut out = Vec::new();
    for m in response.markers {
        for t in m.topics {
            for p in t.partitions {
                out.push((
                    (t.name.0.to_string(), p.partition_index),
                    known_code(p.error_code),
                ));
            }
        }
    }
    // A partition the answer leaves out is asked again.
    for p in partitions {
        if !out.iter().any(|(q, _)| *q == p) {
            out.push((p, ErrorCode::NotLeaderOrFollower));
        }
    }
    out
}

/// One WriteTxnMarkers request and its answer, on a connection of its own.
async fn exchange(
    host: &str,
    port: u16,
    request: &WriteTxnMarkersRequest,
) -> io::Result<WriteTxnMarkersResponse> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let frame = crate::perf::conn::encode_request(
        ApiKey::WriteTxnMarkers,
        WRITE_TXN_MARKERS_VERSION,
        1,
        request,
    )?;
    let mut stream: TcpStream = crate::node::connect_to_broker(host, port, CONNECT_TIMEOUT).await?;
    stream.write_all(&frame).await?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > ANSWER_MAX {
        return Err(io::Error::other(format!(
            "a WriteTxnMarkers answer of {len} bytes"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    let mut body = Bytes::from(body);
    crate::perf::conn::decode_response(
        ApiKey::WriteTxnMarkers,
        WRITE_TXN_MARKERS_VERSION,
        1,
        &mut body,
    )
}

/// The codes a WriteTxnMarkers answer may carry that the coordinator tells apart.
fn known_code(code: i16) -> ErrorCode {
    [
        ErrorCode::None,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::RequestTimedOut,
        ErrorCode::KafkaStorageError,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::TransactionCoordinatorFenced,
        ErrorCode::UnsupportedForMessageFormat,
        ErrorCode::UnsupportedVersion,
        ErrorCode::CorruptMessage,
        ErrorCode::MessageTooLarge,
    ]
    .into_iter()
    .find(|c| c.code() == code)
    .unwrap_or(ErrorCode::UnknownServerError)
}

impl crate::txn::Host for Core {
    fn txns(&self) -> &crate::txn::Coordinator {
        &self.txns
    }
    fn write_markers(
        self: Rc<Self>,
        markers: crate::txn::MarkerRequest,
    ) -> futures::future::LocalBoxFuture<'static, Vec<((String, i32), crate::protocol::ErrorCode)>>
    {
        Box::pin(write(self, markers))
    }
    fn allocate_producer_id(
        self: Rc<Self>,
    ) -> futures::future::LocalBoxFuture<'static, Result<i64, crate::protocol::ErrorCode>> {
        Box::pin(async move {
            let id = self
                .submit_to(CONTROLLER_SHARD, |c| async move {
                    controller_client::allocate_producer_id(&c)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await;
            match id {
                Ok(Ok(id)) => Ok(id),
                // No block of ids yet (no active controller, or it failed): retriable,
                // as Kafka's RPCProducerIdManager answers.
                _ => Err(crate::protocol::ErrorCode::CoordinatorLoadInProgress),
            }
        })
    }
}

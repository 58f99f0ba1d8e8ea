//! The group offset APIs: OffsetCommit, OffsetFetch and OffsetDelete. Each decodes its
//! request, runs the group's part on the coordinating shard (`group`), and encodes the
//! answer with the fields its version has. OffsetCommit v0 and OffsetFetch v0 stored
//! offsets in ZooKeeper: as Kafka 3.9 in KRaft mode, they are answered
//! UNSUPPORTED_VERSION per partition.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_request::OffsetDeleteRequest;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::TopicName;

use super::groups::{on_coordinator, text};
use super::{decode, encode_response, str_bytes, Outcome};
use crate::group::offsets_topic::CommittedOffset;
use crate::group::FetchedOffsets;
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::old_versions;
use crate::protocol::ErrorCode;

/// Reads an OffsetCommit request of any served version, with each partition's
/// commit timestamp (v1 may give one; -1 or a later version: none).
fn decode_offset_commit(
    body: Bytes,
    h: &RequestHeader,
) -> Result<(OffsetCommitRequest, Vec<i64>), Outcome> {
    if h.api_version >= 2 {
        return decode(body, h).map(|req| (req, Vec::new()));
    }
    old_versions::decode_offset_commit_old(body, h.api_version)
        .map(|old| (old.request, old.commit_timestamps))
        .map_err(|e| {
            Outcome::Close(format!(
                "cannot decode OffsetCommit v{}: {e}",
                h.api_version
            ))
        })
}

/// OffsetCommit v0: as Kafka 3.9 in KRaft mode, UNSUPPORTED_VERSION for every
/// partition (v0 commits went to ZooKeeper).
pub fn offset_commit_v0(h: &RequestHeader, body: Bytes) -> Outcome {
    let (req, _) = match decode_offset_commit(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut resp = OffsetCommitResponse::default();
    resp.topics = req_topics_with(&req, |_| ErrorCode::UnsupportedVersion);
    encode_response(key::OFFSET_COMMIT, h.api_version, h.correlation_id, &resp)
}

pub async fn offset_commit(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let (req, commit_timestamps) = match decode_offset_commit(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let group = text(&req.group_id);
    let now = crate::storage::segment::now_ms();
    // As Kafka: a v1 commit's own timestamp counts (for expiry); -1 means now.
    let mut commit_timestamps = commit_timestamps.into_iter();
    let entries: Vec<(String, i32, CommittedOffset)> = req
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
        .map(|(t, p)| {
            let commit_timestamp = commit_timestamps
                .next()
                .filter(|ts| *ts != -1)
                .unwrap_or(now);
            (
                text(&t.name),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(text).unwrap_or_default(),
                    commit_timestamp,
                },
            )
        })
        .collect();
    let count = entries.len();
    let g = group.clone();
    let member_id = text(&req.member_id);
    let instance_id = req.group_instance_id.as_ref().map(text);
    let generation = req.generation_id_or_member_epoch;
    let committed = on_coordinator(core, &group, move |s| async move {
        let member = (member_id.as_str(), instance_id.as_deref(), generation);
        s.groups.commit(&*s, &g, member, entries).await
    })
    .await
    .and_then(|r| r);
    let codes = match committed {
        Ok(codes) => codes,
        Err(code) => vec![code; count],
    };
    let mut codes = codes.into_iter();
    let mut resp = OffsetCommitResponse::default();
    resp.topics = req_topics_with(&req, |_| codes.next().unwrap_or(ErrorCode::None));
    encode_response(key::OFFSET_COMMIT, h.api_version, h.correlation_id, &resp)
}

/// The commit response mirrors the request's topics and partitions, in order.
fn req_topics_with(
    req: &OffsetCommitRequest,
    mut code: impl FnMut(i32) -> ErrorCode,
) -> Vec<OffsetCommitResponseTopic> {
    req.topics
        .iter()
        .map(|t| {
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = OffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = code(p.partition_index).code();
                    rp
                })
                .collect();
            rt
        })
        .collect()
}

/// Fetches one group's committed offsets on its coordinator; with `require_stable`
/// (v7+), also the partitions an open transaction holds an offset for, which get
/// UNSTABLE_OFFSET_COMMIT (the client retries once the transaction ends).
async fn fetch_group_offsets(
    core: &Rc<Core>,
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<(FetchedOffsets, Vec<(String, i32)>), ErrorCode> {
    let g = group.clone();
    on_coordinator(core, &group, move |s| async move {
        let found = s.groups.fetch_offsets(&*s, &g, topics)?;
        let unstable = if require_stable {
            found
                .iter()
                .flat_map(|(t, parts)| parts.iter().map(move |(p, _)| (t.clone(), *p)))
                .filter(|(t, p)| s.groups.has_pending_offset(&g, t, *p))
                .collect()
        } else {
            Vec::new()
        };
        Ok((found, unstable))
    })
    .await
    .and_then(|r| r)
}

/// UNSTABLE_OFFSET_COMMIT with no offset, for a partition an open transaction holds.
fn mark_unstable(
    unstable: &[(String, i32)],
    topic: &str,
    partition: i32,
    error_code: &mut i16,
    offset: &mut i64,
) {
    if unstable.iter().any(|(t, p)| t == topic && *p == partition) {
        *error_code = ErrorCode::UnstableOffsetCommit.code();
        *offset = -1;
    }
}

/// OffsetFetch v0–v1 without a top-level error: `code` for every partition asked for.
fn offset_fetch_errors(req: &OffsetFetchRequest, code: ErrorCode) -> Vec<OffsetFetchResponseTopic> {
    req.topics
        .iter()
        .flatten()
        .map(|t| {
            let mut rt = OffsetFetchResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let mut rp = OffsetFetchResponsePartition::default();
                    rp.partition_index = p;
                    rp.committed_offset = -1;
                    rp.metadata = Some(str_bytes(""));
                    rp.error_code = code.code();
                    rp
                })
                .collect();
            rt
        })
        .collect()
}

/// OffsetFetch v0: as Kafka 3.9 in KRaft mode, UNSUPPORTED_VERSION for every
/// partition (v0 read offsets from ZooKeeper).
pub fn offset_fetch_v0(h: &RequestHeader, body: Bytes) -> Outcome {
    let req: OffsetFetchRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut resp = OffsetFetchResponse::default();
    resp.topics = offset_fetch_errors(&req, ErrorCode::UnsupportedVersion);
    encode_response(key::OFFSET_FETCH, h.api_version, h.correlation_id, &resp)
}

pub async fn offset_fetch(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: OffsetFetchRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let v = h.api_version;
    let mut resp = OffsetFetchResponse::default();
    if v >= 8 {
        // KIP-709: several groups per request.
        for g in &req.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (text(&t.name), t.partition_indexes.clone()))
                    .collect()
            });
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            match fetch_group_offsets(core, text(&g.group_id), topics, req.require_stable).await {
                Err(code) => rg.error_code = code.code(),
                Ok((found, unstable)) => {
                    rg.topics = found
                        .into_iter()
                        .map(|(name, parts)| {
                            let mut t = OffsetFetchResponseTopics::default();
                            t.name = TopicName(str_bytes(&name));
                            t.partitions = parts
                                .into_iter()
                                .map(|(p, c)| {
                                    let mut rp = OffsetFetchResponsePartitions::default();
                                    rp.partition_index = p;
                                    fill_fetched(
                                        &c,
                                        &mut rp.committed_offset,
                                        &mut rp.committed_leader_epoch,
                                        &mut rp.metadata,
                                    );
                                    mark_unstable(
                                        &unstable,
                                        &name,
                                        p,
                                        &mut rp.error_code,
                                        &mut rp.committed_offset,
                                    );
                                    rp
                                })
                                .collect();
                            t
                        })
                        .collect();
                }
            }
            resp.groups.push(rg);
        }
    } else {
        let topics = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (text(&t.name), t.partition_indexes.clone()))
                .collect()
        });
        let require_stable = v >= 7 && req.require_stable;
        match fetch_group_offsets(core, text(&req.group_id), topics, require_stable).await {
            Err(code) if v >= 2 => resp.error_code = code.code(),
            // v1 has no top-level error: every requested partition carries it.
            Err(code) => resp.topics = offset_fetch_errors(&req, code),
            Ok((found, unstable)) => {
                resp.topics = found
                    .into_iter()
                    .map(|(name, parts)| {
                        let mut t = OffsetFetchResponseTopic::default();
                        t.name = TopicName(str_bytes(&name));
                        t.partitions = parts
                            .into_iter()
                            .map(|(p, c)| {
                                let mut rp = OffsetFetchResponsePartition::default();
                                rp.partition_index = p;
                                fill_fetched(
                                    &c,
                                    &mut rp.committed_offset,
                                    &mut rp.committed_leader_epoch,
                                    &mut rp.metadata,
                                );
                                if v < 5 {
                                    rp.committed_leader_epoch = -1;
                                }
                                mark_unstable(
                                    &unstable,
                                    &name,
                                    p,
                                    &mut rp.error_code,
                                    &mut rp.committed_offset,
                                );
                                rp
                            })
                            .collect();
                        t
                    })
                    .collect();
            }
        }
    }
    encode_response(key::OFFSET_FETCH, v, h.correlation_id, &resp)
}

/// A committed offset, or Kafka's "none": offset -1, empty metadata.
fn fill_fetched(
    c: &Option<CommittedOffset>,
    offset: &mut i64,
    leader_epoch: &mut i32,
    metadata: &mut Option<kafka_protocol::protocol::StrBytes>,
) {
    match c {
        Some(c) => {
            *offset = c.offset;
            *leader_epoch = c.leader_epoch;
            *metadata = Some(str_bytes(&c.metadata));
        }
        None => {
            *offset = -1;
            *leader_epoch = -1;
            *metadata = Some(str_bytes(""));
        }
    }
}

pub async fn offset_delete(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: OffsetDeleteRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let group = text(&req.group_id);
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (text(&t.name), p.partition_index))
        })
        .collect();
    let g = group.clone();
    let asked = partitions.clone();
    let deleted = on_coordinator(core, &group, move |s| async move {
        s.groups.delete_offsets(&*s, &g, asked).await
    })
    .await
    .and_then(|r| r);
    let mut resp = OffsetDeleteResponse::default();
    match deleted {
        Err(code) => resp.error_code = code.code(),
        Ok(codes) => {
            let mut codes = codes.into_iter();
            resp.topics = req
                .topics
                .iter()
                .map(|t| {
                    let mut rt = OffsetDeleteResponseTopic::default();
                    rt.name = t.name.clone();
                    rt.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut rp = OffsetDeleteResponsePartition::default();
                            rp.partition_index = p.partition_index;
                            rp.error_code = codes.next().unwrap_or(ErrorCode::None).code();
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
        }
    }
    encode_response(key::OFFSET_DELETE, h.api_version, h.correlation_id, &resp)
}

//! The group membership APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups, DeleteGroups, and KIP-848's ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe (the offset APIs are in `group_offsets`). Each
//! decodes its request, runs the group's part on the coordinating shard (`group`), and
//! encodes the answer with the fields its version has.

use std::future::Future;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::consumer_group_describe_request::ConsumerGroupDescribeRequest;
use kafka_protocol::messages::consumer_group_describe_response::{
    self as cgd, ConsumerGroupDescribeResponse,
};
use kafka_protocol::messages::consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest;
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    self as cgh, ConsumerGroupHeartbeatResponse,
};
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use kafka_protocol::messages::{GroupId, TopicName};

use super::{decode, encode_response, str_bytes, Outcome};
use crate::group::consumer::{HeartbeatIn, Partitions};
use crate::group::state::{self, JoinRequest, SyncRequest};
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;
use crate::shard::ShardId;

/// Runs `f` on the shard coordinating `group`.
pub(super) async fn on_coordinator<R, F, Fut>(
    core: &Rc<Core>,
    group: &str,
    f: F,
) -> Result<R, ErrorCode>
where
    R: Send + 'static,
    F: FnOnce(Rc<Core>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    super::routing::on_coordinator(core, super::routing::CoordinatorKind::Group, group, f).await
}

pub(super) fn text(s: &kafka_protocol::protocol::StrBytes) -> String {
    s.as_str().to_string()
}

pub async fn join_group(
    core: &Rc<Core>,
    h: &RequestHeader,
    body: Bytes,
    client_host: &str,
) -> Outcome {
    let req: JoinGroupRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let group = text(&req.group_id);
    let member_id = text(&req.member_id);
    let join = JoinRequest {
        member_id: member_id.clone(),
        instance_id: req.group_instance_id.as_ref().map(text),
        client_id: h.client_id.clone().unwrap_or_default(),
        client_host: client_host.to_string(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout serves as both.
        rebalance_timeout_ms: if h.api_version == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: text(&req.protocol_type),
        protocols: req
            .protocols
            .iter()
            .map(|p| (text(&p.name), p.metadata.clone()))
            .collect(),
        version: h.api_version,
    };
    let g = group.clone();
    let joined = on_coordinator(core, &group, move |s| async move {
        s.groups.join(&*s, g, join).await
    })
    .await;
    let mut resp = joined.unwrap_or_else(|code| state::join_error(code, &member_id));
    // Only the fields this version has.
    let v = h.api_version;
    if v < 7 {
        resp.protocol_type = None;
        if resp.protocol_name.is_none() {
            resp.protocol_name = Some(str_bytes(""));
        }
    }
    if v < 9 {
        resp.skip_assignment = false;
    }
    if v < 5 {
        for m in &mut resp.members {
            m.group_instance_id = None;
        }
    }
    encode_response(key::JOIN_GROUP, v, h.correlation_id, &resp)
}

pub async fn sync_group(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: SyncGroupRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let group = text(&req.group_id);
    let g = group.clone();
    let sync = SyncRequest {
        member_id: text(&req.member_id),
        instance_id: req.group_instance_id.as_ref().map(text),
        generation: req.generation_id,
        protocol_type: req.protocol_type.as_ref().map(text),
        protocol_name: req.protocol_name.as_ref().map(text),
        assignments: req
            .assignments
            .iter()
            .map(|a| (text(&a.member_id), a.assignment.clone()))
            .collect(),
    };
    let synced = on_coordinator(core, &group, move |s| async move {
        s.groups.sync(&*s, &g, sync).await
    })
    .await;
    let mut resp = synced.unwrap_or_else(state::sync_error);
    if h.api_version < 5 {
        resp.protocol_type = None;
        resp.protocol_name = None;
    }
    encode_response(key::SYNC_GROUP, h.api_version, h.correlation_id, &resp)
}

pub async fn heartbeat(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: HeartbeatRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let group = text(&req.group_id);
    let g = group.clone();
    let code = on_coordinator(core, &group, move |s| async move {
        s.groups.heartbeat(
            &*s,
            &g,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
            req.generation_id,
        )
    })
    .await
    .unwrap_or_else(|code| code);
    let mut resp = HeartbeatResponse::default();
    resp.error_code = code.code();
    encode_response(key::HEARTBEAT, h.api_version, h.correlation_id, &resp)
}

pub async fn leave_group(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: LeaveGroupRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let group = text(&req.group_id);
    // v3+ leaves several members at once (KIP-345); earlier versions name one.
    let members: Vec<(String, Option<String>)> = if h.api_version >= 3 {
        req.members
            .iter()
            .map(|m| (text(&m.member_id), m.group_instance_id.as_ref().map(text)))
            .collect()
    } else {
        vec![(text(&req.member_id), None)]
    };
    let (g, asked) = (group.clone(), members.clone());
    let left = on_coordinator(core, &group, move |s| async move {
        s.groups.leave(&*s, &g, &asked)
    })
    .await
    .and_then(|r| r);
    let mut resp = LeaveGroupResponse::default();
    match left {
        Err(code) => resp.error_code = code.code(),
        Ok(codes) if h.api_version >= 3 => {
            resp.members = members
                .iter()
                .zip(codes)
                .map(|((id, instance), code)| {
                    let mut m = MemberResponse::default();
                    m.member_id = str_bytes(id);
                    m.group_instance_id = instance.as_deref().map(str_bytes);
                    m.error_code = code.code();
                    m
                })
                .collect();
        }
        Ok(codes) => resp.error_code = codes.first().map_or(0, |c| c.code()),
    }
    encode_response(key::LEAVE_GROUP, h.api_version, h.correlation_id, &resp)
}

pub async fn list_groups(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: ListGroupsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let v = h.api_version;
    let asks = (0..core.shard_count())
        .map(|i| core.submit_to(ShardId(i), |s| async move { s.groups.list() }));
    let mut resp = ListGroupsResponse::default();
    for listed in futures::future::join_all(asks).await {
        let Ok(listed) = listed else {
            resp.error_code = ErrorCode::CoordinatorNotAvailable.code();
            continue;
        };
        for (id, protocol_type, state, group_type) in listed {
            let state_ok = req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|f| f.as_str().eq_ignore_ascii_case(state));
            let type_ok = req.types_filter.is_empty()
                || req
                    .types_filter
                    .iter()
                    .any(|f| f.as_str().eq_ignore_ascii_case(group_type));
            if !(state_ok && type_ok) {
                continue;
            }
            let mut g = ListedGroup::default();
            g.group_id = GroupId(str_bytes(&id));
            g.protocol_type = str_bytes(&protocol_type);
            if v >= 4 {
                g.group_state = str_bytes(state);
            }
            if v >= 5 {
                g.group_type = str_bytes(group_type);
            }
            resp.groups.push(g);
        }
    }
    resp.groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    encode_response(key::LIST_GROUPS, v, h.correlation_id, &resp)
}

pub async fn describe_groups(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: DescribeGroupsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let v = h.api_version;
    let mut resp = DescribeGroupsResponse::default();
    for id in &req.groups {
        let group = text(id);
        let g = group.clone();
        let described = on_coordinator(
            core,
            &group,
            move |s| async move { s.groups.describe(&*s, &g) },
        )
        .await
        .and_then(|r| r);
        let mut d = DescribedGroup::default();
        d.group_id = id.clone();
        if v >= 3 {
            // Authorization is not modelled: "not requested / unknown".
            d.authorized_operations = i32::MIN;
        }
        match described {
            Err(code) => {
                d.error_code = code.code();
                d.group_state = str_bytes("Dead");
            }
            Ok(desc) => {
                d.group_state = str_bytes(desc.state);
                d.protocol_type = str_bytes(&desc.protocol_type);
                d.protocol_data = str_bytes(&desc.protocol);
                d.members = desc
                    .members
                    .into_iter()
                    .map(
                        |(member_id, instance, client_id, host, metadata, assignment)| {
                            let mut m = DescribedGroupMember::default();
                            m.member_id = str_bytes(&member_id);
                            if v >= 4 {
                                m.group_instance_id = instance.as_deref().map(str_bytes);
                            }
                            m.client_id = str_bytes(&client_id);
                            m.client_host = str_bytes(&host);
                            m.member_metadata = metadata;
                            m.member_assignment = assignment;
                            m
                        },
                    )
                    .collect();
            }
        }
        resp.groups.push(d);
    }
    encode_response(key::DESCRIBE_GROUPS, v, h.correlation_id, &resp)
}

pub async fn delete_groups(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: DeleteGroupsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut resp = DeleteGroupsResponse::default();
    for id in &req.groups_names {
        let group = text(id);
        let g = group.clone();
        let code = on_coordinator(core, &group, move |s| async move {
            s.groups.delete(&*s, &g).await
        })
        .await
        .unwrap_or_else(|code| code);
        let mut r = DeletableGroupResult::default();
        r.group_id = id.clone();
        r.error_code = code.code();
        resp.results.push(r);
    }
    encode_response(key::DELETE_GROUPS, h.api_version, h.correlation_id, &resp)
}

/// Partitions grouped by topic id, as the KIP-848 responses carry them.
fn by_topic(parts: &Partitions) -> Vec<(uuid::Uuid, Vec<i32>)> {
    let mut out: Vec<(uuid::Uuid, Vec<i32>)> = Vec::new();
    for (topic, p) in parts {
        match out.last_mut() {
            Some((t, ps)) if t == topic => ps.push(*p),
            _ => out.push((*topic, vec![*p])),
        }
    }
    out
}

pub async fn consumer_group_heartbeat(
    core: &Rc<Core>,
    h: &RequestHeader,
    body: Bytes,
    client_host: &str,
) -> Outcome {
    let req: ConsumerGroupHeartbeatRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let group = text(&req.group_id);
    let beat = HeartbeatIn {
        member_id: text(&req.member_id),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(text),
        rack_id: req.rack_id.as_ref().map(text),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed: req
            .subscribed_topic_names
            .as_ref()
            .map(|names| names.iter().map(|n| text(n)).collect()),
        // librdkafka sends "" for "no regex".
        regex: req
            .subscribed_topic_regex
            .as_ref()
            .map(text)
            .filter(|r| !r.is_empty()),
        assignor: req.server_assignor.as_ref().map(text),
        owned: req.topic_partitions.as_ref().map(|tps| {
            tps.iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
                .collect()
        }),
        client_id: h.client_id.clone().unwrap_or_default(),
        client_host: client_host.to_string(),
    };
    let member_id = beat.member_id.clone();
    let g = group.clone();
    let answered = on_coordinator(core, &group, move |s| async move {
        let out = s.groups.consumer_heartbeat(&*s, &g, beat);
        (out, s.groups.consumer_heartbeat_interval_ms)
    })
    .await;
    let mut resp = ConsumerGroupHeartbeatResponse::default();
    match answered {
        Err(code) => {
            resp.error_code = code.code();
            resp.member_id = Some(str_bytes(&member_id));
            resp.member_epoch = -1;
        }
        Ok((out, interval)) => {
            resp.error_code = out.error.code();
            resp.error_message = out.message.as_deref().map(str_bytes);
            resp.member_id = Some(str_bytes(&out.member_id));
            resp.member_epoch = out.member_epoch;
            resp.heartbeat_interval_ms = interval;
            resp.assignment = out.assignment.map(|parts| {
                let mut a = cgh::Assignment::default();
                a.topic_partitions = by_topic(&parts)
                    .into_iter()
                    .map(|(topic_id, partitions)| {
                        let mut tp = cgh::TopicPartitions::default();
                        tp.topic_id = topic_id;
                        tp.partitions = partitions;
                        tp
                    })
                    .collect();
                a
            });
        }
    }
    encode_response(
        key::CONSUMER_GROUP_HEARTBEAT,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

pub async fn consumer_group_describe(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: ConsumerGroupDescribeRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut resp = ConsumerGroupDescribeResponse::default();
    for id in &req.group_ids {
        let group = text(id);
        let g = group.clone();
        let described = on_coordinator(core, &group, move |s| async move {
            let snapshot = s.metadata.load();
            let name_of = |topic_id: &uuid::Uuid| {
                snapshot
                    .topic_by_id(topic_id)
                    .map(|t| t.name.clone())
                    .unwrap_or_default()
            };
            let assignment = |parts: &Partitions| {
                let mut a = cgd::Assignment::default();
                a.topic_partitions = by_topic(parts)
                    .into_iter()
                    .map(|(topic_id, partitions)| {
                        let mut tp = cgd::TopicPartitions::default();
                        tp.topic_id = topic_id;
                        tp.topic_name = TopicName(str_bytes(&name_of(&topic_id)));
                        tp.partitions = partitions;
                        tp
                    })
                    .collect();
                a
            };
            s.groups.consumer_describe(&*s, &g, |cg, state| {
                let mut d = cgd::DescribedGroup::default();
                d.group_state = str_bytes(state);
                d.authorized_operations = i32::MIN;
                match cg {
                    None => d.error_code = ErrorCode::GroupIdNotFound.code(),
                    Some(cg) => {
                        d.group_epoch = cg.group_epoch;
                        d.assignment_epoch = cg.assignment_epoch;
                        d.assignor_name = str_bytes(&cg.assignor);
                        d.members = cg
                            .members
                            .values()
                            .map(|m| {
                                let mut dm = cgd::Member::default();
                                dm.member_id = str_bytes(&m.id);
                                dm.instance_id = m.instance_id.as_deref().map(str_bytes);
                                dm.rack_id = m.rack_id.as_deref().map(str_bytes);
                                dm.member_epoch = m.epoch;
                                dm.client_id = str_bytes(&m.client_id);
                                dm.client_host = str_bytes(&m.client_host);
                                dm.subscribed_topic_names = m
                                    .subscribed
                                    .iter()
                                    .map(|t| TopicName(str_bytes(t)))
                                    .collect();
                                dm.assignment = assignment(&m.assigned);
                                dm.target_assignment =
                                    assignment(cg.target.get(&m.id).unwrap_or(&Partitions::new()));
                                dm
                            })
                            .collect();
                    }
                }
                d
            })
        })
        .await
        .and_then(|r| r);
        let mut d = described.unwrap_or_else(|code| {
            let mut d = cgd::DescribedGroup::default();
            d.error_code = code.code();
            d
        });
        d.group_id = id.clone();
        if h.api_version >= 1 {
            for m in &mut d.members {
                m.member_type = 1; // a consumer-protocol member
            }
        }
        resp.groups.push(d);
    }
    encode_response(
        key::CONSUMER_GROUP_DESCRIBE,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

//! Metadata (v0–v12): this broker, the cluster id, and topics with their ids and
//! partitions. Unknown topics are auto-created when `auto.create.topics.enable` is on
//! and the client allows it.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};

use super::routing::auto_create;
use super::{decode, encode_response, str_bytes, Outcome};
use crate::cluster::metadata::{validate_topic_name, TopicMeta};
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

fn topic_entry(t: &TopicMeta, version: i16) -> MetadataResponseTopic {
    let mut e = MetadataResponseTopic::default();
    e.name = Some(TopicName(str_bytes(&t.name)));
    e.topic_id = t.id;
    e.is_internal = t.is_internal();
    e.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    let ids = |brokers: &[crate::ids::BrokerId]| brokers.iter().map(|b| BrokerId(b.0)).collect();
    e.partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(p, a)| {
            let mut part = MetadataResponsePartition::default();
            part.partition_index = p as i32;
            match a.leader {
                Some(leader) => part.leader_id = BrokerId(leader.0),
                None => {
                    part.leader_id = BrokerId(-1);
                    part.error_code = ErrorCode::LeaderNotAvailable.code();
                }
            }
            if version >= 7 {
                part.leader_epoch = a.leader_epoch.0;
            }
            part.replica_nodes = ids(&a.replicas);
            part.isr_nodes = ids(&a.isr);
            part
        })
        .collect();
    e
}

fn error_entry(name: Option<String>, id: uuid::Uuid, error: ErrorCode) -> MetadataResponseTopic {
    let mut e = MetadataResponseTopic::default();
    e.error_code = error.code();
    e.name = name.map(|n| TopicName(str_bytes(&n)));
    e.topic_id = id;
    e.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    e
}

/// Topics asked for by name, auto-creating the missing ones where allowed.
async fn by_name(
    core: &Rc<Core>,
    h: &RequestHeader,
    allow_auto_topic_creation: bool,
    names: Vec<String>,
) -> Vec<MetadataResponseTopic> {
    let config = &core.config;
    let mut snapshot = core.metadata.load();
    let allow_create =
        config.auto_create_topics && (h.api_version < 4 || allow_auto_topic_creation);
    let missing: Vec<String> = names
        .iter()
        .filter(|n| snapshot.topic(n).is_none() && validate_topic_name(n).is_ok())
        .cloned()
        .collect();
    let created = if allow_create && !missing.is_empty() {
        let client = h.client_id.as_deref().unwrap_or("");
        let created = auto_create(core, missing, client).await;
        snapshot = core.metadata.load();
        created
    } else {
        Default::default()
    };
    names
        .into_iter()
        .map(|name| match snapshot.topic(&name) {
            Some(meta) => topic_entry(meta, h.api_version),
            None if validate_topic_name(&name).is_err() => error_entry(
                Some(name),
                uuid::Uuid::nil(),
                ErrorCode::InvalidTopicException,
            ),
            None => {
                let code = match created.get(&name) {
                    Some(Err(code)) => *code,
                    _ => ErrorCode::UnknownTopicOrPartition,
                };
                error_entry(Some(name), uuid::Uuid::nil(), code)
            }
        })
        .collect()
}

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: MetadataRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let snapshot = core.metadata.load();
    // v0: an empty list means all topics; v1+: null means all topics.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && h.api_version == 0,
    };
    let mut topics = Vec::new();
    if all {
        topics.extend(
            snapshot
                .cluster
                .topics
                .values()
                .map(|t| topic_entry(t, h.api_version)),
        );
    } else {
        let requested = req.topics.unwrap_or_default();
        // As Kafka (KafkaApis.handleTopicMetadataRequest): once any topic id is given,
        // the request is by id and names are ignored (the Java admin client sends ""
        // beside each id); ids are served from v12.
        let ids: Vec<uuid::Uuid> = requested
            .iter()
            .map(|t| t.topic_id)
            .filter(|id| !id.is_nil())
            .collect();
        if !ids.is_empty() && h.api_version < 12 {
            topics.extend(requested.iter().map(|t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                error_entry(Some(name), t.topic_id, ErrorCode::InvalidRequest)
            }));
        } else if !ids.is_empty() {
            let mut seen = std::collections::HashSet::new();
            for id in ids.into_iter().filter(|id| seen.insert(*id)) {
                topics.push(match snapshot.topic_by_id(&id) {
                    Some(meta) => topic_entry(meta, h.api_version),
                    None => error_entry(None, id, ErrorCode::UnknownTopicId),
                });
            }
        } else {
            let names: Vec<String> = requested
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect();
            topics = by_name(core, h, req.allow_auto_topic_creation, names).await;
        }
    }
    let cluster = &snapshot.cluster;
    let mut resp = MetadataResponse::default();
    resp.brokers = cluster
        .live_brokers()
        .map(|b| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(b.id.0);
            broker.host = str_bytes(&b.host);
            broker.port = b.port as i32;
            broker.rack = b.rack.as_deref().map(str_bytes);
            broker
        })
        .collect();
    resp.cluster_id = Some(str_bytes(&cluster.cluster_id));
    // As Kafka's KRaft brokers (KIP-590): clients are given a live broker as the
    // controller, since every broker forwards controller requests to the active
    // controller. This one, which the client just reached. (Naming the active
    // controller would strand clients on it when it dies: librdkafka's admin waited
    // for it until its timeout.)
    resp.controller_id = if cluster.controller.is_some() {
        BrokerId(core.node_id().0)
    } else {
        BrokerId(-1)
    };
    resp.topics = topics;
    resp.cluster_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    encode_response(key::METADATA, h.api_version, h.correlation_id, &resp)
}

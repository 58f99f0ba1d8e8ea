//! DescribeCluster (v0–v2): the cluster id, the brokers (with fenced ones from v2 when
//! asked), and as controller this broker, as Kafka's KRaft brokers answer (a live
//! broker, since every broker forwards controller requests; see `metadata`).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};

use super::{decode, encode_response, str_bytes, Outcome};
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

/// DescribeCluster's endpoint types (KIP-919): ringlog serves brokers' endpoints only.
const ENDPOINT_BROKERS: i8 = 1;
/// Kafka's MISMATCHED_ENDPOINT_TYPE.
const MISMATCHED_ENDPOINT_TYPE: i16 = 114;
/// Authorized operations are not computed (no ACLs yet): Kafka's "omitted".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: DescribeClusterRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let cluster = core.metadata.load().cluster.clone();
    let mut resp = DescribeClusterResponse::default();
    resp.endpoint_type = ENDPOINT_BROKERS;
    resp.cluster_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    if h.api_version >= 1 && req.endpoint_type != ENDPOINT_BROKERS {
        // As a Kafka broker asked for controllers' endpoints.
        resp.error_code = MISMATCHED_ENDPOINT_TYPE;
        resp.error_message = Some(str_bytes(
            "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER",
        ));
        return encode_response(
            key::DESCRIBE_CLUSTER,
            h.api_version,
            h.correlation_id,
            &resp,
        );
    }
    let with_fenced = h.api_version >= 2 && req.include_fenced_brokers;
    resp.cluster_id = str_bytes(&cluster.cluster_id);
    resp.controller_id = kafka_protocol::messages::BrokerId(if cluster.controller.is_some() {
        core.node_id().0
    } else {
        -1
    });
    resp.brokers = cluster
        .brokers
        .values()
        .filter(|b| with_fenced || !b.fenced)
        .map(|b| {
            let mut d = DescribeClusterBroker::default();
            d.broker_id = kafka_protocol::messages::BrokerId(b.id.0);
            d.host = str_bytes(&b.host);
            d.port = b.port as i32;
            d.rack = b.rack.as_deref().map(str_bytes);
            d.is_fenced = b.fenced;
            d
        })
        .collect();
    resp.error_code = ErrorCode::None.code();
    encode_response(
        key::DESCRIBE_CLUSTER,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

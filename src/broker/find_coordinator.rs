//! FindCoordinator (v0–v6, batched keys from v4). A group's coordinator is the broker
//! leading its `__consumer_offsets` partition, a transactional id's the broker leading
//! its `__transaction_state` partition (each topic created on first use, as in
//! Kafka); there the key lives on the core holding that partition.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::BrokerId;

use super::routing::CoordinatorKind;
use super::{decode, encode_response, str_bytes, Outcome};
use crate::cluster::metadata::BrokerInfo;
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The coordinator for one key: the broker leading the key's partition, or an error
/// with a message.
async fn locate(
    core: &Rc<Core>,
    key_type: i8,
    key: &str,
) -> Result<BrokerInfo, (ErrorCode, String)> {
    let (kind, what) = match key_type {
        KEY_TYPE_GROUP => (CoordinatorKind::Group, "group"),
        KEY_TYPE_TRANSACTION => (CoordinatorKind::Transaction, "transactional id"),
        other => {
            return Err((
                ErrorCode::InvalidRequest,
                format!("Unknown coordinator type {other}."),
            ))
        }
    };
    if key.is_empty() {
        return Err((ErrorCode::InvalidRequest, format!("The {what} is empty.")));
    }
    let unavailable = |code| (code, format!("No coordinator for {what} {key} yet."));
    let location = super::routing::locate_coordinator(core, kind, key)
        .await
        .map_err(unavailable)?;
    core.metadata
        .load()
        .cluster
        .live_brokers()
        .find(|b| b.id == location.broker)
        .cloned()
        .ok_or_else(|| unavailable(ErrorCode::CoordinatorNotAvailable))
}

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: FindCoordinatorRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut resp = FindCoordinatorResponse::default();
    if h.api_version >= 4 {
        for k in &req.coordinator_keys {
            let mut c = Coordinator::default();
            c.key = k.clone();
            match locate(core, req.key_type, k.as_str()).await {
                Ok(b) => {
                    c.node_id = BrokerId(b.id.0);
                    c.host = str_bytes(&b.host);
                    c.port = b.port as i32;
                }
                Err((code, message)) => {
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                    c.error_code = code.code();
                    c.error_message = Some(str_bytes(&message));
                }
            }
            resp.coordinators.push(c);
        }
    } else {
        match locate(core, req.key_type, req.key.as_str()).await {
            Ok(b) => {
                resp.node_id = BrokerId(b.id.0);
                resp.host = str_bytes(&b.host);
                resp.port = b.port as i32;
            }
            Err((code, message)) => {
                resp.error_code = code.code();
                if h.api_version >= 1 {
                    resp.error_message = Some(str_bytes(&message));
                }
                resp.node_id = BrokerId(-1);
                resp.port = -1;
            }
        }
    }
    encode_response(
        key::FIND_COORDINATOR,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

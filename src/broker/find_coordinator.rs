//! FindCoordinator (v0–v6, batched keys from v4). A group's coordinator is this
//! broker (the group lives on the shard owning its `__consumer_offsets` partition,
//! which is created on first use, as in Kafka). Transactions have no coordinator yet:
//! those keys get COORDINATOR_NOT_AVAILABLE.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::BrokerId;

use super::{decode, encode_response, str_bytes, Outcome};
use crate::group;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;
use crate::shard::Shard;

const KEY_TYPE_GROUP: i8 = 0;
const NO_TRANSACTIONS: &str =
    "The coordinator is not available: ringlog does not serve transactions yet.";

/// The answer for one key: this broker, or an error with a message.
async fn locate(shard: &Rc<Shard>, key_type: i8, key: &str) -> Result<(), (ErrorCode, String)> {
    if key_type != KEY_TYPE_GROUP {
        return Err((ErrorCode::CoordinatorNotAvailable, NO_TRANSACTIONS.into()));
    }
    if key.is_empty() {
        return Err((ErrorCode::InvalidRequest, "The group id is empty.".into()));
    }
    group::coordinator_of(shard, key)
        .await
        .map(|_| ())
        .map_err(|code| (code, format!("No coordinator for group {key} yet.")))
}

pub async fn handle(shard: &Rc<Shard>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: FindCoordinatorRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let me = &shard.config.advertised;
    let node_id = BrokerId(shard.config.node_id);
    let mut resp = FindCoordinatorResponse::default();
    if h.api_version >= 4 {
        for k in &req.coordinator_keys {
            let mut c = Coordinator::default();
            c.key = k.clone();
            match locate(shard, req.key_type, k.as_str()).await {
                Ok(()) => {
                    c.node_id = node_id;
                    c.host = str_bytes(&me.host);
                    c.port = me.port as i32;
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
        match locate(shard, req.key_type, req.key.as_str()).await {
            Ok(()) => {
                resp.node_id = node_id;
                resp.host = str_bytes(&me.host);
                resp.port = me.port as i32;
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

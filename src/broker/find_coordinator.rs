//! FindCoordinator (v0–v6). Group and transaction coordinators are not built yet, so
//! every key is answered with COORDINATOR_NOT_AVAILABLE, as a Kafka broker does while
//! its coordinator is not up. Idempotent (non-transactional) producers never ask.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::BrokerId;

use super::{decode, encode_response, str_bytes, Outcome};
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;
use crate::shard::Shard;

const MESSAGE: &str =
    "The coordinator is not available: ringlog does not serve consumer groups or transactions yet.";

pub fn handle(_shard: &Rc<Shard>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: FindCoordinatorRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let code = ErrorCode::CoordinatorNotAvailable.code();
    let mut resp = FindCoordinatorResponse::default();
    if h.api_version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let mut c = Coordinator::default();
                c.key = k.clone();
                c.node_id = BrokerId(-1);
                c.port = -1;
                c.error_code = code;
                c.error_message = Some(str_bytes(MESSAGE));
                c
            })
            .collect();
    } else {
        resp.error_code = code;
        resp.error_message = Some(str_bytes(MESSAGE));
        resp.node_id = BrokerId(-1);
        resp.port = -1;
    }
    encode_response(
        key::FIND_COORDINATOR,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

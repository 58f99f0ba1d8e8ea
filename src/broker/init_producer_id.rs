//! InitProducerId (v0–v5): for an idempotent producer a fresh producer id at epoch
//! 0; for a transactional id, its coordinator's answer (`txn::Coordinator`): the id's
//! producer id with its epoch bumped, fencing older instances.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::ProducerId;

use super::routing::on_transaction_coordinator;
use super::{decode, encode_response, Outcome};
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: InitProducerIdRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|t| t.0.is_empty())
    {
        // As Kafka's transaction coordinator answers an empty transactional id.
        resp.error_code = ErrorCode::InvalidRequest.code();
    } else if let Some(id) = &req.transactional_id {
        let id = id.0.to_string();
        // KIP-360: the id and epoch the producer had (v3+), both or neither.
        let expected = match (req.producer_id.0, req.producer_epoch) {
            _ if h.api_version < 3 => Ok(None),
            (-1, -1) => Ok(None),
            (-1, _) | (_, -1) => Err(ErrorCode::InvalidRequest),
            (pid, epoch) => Ok(Some((pid, epoch))),
        };
        let timeout_ms = req.transaction_timeout_ms;
        let answer = match expected {
            Err(code) => Err(code),
            Ok(expected) => on_transaction_coordinator(core, &id.clone(), move |s| async move {
                s.txns.init_producer_id(&s, &id, timeout_ms, expected).await
            })
            .await
            .and_then(|r| r),
        };
        match answer {
            Ok((pid, epoch)) => {
                resp.producer_id = ProducerId(pid);
                resp.producer_epoch = epoch;
            }
            // Before v4 a fenced producer is told INVALID_PRODUCER_EPOCH, as Kafka.
            Err(ErrorCode::ProducerFenced) if h.api_version < 4 => {
                resp.error_code = ErrorCode::InvalidProducerEpoch.code()
            }
            Err(code) => resp.error_code = code.code(),
        }
    } else {
        // A fresh id from this node's block (COORDINATOR_LOAD_IN_PROGRESS, retriable,
        // while it has none: as Kafka's RPCProducerIdManager).
        match crate::txn::Host::allocate_producer_id(core.clone()).await {
            Ok(id) => {
                resp.producer_id = ProducerId(id);
                resp.producer_epoch = 0;
            }
            Err(code) => resp.error_code = code.code(),
        }
    }
    encode_response(
        key::INIT_PRODUCER_ID,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

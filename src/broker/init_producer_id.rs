//! InitProducerId (v0–v5) for idempotent producers: a fresh producer id, epoch 0.
//! Transactional ids are refused until the transaction coordinator exists.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::ProducerId;

use super::{decode, encode_response, Outcome};
use crate::node::{controller_client, Core, CONTROLLER_SHARD};
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
    } else if req.transactional_id.is_some() {
        resp.error_code = ErrorCode::CoordinatorNotAvailable.code();
    } else {
        let id = core
            .submit_to(CONTROLLER_SHARD, |c| async move {
                controller_client::allocate_producer_id(&c)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        match id {
            Ok(Ok(id)) => {
                resp.producer_id = ProducerId(id);
                resp.producer_epoch = 0;
            }
            // No block of ids yet (no active controller, or it failed): retriable,
            // as Kafka's RPCProducerIdManager answers.
            _ => resp.error_code = ErrorCode::CoordinatorLoadInProgress.code(),
        }
    }
    encode_response(
        key::INIT_PRODUCER_ID,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

//! The transactional producer's requests to its coordinator: AddPartitionsToTxn
//! (v0–v3 from clients; v4–v5 batched, with verify_only, from brokers),
//! AddOffsetsToTxn (v0–v4) and EndTxn (v0–v4: transactions V1, see `protocol::api`).
//! Each runs on the core coordinating the transactional id (`txn::Coordinator`).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use kafka_protocol::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic,
};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnResult,
    AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::end_txn_request::EndTxnRequest;
use kafka_protocol::messages::end_txn_response::EndTxnResponse;
use kafka_protocol::messages::ProducerId;

use super::routing::on_transaction_coordinator;
use super::{decode, encode_response, Outcome};
use crate::group::offsets_topic::{self, OFFSETS_TOPIC};
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;
use crate::txn::TRANSACTION_TOPIC;

/// Before `version`, a fenced producer is told INVALID_PRODUCER_EPOCH (as Kafka).
fn fenced_as(code: ErrorCode, version: i16, fenced_from: i16) -> ErrorCode {
    if code == ErrorCode::ProducerFenced && version < fenced_from {
        ErrorCode::InvalidProducerEpoch
    } else {
        code
    }
}

/// The partitions a request names, and an error for each that cannot be part of a
/// transaction: unknown (UNKNOWN_TOPIC_OR_PARTITION), or internal (refused to
/// clients as Kafka's authorizer does, TOPIC_AUTHORIZATION_FAILED).
fn check_partitions(
    core: &Core,
    topics: &[AddPartitionsToTxnTopic],
) -> (Vec<(String, i32)>, Vec<ErrorCode>) {
    let view = core.metadata.load();
    let mut partitions = Vec::new();
    let mut codes = Vec::new();
    for t in topics {
        let name = t.name.0.to_string();
        let meta = view.topic(&name);
        for &p in &t.partitions {
            codes.push(if name == OFFSETS_TOPIC || name == TRANSACTION_TOPIC {
                ErrorCode::TopicAuthorizationFailed
            } else if meta.is_none_or(|m| !(0..m.partition_count()).contains(&p)) {
                ErrorCode::UnknownTopicOrPartition
            } else {
                ErrorCode::None
            });
            partitions.push((name.clone(), p));
        }
    }
    (partitions, codes)
}

/// Per-topic results in the request's order, one code per partition.
fn topic_results(
    topics: &[AddPartitionsToTxnTopic],
    codes: &[ErrorCode],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut codes = codes.iter();
    topics
        .iter()
        .map(|t| {
            let mut r = AddPartitionsToTxnTopicResult::default();
            r.name = t.name.clone();
            r.results_by_partition = t
                .partitions
                .iter()
                .map(|&p| {
                    let mut pr = AddPartitionsToTxnPartitionResult::default();
                    pr.partition_index = p;
                    pr.partition_error_code =
                        codes.next().copied().unwrap_or(ErrorCode::None).code();
                    pr
                })
                .collect();
            r
        })
        .collect()
}

/// One transaction's partitions: added to it, or (`verify_only`) checked to be in it.
async fn add_or_verify(
    core: &Rc<Core>,
    id: String,
    producer: (i64, i16),
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<ErrorCode> {
    let (partitions, mut codes) = check_partitions(core, topics);
    if codes.iter().any(|c| *c != ErrorCode::None) {
        for c in codes.iter_mut().filter(|c| **c == ErrorCode::None) {
            *c = ErrorCode::OperationNotAttempted;
        }
        return codes;
    }
    let count = partitions.len();
    let answer = on_transaction_coordinator(core, &id.clone(), move |s| async move {
        if verify_only {
            s.txns
                .verify(&s, &id, producer.0, producer.1, &partitions)
                .map(|found| {
                    found
                        .into_iter()
                        .map(|yes| {
                            if yes {
                                ErrorCode::None
                            } else {
                                ErrorCode::TransactionAbortable
                            }
                        })
                        .collect::<Vec<_>>()
                })
        } else {
            s.txns
                .add_partitions(&s, &id, producer.0, producer.1, &partitions)
                .await
                .map(|()| vec![ErrorCode::None; partitions.len()])
        }
    })
    .await
    .and_then(|r| r);
    answer.unwrap_or_else(|code| vec![code; count])
}

pub async fn add_partitions(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: AddPartitionsToTxnRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut resp = AddPartitionsToTxnResponse::default();
    if h.api_version <= 3 {
        let topics = &req.v3_and_below_topics;
        let codes = add_or_verify(
            core,
            req.v3_and_below_transactional_id.0.to_string(),
            (
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch,
            ),
            topics,
            false,
        )
        .await;
        let codes: Vec<ErrorCode> = codes
            .into_iter()
            .map(|c| fenced_as(c, h.api_version, 2))
            .collect();
        resp.results_by_topic_v3_and_below = topic_results(topics, &codes);
    } else {
        // A broker's batched request (KIP-890): a result per transaction.
        for t in &req.transactions {
            let codes = add_or_verify(
                core,
                t.transactional_id.0.to_string(),
                (t.producer_id.0, t.producer_epoch),
                &t.topics,
                t.verify_only,
            )
            .await;
            let mut r = AddPartitionsToTxnResult::default();
            r.transactional_id = t.transactional_id.clone();
            r.topic_results = topic_results(&t.topics, &codes);
            resp.results_by_transaction.push(r);
        }
    }
    encode_response(
        key::ADD_PARTITIONS_TO_TXN,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

pub async fn add_offsets(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: AddOffsetsToTxnRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let id = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let producer = (req.producer_id.0, req.producer_epoch);
    let partitions = core.config.offsets_topic_partitions;
    let answer = on_transaction_coordinator(core, &id.clone(), move |s| async move {
        // The group's `__consumer_offsets` partition joins the transaction.
        let offsets = s
            .metadata
            .load()
            .topic(OFFSETS_TOPIC)
            .map_or(partitions, |t| t.partition_count());
        let partition = (
            OFFSETS_TOPIC.to_string(),
            offsets_topic::partition_for(&group, offsets),
        );
        s.txns
            .add_partitions(&s, &id, producer.0, producer.1, &[partition])
            .await
    })
    .await
    .and_then(|r| r);
    let mut resp = AddOffsetsToTxnResponse::default();
    resp.error_code = match answer {
        Ok(()) => 0,
        Err(code) => fenced_as(code, h.api_version, 2).code(),
    };
    encode_response(
        key::ADD_OFFSETS_TO_TXN,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

pub async fn end_txn(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: EndTxnRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let id = req.transactional_id.0.to_string();
    let producer = (req.producer_id.0, req.producer_epoch);
    let commit = req.committed;
    let answer = on_transaction_coordinator(core, &id.clone(), move |s| async move {
        s.txns
            .end_txn(&s, &id, producer.0, producer.1, commit)
            .await
    })
    .await
    .and_then(|r| r);
    let mut resp = EndTxnResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    resp.error_code = match answer {
        Ok(()) => 0,
        Err(code) => fenced_as(code, h.api_version, 2).code(),
    };
    encode_response(key::END_TXN, h.api_version, h.correlation_id, &resp)
}

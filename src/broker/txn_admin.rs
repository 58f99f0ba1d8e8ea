//! The transaction admin APIs: DescribeTransactions (v0, on the id's coordinator),
//! ListTransactions (v0–v1, every transaction this broker coordinates, from all its
//! cores) and DescribeProducers (v0, a partition leader's producer state).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_producers_request::DescribeProducersRequest;
use kafka_protocol::messages::describe_producers_response::{
    DescribeProducersResponse, PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use kafka_protocol::messages::describe_transactions_response::{
    DescribeTransactionsResponse, TopicData, TransactionState,
};
use kafka_protocol::messages::list_transactions_request::ListTransactionsRequest;
use kafka_protocol::messages::list_transactions_response::{
    ListTransactionsResponse, TransactionState as ListedState,
};
use kafka_protocol::messages::{ProducerId, TopicName, TransactionalId};

use super::routing::{leader_here, on_transaction_coordinator, run_on_owners};
use super::{decode, encode_response, str_bytes, Outcome};
use crate::node::Core;
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;
use crate::shard::ShardId;
use crate::txn::state::TxnState;

const STATES: [TxnState; 6] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
];

pub async fn describe_transactions(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: DescribeTransactionsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut resp = DescribeTransactionsResponse::default();
    for id in &req.transactional_ids {
        let name = id.0.to_string();
        let found = on_transaction_coordinator(core, &name.clone(), move |s| async move {
            s.txns.describe(&*s, &name)
        })
        .await
        .and_then(|r| r);
        let mut st = TransactionState::default();
        st.transactional_id = id.clone();
        st.producer_id = ProducerId(-1);
        st.producer_epoch = -1;
        st.transaction_start_time_ms = -1;
        st.transaction_state = str_bytes("");
        match found {
            Err(code) => st.error_code = code.code(),
            Ok(t) => {
                st.transaction_state = str_bytes(t.state.name());
                st.transaction_timeout_ms = t.timeout_ms;
                st.transaction_start_time_ms = t.start_ms;
                st.producer_id = ProducerId(t.producer_id);
                st.producer_epoch = t.producer_epoch;
                st.topics = t
                    .partitions_by_topic()
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let mut d = TopicData::default();
                        d.topic = TopicName(str_bytes(topic));
                        d.partitions = partitions;
                        d
                    })
                    .collect();
            }
        }
        resp.transaction_states.push(st);
    }
    encode_response(
        key::DESCRIBE_TRANSACTIONS,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

pub async fn list_transactions(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: ListTransactionsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let mut resp = ListTransactionsResponse::default();
    let mut states = Vec::new();
    for f in &req.state_filters {
        match STATES.iter().find(|s| s.name() == f.as_str()) {
            Some(s) => states.push(*s),
            None => resp.unknown_state_filters.push(f.clone()),
        }
    }
    let now = crate::storage::segment::now_ms();
    let lists = (0..core.shard_count()).map(|shard| {
        core.submit_to(ShardId(shard), |s| async move {
            s.txns.list().map(|all| {
                all.into_iter()
                    .map(|t| (t.transactional_id, t.producer_id, t.state, t.start_ms))
                    .collect::<Vec<_>>()
            })
        })
    });
    for listed in futures::future::join_all(lists).await {
        match listed {
            Ok(Ok(all)) => {
                for (id, pid, state, start_ms) in all {
                    let wanted = (states.is_empty() && resp.unknown_state_filters.is_empty()
                        || states.contains(&state))
                        && (req.producer_id_filters.is_empty()
                            || req.producer_id_filters.contains(&ProducerId(pid)))
                        && (req.duration_filter < 0
                            || (start_ms >= 0 && now - start_ms >= req.duration_filter));
                    if wanted {
                        let mut l = ListedState::default();
                        l.transactional_id = TransactionalId(str_bytes(&id));
                        l.producer_id = ProducerId(pid);
                        l.transaction_state = str_bytes(state.name());
                        resp.transaction_states.push(l);
                    }
                }
            }
            Ok(Err(code)) => resp.error_code = code.code(),
            Err(_) => resp.error_code = ErrorCode::CoordinatorNotAvailable.code(),
        }
    }
    encode_response(
        key::LIST_TRANSACTIONS,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

pub async fn describe_producers(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: DescribeProducersRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let view = core.metadata.load();
    let mut results: Vec<Result<Vec<ProducerState>, ErrorCode>> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topics {
        let topic = view.topic(t.name.0.as_str());
        for &p in &t.partition_indexes {
            let slot = results.len();
            results.push(Err(ErrorCode::UnknownTopicOrPartition));
            match leader_here(&view, topic, p) {
                Err(code) => results[slot] = Err(code),
                Ok((owner, key)) => work.push((owner, slot, (key, ()))),
            }
        }
    }
    run_on_owners(core, work, &mut results, |log, ()| async move {
        Ok(log
            .producers()
            .into_iter()
            .map(|p| {
                let mut s = ProducerState::default();
                s.producer_id = ProducerId(p.producer_id);
                s.producer_epoch = p.epoch as i32;
                s.last_sequence = p.last_sequence;
                s.last_timestamp = p.last_timestamp;
                s.coordinator_epoch = p.coordinator_epoch;
                s.current_txn_start_offset = p.txn_start_offset;
                s
            })
            .collect())
    })
    .await;
    let mut results = results.into_iter();
    let mut resp = DescribeProducersResponse::default();
    for t in &req.topics {
        let mut rt = TopicResponse::default();
        rt.name = t.name.clone();
        for &p in &t.partition_indexes {
            let mut rp = PartitionResponse::default();
            rp.partition_index = p;
            match results.next().unwrap_or(Err(ErrorCode::UnknownServerError)) {
                Ok(producers) => rp.active_producers = producers,
                Err(code) => rp.error_code = code.code(),
            }
            rt.partitions.push(rp);
        }
        resp.topics.push(rt);
    }
    encode_response(
        key::DESCRIBE_PRODUCERS,
        h.api_version,
        h.correlation_id,
        &resp,
    )
}

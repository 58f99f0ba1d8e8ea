//! DeleteTopics (v0–v6): by name, or by topic id from v6, through the controller.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::TopicName;

use super::{decode, encode_response, str_bytes, Outcome};
use crate::node::{Core, CONTROLLER_SHARD};
use crate::protocol::api::key;
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

pub async fn handle(core: &Rc<Core>, h: &RequestHeader, body: Bytes) -> Outcome {
    let req: DeleteTopicsRequest = match decode(body, h) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let targets: Vec<(Option<String>, uuid::Uuid)> = if h.api_version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let asked = targets.clone();
    let results = core
        .submit_to(CONTROLLER_SHARD, move |s| async move {
            crate::node::controller_client::delete_topics(&s, targets).await
        })
        .await
        .unwrap_or_default();
    let mut resp = DeleteTopicsResponse::default();
    for (i, (name, id)) in asked.into_iter().enumerate() {
        let mut r = DeletableTopicResult::default();
        match results.get(i).cloned().unwrap_or(Err((
            ErrorCode::UnknownServerError,
            "controller unavailable".into(),
        ))) {
            Ok((name, id)) => {
                r.name = Some(TopicName(str_bytes(&name)));
                if h.api_version >= 6 {
                    r.topic_id = id;
                }
            }
            Err((code, message)) => {
                r.name = name.map(|n| TopicName(str_bytes(&n)));
                if h.api_version >= 6 {
                    r.topic_id = id;
                }
                r.error_code = code.code();
                if h.api_version >= 5 {
                    r.error_message = Some(str_bytes(&message));
                }
            }
        }
        resp.responses.push(r);
    }
    encode_response(key::DELETE_TOPICS, h.api_version, h.correlation_id, &resp)
}

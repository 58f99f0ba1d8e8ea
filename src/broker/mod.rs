//! Request handling: dispatch by api key against the one API table, one file per API.
//! Handlers route per-partition work through `shard::submit_to` and never open
//! segments themselves.

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tracing::{debug, warn};

use crate::node::Core;
use crate::protocol::api::{self, key};
use crate::protocol::chunk::Chunk;
use crate::protocol::header::{self, RequestHeader};
use crate::protocol::old_versions;

mod alter_configs;
mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod elect_leaders;
mod fetch;
mod fetch_session;
mod find_coordinator;
mod group_offsets;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
pub mod produce;
pub(crate) mod routing;
pub(crate) mod storage_errors;
mod transactions;
mod txn_admin;
mod txn_markers;
mod txn_offset_commit;
mod write_txn_markers;

/// What the connection does with a request's result.
pub enum Outcome {
    /// A complete response frame, as chunks to write in order.
    Respond(Vec<Chunk>),
    /// Nothing to send (Produce with acks=0).
    NoResponse,
    /// Close the connection, as Kafka does for requests it cannot parse or serve.
    Close(String),
}

/// Encodes a response frame: size, response header (v0 or v1 by the API's rules),
/// body. An old version the schema crate lacks is encoded as the later version with
/// its layout (`old_versions::same_response_layout`).
pub fn encode_response<R: Encodable>(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Outcome {
    let (body_version, drop_throttle) =
        old_versions::same_response_layout(api_key, version).unwrap_or((version, false));
    respond_with(api_key, version, correlation_id, |buf| {
        let start = buf.len();
        body.encode(buf, body_version).map_err(|e| e.to_string())?;
        if drop_throttle {
            // throttle_time_ms leads the body of the version that added it.
            let rest = buf.split_off(start + 4);
            buf.truncate(start);
            buf.unsplit(rest);
        }
        Ok(())
    })
}

/// A response frame whose body `write_body` writes: size, response header, body.
pub fn respond_with(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    write_body: impl FnOnce(&mut BytesMut) -> Result<(), String>,
) -> Outcome {
    let header_version = ApiKey::try_from(api_key)
        .map(|k| k.response_header_version(version))
        .unwrap_or(0);
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let written = header
        .encode(&mut buf, header_version)
        .map_err(|e| e.to_string())
        .and_then(|_| write_body(&mut buf));
    if let Err(e) = written {
        return Outcome::Close(format!("encoding response failed: {e}"));
    }
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Outcome::Respond(vec![Chunk::Bytes(buf.freeze())])
}

/// Decodes a request body, or says why not (the connection is then closed). An old
/// version the schema crate lacks is decoded as the later version with its layout
/// (`old_versions::same_request_layout`).
pub fn decode<R: Decodable>(mut body: Bytes, h: &RequestHeader) -> Result<R, Outcome> {
    let mut version = h.api_version;
    if let Some((as_version, tail)) = old_versions::same_request_layout(h.api_key, version) {
        version = as_version;
        if !tail.is_empty() {
            let mut extended = BytesMut::with_capacity(body.len() + tail.len());
            extended.extend_from_slice(&body);
            extended.extend_from_slice(tail);
            body = extended.freeze();
        }
    }
    R::decode(&mut body, version).map_err(|e| {
        Outcome::Close(format!(
            "cannot decode api {} v{}: {e}",
            h.api_key, h.api_version
        ))
    })
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Handles one request frame from a client at `client_host` (Kafka's form: "/ip").
pub async fn handle(core: Rc<Core>, frame: Bytes, client_host: &str) -> Outcome {
    let Some((api_key, api_version, correlation_id)) = header::peek_ids(&frame) else {
        return Outcome::Close("request shorter than a header".into());
    };
    let Some(spec) = api::find(api_key) else {
        return Outcome::Close(format!("unsupported api key {api_key}"));
    };
    if !spec.is_advertised(api_version) {
        if api_key == key::API_VERSIONS {
            // KIP-511: answer an unknown ApiVersions version with a v0 error reply
            // listing our ranges, so the client can retry with one we support.
            return api_versions::unsupported_version(correlation_id);
        }
        return Outcome::Close(format!(
            "unsupported version {api_version} of {}",
            spec.name
        ));
    }
    let (h, body) = match header::parse_for(spec, frame) {
        Ok(parsed) => parsed,
        Err(e) => return Outcome::Close(format!("malformed request header: {e}")),
    };
    debug!(api = spec.name, version = api_version, correlation_id, client = ?h.client_id, "request");
    if !spec.is_served(api_version) {
        return match api_key {
            key::PRODUCE => produce::unsupported_old_version(&h, body),
            key::OFFSET_COMMIT => group_offsets::offset_commit_v0(&h, body),
            key::OFFSET_FETCH => group_offsets::offset_fetch_v0(&h, body),
            _ => Outcome::Close(format!(
                "unsupported version {api_version} of {}",
                spec.name
            )),
        };
    }
    let outcome = match api_key {
        key::API_VERSIONS => api_versions::handle(&h),
        key::METADATA => metadata::handle(&core, &h, body).await,
        key::PRODUCE => produce::handle(&core, &h, body).await,
        key::FETCH => fetch::handle(&core, &h, body).await,
        key::LIST_OFFSETS => list_offsets::handle(&core, &h, body).await,
        key::CREATE_TOPICS => create_topics::handle(&core, &h, body).await,
        key::DELETE_TOPICS => delete_topics::handle(&core, &h, body).await,
        key::DELETE_RECORDS => delete_records::handle(&core, &h, body).await,
        key::INIT_PRODUCER_ID => init_producer_id::handle(&core, &h, body).await,
        key::CREATE_PARTITIONS => create_partitions::handle(&core, &h, body).await,
        key::DESCRIBE_CLUSTER => describe_cluster::handle(&core, &h, body).await,
        key::ELECT_LEADERS => elect_leaders::handle(&core, &h, body).await,
        key::DESCRIBE_CONFIGS => describe_configs::handle(&core, &h, body).await,
        key::ALTER_CONFIGS => alter_configs::legacy(&core, &h, body).await,
        key::INCREMENTAL_ALTER_CONFIGS => alter_configs::incremental(&core, &h, body).await,
        key::FIND_COORDINATOR => find_coordinator::handle(&core, &h, body).await,
        key::JOIN_GROUP => groups::join_group(&core, &h, body, client_host).await,
        key::SYNC_GROUP => groups::sync_group(&core, &h, body).await,
        key::HEARTBEAT => groups::heartbeat(&core, &h, body).await,
        key::LEAVE_GROUP => groups::leave_group(&core, &h, body).await,
        key::OFFSET_COMMIT => group_offsets::offset_commit(&core, &h, body).await,
        key::OFFSET_FETCH => group_offsets::offset_fetch(&core, &h, body).await,
        key::LIST_GROUPS => groups::list_groups(&core, &h, body).await,
        key::DESCRIBE_GROUPS => groups::describe_groups(&core, &h, body).await,
        key::DELETE_GROUPS => groups::delete_groups(&core, &h, body).await,
        key::OFFSET_DELETE => group_offsets::offset_delete(&core, &h, body).await,
        key::CONSUMER_GROUP_HEARTBEAT => {
            groups::consumer_group_heartbeat(&core, &h, body, client_host).await
        }
        key::CONSUMER_GROUP_DESCRIBE => groups::consumer_group_describe(&core, &h, body).await,
        key::ADD_PARTITIONS_TO_TXN => transactions::add_partitions(&core, &h, body).await,
        key::ADD_OFFSETS_TO_TXN => transactions::add_offsets(&core, &h, body).await,
        key::END_TXN => transactions::end_txn(&core, &h, body).await,
        key::WRITE_TXN_MARKERS => write_txn_markers::handle(&core, &h, body).await,
        key::TXN_OFFSET_COMMIT => txn_offset_commit::handle(&core, &h, body).await,
        key::DESCRIBE_TRANSACTIONS => txn_admin::describe_transactions(&core, &h, body).await,
        key::LIST_TRANSACTIONS => txn_admin::list_transactions(&core, &h, body).await,
        key::DESCRIBE_PRODUCERS => txn_admin::describe_producers(&core, &h, body).await,
        other => {
            warn!(api_key = other, "api in the table has no handler");
            Outcome::Close(format!("api {other} has no handler"))
        }
    };
    outcome
}

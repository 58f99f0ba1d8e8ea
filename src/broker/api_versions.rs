//! ApiVersions (v0–v4): answered from the API table.

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

use super::{encode_response, Outcome};
use crate::protocol::api::{key, SUPPORTED_APIS};
use crate::protocol::header::RequestHeader;
use crate::protocol::ErrorCode;

fn response(error: ErrorCode) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error.code();
    r.api_keys = SUPPORTED_APIS
        .iter()
        .map(|s| {
            let mut v = ApiVersion::default();
            v.api_key = s.key;
            v.min_version = s.version_min;
            v.max_version = s.version_max;
            v
        })
        .collect();
    r.finalized_features_epoch = -1;
    r
}

pub fn handle(h: &RequestHeader) -> Outcome {
    encode_response(
        key::API_VERSIONS,
        h.api_version,
        h.correlation_id,
        &response(ErrorCode::None),
    )
}

pub fn unsupported_version(correlation_id: i32) -> Outcome {
    encode_response(
        key::API_VERSIONS,
        0,
        correlation_id,
        &response(ErrorCode::UnsupportedVersion),
    )
}

//! Every request decoder the broker dispatches to, at every version it advertises, on
//! arbitrary bodies: the schema crate's, the readers of the versions it lacks
//! (`old_versions`), and the hand-written Produce v0–v2 reader.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use libfuzzer_sys::fuzz_target;
use ringlog::protocol::api::{key, SUPPORTED_APIS};
use ringlog::protocol::old_versions;

// As in the broker: the decoders reserve from array counts read off the wire before
// checking them (see alloc_guard); the guard turns those into address space.
#[global_allocator]
static ALLOCATOR: ringlog::alloc_guard::GuardedAllocator = ringlog::alloc_guard::GuardedAllocator;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let spec = &SUPPORTED_APIS[data[0] as usize % SUPPORTED_APIS.len()];
    let span = (spec.version_max - spec.version_min + 1) as usize;
    let version = spec.version_min + (data[1] as usize % span) as i16;
    let body = Bytes::copy_from_slice(&data[2..]);
    match (spec.key, version) {
        (key::PRODUCE, 0..=2) => {
            let h = ringlog::protocol::header::RequestHeader {
                api_key: 0,
                api_version: version,
                correlation_id: 1,
                client_id: None,
            };
            let _ = ringlog::broker::produce::unsupported_old_version(&h, body);
        }
        (key::LIST_OFFSETS, 0) => {
            let _ = old_versions::decode_list_offsets_v0(body);
        }
        (key::OFFSET_COMMIT, 0..=1) => {
            let _ = old_versions::decode_offset_commit_old(body, version);
        }
        _ => {
            let Ok(api) = ApiKey::try_from(spec.key) else {
                return;
            };
            // As broker::decode: an old version laid out as a later one.
            let (as_version, tail) =
                old_versions::same_request_layout(spec.key, version).unwrap_or((version, &[]));
            let mut b = Bytes::from([&body[..], tail].concat());
            let _ = RequestKind::decode(api, &mut b, as_version);
        }
    }
});

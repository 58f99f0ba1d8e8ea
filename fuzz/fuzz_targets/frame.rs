//! Frame splitting and the request header: any bytes a socket delivers, in any
//! chunking, give frames or a clean error, never a panic or an allocation from an
//! unchecked length.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringlog::protocol::{api, frame, header};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    // Deliver the bytes in pieces of 1..=256, as reads would.
    let chunk = chunk as usize + 1;
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match frame::split_frame(&mut buf, 1 << 20) {
                Ok(Some(f)) => {
                    if let Some((key, version, _)) = header::peek_ids(&f) {
                        if let Some(spec) = api::find(key) {
                            let _ = spec.is_advertised(version);
                            let _ = header::parse_for(spec, f.clone());
                        }
                    }
                    let _ = header::parse_header(f.clone(), false);
                    let _ = header::parse_header(f, true);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

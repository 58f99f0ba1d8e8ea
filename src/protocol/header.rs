//! Request header peek: api key, version, correlation id, client id and, for flexible
//! versions, tagged fields. Our own code, so that the body can be handed to a decoder
//! (or refused) without decoding it.

use bytes::{Buf, Bytes};

use super::api::ApiSpec;
use super::wire::{read_unsigned_varint, WireError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// The first 8 bytes of any request: enough to answer or to log a refusal.
pub fn peek_ids(frame: &[u8]) -> Option<(i16, i16, i32)> {
    if frame.len() < 8 {
        return None;
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Some((api_key, api_version, correlation_id))
}

/// Parses the request header of a supported API and returns it with the body.
/// `flexible` headers (v2) carry tagged fields after the client id, which are skipped.
pub fn parse_header(mut frame: Bytes, flexible: bool) -> Result<(RequestHeader, Bytes), WireError> {
    let (api_key, api_version, correlation_id) = peek_ids(&frame).ok_or(WireError::Truncated)?;
    frame.advance(8);
    if frame.remaining() < 2 {
        return Err(WireError::Truncated);
    }
    let len = frame.get_i16();
    let client_id = if len < 0 {
        None
    } else {
        let len = len as usize;
        if frame.remaining() < len {
            return Err(WireError::Truncated);
        }
        let raw = frame.split_to(len);
        Some(String::from_utf8_lossy(&raw).into_owned())
    };
    if flexible {
        let count = read_unsigned_varint(&mut frame)?;
        for _ in 0..count {
            let _tag = read_unsigned_varint(&mut frame)?;
            let size = read_unsigned_varint(&mut frame)? as usize;
            if frame.remaining() < size {
                return Err(WireError::Truncated);
            }
            frame.advance(size);
        }
    }
    Ok((
        RequestHeader {
            api_key,
            api_version,
            correlation_id,
            client_id,
        },
        frame,
    ))
}

/// Parses the header of a request for `spec` at its version.
pub fn parse_for(spec: &ApiSpec, frame: Bytes) -> Result<(RequestHeader, Bytes), WireError> {
    let version = peek_ids(&frame).ok_or(WireError::Truncated)?.1;
    parse_header(frame, spec.is_flexible(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn header(flexible: bool, client_id: Option<&str>) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i16(18);
        b.put_i16(3);
        b.put_i32(42);
        match client_id {
            Some(c) => {
                b.put_i16(c.len() as i16);
                b.put_slice(c.as_bytes());
            }
            None => b.put_i16(-1),
        }
        if flexible {
            b.put_u8(1); // one tagged field
            b.put_u8(0); // tag
            b.put_u8(2); // size
            b.put_slice(b"xy");
        }
        b.put_slice(b"body");
        b
    }

    #[test]
    fn parses_plain_and_flexible_headers() {
        let (h, body) = parse_header(header(false, Some("kcat")).freeze(), false).unwrap();
        assert_eq!((h.api_key, h.api_version, h.correlation_id), (18, 3, 42));
        assert_eq!(h.client_id.as_deref(), Some("kcat"));
        assert_eq!(&body[..], b"body");
        let (h, body) = parse_header(header(true, None).freeze(), true).unwrap();
        assert_eq!(h.client_id, None);
        assert_eq!(&body[..], b"body");
    }

    #[test]
    fn truncated_headers_are_errors_not_panics() {
        let full = header(true, Some("client")).freeze();
        for cut in 0..full.len() - 4 {
            assert!(
                parse_header(full.slice(..cut), true).is_err(),
                "cut at {cut}"
            );
        }
    }
}

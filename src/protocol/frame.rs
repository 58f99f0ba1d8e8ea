//! Request framing: a 4-byte big-endian length, then that many bytes.
//!
//! Check-then-parse: nothing is allocated from a length read off the wire until the
//! length has been checked against `frame_size_max`.

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame size {size} is over the limit of {limit} bytes (socket.request.max.bytes)")]
    TooLarge { size: i64, limit: usize },
    #[error("frame size {size} is negative or too small to hold a request header")]
    TooSmall { size: i32 },
}

/// The smallest request: api key, api version, correlation id, client id length.
pub const FRAME_SIZE_MIN: usize = 10;

/// The size of the frame starting at `buf[0]`, once its 4-byte length has arrived and
/// passed the checks; `Ok(None)` while fewer than 4 bytes are there.
pub fn peek_frame_size(buf: &[u8], frame_size_max: usize) -> Result<Option<usize>, FrameError> {
    let Some(length) = buf.get(..4) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes(length.try_into().expect("4 bytes"));
    if size < FRAME_SIZE_MIN as i32 {
        return Err(FrameError::TooSmall { size });
    }
    if size as usize > frame_size_max {
        return Err(FrameError::TooLarge {
            size: size as i64,
            limit: frame_size_max,
        });
    }
    Ok(Some(size as usize))
}

/// Splits complete frames off the front of `buf`. Returns `Ok(None)` when more bytes
/// are needed; in that case `buf` has been reserved for the whole frame, so the caller
/// can read straight into it.
pub fn split_frame(buf: &mut BytesMut, frame_size_max: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(size) = peek_frame_size(buf, frame_size_max)? else {
        return Ok(None);
    };
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn framed(payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(payload.len() as i32);
        b.put_slice(payload);
        b
    }

    #[test]
    fn splits_whole_frames_and_waits_for_partial_ones() {
        let mut buf = framed(&[7u8; 12]);
        buf.extend_from_slice(&framed(&[9u8; 20])[..10]);
        let first = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(&first[..], &[7u8; 12]);
        assert_eq!(split_frame(&mut buf, 1024).unwrap(), None);
        assert!(
            buf.capacity() >= 24,
            "reserved room for the whole pending frame"
        );
        buf.extend_from_slice(&[9u8; 14]);
        let second = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(&second[..], &[9u8; 20]);
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_oversized_before_allocating() {
        let mut buf = BytesMut::new();
        buf.put_i32(i32::MAX);
        let cap_before = buf.capacity();
        assert_eq!(
            split_frame(&mut buf, 1 << 20),
            Err(FrameError::TooLarge {
                size: i32::MAX as i64,
                limit: 1 << 20
            })
        );
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn rejects_negative_and_tiny_sizes() {
        for size in [-1i32, 0, 3, 9] {
            let mut buf = BytesMut::new();
            buf.put_i32(size);
            assert_eq!(
                split_frame(&mut buf, 1024),
                Err(FrameError::TooSmall { size })
            );
        }
    }

    #[test]
    fn needs_four_bytes_for_the_length() {
        let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
        assert_eq!(split_frame(&mut buf, 1024), Ok(None));
    }
}

//! Primitive wire encodings shared by our own decoders and encoders: varints (unsigned
//! and zig-zag), as the Kafka protocol and the RecordBatch v2 record format use them.

use bytes::{Buf, BufMut};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated input")]
    Truncated,
    #[error("varint longer than its type allows")]
    VarintTooLong,
    #[error("invalid length {0}")]
    InvalidLength(i64),
}

pub fn read_unsigned_varint(buf: &mut impl Buf) -> Result<u32, WireError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        if !buf.has_remaining() {
            return Err(WireError::Truncated);
        }
        let b = buf.get_u8();
        value |= ((b & 0x7f) as u32) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::VarintTooLong)
}

pub fn read_unsigned_varlong(buf: &mut impl Buf) -> Result<u64, WireError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        if !buf.has_remaining() {
            return Err(WireError::Truncated);
        }
        let b = buf.get_u8();
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::VarintTooLong)
}

pub fn read_varint(buf: &mut impl Buf) -> Result<i32, WireError> {
    let v = read_unsigned_varint(buf)?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

pub fn read_varlong(buf: &mut impl Buf) -> Result<i64, WireError> {
    let v = read_unsigned_varlong(buf)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

pub fn put_unsigned_varint(buf: &mut impl BufMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

pub fn put_varint(buf: &mut impl BufMut, value: i32) {
    put_unsigned_varint(buf, ((value << 1) ^ (value >> 31)) as u32);
}

pub fn put_varlong(buf: &mut impl BufMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0i32, 1, -1, 63, -64, 64, 300, -300, i32::MAX, i32::MIN] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(read_varint(&mut &b[..]).unwrap(), v);
        }
        for v in [0i64, -1, 1 << 40, i64::MAX, i64::MIN] {
            let mut b = Vec::new();
            put_varlong(&mut b, v);
            assert_eq!(read_varlong(&mut &b[..]).unwrap(), v);
        }
    }

    #[test]
    fn overlong_and_truncated_varints_fail() {
        assert_eq!(
            read_unsigned_varint(&mut &[0x80u8; 6][..]),
            Err(WireError::VarintTooLong)
        );
        assert_eq!(
            read_unsigned_varint(&mut &[0x80u8][..]),
            Err(WireError::Truncated)
        );
    }
}

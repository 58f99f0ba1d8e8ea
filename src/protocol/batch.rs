//! RecordBatch v2: a read-only view of the 61-byte header, and the checks an append
//! runs before a batch may enter the log.
//!
//! Invariants: a batch that passed `validate` has magic 2, a length field that matches
//! its bytes, a CRC-32C that matches bytes 21.., and a record count equal to
//! `last_offset_delta + 1` and at least 1. Only the base offset (0..8) and partition leader epoch (12..16) may be
//! rewritten afterwards; both lie outside the CRC.

use bytes::Bytes;

pub const HEADER_SIZE: usize = 61;
/// Offset of the 4-byte batch length; the length counts the bytes after it.
pub const LENGTH_OFFSET: usize = 8;
pub const LOG_OVERHEAD: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

pub const NO_PRODUCER_ID: i64 = -1;
const TRANSACTIONAL_FLAG: i16 = 1 << 4;
const CONTROL_FLAG: i16 = 1 << 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch of {0} bytes is shorter than a RecordBatch header")]
    TooShort(usize),
    #[error("batch length field says {declared} bytes, {actual} present")]
    LengthMismatch { declared: i64, actual: usize },
    #[error(
        "produce requests from v3 may only carry record batches with magic 2, found magic {0}"
    )]
    OldMagic(i8),
    #[error("no complete record batch: {actual} bytes, the length field asks for {declared}")]
    NoBatch { declared: i64, actual: usize },
    #[error("unknown magic {0}")]
    BadMagic(i8),
    #[error("CRC-32C mismatch: header says {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("batch of {size} bytes is larger than message.max.bytes {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("exactly one record batch is allowed per partition, found {0}")]
    NotExactlyOne(usize),
    #[error("unknown compression codec {0}")]
    UnknownCompression(i16),
    #[error("timestamp {timestamp} is out of range: more than {limit_ms} ms {side} the broker's time {now}")]
    TimestampOutOfRange {
        timestamp: i64,
        now: i64,
        limit_ms: i64,
        side: &'static str,
    },
}

impl BatchError {
    pub fn error_code(&self) -> super::error::ErrorCode {
        use super::error::ErrorCode;
        match self {
            BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            // As Kafka's ProduceRequest.validateRecords: INVALID_RECORD for a payload
            // without one whole batch, a batch of magic 0/1, or more than one batch.
            BatchError::OldMagic(_) | BatchError::NoBatch { .. } | BatchError::NotExactlyOne(_) => {
                ErrorCode::InvalidRecord
            }
            BatchError::TimestampOutOfRange { .. } => ErrorCode::InvalidTimestamp,
            _ => ErrorCode::CorruptMessage,
        }
    }
}

/// Compression codec, from the low three bits of the attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// A view over the header of one RecordBatch v2. Accessors read big-endian fields at
/// fixed offsets; the caller must have checked `len() >= HEADER_SIZE`.
#[derive(Debug, Clone, Copy)]
pub struct BatchHeader<'a>(&'a [u8]);

macro_rules! be {
    ($b:expr, $ty:ty, $at:expr) => {
        <$ty>::from_be_bytes(
            $b[$at..$at + std::mem::size_of::<$ty>()]
                .try_into()
                .unwrap(),
        )
    };
}

impl<'a> BatchHeader<'a> {
    /// Wraps the first `HEADER_SIZE` bytes, or `None` if there are fewer.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() >= HEADER_SIZE).then_some(BatchHeader(bytes))
    }
    pub fn base_offset(&self) -> i64 {
        be!(self.0, i64, 0)
    }
    /// Total size of the batch on the wire, including offset and length fields.
    pub fn total_size(&self) -> i64 {
        be!(self.0, i32, LENGTH_OFFSET) as i64 + LOG_OVERHEAD as i64
    }
    /// The batch's whole size on disk when its length field is plausible (at least
    /// a header); `None` for a length no batch can have. Anything that steps from one
    /// batch to the next by this size, or reads that many bytes, must use this: a
    /// garbage length read as `u64` wraps to an endless loop or an endless read.
    pub fn span(&self) -> Option<u64> {
        let size = self.total_size();
        (size >= HEADER_SIZE as i64).then_some(size as u64)
    }
    /// The epoch of the leader that appended the batch (the broker writes it).
    pub fn partition_leader_epoch(&self) -> i32 {
        be!(self.0, i32, 12)
    }
    pub fn magic(&self) -> i8 {
        self.0[MAGIC_OFFSET] as i8
    }
    pub fn crc(&self) -> u32 {
        be!(self.0, u32, CRC_OFFSET)
    }
    pub fn attributes(&self) -> i16 {
        be!(self.0, i16, ATTRIBUTES_OFFSET)
    }
    pub fn last_offset_delta(&self) -> i32 {
        be!(self.0, i32, 23)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + self.last_offset_delta() as i64
    }
    pub fn base_timestamp(&self) -> i64 {
        be!(self.0, i64, 27)
    }
    pub fn max_timestamp(&self) -> i64 {
        be!(self.0, i64, 35)
    }
    pub fn producer_id(&self) -> i64 {
        be!(self.0, i64, 43)
    }
    pub fn producer_epoch(&self) -> i16 {
        be!(self.0, i16, 51)
    }
    pub fn base_sequence(&self) -> i32 {
        be!(self.0, i32, 53)
    }
    pub fn record_count(&self) -> i32 {
        be!(self.0, i32, 57)
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_FLAG != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_FLAG != 0
    }
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Ok(match self.attributes() & 0x7 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(BatchError::UnknownCompression(other)),
        })
    }
    /// Sequence number of the last record, wrapping at i32::MAX as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        let seq = self.base_sequence() as i64 + self.last_offset_delta() as i64;
        if seq > i32::MAX as i64 {
            (seq - i32::MAX as i64 - 1) as i32
        } else {
            seq as i32
        }
    }
}

/// Checks one whole batch (`bytes` is exactly one batch) before append.
pub fn validate(bytes: &[u8], batch_size_max: usize) -> Result<BatchHeader<'_>, BatchError> {
    let header = BatchHeader::new(bytes).ok_or(BatchError::TooShort(bytes.len()))?;
    if header.total_size() != bytes.len() as i64 {
        return Err(BatchError::LengthMismatch {
            declared: header.total_size(),
            actual: bytes.len(),
        });
    }
    match header.magic() {
        2 => {}
        m @ 0..=1 => return Err(BatchError::OldMagic(m)),
        m => return Err(BatchError::BadMagic(m)),
    }
    if bytes.len() > batch_size_max {
        return Err(BatchError::TooLarge {
            size: bytes.len(),
            limit: batch_size_max,
        });
    }
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
    if computed != header.crc() {
        return Err(BatchError::CrcMismatch {
            stored: header.crc(),
            computed,
        });
    }
    if header.record_count() < 1
        || header.record_count() as i64 != header.last_offset_delta() as i64 + 1
    {
        return Err(BatchError::CountMismatch {
            count: header.record_count(),
            last_offset_delta: header.last_offset_delta(),
        });
    }
    header.compression()?;
    Ok(header)
}

/// Kafka's create-time bounds (KIP-937): the newest timestamp may be at most
/// `after_max_ms` ahead of `now`, the first record's at most `before_max_ms` behind.
/// The first record stands in for the oldest: the header carries no minimum, and
/// producers stamp records in order. Batches without timestamps (-1) pass.
pub fn check_timestamps(
    header: &BatchHeader<'_>,
    now: i64,
    before_max_ms: i64,
    after_max_ms: i64,
) -> Result<(), BatchError> {
    let newest = header.max_timestamp();
    if newest >= 0 && newest.saturating_sub(now) > after_max_ms {
        return Err(BatchError::TimestampOutOfRange {
            timestamp: newest,
            now,
            limit_ms: after_max_ms,
            side: "after",
        });
    }
    let first = header.base_timestamp();
    if first >= 0 && now.saturating_sub(first) > before_max_ms {
        return Err(BatchError::TimestampOutOfRange {
            timestamp: first,
            now,
            limit_ms: before_max_ms,
            side: "before",
        });
    }
    Ok(())
}

/// Checks that a produce payload for one partition is exactly one batch, as Kafka
/// requires from Produce v3 on, and validates it. The checks run in the order of
/// Kafka's `ProduceRequest.validateRecords` (via its batch iterator), so the same
/// payload gets the same error code: a length field below the smallest legacy message
/// is corrupt; a payload that does not hold the batch its length field announces has
/// no batch; then the magic, read before anything that depends on the v2 layout (a
/// magic 0/1 message is shorter than a v2 header).
pub fn validate_single(records: &Bytes, batch_size_max: usize) -> Result<(), BatchError> {
    /// Kafka's LegacyRecord.RECORD_OVERHEAD_V0: the smallest length field it accepts.
    const LENGTH_MIN: i64 = 14;
    let no_batch = |declared: i64| BatchError::NoBatch {
        declared,
        actual: records.len(),
    };
    let Some(length_field) = records.get(LENGTH_OFFSET..LOG_OVERHEAD) else {
        return Err(no_batch(LOG_OVERHEAD as i64));
    };
    let length = i32::from_be_bytes(length_field.try_into().expect("4 bytes")) as i64;
    if length < LENGTH_MIN {
        return Err(BatchError::LengthMismatch {
            declared: length + LOG_OVERHEAD as i64,
            actual: records.len(),
        });
    }
    let size = length + LOG_OVERHEAD as i64;
    if records.len() <= MAGIC_OFFSET || (records.len() as i64) < size {
        return Err(no_batch(size));
    }
    match records[MAGIC_OFFSET] as i8 {
        2 => {}
        m @ 0..=1 => return Err(BatchError::OldMagic(m)),
        m => return Err(BatchError::BadMagic(m)),
    }
    if size < HEADER_SIZE as i64 {
        return Err(BatchError::TooShort(size as usize));
    }
    if (records.len() as i64) > size {
        return Err(BatchError::NotExactlyOne(2));
    }
    validate(records, batch_size_max).map(|_| ())
}

/// Rewrites the fields the broker owns: base offset and partition leader epoch.
pub fn assign(bytes: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(bytes.len() >= HEADER_SIZE);
    bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
    bytes[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Sets a built batch's attributes (compression, transactional, control bits) and
/// recomputes its CRC, which covers them.
pub fn set_attributes(bytes: &mut [u8], attributes: i16) {
    assert!(bytes.len() >= HEADER_SIZE);
    bytes[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
    bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Test helper and load-generator building block: encodes an uncompressed batch of
/// `(key, value, headers)` records with the given timestamps.
pub mod build {
    use super::*;
    use crate::protocol::wire::{put_varint, put_varlong};
    use bytes::BufMut;

    pub struct Record<'a> {
        pub key: Option<&'a [u8]>,
        pub value: Option<&'a [u8]>,
        pub headers: &'a [(&'a str, &'a [u8])],
        pub timestamp: i64,
    }

    pub fn encode(records: &[Record<'_>], producer: Option<(i64, i16, i32)>) -> Vec<u8> {
        assert!(!records.is_empty());
        let base_ts = records[0].timestamp;
        let max_ts = records.iter().map(|r| r.timestamp).max().unwrap();
        let mut body = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let mut rec = Vec::new();
            rec.put_i8(0);
            put_varlong(&mut rec, r.timestamp - base_ts);
            put_varint(&mut rec, i as i32);
            for field in [r.key, r.value] {
                match field {
                    Some(f) => {
                        put_varint(&mut rec, f.len() as i32);
                        rec.put_slice(f);
                    }
                    None => put_varint(&mut rec, -1),
                }
            }
            put_varint(&mut rec, r.headers.len() as i32);
            for (k, v) in r.headers {
                put_varint(&mut rec, k.len() as i32);
                rec.put_slice(k.as_bytes());
                put_varint(&mut rec, v.len() as i32);
                rec.put_slice(v);
            }
            put_varint(&mut body, rec.len() as i32);
            body.extend_from_slice(&rec);
        }
        let (pid, epoch, seq) = producer.unwrap_or((NO_PRODUCER_ID, -1, -1));
        let mut b = Vec::with_capacity(HEADER_SIZE + body.len());
        b.put_i64(0);
        b.put_i32((HEADER_SIZE - LOG_OVERHEAD + body.len()) as i32);
        b.put_i32(-1);
        b.put_i8(2);
        b.put_u32(0);
        b.put_i16(0);
        b.put_i32(records.len() as i32 - 1);
        b.put_i64(base_ts);
        b.put_i64(max_ts);
        b.put_i64(pid);
        b.put_i16(epoch);
        b.put_i32(seq);
        b.put_i32(records.len() as i32);
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::build::{encode, Record};
    use super::*;

    fn sample() -> Vec<u8> {
        let recs = [
            Record {
                key: Some(b"k1"),
                value: Some(b"v1"),
                headers: &[("h", b"x")],
                timestamp: 1000,
            },
            Record {
                key: None,
                value: Some(b"v2"),
                headers: &[],
                timestamp: 1005,
            },
        ];
        encode(&recs, Some((7, 0, 0)))
    }

    #[test]
    fn a_well_formed_batch_validates() {
        let b = sample();
        let h = validate(&b, 1 << 20).unwrap();
        assert_eq!(h.record_count(), 2);
        assert_eq!(h.last_offset_delta(), 1);
        assert_eq!(h.max_timestamp(), 1005);
        assert_eq!(h.producer_id(), 7);
        assert_eq!(h.last_sequence(), 1);
        assert_eq!(h.compression().unwrap(), Compression::None);
    }

    #[test]
    fn every_single_flipped_bit_after_the_owned_fields_is_caught() {
        let b = sample();
        for i in 16..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(
                    validate(&c, 1 << 20).is_err(),
                    "flip at byte {i} bit {bit} accepted"
                );
            }
        }
    }

    #[test]
    fn offset_and_epoch_are_outside_the_crc() {
        let mut b = sample();
        assign(&mut b, 123_456, 9);
        let h = validate(&b, 1 << 20).unwrap();
        assert_eq!(h.base_offset(), 123_456);
        assert_eq!(h.last_offset(), 123_457);
    }

    #[test]
    fn size_limit_and_lengths() {
        let b = sample();
        assert!(matches!(validate(&b, 10), Err(BatchError::TooLarge { .. })));
        assert!(matches!(
            validate(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert!(matches!(
            validate(&b[..30], 1 << 20),
            Err(BatchError::TooShort(30))
        ));
        let mut two = b.clone();
        two.extend_from_slice(&b);
        assert_eq!(
            validate_single(&Bytes::from(two), 1 << 20),
            Err(BatchError::NotExactlyOne(2))
        );
        assert_eq!(validate_single(&Bytes::from(b), 1 << 20), Ok(()));
    }

    #[test]
    fn count_must_match_last_offset_delta() {
        let mut b = sample();
        b[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&b, 1 << 20),
            Err(BatchError::CountMismatch { .. })
        ));
    }

    #[test]
    fn produce_payload_errors_follow_kafka() {
        use crate::protocol::error::ErrorCode;
        let code = |b: &[u8]| {
            validate_single(&Bytes::copy_from_slice(b), 1 << 20)
                .unwrap_err()
                .error_code()
        };
        let good = sample();
        assert!(validate_single(&Bytes::copy_from_slice(&good), 1 << 20).is_ok());
        // A magic-1 message (offset, length, crc, magic 1, attributes, timestamp,
        // null key, 3-byte value): 37 bytes, shorter than a v2 header.
        let mut v1 = Vec::new();
        v1.extend_from_slice(&0i64.to_be_bytes());
        v1.extend_from_slice(&25i32.to_be_bytes());
        v1.extend_from_slice(&0u32.to_be_bytes());
        v1.extend_from_slice(&[1, 0]);
        v1.extend_from_slice(&0i64.to_be_bytes());
        v1.extend_from_slice(&(-1i32).to_be_bytes());
        v1.extend_from_slice(&3i32.to_be_bytes());
        v1.extend_from_slice(b"abc");
        assert_eq!(v1.len(), 37);
        assert_eq!(code(&v1), ErrorCode::InvalidRecord);
        let mut v0 = v1.clone();
        v0[MAGIC_OFFSET] = 0;
        assert_eq!(code(&v0), ErrorCode::InvalidRecord);
        // Cut short: no whole batch, as Kafka's iterator finds none.
        assert_eq!(code(&good[..40]), ErrorCode::InvalidRecord);
        assert_eq!(code(&good[..10]), ErrorCode::InvalidRecord);
        let mut two = good.clone();
        two.extend_from_slice(&good);
        assert_eq!(code(&two), ErrorCode::InvalidRecord);
        let mut tiny_length = good.clone();
        tiny_length[LENGTH_OFFSET..LOG_OVERHEAD].copy_from_slice(&13i32.to_be_bytes());
        assert_eq!(code(&tiny_length), ErrorCode::CorruptMessage);
        let mut magic9 = good.clone();
        magic9[MAGIC_OFFSET] = 9;
        assert_eq!(code(&magic9), ErrorCode::CorruptMessage);
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        assert_eq!(code(&bad_crc), ErrorCode::CorruptMessage);
    }

    #[test]
    fn sequence_wraps_like_kafka() {
        let mut b = sample();
        b[53..57].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(BatchHeader::new(&b).unwrap().last_sequence(), 0);
    }
}

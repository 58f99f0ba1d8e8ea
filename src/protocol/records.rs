//! Records inside a RecordBatch v2: decompression, walks over each record's offset,
//! timestamp, key and value (off the hot path: ListOffsets by timestamp, replay of
//! `__consumer_offsets`), and the record-level check a produce runs before append
//! (`check_records`, as Kafka's LogValidator; it inflates compressed batches). Fetch
//! never inflates.

use std::io::Read;

use bytes::Buf;

use super::batch::{BatchHeader, Compression, HEADER_SIZE};
use super::wire::{read_varint, read_varlong, WireError};

/// Upper bound on inflated record data, against decompression bombs.
pub const INFLATED_SIZE_MAX: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("batch header: {0}")]
    Batch(#[from] super::batch::BatchError),
    #[error("decompression failed: {0}")]
    Inflate(String),
    #[error("inflated records exceed {INFLATED_SIZE_MAX} bytes")]
    TooLarge,
    #[error("malformed record: {0}")]
    Wire(#[from] WireError),
    #[error("batch shorter than its header")]
    Short,
    #[error("record {index}: {reason}")]
    InvalidRecord { index: i32, reason: String },
}

impl RecordsError {
    /// What Kafka answers: INVALID_RECORD for a record that breaks the format's
    /// rules, CORRUPT_MESSAGE for bytes that cannot be read at all.
    pub fn error_code(&self) -> super::error::ErrorCode {
        use super::error::ErrorCode;
        match self {
            RecordsError::Batch(e) => e.error_code(),
            RecordsError::InvalidRecord { .. } | RecordsError::Wire(_) => ErrorCode::InvalidRecord,
            _ => ErrorCode::CorruptMessage,
        }
    }
}

/// Most bytes one byte of a snappy block can inflate to (64/3, rounded up).
const SNAPPY_EXPANSION_MAX: usize = 22;

const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn read_bounded(mut reader: impl Read) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    reader
        .by_ref()
        .take(INFLATED_SIZE_MAX + 1)
        .read_to_end(&mut out)
        .map_err(|e| RecordsError::Inflate(e.to_string()))?;
    if out.len() as u64 > INFLATED_SIZE_MAX {
        return Err(RecordsError::TooLarge);
    }
    Ok(out)
}

fn snappy_raw(block: &[u8], out: &mut Vec<u8>) -> Result<(), RecordsError> {
    let len = snap::raw::decompress_len(block).map_err(|e| RecordsError::Inflate(e.to_string()))?;
    if (out.len() + len) as u64 > INFLATED_SIZE_MAX {
        return Err(RecordsError::TooLarge);
    }
    // No snappy element expands more than 64/3 times (a 3-byte copy of 64 bytes): a
    // block claiming more lies, and must not get the room it claims zero-filled
    // first (the fuzzer found a 67-byte batch claiming 256 MiB).
    if len > block.len().saturating_mul(SNAPPY_EXPANSION_MAX) {
        return Err(RecordsError::Inflate(format!(
            "snappy block of {} bytes claims {len} bytes inflated",
            block.len()
        )));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| RecordsError::Inflate(e.to_string()))?;
    Ok(())
}

/// Snappy in Kafka comes either raw or in xerial's block framing (the Java client).
fn snappy(data: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    if data.len() >= 16 && &data[..8] == XERIAL_MAGIC {
        let mut rest = &data[16..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(RecordsError::Short);
            }
            let len = rest.get_u32() as usize;
            if rest.len() < len {
                return Err(RecordsError::Short);
            }
            snappy_raw(&rest[..len], &mut out)?;
            rest = &rest[len..];
        }
    } else {
        snappy_raw(data, &mut out)?;
    }
    Ok(out)
}

/// The record section of a batch, inflated if the batch is compressed.
pub fn inflate(batch: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let header = BatchHeader::new(batch).ok_or(RecordsError::Short)?;
    let data = &batch[HEADER_SIZE..];
    match header.compression()? {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data)),
        Compression::Snappy => snappy(data),
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data)),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(data)
                .map_err(|e| RecordsError::Inflate(e.to_string()))?;
            read_bounded(decoder)
        }
    }
}

/// One record of a batch, borrowed from the inflated record data.
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Reads a varint-length-prefixed field (-1: null).
fn read_field<'a>(rec: &mut &'a [u8]) -> Result<Option<&'a [u8]>, RecordsError> {
    let len = read_varint(rec)?;
    if len < 0 {
        return Ok(None);
    }
    if len as usize > rec.len() {
        return Err(WireError::InvalidLength(len as i64).into());
    }
    let (field, rest) = rec.split_at(len as usize);
    *rec = rest;
    Ok(Some(field))
}

/// Calls `f` with every record of the batch, in order.
pub fn for_each_record(
    batch: &[u8],
    mut f: impl FnMut(RecordView<'_>),
) -> Result<(), RecordsError> {
    let header = BatchHeader::new(batch).ok_or(RecordsError::Short)?;
    let inflated = inflate(batch)?;
    let mut buf = &inflated[..];
    for _ in 0..header.record_count().max(0) {
        let len = read_varint(&mut buf)?;
        if len < 0 || len as usize > buf.len() {
            return Err(WireError::InvalidLength(len as i64).into());
        }
        let mut rec = &buf[..len as usize];
        buf = &buf[len as usize..];
        if !rec.has_remaining() {
            return Err(WireError::Truncated.into());
        }
        rec.advance(1); // attributes
        let ts_delta = read_varlong(&mut rec)?;
        let offset_delta = read_varint(&mut rec)?;
        let key = read_field(&mut rec)?;
        let value = read_field(&mut rec)?;
        f(RecordView {
            offset: header.base_offset() + offset_delta as i64,
            timestamp: header.base_timestamp().wrapping_add(ts_delta),
            key,
            value,
        });
    }
    Ok(())
}

/// Kafka's record-level validation of a produced batch: the record section (inflated
/// if compressed) holds exactly `record_count` records, each exactly as long as its
/// length says, with offset deltas 0, 1, 2, … and well-formed keys, values and
/// headers. Uncompressed batches are walked in place; nothing is copied.
pub fn check_records(batch: &[u8]) -> Result<(), RecordsError> {
    let header = BatchHeader::new(batch).ok_or(RecordsError::Short)?;
    let inflated;
    let data: &[u8] = match header.compression()? {
        Compression::None => &batch[HEADER_SIZE..],
        _ => {
            inflated = inflate(batch)?;
            &inflated
        }
    };
    let mut buf = data;
    let invalid = |index: i32, reason: String| RecordsError::InvalidRecord { index, reason };
    for index in 0..header.record_count() {
        let len = read_varint(&mut buf)?;
        if len < 1 || len as usize > buf.len() {
            return Err(invalid(
                index,
                format!("length {len} with {} bytes left", buf.len()),
            ));
        }
        let mut rec = &buf[..len as usize];
        buf = &buf[len as usize..];
        rec.advance(1); // attributes: unused in v2
        read_varlong(&mut rec)?; // timestamp delta
        let offset_delta = read_varint(&mut rec)?;
        if offset_delta != index {
            return Err(invalid(index, format!("offset delta {offset_delta}")));
        }
        read_field(&mut rec)?; // key
        read_field(&mut rec)?; // value
        let headers = read_varint(&mut rec)?;
        if headers < 0 || headers as usize > rec.len() {
            return Err(invalid(index, format!("header count {headers}")));
        }
        for _ in 0..headers {
            if read_field(&mut rec)?.is_none() {
                return Err(invalid(index, "null header key".into()));
            }
            read_field(&mut rec)?;
        }
        if !rec.is_empty() {
            return Err(invalid(index, format!("{} bytes past its end", rec.len())));
        }
    }
    if !buf.is_empty() {
        return Err(invalid(
            header.record_count(),
            format!("{} bytes after the last declared record", buf.len()),
        ));
    }
    Ok(())
}

/// `(offset, timestamp)` of every record in the batch, in order.
pub fn offsets_and_timestamps(batch: &[u8]) -> Result<Vec<(i64, i64)>, RecordsError> {
    let mut out = Vec::new();
    for_each_record(batch, |r| out.push((r.offset, r.timestamp)))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::build::{encode, Record};

    fn recompress(plain: &[u8], codec: i16, body: Vec<u8>) -> Vec<u8> {
        let mut b = plain[..HEADER_SIZE].to_vec();
        b[21..23].copy_from_slice(&codec.to_be_bytes());
        b.extend_from_slice(&body);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b
    }

    #[test]
    fn walks_records_in_every_codec() {
        let recs: Vec<Record> = (0..5)
            .map(|i| Record {
                key: None,
                value: Some(b"value"),
                headers: &[],
                timestamp: 100 + i * 10,
            })
            .collect();
        let plain = encode(&recs, None);
        let body = plain[HEADER_SIZE..].to_vec();
        let expected: Vec<(i64, i64)> = (0..5).map(|i| (i, 100 + i * 10)).collect();
        assert_eq!(offsets_and_timestamps(&plain).unwrap(), expected);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &body).unwrap();
        let gz = gz.finish().unwrap();
        let snappy_raw = snap::raw::Encoder::new().compress_vec(&body).unwrap();
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        xerial.extend_from_slice(&(snappy_raw.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&snappy_raw);
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut lz4, &body).unwrap();
        let lz4 = lz4.finish().unwrap();
        let zstd = zstd::encode_all(&body[..], 1).unwrap();
        for (codec, data) in [(1, gz), (2, snappy_raw), (2, xerial), (3, lz4), (4, zstd)] {
            let batch = recompress(&plain, codec, data);
            assert_eq!(
                offsets_and_timestamps(&batch).unwrap(),
                expected,
                "codec {codec}"
            );
            check_records(&batch).unwrap();
        }
    }

    #[test]
    fn check_records_refuses_records_that_do_not_match_the_header() {
        let headers: &[(&str, &[u8])] = &[("h", b"v")];
        let recs: Vec<Record> = (0..3)
            .map(|_| Record {
                key: Some(b"k"),
                value: Some(b"value"),
                headers,
                timestamp: 5,
            })
            .collect();
        let plain = encode(&recs, None);
        check_records(&plain).unwrap();
        let body = &plain[HEADER_SIZE..];
        // Each record here is 1 length byte + 20 bytes.
        let rec_len = body[0] as usize / 2 + 1;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("one record missing", body[..2 * rec_len].to_vec()),
            ("a record too many", [body, &body[..rec_len]].concat()),
            ("offset deltas 0, 0, 2", {
                let mut b = body.to_vec();
                b[rec_len + 3] = 0;
                b
            }),
            ("a length past the end", {
                let mut b = body.to_vec();
                b[2 * rec_len] = 0x7e;
                b
            }),
            ("garbage", vec![0xff; body.len()]),
        ];
        for (what, records) in cases {
            let batch = recompress(&plain, 0, records);
            let err = check_records(&batch).expect_err(what);
            assert_eq!(
                err.error_code(),
                crate::protocol::ErrorCode::InvalidRecord,
                "{what}: {err}"
            );
        }
        let gzip_garbage = recompress(&plain, 1, vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1, 2]);
        let err = check_records(&gzip_garbage).unwrap_err();
        assert_eq!(
            err.error_code(),
            crate::protocol::ErrorCode::CorruptMessage,
            "{err}"
        );
    }

    #[test]
    fn a_snappy_block_claiming_more_than_it_can_hold_is_refused_before_allocating() {
        // Found by the batch fuzz target: a length varint of ~256 MiB and no data.
        let block = [0x80, 0x80, 0x80, 0x80, 0x01, 0x00];
        let mut out = Vec::new();
        assert!(matches!(
            snappy_raw(&block, &mut out),
            Err(RecordsError::Inflate(_))
        ));
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let recs = [Record {
            key: None,
            value: Some(b"v"),
            headers: &[],
            timestamp: 1,
        }];
        let plain = encode(&recs, None);
        for codec in 1..=4 {
            let batch = recompress(&plain, codec, vec![0xff; 40]);
            assert!(offsets_and_timestamps(&batch).is_err(), "codec {codec}");
        }
    }
}

//! Record batches for the load generator, built once and cut to size: a template of
//! many equal records, of which a request takes the first `count` with the header
//! fields and CRC patched. No per-record work at send time.

use bytes::{Buf, BufMut};

use crate::protocol::batch::{BatchHeader, Compression, HEADER_SIZE, LOG_OVERHEAD};
use crate::protocol::wire::{put_varint, read_varint, read_varlong};

pub struct BatchTemplate {
    bytes: Vec<u8>,
    /// Where record `i` ends.
    record_ends: Vec<usize>,
    /// Where the first record's value starts (the latency stamp goes there).
    first_value_at: usize,
    value_bytes: usize,
}

impl BatchTemplate {
    /// `records` records with null keys and `value_bytes`-byte values of
    /// pseudo-random (incompressible) bytes.
    pub fn new(records: usize, value_bytes: usize) -> BatchTemplate {
        assert!(records > 0);
        let mut bytes = vec![0u8; HEADER_SIZE];
        bytes[16] = 2; // magic
        let mut record_ends = Vec::with_capacity(records);
        let mut first_value_at = 0;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut body = Vec::with_capacity(value_bytes + 16);
        for i in 0..records {
            body.clear();
            body.put_i8(0); // attributes
            body.put_u8(0); // timestamp delta 0 (varlong)
            put_varint(&mut body, i as i32); // offset delta
            put_varint(&mut body, -1); // null key
            put_varint(&mut body, value_bytes as i32);
            let value_at = body.len();
            for _ in 0..value_bytes {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                body.push(seed as u8);
            }
            put_varint(&mut body, 0); // no headers
            put_varint(&mut bytes, body.len() as i32);
            if i == 0 {
                first_value_at = bytes.len() + value_at;
            }
            bytes.extend_from_slice(&body);
            record_ends.push(bytes.len());
        }
        BatchTemplate {
            bytes,
            record_ends,
            first_value_at,
            value_bytes,
        }
    }

    /// How many records fit a batch of at most `batch_bytes` (at least one).
    pub fn records_for(batch_bytes: usize, value_bytes: usize) -> usize {
        // attributes, delta, offset delta (≤ 3), key, value length (≤ 5), headers,
        // length (≤ 5): the worst case, so the batch never exceeds the size.
        let per_record = value_bytes + 16;
        (batch_bytes.saturating_sub(HEADER_SIZE) / per_record).max(1)
    }

    pub fn records(&self) -> usize {
        self.record_ends.len()
    }

    /// A batch of the first `count` records, timestamped `timestamp_ms`; with
    /// `stamp`, the first record's value begins with it (big-endian).
    pub fn batch(&self, count: usize, timestamp_ms: i64, stamp: Option<u64>) -> Vec<u8> {
        let count = count.clamp(1, self.records());
        let end = self.record_ends[count - 1];
        let mut b = self.bytes[..end].to_vec();
        b[8..12].copy_from_slice(&((end - LOG_OVERHEAD) as i32).to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        b[23..27].copy_from_slice(&(count as i32 - 1).to_be_bytes());
        b[27..35].copy_from_slice(&timestamp_ms.to_be_bytes());
        b[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // no producer id
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        b[57..61].copy_from_slice(&(count as i32).to_be_bytes());
        if let Some(stamp) = stamp {
            if self.value_bytes >= 8 {
                b[self.first_value_at..self.first_value_at + 8]
                    .copy_from_slice(&stamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

/// The latency stamp of a batch built with one (its first record's value), if the
/// batch is whole and uncompressed.
pub fn read_stamp(batch: &[u8]) -> Option<u64> {
    let header = BatchHeader::new(batch)?;
    if !matches!(header.compression(), Ok(Compression::None)) {
        return None;
    }
    let mut record = batch.get(HEADER_SIZE..)?;
    read_varint(&mut record).ok()?; // record length
    if !record.has_remaining() {
        return None;
    }
    record.advance(1); // attributes
    read_varlong(&mut record).ok()?; // timestamp delta
    read_varint(&mut record).ok()?; // offset delta
    let key_len = read_varint(&mut record).ok()?;
    if key_len > 0 {
        record = record.get(key_len as usize..)?;
    }
    if read_varint(&mut record).ok()? < 8 {
        return None;
    }
    Some(u64::from_be_bytes(record.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::validate;

    #[test]
    fn cut_batches_are_valid_and_carry_their_stamp() {
        let t = BatchTemplate::new(300, 100);
        for count in [1, 2, 64, 65, 300] {
            let b = t.batch(count, 1_700_000_000_000, Some(0xdead_beef_0102_0304));
            let h = validate(&b, 1 << 20).expect("valid batch");
            assert_eq!(h.record_count(), count as i32);
            assert_eq!(h.last_offset_delta(), count as i32 - 1);
            assert_eq!(read_stamp(&b), Some(0xdead_beef_0102_0304));
            let records = crate::protocol::records::offsets_and_timestamps(&b).unwrap();
            assert_eq!(records.len(), count);
        }
        assert!(BatchTemplate::records_for(1 << 20, 1024) * (1024 + 16) <= 1 << 20);
    }
}

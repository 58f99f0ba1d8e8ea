//! What a produce checks before append: batch header, CRC, timestamps and every
//! record (inflating gzip, snappy, lz4 and zstd); and the `__consumer_offsets` record
//! decoders. The CRC and length are patched in (when the first byte says so) so that
//! the fuzzer gets past them to the records.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringlog::protocol::{batch, records};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let mut bytes = data.to_vec();
    if mode & 1 == 1 && bytes.len() >= batch::HEADER_SIZE {
        let len = (bytes.len() - batch::LOG_OVERHEAD) as i32;
        bytes[8..12].copy_from_slice(&len.to_be_bytes());
        bytes[16] = 2;
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let bytes = Bytes::from(bytes);
    if let Ok(()) = batch::validate_single(&bytes, 1 << 20) {
        let h = batch::BatchHeader::new(&bytes).unwrap();
        let _ = batch::check_timestamps(&h, 1_700_000_000_000, 3_600_000, 3_600_000);
        let _ = records::check_records(&bytes);
        let _ = records::for_each_record(&bytes, |r| {
            if let Some(key) = r.key {
                let _ = ringlog::group::offsets_topic::decode(key, r.value);
            }
        });
    }
    if mode & 2 == 2 {
        let split = (mode as usize >> 2).min(data.len());
        let (key, value) = data.split_at(split);
        let _ = ringlog::group::offsets_topic::decode(key, Some(value));
    }
});

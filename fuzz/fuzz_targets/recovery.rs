//! Opening a partition from arbitrary files: a segment log, its offset and time
//! indexes and a clean-shutdown record, as a crash or a disk could leave them. The
//! open must recover (truncating what is torn) or fail cleanly, and what it then
//! serves must read back without a panic.
#![no_main]

use std::path::PathBuf;
use std::rc::Rc;

use glommio::{LocalExecutor, LocalExecutorBuilder};
use libfuzzer_sys::fuzz_target;
use ringlog::storage::file::WriteMode;
use ringlog::storage::segment::{self, SegmentSpec};
use ringlog::storage::sync_group::SyncGroup;
use ringlog::storage::{LogConfig, PartitionLog};

thread_local! {
    static EXECUTOR: LocalExecutor = LocalExecutorBuilder::default().make().unwrap();
    static DIR: PathBuf = std::env::temp_dir().join(format!("ringlog-fuzz-{}", std::process::id()));
}

fn config() -> LogConfig {
    LogConfig {
        segment_size_max_bytes: 1 << 20,
        segment: SegmentSpec {
            write_mode: WriteMode::Buffered,
            index_interval_bytes: 64,
            index_size_max_bytes: 4096,
        },
        ..LogConfig::plain(WriteMode::Buffered)
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let clean_shutdown = data[0] & 1 == 1;
    let mut rest = &data[4..];
    let mut take_tail = |len: usize| {
        let len = len.min(rest.len());
        let (head, tail) = rest.split_at(rest.len() - len);
        rest = head;
        tail.to_vec()
    };
    let snapshot = take_tail(data[3] as usize * 8);
    let time_index = take_tail(data[2] as usize * 12);
    let index = take_tail(data[1] as usize * 8);
    let log = rest.to_vec();
    let dir = DIR.with(|d| d.join("p-0"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(segment::log_path(&dir, 0), &log).unwrap();
    std::fs::write(segment::index_path(&dir, 0), &index).unwrap();
    std::fs::write(segment::time_index_path(&dir, 0), &time_index).unwrap();
    if clean_shutdown {
        std::fs::write(dir.join("clean-shutdown.json"), &snapshot).unwrap();
    }
    EXECUTOR.with(|ex| {
        ex.run(async {
            let Ok(log) = PartitionLog::open(
                dir.clone(),
                config(),
                Rc::new(SyncGroup::default()),
                clean_shutdown,
            )
            .await
            else {
                return;
            };
            let offsets = log.offsets();
            let mut offset = offsets.log_start;
            while offset < offsets.log_end {
                match log.read(offset, 1 << 16, true).await {
                    Ok(pieces) if !pieces.is_empty() => {
                        let last = pieces.last().unwrap();
                        let mut at = 0;
                        let mut next = offset;
                        while at + 61 <= last.len() {
                            let h = ringlog::protocol::batch::BatchHeader::new(&last[at..]).unwrap();
                            next = h.last_offset() + 1;
                            at += h.total_size() as usize;
                        }
                        assert!(next > offset, "reads make progress");
                        offset = next;
                    }
                    _ => break,
                }
            }
            let _ = log.offset_for_timestamp(0).await;
            let _ = log.quiesce().await;
        })
    });
});

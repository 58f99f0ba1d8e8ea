//! Storage: partition logs made of segment files that hold RecordBatch v2 bytes exactly
//! as on the wire, with sparse offset indexes. Knows batches and offsets, never
//! requests. Every object here is owned by one shard.

pub mod atomic_file;
pub mod fault;
pub mod file;
pub(crate) mod inline_write;
pub mod log;
pub mod producer_state;
pub mod segment;
pub mod sync_group;

pub use log::{AppendError, AppendInfo, LogConfig, Offsets, PartitionLog, ReadBound, ReadError};

#[cfg(test)]
pub(crate) mod test_support {
    /// Runs `test` on a glommio executor with a fresh scratch directory, removed after.
    pub fn on_executor_in_scratch_dir<F, Fut>(name: &str, test: F)
    where
        F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let dir = std::env::temp_dir().join(format!("ringlog-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let scratch = dir.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || test(scratch))
            .unwrap()
            .join()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

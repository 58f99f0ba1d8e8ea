//! Storage: partition logs made of segment files that hold RecordBatch v2 bytes exactly
//! as on the wire, with sparse offset indexes. Knows batches and offsets, never
//! requests. Every object here is owned by one shard.

pub mod atomic_file;
pub mod fault;
pub mod file;
pub mod gate;
pub mod log;
pub mod producer_state;
pub mod segment;
pub mod sync_group;

pub use log::{AppendError, AppendInfo, LogConfig, Offsets, PartitionLog, ReadError};

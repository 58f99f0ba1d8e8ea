//! The Kafka wire protocol, sans I/O: framing, header peek, the API table, RecordBatch
//! validation, record walking, error codes and the Fetch response writer. Nothing here
//! touches sockets, files or glommio, so every piece can be unit-tested and fuzzed alone.

pub mod api;
pub mod batch;
pub mod chunk;
pub mod control;
pub mod error;
pub mod fetch_writer;
pub mod frame;
pub mod header;
pub mod old_versions;
pub mod records;
pub mod wire;

pub use error::ErrorCode;

//! Networking: the per-shard listener and connections. Never touches files.

pub mod connection;
pub mod limits;

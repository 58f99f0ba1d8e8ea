//! Cluster metadata: the image every shard reads, the records that change it, the
//! metadata quorum (Raft) that orders and persists them, and the controller that
//! decides them.

pub mod config_changes;
pub mod controller;
pub mod leader_election;
pub mod metadata;
pub mod quorum;
pub mod raft_log;
pub mod records;
pub mod rpc;
pub mod store;
pub mod transport;

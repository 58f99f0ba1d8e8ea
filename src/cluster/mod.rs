//! Cluster metadata: the snapshot every shard reads, its durable store, and the
//! controller that changes it. (Later: the Raft controller quorum, leader epochs.)

pub mod controller;
pub mod metadata;
pub mod store;

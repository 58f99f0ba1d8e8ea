//! Replication of partition data, with Kafka's protocol: a follower copies its
//! leader's log by sending it Fetch requests that carry the follower's replica id;
//! the fetch offset is the follower's log end, so each fetch also tells the leader
//! what that follower holds. The leader moves the high watermark to what every
//! in-sync replica holds (`leader`); the follower learns it from the fetch answers and
//! truncates where its log diverged from the leader's (`follower`).
//!
//! Owned by the core that owns the partition's log; nothing here crosses cores.

pub mod follower;
pub mod leader;

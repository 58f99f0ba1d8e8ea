//! ringlog: a Kafka-wire-protocol broker, thread-per-core on io_uring.
//!
//! Module boundaries (who may touch what): `protocol` has no I/O; `net` never touches
//! files; `broker` handlers route through `shard` and never open segments; `storage`
//! knows batches and offsets, never requests; `group` keeps consumer groups and their
//! offsets (in `__consumer_offsets`) on the coordinating shard, `txn` transactional
//! producers (in `__transaction_state`) likewise; only `shard` sends
//! across cores. `perf` is the load generator, a Kafka client of its own.

pub mod alloc_guard;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod group;
pub mod ids;
pub mod net;
pub mod node;
pub mod perf;
pub mod protocol;
pub mod replication;
pub mod runtime;
pub mod shard;
pub mod storage;
pub mod tune;
pub mod txn;

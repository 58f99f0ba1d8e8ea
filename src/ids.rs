//! Identifiers that would be easy to swap as plain integers: broker ids and leader
//! epochs (a shard's index is `shard::ShardId`). Each is a newtype with Kafka's wire
//! representation inside; `.0` is the wire value.

use serde::{Deserialize, Serialize};

/// A broker's `node.id`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct BrokerId(pub i32);

impl std::fmt::Display for BrokerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The epoch of a partition's leadership: bumped by the controller on every leader
/// change, written into each batch the leader appends, and checked against the
/// `current_leader_epoch` clients send (KIP-101, KIP-320).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct LeaderEpoch(pub i32);

impl LeaderEpoch {
    /// What a client sends when it does not know the epoch.
    pub const UNKNOWN: i32 = -1;

    /// Kafka's check of a client's `current_leader_epoch` against the leader's
    /// (`Partition.checkCurrentLeaderEpoch`): -1 skips the check; an older epoch is
    /// fenced, a newer one is unknown here yet.
    pub fn check_request(self, requested: i32) -> Result<(), EpochMismatch> {
        if requested == Self::UNKNOWN || requested == self.0 {
            Ok(())
        } else if requested < self.0 {
            Err(EpochMismatch::Fenced)
        } else {
            Err(EpochMismatch::Unknown)
        }
    }
}

/// How a request's leader epoch differs from the partition's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochMismatch {
    /// The request's epoch is older: FENCED_LEADER_EPOCH.
    Fenced,
    /// The request's epoch is newer than this broker knows: UNKNOWN_LEADER_EPOCH.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_epoch_is_checked_as_kafka_does() {
        let e = LeaderEpoch(3);
        assert_eq!(e.check_request(-1), Ok(()));
        assert_eq!(e.check_request(3), Ok(()));
        assert_eq!(e.check_request(2), Err(EpochMismatch::Fenced));
        assert_eq!(e.check_request(4), Err(EpochMismatch::Unknown));
    }
}

//! Transactional offset commits (TxnOffsetCommit): offsets a transactional producer
//! commits for a group within its transaction. They are appended to the group's
//! `__consumer_offsets` partition as a transactional batch of the producer (as Kafka
//! writes them) and held pending, per producer, until the transaction's marker is
//! written to that partition: COMMIT makes them the group's committed offsets, ABORT
//! drops them. Replay does the same from the log (`replay_batch`).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use super::offsets_topic::{self, CommittedOffset, OffsetsRecord};
use super::state::Group;
use super::{Coordinator, Host};
use crate::protocol::batch::build::{encode, Record};
use crate::protocol::batch::{self, BatchHeader};
use crate::protocol::control;
use crate::protocol::records::for_each_record;
use crate::protocol::ErrorCode;

/// Offsets a producer committed in its open transaction: (group, topic, partition)
/// and the offset.
pub(super) type PendingOffsets = HashMap<i64, Vec<((String, String, i32), CommittedOffset)>>;

impl Coordinator {
    /// TxnOffsetCommit for `group` by producer `producer` (id, epoch): a result per
    /// entry, in order. The offsets count once the transaction commits.
    pub async fn commit_transactional(
        &self,
        host: &dyn Host,
        group: &str,
        producer: (i64, i16),
        member: (&str, Option<&str>, i32),
        entries: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let log = self.offsets_log(host, group)?;
        let (member_id, instance_id, generation) = member;
        if generation >= 0 || !member_id.is_empty() {
            let mut groups = self.groups.borrow_mut();
            match groups.get_mut(group) {
                Some(g) => g.check_commit(member_id, instance_id, generation, Instant::now())?,
                None => return Err(ErrorCode::IllegalGeneration),
            }
        }
        let (mut results, accepted) = self.accept_offsets(host, entries);
        if accepted.is_empty() {
            return Ok(results);
        }
        let records: Vec<(Vec<u8>, Vec<u8>)> = accepted
            .iter()
            .map(|(_, topic, partition, c)| {
                (
                    offsets_topic::offset_key(group, topic, *partition),
                    offsets_topic::offset_value(c),
                )
            })
            .collect();
        let now = crate::storage::segment::now_ms();
        let views: Vec<Record<'_>> = records
            .iter()
            .map(|(k, v)| Record {
                key: Some(k),
                value: Some(v),
                headers: &[],
                timestamp: now,
            })
            .collect();
        // The producer's transactional batch, without a sequence (the coordinator's
        // own write, as Kafka's: no sequence check applies).
        let mut bytes = encode(&views, Some((producer.0, producer.1, -1)));
        batch::set_attributes(&mut bytes, TRANSACTIONAL);
        let stored = self
            .store_batch(host, group, &log, Bytes::from(bytes))
            .await;
        if let Err(code) = stored {
            for (slot, ..) in &accepted {
                results[*slot] = code;
            }
            return Ok(results);
        }
        let mut pending = self.pending_txn_offsets.borrow_mut();
        let held = pending.entry(producer.0).or_default();
        for (_, topic, partition, c) in accepted {
            held.push(((group.to_string(), topic, partition), c));
        }
        Ok(results)
    }

    /// The transaction of producer `producer_id` ended with a marker written to
    /// `__consumer_offsets` partition `partition` (of `partition_count`): its pending
    /// offsets of that partition's groups take effect (COMMIT) or are dropped.
    pub fn complete_transaction(
        &self,
        partition: i32,
        partition_count: i32,
        producer_id: i64,
        commit: bool,
    ) {
        let mut pending = self.pending_txn_offsets.borrow_mut();
        let Some(held) = pending.get_mut(&producer_id) else {
            return;
        };
        let (ending, kept): (Vec<_>, Vec<_>) = held.drain(..).partition(|((g, _, _), _)| {
            offsets_topic::partition_for(g, partition_count) == partition
        });
        *held = kept;
        if held.is_empty() {
            pending.remove(&producer_id);
        }
        if !commit {
            return;
        }
        let mut groups = self.groups.borrow_mut();
        for ((group, topic, p), c) in ending {
            groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(group))
                .offsets
                .insert((topic, p), c);
        }
    }

    /// Whether a transaction holds an offset of `group` for (`topic`, `partition`)
    /// not yet committed (OffsetFetch with require_stable: UNSTABLE_OFFSET_COMMIT).
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn_offsets.borrow().values().any(|held| {
            held.iter()
                .any(|((g, t, p), _)| g == group && t == topic && *p == partition)
        })
    }

    /// Drops the pending offsets of the groups of a partition no longer loaded here.
    pub(super) fn drop_pending_of(&self, partition: i32, partition_count: i32) {
        let mut pending = self.pending_txn_offsets.borrow_mut();
        for held in pending.values_mut() {
            held.retain(|((g, _, _), _)| {
                offsets_topic::partition_for(g, partition_count) != partition
            });
        }
        pending.retain(|_, held| !held.is_empty());
    }

    /// Replays one batch of `__consumer_offsets` that belongs to a transaction (a
    /// transactional data batch, or its marker); `false` for any other batch.
    pub(super) fn replay_transactional(
        &self,
        batch_bytes: &[u8],
        partition: i32,
        partition_count: i32,
    ) -> bool {
        let Some(h) = BatchHeader::new(batch_bytes) else {
            return false;
        };
        if !h.is_transactional() {
            return false;
        }
        let producer_id = h.producer_id();
        if h.is_control() {
            if let Some(marker) = control::parse_marker(batch_bytes) {
                self.complete_transaction(partition, partition_count, producer_id, marker.commit);
            }
            return true;
        }
        let mut pending = self.pending_txn_offsets.borrow_mut();
        let _ = for_each_record(batch_bytes, |r| {
            let Some(key) = r.key else { return };
            if let Some(OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value: Some(c),
            }) = offsets_topic::decode(key, r.value)
            {
                pending
                    .entry(producer_id)
                    .or_default()
                    .push(((group, topic, partition), c));
            }
        });
        true
    }
}

/// The transactional attribute bit of a record batch.
const TRANSACTIONAL: i16 = 1 << 4;

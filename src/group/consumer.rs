//! KIP-848 consumer groups (`group.protocol=consumer`): members heartbeat with
//! ConsumerGroupHeartbeat, the broker computes the assignment (`uniform` or `range`
//! assignor) and hands it out incrementally. A partition moves only after its previous
//! owner has acknowledged giving it up, so no two members ever own it at once:
//!
//! 1. A change (join, leave, subscription, expiry) bumps the group epoch; the next
//!    heartbeat computes a new target assignment at that epoch.
//! 2. A member owning partitions outside its target is sent its current assignment
//!    minus those, and stays at its epoch until a heartbeat shows it no longer owns
//!    them (or its rebalance timeout passes: then it is removed).
//! 3. Then it moves to the target's epoch and gets the target partitions that no other
//!    member still owns; the rest arrive in later heartbeats as they are released.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::protocol::ErrorCode;

/// Partitions by topic id.
pub type Partitions = BTreeSet<(Uuid, i32)>;

pub const ASSIGNORS: &[&str] = &["uniform", "range"];

pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    previous_epoch: i32,
    pub subscribed: Vec<String>,
    assignor: Option<String>,
    rebalance_timeout: Duration,
    session_deadline: Instant,
    /// What the member owns (or is being told it owns).
    pub assigned: Partitions,
    /// Owned partitions it was asked to give up, and since when.
    revoking: Partitions,
    revoking_since: Option<Instant>,
    last_sent: Option<Partitions>,
}

#[derive(Default)]
pub struct ConsumerGroup {
    pub members: BTreeMap<String, ConsumerMember>,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub target: BTreeMap<String, Partitions>,
    pub assignor: String,
}

/// A ConsumerGroupHeartbeat, as the group needs it.
pub struct HeartbeatIn {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed: Option<Vec<String>>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub owned: Option<Partitions>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug)]
pub struct HeartbeatOut {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub assignment: Option<Partitions>,
}

impl HeartbeatOut {
    /// A heartbeat answered with an error (the member has no epoch).
    pub fn error(member_id: &str, error: ErrorCode, message: &str) -> HeartbeatOut {
        HeartbeatOut {
            error,
            message: Some(message.to_string()),
            member_id: member_id.to_string(),
            member_epoch: -1,
            assignment: None,
        }
    }
}

/// Topic name → (id, partition count), from the metadata snapshot.
pub type TopicLookup<'a> = &'a dyn Fn(&str) -> Option<(Uuid, i32)>;

impl ConsumerGroup {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kafka's names: Empty, Assigning, Reconciling, Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.epoch != self.assignment_epoch
                || self.target.get(&m.id).is_none_or(|t| *t != m.assigned)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    pub fn heartbeat(
        &mut self,
        req: HeartbeatIn,
        topics: TopicLookup<'_>,
        session_timeout: Duration,
        now: Instant,
    ) -> HeartbeatOut {
        if req.regex.is_some() {
            return HeartbeatOut::error(
                &req.member_id,
                ErrorCode::InvalidRequest,
                "regular-expression subscriptions are not supported by ringlog yet",
            );
        }
        if let Some(a) = &req.assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return HeartbeatOut::error(
                    &req.member_id,
                    ErrorCode::UnsupportedAssignor,
                    "supported assignors: uniform, range",
                );
            }
        }
        if req.member_epoch < 0 {
            // Leaving (-1), or a static member leaving for now (-2).
            if self.members.remove(&req.member_id).is_some() {
                self.group_epoch += 1;
            }
            return HeartbeatOut {
                error: ErrorCode::None,
                message: None,
                member_id: req.member_id,
                member_epoch: req.member_epoch,
                assignment: None,
            };
        }
        let member_id = if req.member_epoch == 0 {
            let Some(subscribed) = req.subscribed.clone() else {
                return HeartbeatOut::error(
                    &req.member_id,
                    ErrorCode::InvalidRequest,
                    "SubscribedTopicNames must be set when joining",
                );
            };
            let id = if req.member_id.is_empty() {
                Uuid::new_v4().to_string()
            } else {
                req.member_id.clone()
            };
            // A static member replacing its earlier incarnation, or a member that
            // lost its epoch rejoining: the old entry goes.
            let replaced: Vec<String> = self
                .members
                .values()
                .filter(|m| {
                    m.id == id || (req.instance_id.is_some() && m.instance_id == req.instance_id)
                })
                .map(|m| m.id.clone())
                .collect();
            for old in replaced {
                self.members.remove(&old);
            }
            self.members.insert(
                id.clone(),
                ConsumerMember {
                    id: id.clone(),
                    instance_id: req.instance_id.clone(),
                    rack_id: req.rack_id.clone(),
                    client_id: req.client_id.clone(),
                    client_host: req.client_host.clone(),
                    epoch: 0,
                    previous_epoch: -1,
                    subscribed,
                    assignor: req.assignor.clone(),
                    rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
                    session_deadline: now + session_timeout,
                    assigned: Partitions::new(),
                    revoking: Partitions::new(),
                    revoking_since: None,
                    last_sent: None,
                },
            );
            self.group_epoch += 1;
            id
        } else {
            let Some(m) = self.members.get_mut(&req.member_id) else {
                return HeartbeatOut::error(
                    &req.member_id,
                    ErrorCode::UnknownMemberId,
                    "unknown member",
                );
            };
            if req.member_epoch != m.epoch && req.member_epoch != m.previous_epoch {
                return HeartbeatOut::error(
                    &req.member_id,
                    ErrorCode::FencedMemberEpoch,
                    "the member epoch is stale; rejoin with epoch 0",
                );
            }
            m.session_deadline = now + session_timeout;
            if req.rebalance_timeout_ms >= 0 {
                m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms as u64);
            }
            if req.assignor.is_some() {
                m.assignor = req.assignor.clone();
            }
            if let Some(s) = &req.subscribed {
                if *s != m.subscribed {
                    m.subscribed = s.clone();
                    self.group_epoch += 1;
                }
            }
            req.member_id.clone()
        };
        if self.assignment_epoch < self.group_epoch {
            self.compute_target(topics);
        }
        let joined = req.member_epoch == 0;
        let full_request = req.subscribed.is_some() && req.owned.is_some();
        self.reconcile(&member_id, req.owned.as_ref(), now);
        let m = self.members.get_mut(&member_id).expect("reconciled member");
        let current: Partitions = m.assigned.difference(&m.revoking).cloned().collect();
        let send = joined || full_request || m.last_sent.as_ref() != Some(&current);
        if send {
            m.last_sent = Some(current.clone());
        }
        HeartbeatOut {
            error: ErrorCode::None,
            message: None,
            member_id,
            member_epoch: m.epoch,
            assignment: send.then_some(current),
        }
    }

    /// The assignor the members ask for most (Kafka's rule), else `uniform`.
    fn chosen_assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map_or("uniform", |(a, _)| a)
            .to_string()
    }

    fn compute_target(&mut self, topics: TopicLookup<'_>) {
        self.assignor = self.chosen_assignor();
        let subscriptions: BTreeMap<String, Vec<(Uuid, i32)>> = self
            .members
            .values()
            .map(|m| {
                let mut parts = Vec::new();
                for t in &m.subscribed {
                    if let Some((id, n)) = topics(t) {
                        parts.extend((0..n).map(|p| (id, p)));
                    }
                }
                (m.id.clone(), parts)
            })
            .collect();
        self.target = if self.assignor == "range" {
            assign_range(&subscriptions)
        } else {
            assign_uniform(&subscriptions, &self.target)
        };
        self.assignment_epoch = self.group_epoch;
    }

    fn reconcile(&mut self, member_id: &str, owned: Option<&Partitions>, now: Instant) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others: Partitions = self
            .members
            .values()
            .filter(|o| o.id != member_id)
            .flat_map(|o| o.assigned.iter().cloned())
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let m = self.members.get_mut(member_id).expect("member exists");
        let revoke: Partitions = m.assigned.difference(&target).cloned().collect();
        if !revoke.is_empty() {
            let acknowledged = owned.is_some_and(|o| o.is_disjoint(&revoke));
            if !acknowledged {
                if m.revoking != revoke {
                    m.revoking = revoke;
                    m.revoking_since = Some(now);
                }
                return;
            }
            m.assigned = m.assigned.intersection(&target).cloned().collect();
        }
        m.revoking.clear();
        m.revoking_since = None;
        m.assigned = target.difference(&held_by_others).cloned().collect();
        if m.epoch != assignment_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
        }
    }

    /// Removes members whose session expired or who did not give up partitions within
    /// their rebalance timeout. Returns their ids.
    pub fn tick(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now > m.session_deadline
                    || m.revoking_since
                        .is_some_and(|since| now.duration_since(since) > m.rebalance_timeout)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
            self.group_epoch += 1;
        }
        gone
    }

    /// OffsetCommit's check for a consumer group (KIP-848: the member epoch).
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Result<(), ErrorCode> {
        if epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let m = self
            .members
            .get(member_id)
            .ok_or(ErrorCode::UnknownMemberId)?;
        if epoch != m.epoch {
            return Err(ErrorCode::StaleMemberEpoch);
        }
        Ok(())
    }
}

/// Range: per topic, the subscribed members (by id) get contiguous ranges.
fn assign_range(
    subscriptions: &BTreeMap<String, Vec<(Uuid, i32)>>,
) -> BTreeMap<String, Partitions> {
    let mut out: BTreeMap<String, Partitions> = subscriptions
        .keys()
        .map(|id| (id.clone(), Partitions::new()))
        .collect();
    let mut by_topic: BTreeMap<Uuid, (i32, Vec<&String>)> = BTreeMap::new();
    for (member, parts) in subscriptions {
        for (topic, p) in parts {
            let e = by_topic.entry(*topic).or_insert((0, Vec::new()));
            e.0 = e.0.max(p + 1);
            if !e.1.contains(&member) {
                e.1.push(member);
            }
        }
    }
    for (topic, (count, members)) in by_topic {
        let k = members.len() as i32;
        let (per, extra) = (count / k, count % k);
        let mut next = 0;
        for (i, member) in members.into_iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            let set = out.get_mut(member).expect("member");
            set.extend((next..next + take).map(|p| (topic, p)));
            next += take;
        }
    }
    out
}

/// Uniform and sticky: members keep what they had while within their fair share;
/// the rest go, one at a time, to the subscribed member holding the fewest.
fn assign_uniform(
    subscriptions: &BTreeMap<String, Vec<(Uuid, i32)>>,
    previous: &BTreeMap<String, Partitions>,
) -> BTreeMap<String, Partitions> {
    let all: Partitions = subscriptions.values().flatten().cloned().collect();
    let members = subscriptions.len().max(1);
    let ceiling = all.len().div_ceil(members);
    let mut out: BTreeMap<String, Partitions> = BTreeMap::new();
    let mut taken = Partitions::new();
    for (id, parts) in subscriptions {
        let eligible: Partitions = parts.iter().cloned().collect();
        let kept: Partitions = previous
            .get(id)
            .into_iter()
            .flatten()
            .filter(|p| eligible.contains(p) && !taken.contains(p))
            .take(ceiling)
            .cloned()
            .collect();
        taken.extend(kept.iter().cloned());
        out.insert(id.clone(), kept);
    }
    for p in all.difference(&taken.clone()) {
        let best = subscriptions
            .iter()
            .filter(|(_, parts)| parts.contains(p))
            .map(|(id, _)| id)
            .min_by_key(|id| (out[*id].len(), (*id).clone()));
        if let Some(id) = best {
            out.get_mut(id).expect("member").insert(*p);
        }
    }
    // Keeping may leave one member two or more above another: even it out.
    loop {
        let (max_id, max_len) = out
            .iter()
            .map(|(id, s)| (id.clone(), s.len()))
            .max_by_key(|(_, n)| *n)
            .unwrap_or_default();
        let movable = out[&max_id].iter().find_map(|p| {
            subscriptions
                .iter()
                .filter(|(id, parts)| **id != max_id && parts.contains(p))
                .map(|(id, _)| id)
                .filter(|id| out[*id].len() + 1 < max_len)
                .min_by_key(|id| out[*id].len())
                .map(|to| (*p, to.clone()))
        });
        match movable {
            Some((p, to)) => {
                out.get_mut(&max_id).expect("member").remove(&p);
                out.get_mut(&to).expect("member").insert(p);
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(45);

    fn topic() -> Uuid {
        Uuid::from_u128(7)
    }

    fn lookup(name: &str) -> Option<(Uuid, i32)> {
        (name == "t").then_some((topic(), 6))
    }

    fn hb(member_id: &str, epoch: i32, owned: Option<&Partitions>) -> HeartbeatIn {
        HeartbeatIn {
            member_id: member_id.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: 30_000,
            subscribed: (epoch == 0).then(|| vec!["t".to_string()]),
            regex: None,
            assignor: None,
            owned: owned.cloned(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    #[test]
    fn partitions_move_only_after_their_owner_gives_them_up() {
        let t0 = Instant::now();
        let mut g = ConsumerGroup::default();
        let a = g.heartbeat(hb("", 0, None), &lookup, SESSION, t0);
        assert_eq!(a.error, ErrorCode::None);
        let a_parts = a.assignment.clone().unwrap();
        assert_eq!(a_parts.len(), 6, "alone: everything");
        assert_eq!((a.member_epoch, g.state_name()), (1, "Stable"));
        // B joins: its target is half, but A still owns it all.
        let b = g.heartbeat(hb("", 0, None), &lookup, SESSION, t0);
        assert_eq!(b.member_epoch, 2);
        assert_eq!(
            b.assignment.as_ref().map(|p| p.len()),
            Some(0),
            "nothing released yet"
        );
        assert_eq!(g.state_name(), "Reconciling");
        // A is told to keep three; its epoch stays until it confirms.
        let a2 = g.heartbeat(hb(&a.member_id, 1, Some(&a_parts)), &lookup, SESSION, t0);
        let kept = a2.assignment.clone().unwrap();
        assert_eq!((kept.len(), a2.member_epoch), (3, 1));
        // A confirms it owns only those: it moves to epoch 2.
        let a3 = g.heartbeat(hb(&a.member_id, 1, Some(&kept)), &lookup, SESSION, t0);
        assert_eq!(a3.member_epoch, 2);
        // B now gets the released three; nobody ever owned a partition twice.
        let b2 = g.heartbeat(
            hb(&b.member_id, 2, Some(&Partitions::new())),
            &lookup,
            SESSION,
            t0,
        );
        let b_parts = b2.assignment.unwrap();
        assert_eq!(b_parts.len(), 3);
        assert!(b_parts.is_disjoint(&kept));
        assert_eq!(g.state_name(), "Stable");
        // Commits check the member epoch.
        assert_eq!(g.check_commit(&b.member_id, 2), Ok(()));
        assert_eq!(
            g.check_commit(&b.member_id, 1),
            Err(ErrorCode::StaleMemberEpoch)
        );
        assert_eq!(g.check_commit("nobody", 2), Err(ErrorCode::UnknownMemberId));
        // A stale epoch is fenced; an expired session leaves the group.
        let stale = g.heartbeat(hb(&b.member_id, 7, None), &lookup, SESSION, t0);
        assert_eq!(stale.error, ErrorCode::FencedMemberEpoch);
        let gone = g.tick(t0 + SESSION + Duration::from_secs(1));
        assert_eq!(gone.len(), 2);
        assert_eq!(g.state_name(), "Empty");
    }

    #[test]
    fn assignors_are_balanced_and_uniform_is_sticky() {
        let t = topic();
        let subs = |members: &[&str]| -> BTreeMap<String, Vec<(Uuid, i32)>> {
            members
                .iter()
                .map(|m| (m.to_string(), (0..12).map(|p| (t, p)).collect()))
                .collect()
        };
        let range = assign_range(&subs(&["a", "b", "c", "d", "e"]));
        let sizes: Vec<usize> = range.values().map(|s| s.len()).collect();
        assert_eq!(sizes, vec![3, 3, 2, 2, 2]);
        assert!(range["a"].contains(&(t, 0)) && range["a"].contains(&(t, 2)));
        let first = assign_uniform(&subs(&["a", "b", "c"]), &BTreeMap::new());
        assert!(first.values().all(|s| s.len() == 4));
        let second = assign_uniform(&subs(&["a", "b", "c", "d"]), &first);
        assert!(second.values().all(|s| s.len() == 3));
        for m in ["a", "b", "c"] {
            assert!(second[m].is_subset(&first[m]), "{m} kept what it could");
        }
    }
}

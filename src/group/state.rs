//! One classic consumer group: its members, generation, chosen protocol, assignments
//! and committed offsets, and the state machine of Kafka's classic group protocol:
//!
//! ```text
//! Empty ──join──▶ PreparingRebalance ──all rejoined / timeout──▶ CompletingRebalance
//!   ▲                  ▲        │                                      │
//!   │                  │        └── nobody left ──▶ Empty              │ leader's SyncGroup
//!   │                  └──── join, leave, expiry, changed protocols ── Stable ◀┘
//! ```
//!
//! Nothing here does I/O or waits: requests that must wait (JoinGroup until the
//! rebalance completes, SyncGroup until the leader's assignment) get a oneshot
//! receiver, completed by a later call on the same shard. Time comes in as `now`, so
//! expiry is driven by the coordinator's ticker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::protocol::StrBytes;

use super::consumer::ConsumerGroup;
use super::offsets_topic::{CommittedOffset, StoredGroup, StoredMember};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// Broker settings that shape group behaviour.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub initial_rebalance_delay: Duration,
    pub session_timeout_min_ms: i32,
    pub session_timeout_max_ms: i32,
    pub group_size_max: usize,
}

/// A JoinGroup request, as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub version: i16,
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// Supported protocols (assignors) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    awaiting_join: Option<oneshot::Sender<JoinGroupResponse>>,
    awaiting_sync: Option<oneshot::Sender<SyncGroupResponse>>,
    last_seen: Instant,
}

impl Member {
    /// The member's metadata for `protocol`.
    pub fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| Some(name.as_str()) == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A SyncGroup request, as the state machine needs it.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    /// v5+: must match the group's, if given.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment, by member id (empty from followers).
    pub assignments: Vec<(String, Bytes)>,
}

/// A request answered now, or later through the receiver.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    /// When the group entered its state (ms since the epoch), as Kafka reports it.
    pub state_since_ms: i64,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// In join order: the first to join leads a new generation.
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394), not yet joined.
    pending: Vec<(String, Instant)>,
    rebalance_deadline: Option<Instant>,
    /// A new group's first rebalance waits this long for more members
    /// (`group.initial.rebalance.delay.ms`), extended as they come.
    initial_delay_deadline: Option<Instant>,
    sync_deadline: Option<Instant>,
    pub offsets: HashMap<(String, i32), CommittedOffset>,
    /// Members using KIP-848's protocol instead (a group uses one or the other).
    pub consumer: ConsumerGroup,
    /// The membership changed in a way Kafka stores (a rebalance completed): the
    /// coordinator writes it to `__consumer_offsets`, then calls `finish_store`.
    store_pending: bool,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A JoinGroup answered with an error (no generation).
pub fn join_error(code: ErrorCode, member_id: &str) -> JoinGroupResponse {
    let mut r = JoinGroupResponse::default();
    r.error_code = code.code();
    r.generation_id = -1;
    r.member_id = str_bytes(member_id);
    r
}

/// A SyncGroup answered with an error (no assignment).
pub fn sync_error(code: ErrorCode) -> SyncGroupResponse {
    let mut r = SyncGroupResponse::default();
    r.error_code = code.code();
    r
}

fn wall_ms() -> i64 {
    crate::storage::segment::now_ms()
}

impl Group {
    pub fn new(id: String) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            state_since_ms: wall_ms(),
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: Vec::new(),
            rebalance_deadline: None,
            initial_delay_deadline: None,
            sync_deadline: None,
            offsets: HashMap::new(),
            consumer: ConsumerGroup::default(),
            store_pending: false,
        }
    }

    /// The membership as Kafka stores it, if a store is due (clears the flag).
    pub fn take_store(&mut self) -> Option<StoredGroup> {
        if !std::mem::take(&mut self.store_pending) {
            return None;
        }
        Some(StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_since_ms,
            members: self
                .members
                .iter()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: m.metadata_for(self.protocol.as_deref()).to_vec(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        })
    }

    /// After the store of `generation` that `take_store` asked for: members waiting
    /// in SyncGroup get their assignments, or, if it failed, an error and a new
    /// rebalance (Kafka's rule: an assignment that is not stored is not given out).
    /// A store of an older generation (the group moved on while it was written)
    /// changes nothing.
    pub fn finish_store(
        &mut self,
        generation: i32,
        stored: Result<(), ErrorCode>,
        cfg: &GroupConfig,
        now: Instant,
    ) {
        if self.state != GroupState::Stable || generation != self.generation {
            return;
        }
        match stored {
            Ok(()) => {
                for j in 0..self.members.len() {
                    let response = self.sync_ok(&self.members[j].assignment);
                    if let Some(tx) = self.members[j].awaiting_sync.take() {
                        let _ = tx.send(response);
                    }
                }
            }
            Err(code) => {
                for m in &mut self.members {
                    m.assignment = Bytes::new();
                    if let Some(tx) = m.awaiting_sync.take() {
                        let _ = tx.send(sync_error(code));
                    }
                }
                self.prepare_rebalance(cfg, now);
            }
        }
    }

    /// Restores the membership a store recorded (at startup): members are alive from
    /// `now`, so they keep their generation if they heartbeat within their session.
    pub fn restore(&mut self, stored: Option<StoredGroup>, now: Instant) {
        let Some(s) = stored else {
            let offsets = std::mem::take(&mut self.offsets);
            *self = Group::new(self.id.clone());
            self.offsets = offsets;
            return;
        };
        self.protocol_type = (!s.protocol_type.is_empty()).then_some(s.protocol_type);
        self.generation = s.generation;
        self.protocol = s.protocol;
        self.leader = s.leader;
        self.members = s
            .members
            .into_iter()
            .map(|m| Member {
                id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                protocols: vec![(
                    self.protocol.clone().unwrap_or_default(),
                    Bytes::from(m.subscription),
                )],
                assignment: Bytes::from(m.assignment),
                awaiting_join: None,
                awaiting_sync: None,
                last_seen: now,
            })
            .collect();
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.state_since_ms = if s.state_timestamp >= 0 {
            s.state_timestamp
        } else {
            wall_ms()
        };
    }

    fn set_state(&mut self, state: GroupState) {
        self.state = state;
        self.state_since_ms = wall_ms();
    }

    fn member_index(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == member_id)
    }

    /// KIP-345: a static member's instance id maps to exactly one live member id;
    /// a request carrying the instance id with another member id is from a zombie.
    fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id.is_some_and(|instance| {
            self.members
                .iter()
                .any(|m| m.instance_id.as_deref() == Some(instance) && m.id != member_id)
        })
    }

    /// Protocols every member (and the joining one, if any) supports.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// Kafka's vote: among the protocols all members support, each member votes for
    /// the first in its own preference order; the most votes wins.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .collect();
        let mut votes: Vec<(&str, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in &self.members {
            if let Some((name, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == name) {
                    v.1 += 1;
                }
            }
        }
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes
            .into_iter()
            .find(|(_, n)| *n == best)
            .map(|(c, _)| c.to_string())
    }

    /// The JoinGroup response for `member` in the current generation.
    fn join_response(&self, member: &Member, version: i16) -> JoinGroupResponse {
        let mut r = JoinGroupResponse::default();
        r.generation_id = self.generation;
        r.protocol_type = self.protocol_type.as_deref().map(str_bytes);
        r.protocol_name = self.protocol.as_deref().map(str_bytes);
        r.leader = str_bytes(self.leader.as_deref().unwrap_or(""));
        r.member_id = str_bytes(&member.id);
        if self.leader.as_deref() == Some(member.id.as_str()) {
            r.members = self
                .members
                .iter()
                .map(|m| {
                    let mut jm = JoinGroupResponseMember::default();
                    jm.member_id = str_bytes(&m.id);
                    jm.group_instance_id = m.instance_id.as_deref().map(str_bytes);
                    jm.metadata = m.metadata_for(self.protocol.as_deref());
                    jm
                })
                .collect();
        }
        // Before v7 the protocol name is not nullable on the wire.
        if version < 7 && r.protocol_name.is_none() {
            r.protocol_name = Some(StrBytes::default());
        }
        r
    }

    fn prepare_rebalance(&mut self, cfg: &GroupConfig, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for m in &mut self.members {
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(sync_error(ErrorCode::RebalanceInProgress));
                }
            }
        }
        self.sync_deadline = None;
        let longest = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.rebalance_deadline = Some(now + longest);
        if self.state == GroupState::Empty && !cfg.initial_rebalance_delay.is_zero() {
            self.initial_delay_deadline = Some(now + cfg.initial_rebalance_delay.min(longest));
        }
        self.set_state(GroupState::PreparingRebalance);
    }

    fn add_member(
        &mut self,
        id: String,
        req: &JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Reply<JoinGroupResponse> {
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.push(Member {
            id,
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout: Duration::from_millis(req.session_timeout_ms.max(0) as u64),
            rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: Some(tx),
            awaiting_sync: None,
            last_seen: now,
        });
        match self.state {
            GroupState::PreparingRebalance => {
                // A new member during the initial delay extends it, within the
                // rebalance timeout (Kafka's InitialDelayedJoin).
                if let (Some(delay), Some(limit)) =
                    (self.initial_delay_deadline, self.rebalance_deadline)
                {
                    if delay > now {
                        self.initial_delay_deadline =
                            Some((now + cfg.initial_rebalance_delay).min(limit));
                    }
                }
            }
            _ => self.prepare_rebalance(cfg, now),
        }
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    pub fn join(
        &mut self,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Reply<JoinGroupResponse> {
        let fail = |code| Reply::Now(join_error(code, &req.member_id));
        if !self.consumer.is_empty() {
            // Its members use the consumer protocol (KIP-848).
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        if req.session_timeout_ms < cfg.session_timeout_min_ms
            || req.session_timeout_ms > cfg.session_timeout_max_ms
        {
            return fail(ErrorCode::InvalidSessionTimeout);
        }
        let static_index = req.instance_id.as_deref().and_then(|instance| {
            self.members
                .iter()
                .position(|m| m.instance_id.as_deref() == Some(instance))
        });
        let existing = self.member_index(&req.member_id);
        // A rejoining member's own protocols do not count against the group.
        let compatible = match existing.or(static_index) {
            Some(i) if self.members.len() == 1 => {
                Some(&req.protocol_type) == self.protocol_type.as_ref()
                    || self.members[i].protocols.is_empty()
            }
            _ => self.supports(&req.protocol_type, &req.protocols),
        };
        if !compatible {
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            let new_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if let Some(i) = static_index {
                return self.rejoin_static(i, new_id, req, cfg, now);
            }
            if self.members.len() >= cfg.group_size_max {
                return fail(ErrorCode::GroupMaxSizeReached);
            }
            if req.version >= 4 && req.instance_id.is_none() {
                // KIP-394: hand out the id first; the member joins with it.
                self.pending.push((
                    new_id.clone(),
                    now + Duration::from_millis(req.session_timeout_ms as u64),
                ));
                return Reply::Now(join_error(ErrorCode::MemberIdRequired, &new_id));
            }
            return self.add_member(new_id, &req, cfg, now);
        }
        if self.is_fenced(&req.member_id, req.instance_id.as_deref()) {
            return fail(ErrorCode::FencedInstanceId);
        }
        if let Some(p) = self.pending.iter().position(|(id, _)| *id == req.member_id) {
            self.pending.remove(p);
            if self.members.len() >= cfg.group_size_max {
                return fail(ErrorCode::GroupMaxSizeReached);
            }
            return self.add_member(req.member_id.clone(), &req, cfg, now);
        }
        let Some(i) = existing else {
            return fail(ErrorCode::UnknownMemberId);
        };
        let unchanged = self.members[i].protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        {
            let m = &mut self.members[i];
            m.protocols = req.protocols.clone();
            m.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
            m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
            m.client_id = req.client_id.clone();
            m.last_seen = now;
        }
        match self.state {
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged && !(self.state == GroupState::Stable && is_leader) =>
            {
                // Nothing changed: the member gets the current generation again.
                Reply::Now(self.join_response(&self.members[i], req.version))
            }
            GroupState::PreparingRebalance => self.await_join(i, now),
            GroupState::Empty => fail(ErrorCode::UnknownMemberId),
            _ => {
                self.prepare_rebalance(cfg, now);
                self.await_join(i, now)
            }
        }
    }

    fn await_join(&mut self, i: usize, now: Instant) -> Reply<JoinGroupResponse> {
        let (tx, rx) = oneshot::channel();
        self.members[i].awaiting_join = Some(tx);
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    /// KIP-345: a static member came back (with a fresh member id). In a stable group
    /// with unchanged protocols it takes its old place and assignment with no
    /// rebalance; otherwise the group rebalances.
    fn rejoin_static(
        &mut self,
        i: usize,
        new_id: String,
        req: JoinRequest,
        cfg: &GroupConfig,
        now: Instant,
    ) -> Reply<JoinGroupResponse> {
        let old_id = std::mem::replace(&mut self.members[i].id, new_id.clone());
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id);
        }
        let unchanged = self.members[i].protocols == req.protocols;
        {
            let m = &mut self.members[i];
            // A join the old incarnation left waiting is answered as fenced.
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(join_error(ErrorCode::FencedInstanceId, &old_id));
            }
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(sync_error(ErrorCode::FencedInstanceId));
            }
            m.protocols = req.protocols.clone();
            m.client_id = req.client_id.clone();
            m.client_host = req.client_host.clone();
            m.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
            m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
            m.last_seen = now;
        }
        match self.state {
            GroupState::Stable if unchanged => {
                let mut r = self.join_response(&self.members[i], req.version);
                // The leader must not reassign: the group did not change (v9+).
                r.skip_assignment = true;
                Reply::Now(r)
            }
            GroupState::PreparingRebalance => self.await_join(i, now),
            _ => {
                self.prepare_rebalance(cfg, now);
                self.await_join(i, now)
            }
        }
    }

    /// Completes the join phase once every member has rejoined, or the rebalance
    /// timeout has passed (members that did not rejoin are removed).
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_delay_deadline.is_some_and(|d| now < d) {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.iter().all(|m| m.awaiting_join.is_some());
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !all_joined && !timed_out {
            return;
        }
        self.members.retain(|m| m.awaiting_join.is_some());
        self.pending.clear();
        self.initial_delay_deadline = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty);
            self.store_pending = true;
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| self.member_index(l).is_none())
        {
            self.leader = Some(self.members[0].id.clone());
        }
        self.set_state(GroupState::CompletingRebalance);
        let longest = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.sync_deadline = Some(now + longest);
        for i in 0..self.members.len() {
            let response = self.join_response(&self.members[i], i16::MAX);
            let m = &mut self.members[i];
            m.last_seen = now;
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(response);
            }
        }
    }

    pub fn sync(&mut self, req: SyncRequest, now: Instant) -> Reply<SyncGroupResponse> {
        let SyncRequest {
            member_id,
            instance_id,
            generation,
            protocol_type,
            protocol_name,
            assignments,
        } = req;
        let (member_id, instance_id) = (member_id.as_str(), instance_id.as_deref());
        let fail = |code| Reply::Now(sync_error(code));
        if self.is_fenced(member_id, instance_id) {
            return fail(ErrorCode::FencedInstanceId);
        }
        let Some(i) = self.member_index(member_id) else {
            return fail(ErrorCode::UnknownMemberId);
        };
        if generation != self.generation {
            return fail(ErrorCode::IllegalGeneration);
        }
        if protocol_type.is_some_and(|t| Some(&t) != self.protocol_type.as_ref())
            || protocol_name.is_some_and(|n| Some(&n) != self.protocol.as_ref())
        {
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        self.members[i].last_seen = now;
        match self.state {
            GroupState::Empty => fail(ErrorCode::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ErrorCode::RebalanceInProgress),
            GroupState::Stable => Reply::Now(self.sync_ok(&self.members[i].assignment)),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                self.members[i].awaiting_sync = Some(tx);
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in &mut self.members {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.sync_deadline = None;
                    self.set_state(GroupState::Stable);
                    // Answered once the coordinator has stored it (`finish_store`).
                    self.store_pending = true;
                }
                Reply::Later(rx)
            }
        }
    }

    fn sync_ok(&self, assignment: &Bytes) -> SyncGroupResponse {
        let mut r = SyncGroupResponse::default();
        r.protocol_type = self.protocol_type.as_deref().map(str_bytes);
        r.protocol_name = self.protocol.as_deref().map(str_bytes);
        r.assignment = assignment.clone();
        r
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> ErrorCode {
        if self.is_fenced(member_id, instance_id) {
            return ErrorCode::FencedInstanceId;
        }
        let Some(i) = self.member_index(member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if generation != self.generation {
            return ErrorCode::IllegalGeneration;
        }
        self.members[i].last_seen = now;
        match self.state {
            GroupState::Empty => ErrorCode::UnknownMemberId,
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::None,
        }
    }

    /// LeaveGroup for one member, by member id or (static members) instance id.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        cfg: &GroupConfig,
        now: Instant,
    ) -> ErrorCode {
        let index = match instance_id {
            Some(instance) => {
                let found = self
                    .members
                    .iter()
                    .position(|m| m.instance_id.as_deref() == Some(instance));
                match found {
                    Some(i) if !member_id.is_empty() && self.members[i].id != member_id => {
                        return ErrorCode::FencedInstanceId
                    }
                    other => other,
                }
            }
            None => self.member_index(member_id),
        };
        match index {
            Some(i) => {
                self.remove_member(i, cfg, now);
                ErrorCode::None
            }
            None => match self.pending.iter().position(|(id, _)| id == member_id) {
                Some(p) => {
                    self.pending.remove(p);
                    self.maybe_complete_join(now);
                    ErrorCode::None
                }
                None => ErrorCode::UnknownMemberId,
            },
        }
    }

    fn remove_member(&mut self, i: usize, cfg: &GroupConfig, now: Instant) {
        // A join or sync still waiting for this member gets UNKNOWN_MEMBER_ID (its
        // sender is dropped).
        self.members.remove(i);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(cfg, now)
            }
            _ => {}
        }
        self.maybe_complete_join(now);
    }

    /// Expires members whose session timed out and ids never used, and completes or
    /// restarts rebalances whose time is up. Called periodically.
    pub fn tick(&mut self, cfg: &GroupConfig, now: Instant) {
        for gone in self.consumer.tick(now) {
            tracing::info!(group = %self.id, member = %gone, "consumer-protocol member expired or did not revoke in time");
        }
        self.pending.retain(|(_, deadline)| *deadline > now);
        // Members blocked in JoinGroup or SyncGroup are alive by definition (Kafka's
        // shouldKeepAlive); the rebalance and sync deadlines bound them instead.
        while let Some(i) = self.members.iter().position(|m| {
            m.awaiting_join.is_none()
                && m.awaiting_sync.is_none()
                && now.duration_since(m.last_seen) > m.session_timeout
        }) {
            tracing::info!(group = %self.id, member = %self.members[i].id, "member session expired");
            self.remove_member(i, cfg, now);
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            tracing::info!(group = %self.id, "the leader sent no assignment in time; rebalancing again");
            self.prepare_rebalance(cfg, now);
        }
        self.maybe_complete_join(now);
    }

    /// OffsetCommit's checks (Kafka's order). `Ok` also refreshes the member.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        if !self.consumer.is_empty() {
            return self.consumer.check_commit(member_id, generation);
        }
        if generation < 0 && self.state == GroupState::Empty {
            // A standalone (simple) consumer or an admin tool.
            return Ok(());
        }
        if self.is_fenced(member_id, instance_id) {
            return Err(ErrorCode::FencedInstanceId);
        }
        let Some(i) = self.member_index(member_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        if generation != self.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ErrorCode::RebalanceInProgress);
        }
        self.members[i].last_seen = now;
        Ok(())
    }

    /// Nothing left to keep: no members, no offsets, no member ids handed out.
    pub fn is_idle(&self) -> bool {
        self.state == GroupState::Empty
            && self.offsets.is_empty()
            && self.pending.is_empty()
            && self.consumer.is_empty()
    }

    /// "consumer" for a KIP-848 group, else "classic".
    pub fn group_type(&self) -> &'static str {
        if self.consumer.is_empty() && self.consumer.group_epoch == 0 {
            "classic"
        } else {
            "consumer"
        }
    }

    /// The state name ListGroups and the describe APIs show.
    pub fn state_name(&self) -> &'static str {
        if self.group_type() == "consumer" {
            self.consumer.state_name()
        } else {
            self.state.name()
        }
    }

    /// Topics the members subscribe to, from consumer-protocol subscriptions.
    pub fn subscribed_topics(&self) -> Vec<String> {
        let mut topics = Vec::new();
        if self.protocol_type.as_deref() != Some("consumer") {
            return topics;
        }
        for m in &self.members {
            let metadata = m.metadata_for(self.protocol.as_deref());
            for t in subscription_topics(&metadata) {
                if !topics.contains(&t) {
                    topics.push(t);
                }
            }
        }
        topics
    }

    /// Offsets past `offsets.retention.minutes` (KIP-211): for an empty consumer group,
    /// counted from when it became empty; for a standalone group, from each commit.
    pub fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty || !self.consumer.is_empty() {
            return Vec::new();
        }
        self.offsets
            .iter()
            .filter(|(_, c)| {
                let since = if self.protocol_type.is_some() {
                    self.state_since_ms.max(c.commit_timestamp)
                } else {
                    c.commit_timestamp
                };
                now_ms - since > retention_ms
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The topics of a ConsumerProtocolSubscription (version, topics, ...).
fn subscription_topics(metadata: &[u8]) -> Vec<String> {
    use bytes::Buf;
    let mut b = metadata;
    let mut out = Vec::new();
    if b.remaining() < 6 {
        return out;
    }
    b.advance(2);
    let count = b.get_i32();
    for _ in 0..count.max(0) {
        if b.remaining() < 2 {
            break;
        }
        let len = b.get_i16();
        if len < 0 || b.remaining() < len as usize {
            break;
        }
        out.push(String::from_utf8_lossy(&b[..len as usize]).into_owned());
        b.advance(len as usize);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            session_timeout_min_ms: 6_000,
            session_timeout_max_ms: 1_800_000,
            group_size_max: 100,
        }
    }

    fn request(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from_static(b"meta")))
                .collect(),
            version: 9,
        }
    }

    fn sync_req(
        member: &str,
        instance: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncRequest {
        SyncRequest {
            member_id: member.into(),
            instance_id: instance.map(str::to_string),
            generation,
            assignments,
            ..SyncRequest::default()
        }
    }

    fn now_reply<T>(r: Reply<T>) -> T {
        match r {
            Reply::Now(t) => t,
            Reply::Later(mut rx) => rx.try_recv().unwrap().expect("answered already"),
        }
    }

    fn later<T>(r: Reply<T>) -> oneshot::Receiver<T> {
        match r {
            Reply::Later(rx) => rx,
            Reply::Now(_) => panic!("answered at once"),
        }
    }

    /// Joins with KIP-394's two steps; returns the member id and the join receiver.
    fn join_two_step(
        g: &mut Group,
        protocols: &[&str],
        now: Instant,
    ) -> (String, oneshot::Receiver<JoinGroupResponse>) {
        let first = now_reply(g.join(request("", protocols), &cfg(), now));
        assert_eq!(first.error_code, ErrorCode::MemberIdRequired.code());
        let id = first.member_id.to_string();
        (
            id.clone(),
            later(g.join(request(&id, protocols), &cfg(), now)),
        )
    }

    #[test]
    fn two_members_form_a_generation_and_the_leader_assigns() {
        let t0 = Instant::now();
        let mut g = Group::new("g".into());
        let (a, mut a_join) = join_two_step(&mut g, &["range", "roundrobin"], t0);
        // Alone and all joined: generation 1 completes at once.
        let ra = a_join.try_recv().unwrap().unwrap();
        assert_eq!((ra.generation_id, ra.leader.as_str()), (1, a.as_str()));
        assert_eq!(ra.protocol_name.as_deref(), Some("range"));
        assert_eq!(g.state, GroupState::CompletingRebalance);
        // A second member arrives before the leader's SyncGroup: the leader's sync
        // is told to rejoin.
        let (b, mut b_join) = join_two_step(&mut g, &["roundrobin", "range"], t0);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert!(b_join.try_recv().unwrap().is_none(), "waits for the leader");
        let stale = now_reply(g.sync(sync_req(&a, None, 1, vec![]), t0));
        assert_eq!(stale.error_code, ErrorCode::RebalanceInProgress.code());
        let mut a_join = later(g.join(request(&a, &["range", "roundrobin"]), &cfg(), t0));
        let ra = a_join.try_recv().unwrap().unwrap();
        let rb = b_join.try_recv().unwrap().unwrap();
        assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
        assert_eq!(ra.members.len(), 2, "the leader gets every member");
        assert!(rb.members.is_empty());
        // One vote each; the tie goes to the leader's first choice.
        assert_eq!(ra.protocol_name.as_deref(), Some("range"));
        let mut b_sync = later(g.sync(sync_req(&b, None, 2, vec![]), t0));
        assert!(b_sync.try_recv().unwrap().is_none(), "waits for the leader");
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"for-a")),
            (b.clone(), Bytes::from_static(b"for-b")),
        ];
        let mut a_sync = later(g.sync(
            SyncRequest {
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                ..sync_req(&a, None, 2, assignments)
            },
            t0,
        ));
        // Nobody hears of the assignment before it is stored.
        assert!(a_sync.try_recv().unwrap().is_none());
        let stored = g.take_store().expect("a store is due");
        assert_eq!((stored.generation, stored.members.len()), (2, 2));
        assert_eq!(stored.members[1].assignment, b"for-b".to_vec());
        // The store of an older generation answers nobody.
        g.finish_store(1, Ok(()), &cfg(), t0);
        assert!(a_sync.try_recv().unwrap().is_none());
        g.finish_store(2, Ok(()), &cfg(), t0);
        let sa = a_sync.try_recv().unwrap().unwrap();
        assert_eq!(sa.assignment, Bytes::from_static(b"for-a"));
        assert_eq!(
            b_sync.try_recv().unwrap().unwrap().assignment,
            Bytes::from_static(b"for-b")
        );
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&b, None, 2, t0), ErrorCode::None);
        assert_eq!(g.heartbeat(&b, None, 1, t0), ErrorCode::IllegalGeneration);
        assert_eq!(
            g.heartbeat("nobody", None, 2, t0),
            ErrorCode::UnknownMemberId
        );
        // An expired session triggers a rebalance; the survivor is told to rejoin.
        let later_on = t0 + Duration::from_secs(11);
        g.members[0].last_seen = later_on;
        g.tick(&cfg(), later_on);
        assert_eq!(g.members.len(), 1);
        assert_eq!(
            g.heartbeat(&a, None, 2, later_on),
            ErrorCode::RebalanceInProgress
        );
        let mut a_join = later(g.join(request(&a, &["range", "roundrobin"]), &cfg(), later_on));
        assert_eq!(a_join.try_recv().unwrap().unwrap().generation_id, 3);
        // Leaving empties the group, which is stored too.
        assert_eq!(g.leave(&a, None, &cfg(), later_on), ErrorCode::None);
        assert_eq!(g.state, GroupState::Empty);
        assert!(g.take_store().is_some_and(|s| s.members.is_empty()));
        // After a restart, the stored membership comes back as it was.
        let mut restored = Group::new("g".into());
        restored.restore(Some(stored), later_on);
        assert_eq!(
            (restored.state, restored.generation),
            (GroupState::Stable, 2)
        );
        assert_eq!(restored.heartbeat(&b, None, 2, later_on), ErrorCode::None);
        let sb = now_reply(restored.sync(sync_req(&b, None, 2, vec![]), later_on));
        assert_eq!(sb.assignment, Bytes::from_static(b"for-b"));
    }

    #[test]
    fn a_static_member_rejoining_a_stable_group_causes_no_rebalance() {
        let t0 = Instant::now();
        let mut g = Group::new("g".into());
        let mut req = request("", &["range"]);
        req.instance_id = Some("instance-1".into());
        let mut join = later(g.join(req.clone(), &cfg(), t0));
        let first = join.try_recv().unwrap().unwrap();
        let old_id = first.member_id.to_string();
        let assignment = vec![(old_id.clone(), Bytes::from_static(b"mine"))];
        let _sync = later(g.sync(sync_req(&old_id, Some("instance-1"), 1, assignment), t0));
        g.take_store();
        g.finish_store(1, Ok(()), &cfg(), t0);
        assert_eq!(g.state, GroupState::Stable);
        // It restarts: same instance id, no member id.
        let again = now_reply(g.join(req, &cfg(), t0));
        assert_eq!(again.error_code, 0);
        assert_eq!(again.generation_id, 1, "same generation: no rebalance");
        assert!(again.skip_assignment);
        assert_eq!(g.state, GroupState::Stable);
        let new_id = again.member_id.to_string();
        assert_ne!(new_id, old_id);
        // The old incarnation is fenced; the new one keeps the assignment.
        assert_eq!(
            g.heartbeat(&old_id, Some("instance-1"), 1, t0),
            ErrorCode::FencedInstanceId
        );
        let s = now_reply(g.sync(sync_req(&new_id, Some("instance-1"), 1, vec![]), t0));
        assert_eq!(s.assignment, Bytes::from_static(b"mine"));
    }

    #[test]
    fn incompatible_protocols_and_bad_timeouts_are_refused() {
        let t0 = Instant::now();
        let mut g = Group::new("g".into());
        let (_a, _rx) = join_two_step(&mut g, &["range"], t0);
        let r = now_reply(g.join(request("", &["sticky"]), &cfg(), t0));
        assert_eq!(r.error_code, ErrorCode::InconsistentGroupProtocol.code());
        let mut short = request("", &["range"]);
        short.session_timeout_ms = 10;
        let r = now_reply(g.join(short, &cfg(), t0));
        assert_eq!(r.error_code, ErrorCode::InvalidSessionTimeout.code());
    }

    #[test]
    fn offsets_expire_after_retention_once_the_group_is_empty() {
        let commit = |ts| CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: ts,
        };
        // A standalone group (no protocol): each offset by its own commit time.
        let mut g = Group::new("g".into());
        g.offsets.insert(("t".into(), 0), commit(1_000));
        g.offsets.insert(("t".into(), 1), commit(9_000));
        assert_eq!(g.expired_offsets(10_500, 5_000), vec![("t".to_string(), 0)]);
        // A consumer group: from when it became empty (KIP-211).
        g.protocol_type = Some("consumer".into());
        g.state_since_ms = 10_000;
        assert!(g.expired_offsets(10_500, 5_000).is_empty());
        let mut both = g.expired_offsets(20_000, 5_000);
        both.sort();
        assert_eq!(both.len(), 2);
        // Never while it has members.
        let t0 = Instant::now();
        let (_id, _rx) = join_two_step(&mut g, &["range"], t0);
        assert!(g.expired_offsets(i64::MAX, 5_000).is_empty());
    }

    #[test]
    fn subscriptions_are_read_from_consumer_protocol_metadata() {
        let mut m = vec![0u8, 1, 0, 0, 0, 2];
        for t in ["orders", "payments"] {
            m.extend_from_slice(&(t.len() as i16).to_be_bytes());
            m.extend_from_slice(t.as_bytes());
        }
        m.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(subscription_topics(&m), vec!["orders", "payments"]);
        assert!(subscription_topics(&[0, 1]).is_empty());
    }
}

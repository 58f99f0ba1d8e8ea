//! The metadata quorum: raft-rs (TiKV's Raft, sans-I/O) driven on the controller core.
//! The driver ticks it, steps the messages peers send, persists what it must before
//! anything depends on it (`raft_log`), and applies committed batches of records to
//! the cluster image. Every applied image goes to the node (`Applied`), which
//! publishes it to its cores; nothing outside `cluster` sees raft-rs.
//!
//! Only the active controller proposes: the leader, once the node has published
//! every entry of earlier terms (as KRaft's active controller waits for its own
//! first record), so that the image it plans against is the latest.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{select, Either};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};
use tracing::{error, info, warn};

use super::metadata::ClusterMetadata;
use super::raft_log::{initial_snapshot, LogFiles, RaftLog};
use super::records::MetadataRecord;
use crate::ids::BrokerId;

/// A snapshot is taken once this many entries follow the last one.
const SNAPSHOT_EVERY: u64 = 1024;

/// raft-rs reserves id 0 (no node); Kafka's node ids start at 0. A node's raft id is
/// its node id + 1, here and nowhere else.
pub fn raft_id(node: BrokerId) -> u64 {
    node.0 as u64 + 1
}

pub fn node_of(raft_id: u64) -> BrokerId {
    BrokerId(raft_id as i32 - 1)
}

#[derive(Debug, Clone)]
pub struct QuorumSettings {
    pub node_id: u64,
    pub voters: Vec<u64>,
    pub tick: Duration,
    /// An election starts after this many ticks without a leader (randomised up to
    /// twice this by raft-rs).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the active controller")]
    NotController,
    #[error("the metadata quorum stopped")]
    Stopped,
}

/// The quorum as this node last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Status {
    pub leader: Option<u64>,
    /// While this node leads: the index of its term's first entry.
    pub term_start: Option<u64>,
}

impl Status {
    /// This node leads and has published (`published`) every entry of earlier terms:
    /// it may plan and propose.
    pub fn is_active(&self, published: u64) -> bool {
        self.term_start.is_some_and(|start| published >= start)
    }
}

/// A committed batch applied to the image (or a snapshot installed). The node
/// publishes `image`, then completes `done` (the proposals of this batch).
pub struct Applied {
    pub image: Arc<ClusterMetadata>,
    pub done: Vec<Completion>,
}

/// Completes a proposal once its batch is published.
pub type Completion = oneshot::Sender<Result<(), ProposeError>>;

enum Event {
    /// Finish what is under way (a write on the blocking pool must not outlive the
    /// executor) and stop; answered once stopped.
    Stop(oneshot::Sender<()>),
    Message(Box<Message>),
    Propose {
        records: Vec<MetadataRecord>,
        done: Completion,
    },
}

/// The controller core's handle on the quorum.
#[derive(Clone)]
pub struct Quorum {
    events: Rc<LocalSender<Event>>,
    status: Rc<Cell<Status>>,
    /// The newest image version the node has published.
    published: Rc<Cell<u64>>,
}

impl Quorum {
    pub fn status(&self) -> Status {
        self.status.get()
    }
    /// This node leads and has published every entry of earlier terms: it may plan
    /// and propose.
    pub fn is_active(&self) -> bool {
        self.status.get().is_active(self.published.get())
    }
    /// The node published the image of `version`.
    pub fn published(&self, version: u64) {
        self.published.set(self.published.get().max(version));
    }
    /// Stops the driver once any write under way is done: call before the executor
    /// ends, at shutdown.
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.events.send(Event::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
    }

    /// Hands a peer's message to raft.
    pub fn step(&self, message: Message) {
        let _ = self.events.try_send(Event::Message(Box::new(message)));
    }
    /// Appends `records` as one batch; resolves once it is applied and the node has
    /// published it.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<(), ProposeError> {
        if !self.is_active() {
            return Err(ProposeError::NotController);
        }
        let (done, applied) = oneshot::channel();
        self.events
            .send(Event::Propose { records, done })
            .await
            .map_err(|_| ProposeError::Stopped)?;
        applied.await.unwrap_or(Err(ProposeError::Stopped))
    }
}

/// The opened quorum log: the image it holds, and what `run` needs.
pub struct Opened {
    pub image: ClusterMetadata,
    files: LogFiles,
    log: RaftLog,
    applied: u64,
}

/// Opens (formatting on first start) the quorum's log in `dir` and rebuilds the image
/// from its snapshot and committed entries. `bootstrap`: the records of a new
/// quorum's first snapshot. Blocking I/O: call at startup.
pub fn open(
    dir: &std::path::Path,
    settings: &QuorumSettings,
    bootstrap: impl FnOnce() -> Vec<MetadataRecord>,
) -> std::io::Result<Opened> {
    let (mut files, mut log) = LogFiles::open(dir)?;
    if log.is_empty() {
        let data = serde_json::to_vec(&bootstrap()).expect("records encode");
        let snapshot = initial_snapshot(settings.voters.clone(), data);
        files.save_snapshot(&snapshot, &[])?;
        log.set_snapshot(snapshot);
        info!(voters = ?settings.voters, "formatted the metadata log");
    }
    let mut image = image_of(log.snapshot_ref())?;
    let mut applied = log.snapshot_ref().get_metadata().index;
    let commit = log.hard_state().commit.min(log.last_index());
    while applied < commit {
        applied += 1;
        let entry = log.entry(applied).expect("entries up to the last are held");
        apply_entry(&mut image, entry);
    }
    Ok(Opened {
        image,
        files,
        log,
        applied,
    })
}

fn image_of(snapshot: &Snapshot) -> std::io::Result<ClusterMetadata> {
    let mut image = ClusterMetadata::default();
    if snapshot.data.is_empty() {
        return Ok(image);
    }
    let records: Vec<MetadataRecord> = serde_json::from_slice(&snapshot.data).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("metadata snapshot: {e}"),
        )
    })?;
    for r in &records {
        image.apply(r).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("metadata snapshot: {e}"),
            )
        })?;
    }
    image.version = snapshot.get_metadata().index;
    Ok(image)
}

/// Applies a committed entry's batch, whole or not at all: a batch that does not fit
/// is skipped on every node alike (the image is the same everywhere).
fn apply_entry(image: &mut ClusterMetadata, entry: &Entry) {
    image.version = entry.index;
    if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
        return;
    }
    let records: Vec<MetadataRecord> = match serde_json::from_slice(&entry.data) {
        Ok(r) => r,
        Err(e) => {
            error!(index = entry.index, error = %e, "an unreadable metadata batch; skipped");
            return;
        }
    };
    let mut next = image.clone();
    for r in &records {
        if let Err(e) = next.apply(r) {
            error!(index = entry.index, error = %e, record = ?r, "a metadata batch does not fit the image; skipped");
            return;
        }
    }
    *image = next;
}

/// Sends raft messages to peers (the transport); never blocks.
pub type Send = Rc<dyn Fn(Message)>;

/// Starts the driver on this executor; applied images arrive on the returned
/// receiver, in log order.
pub fn start(
    opened: Opened,
    settings: QuorumSettings,
    send: Send,
) -> Result<(Quorum, LocalReceiver<Applied>), raft::Error> {
    let config = raft::Config {
        id: settings.node_id,
        election_tick: settings.election_ticks,
        heartbeat_tick: settings.heartbeat_ticks,
        applied: opened.applied,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..Default::default()
    };
    let logger = slog::Logger::root(TracingDrain, slog::o!());
    let mut node = RawNode::new(&config, opened.log, &logger)?;
    let single = settings.voters == [settings.node_id];
    if single {
        node.campaign()?;
    }
    let (events_tx, events_rx) = local_channel::new_unbounded();
    let (applied_tx, applied_rx) = local_channel::new_unbounded();
    let status = Rc::new(Cell::new(Status::default()));
    let quorum = Quorum {
        events: Rc::new(events_tx),
        status: status.clone(),
        published: Rc::new(Cell::new(opened.applied)),
    };
    let driver = Driver {
        node,
        files: Some(opened.files),
        image: opened.image,
        pending: VecDeque::new(),
        term_start: 0,
        status,
        published: quorum.published.clone(),
        send,
        applied: applied_tx,
    };
    glommio::spawn_local(driver.run(events_rx, settings.tick)).detach();
    Ok((quorum, applied_rx))
}

struct Driver {
    node: RawNode<RaftLog>,
    /// Out while a write runs on the blocking pool.
    files: Option<LogFiles>,
    image: ClusterMetadata,
    /// Proposals in log order: (index, term, completion).
    pending: VecDeque<(u64, u64, Completion)>,
    /// The index of the first entry of this leader's term.
    term_start: u64,
    status: Rc<Cell<Status>>,
    published: Rc<Cell<u64>>,
    send: Send,
    applied: LocalSender<Applied>,
}

impl Driver {
    async fn run(mut self, events: LocalReceiver<Event>, tick: Duration) {
        let mut next_tick = Instant::now() + tick;
        loop {
            if let Err(e) = self.handle_ready().await {
                // The log could not be made durable: this node must not go on voting
                // or acknowledging. Stop the quorum here; the broker keeps serving
                // the last image.
                error!(error = %e, "the metadata log cannot be written; the quorum member stops");
                self.fail_pending(ProposeError::Stopped);
                self.status.set(Status::default());
                return;
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            let event = {
                let recv = std::pin::pin!(events.recv());
                let timer = std::pin::pin!(glommio::timer::sleep(wait));
                match select(recv, timer).await {
                    Either::Left((Some(e), _)) => Some(e),
                    Either::Left((None, _)) => return,
                    Either::Right(_) => None,
                }
            };
            match event {
                Some(Event::Stop(done)) => {
                    self.fail_pending(ProposeError::Stopped);
                    self.status.set(Status::default());
                    let _ = done.send(());
                    return;
                }
                Some(Event::Message(m)) => {
                    if let Err(e) = self.node.step(*m) {
                        warn!(error = %e, "a raft message was refused");
                    }
                }
                Some(Event::Propose { records, done }) => self.propose(records, done),
                None => {
                    self.node.tick();
                    next_tick += tick;
                    if next_tick < Instant::now() {
                        next_tick = Instant::now() + tick;
                    }
                }
            }
        }
    }

    fn propose(&mut self, records: Vec<MetadataRecord>, done: Completion) {
        if !self.status.get().is_active(self.published.get()) {
            let _ = done.send(Err(ProposeError::NotController));
            return;
        }
        let data = serde_json::to_vec(&records).expect("records encode");
        match self.node.propose(Vec::new(), data) {
            Ok(()) => {
                let index = self.node.raft.raft_log.last_index();
                self.pending.push_back((index, self.node.raft.term, done));
            }
            Err(e) => {
                warn!(error = %e, "a metadata proposal was refused");
                let _ = done.send(Err(ProposeError::NotController));
            }
        }
    }

    fn fail_pending(&mut self, why: ProposeError) {
        for (_, _, done) in self.pending.drain(..) {
            let _ = done.send(Err(why.clone()));
        }
    }

    /// Runs `write` on the blocking pool with the files.
    async fn write<F>(&mut self, write: F) -> std::io::Result<()>
    where
        F: FnOnce(&mut LogFiles) -> std::io::Result<()> + std::marker::Send + 'static,
    {
        let mut files = self.files.take().expect("one write at a time");
        let (files, result) = glommio::executor()
            .spawn_blocking(move || {
                let r = write(&mut files);
                (files, r)
            })
            .await;
        self.files = Some(files);
        result
    }

    fn send_all(&self, messages: Vec<Message>) {
        for m in messages {
            (self.send)(m);
        }
    }

    async fn handle_ready(&mut self) -> std::io::Result<()> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        if let Some(ss) = ready.ss() {
            self.on_role_change(ss.leader_id, ss.raft_state);
        }
        self.send_all(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let saved = snapshot.clone();
            self.write(move |f| f.save_snapshot(&saved, &[])).await?;
            self.node.mut_store().set_snapshot(snapshot.clone());
            self.node.mut_store().clear_entries();
            self.image = image_of(&snapshot)?;
            self.publish(Vec::new());
        }
        if !ready.entries().is_empty() {
            let entries = ready.entries().clone();
            let first = self.node.store().first_index();
            let written = entries.clone();
            self.write(move |f| f.append(first, &written)).await?;
            self.node.mut_store().append(&entries);
        }
        if let Some(hs) = ready.hs() {
            let hs = hs.clone();
            let saved = hs.clone();
            self.write(move |f| f.save_hard_state(&saved)).await?;
            self.node.mut_store().set_hard_state(hs);
        }
        // Applied only once the commit index that covers them is durable: at start a
        // node rebuilds its image from the log up to that index (and removes replica
        // directories the image does not hold), so it must never have acted on more.
        self.apply(ready.take_committed_entries());
        self.send_all(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.node.store().hard_state().clone();
            hs.commit = commit;
            let saved = hs.clone();
            self.write(move |f| f.save_hard_state(&saved)).await?;
            self.node.mut_store().set_hard_state(hs);
        }
        self.send_all(light.take_messages());
        self.apply(light.take_committed_entries());
        self.node.advance_apply();
        self.update_status();
        self.maybe_snapshot().await
    }

    fn on_role_change(&mut self, leader: u64, role: StateRole) {
        if role == StateRole::Leader {
            self.term_start = self.node.raft.raft_log.last_index();
            info!(
                term = self.node.raft.term,
                "this node leads the metadata quorum"
            );
        } else {
            self.fail_pending(ProposeError::NotController);
        }
        if leader != raft::INVALID_ID {
            info!(leader, term = self.node.raft.term, "metadata quorum leader");
        }
        self.update_status();
    }

    fn update_status(&self) {
        let raft = &self.node.raft;
        let leader = (raft.leader_id != raft::INVALID_ID).then_some(raft.leader_id);
        self.status.set(Status {
            leader,
            term_start: (raft.state == StateRole::Leader).then_some(self.term_start),
        });
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    if cc.merge_from_bytes(&entry.data).is_ok() {
                        let _ = self.node.apply_conf_change(&cc);
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    let mut cc = ConfChangeV2::default();
                    if cc.merge_from_bytes(&entry.data).is_ok() {
                        let _ = self.node.apply_conf_change(&cc);
                    }
                }
                EntryType::EntryNormal => {}
            }
            apply_entry(&mut self.image, &entry);
            let mut done = Vec::new();
            while let Some((index, _, _)) = self.pending.front() {
                if *index > entry.index {
                    break;
                }
                let (index, term, sender) = self.pending.pop_front().expect("front exists");
                if index == entry.index && term == entry.term {
                    done.push(sender);
                } else {
                    let _ = sender.send(Err(ProposeError::NotController));
                }
            }
            self.publish(done);
        }
    }

    fn publish(&mut self, done: Vec<Completion>) {
        let leader = self.node.raft.leader_id;
        self.image.controller = (leader != raft::INVALID_ID).then(|| node_of(leader));
        let applied = Applied {
            image: Arc::new(self.image.clone()),
            done,
        };
        let _ = self.applied.try_send(applied);
    }

    /// Compacts the log behind a snapshot of the image every `SNAPSHOT_EVERY` entries.
    async fn maybe_snapshot(&mut self) -> std::io::Result<()> {
        let applied = self.node.raft.raft_log.applied;
        let snapshot_index = self.node.store().snapshot_ref().get_metadata().index;
        if applied < snapshot_index + SNAPSHOT_EVERY || self.image.version != applied {
            return Ok(());
        }
        let term = self.node.raft.raft_log.term(applied).unwrap_or(0);
        let data = serde_json::to_vec(&self.image.to_records()).expect("records encode");
        let mut snapshot = initial_snapshot(Vec::new(), data);
        let meta = snapshot.mut_metadata();
        meta.index = applied;
        meta.term = term;
        meta.set_conf_state(self.node.raft.prs().conf().to_conf_state());
        let rest: Vec<Entry> = {
            let store = self.node.mut_store();
            store.set_snapshot(snapshot.clone()).to_vec()
        };
        self.write(move |f| f.save_snapshot(&snapshot, &rest))
            .await?;
        Ok(())
    }
}

/// raft-rs's log lines, passed on to tracing.
struct TracingDrain;

struct KeyValues(String);

impl slog::Serializer for KeyValues {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV;
        let mut kv = KeyValues(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => error!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Warning => warn!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Info => info!(target: "raft", "{msg}{}", kv.0),
            _ => tracing::debug!(target: "raft", "{msg}{}", kv.0),
        }
        Ok(())
    }
}

//! The transaction coordinator (Kafka's, transactions V1): transactional producers'
//! ids, epochs and open transactions, stored in the internal topic
//! `__transaction_state`.
//!
//! Placement is Kafka's: a transactional id belongs to partition
//! `abs(hash(id)) % transaction.state.log.num.partitions` of `__transaction_state`
//! (created on the first FindCoordinator for a transaction, replicated like any
//! topic), and its coordinator is that partition's leader, on the core holding it;
//! the coordinator epoch is the partition's leader epoch. Each core's `Coordinator`
//! holds the ids of the partitions it leads: loaded from the log when this node
//! becomes the leader (`load_partition`), dropped when it stops (`unload_partition`).
//!
//! Every transition is first appended to the id's partition and held by the in-sync
//! replicas (acks=-1), then taken on (`transition`); while it is written, other
//! requests for the id get CONCURRENT_TRANSACTIONS. EndTxn is answered once the
//! PrepareCommit/PrepareAbort record is held; a task of the coordinator then has
//! every partition's leader write the marker (`Host::write_markers`), retrying until
//! each is written, and stores CompleteCommit/CompleteAbort. A new leader of the
//! partition resumes the transactions it finds preparing. Open transactions past
//! their timeout are aborted with the producer's epoch bumped, which fences it.
//!
//! Invariants: an id is only touched on its coordinator's core; `state` does no I/O.

pub mod log_format;
pub mod state;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use tracing::{info, warn};

use crate::config::Config;
use crate::protocol::batch::build::{encode, Record};
use crate::protocol::records::for_each_record;
use crate::protocol::ErrorCode;
use crate::storage::{AppendError, PartitionLog};
pub use log_format::TRANSACTION_TOPIC;
use state::{InitPlan, TxnMetadata, TxnState};

/// A marker for the leaders of `partitions` to write: the end of a producer's
/// transaction.
#[derive(Debug, Clone)]
pub struct MarkerRequest {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
    pub partitions: Vec<(String, i32)>,
}

/// What the coordinator needs from the core it runs on (the core implements it).
pub trait Host: crate::group::Host + 'static {
    fn txns(&self) -> &Coordinator;
    /// Has each partition's leader write the marker; an error code per partition.
    fn write_markers(
        self: Rc<Self>,
        markers: MarkerRequest,
    ) -> LocalBoxFuture<'static, Vec<((String, i32), ErrorCode)>>;
    /// A new producer id from the controller.
    fn allocate_producer_id(self: Rc<Self>) -> LocalBoxFuture<'static, Result<i64, ErrorCode>>;
}

/// A transaction as ListTransactions shows it.
pub struct ListedTxn {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
    pub start_ms: i64,
}

pub struct Coordinator {
    txns: RefCell<HashMap<String, TxnMetadata>>,
    /// The `__transaction_state` partitions loaded here, with their coordinator epoch.
    loaded: RefCell<HashMap<i32, i32>>,
    /// Partitions being loaded (COORDINATOR_LOAD_IN_PROGRESS).
    loading: RefCell<BTreeSet<i32>>,
    max_timeout_ms: i32,
    id_expiration_ms: i64,
    /// How long a stored record waits for the in-sync replicas.
    append_timeout: Duration,
    /// Between attempts to write a marker whose leader is away.
    retry_backoff: Duration,
}

fn now_ms() -> i64 {
    crate::storage::segment::now_ms()
}

impl Coordinator {
    pub fn new(config: &Config) -> Coordinator {
        Coordinator {
            txns: RefCell::new(HashMap::new()),
            loaded: RefCell::new(HashMap::new()),
            loading: RefCell::new(BTreeSet::new()),
            max_timeout_ms: config.transactions.max_timeout_ms,
            id_expiration_ms: config.transactions.id_expiration_ms,
            append_timeout: Duration::from_millis(config.offsets_commit_timeout_ms),
            retry_backoff: Duration::from_millis(100),
        }
    }

    fn partition_of(host: &dyn crate::group::Host, id: &str) -> Option<(uuid::Uuid, i32)> {
        let cluster = host.cluster();
        let topic = cluster.topic(TRANSACTION_TOPIC)?;
        Some((
            topic.id,
            log_format::partition_for(id, topic.partition_count()),
        ))
    }

    /// The log holding `id` and its coordinator epoch, if this core coordinates it:
    /// NOT_COORDINATOR if this node does not lead its partition,
    /// COORDINATOR_LOAD_IN_PROGRESS while it loads.
    fn locate(
        &self,
        host: &dyn crate::group::Host,
        id: &str,
    ) -> Result<(Rc<PartitionLog>, i32, i32), ErrorCode> {
        let (topic, partition) = Self::partition_of(host, id).ok_or(ErrorCode::NotCoordinator)?;
        let log = host
            .led_log(topic, partition)
            .ok_or(ErrorCode::NotCoordinator)?;
        if self.loading.borrow().contains(&partition) {
            return Err(ErrorCode::CoordinatorLoadInProgress);
        }
        let epoch = *self
            .loaded
            .borrow()
            .get(&partition)
            .ok_or(ErrorCode::CoordinatorLoadInProgress)?;
        Ok((log, partition, epoch))
    }

    /// Appends `id`'s new state (or a tombstone) and waits until the in-sync replicas
    /// hold it; fails with Kafka's mapping of a coordinator's append errors.
    async fn store(
        &self,
        host: &dyn crate::group::Host,
        id: &str,
        value: Option<&TxnMetadata>,
    ) -> Result<(), ErrorCode> {
        let (log, partition, epoch) = self.locate(host, id)?;
        let key = log_format::key(id);
        let value = value.map(log_format::value);
        let batch = Bytes::from(encode(
            &[Record {
                key: Some(&key),
                value: value.as_deref(),
                headers: &[],
                timestamp: now_ms(),
            }],
            None,
        ));
        let isr_enough = || {
            let cluster = host.cluster();
            cluster.topic(TRANSACTION_TOPIC).is_some_and(|t| {
                t.partition(partition)
                    .is_some_and(|a| a.isr.len() >= host.min_insync_replicas(t))
            })
        };
        if !isr_enough() {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        let end = match log.append(batch).await {
            Ok(info) => info.end_offset,
            Err(e) => {
                warn!(error = %e, "appending to __transaction_state failed");
                return Err(match e {
                    AppendError::Io(_) | AppendError::Offline | AppendError::Closed => {
                        ErrorCode::NotCoordinator
                    }
                    AppendError::Batch(_) => ErrorCode::UnknownServerError,
                    _ => ErrorCode::CoordinatorNotAvailable,
                });
            }
        };
        let held = Box::pin(log.wait_for_high_watermark(end));
        let timeout = Box::pin(glommio::timer::sleep(self.append_timeout));
        match futures::future::select(held, timeout).await {
            futures::future::Either::Left((Ok(()), _)) if isr_enough() => {}
            futures::future::Either::Left((Err(_), _)) => return Err(ErrorCode::NotCoordinator),
            _ => return Err(ErrorCode::CoordinatorNotAvailable),
        }
        // The partition moved meanwhile: this node no longer speaks for the id.
        if self.loaded.borrow().get(&partition) != Some(&epoch) {
            return Err(ErrorCode::NotCoordinator);
        }
        Ok(())
    }

    /// Writes `next` as `id`'s state and takes it on; meanwhile the id is pending.
    async fn transition(
        &self,
        host: &dyn crate::group::Host,
        id: &str,
        next: TxnMetadata,
    ) -> Result<(), ErrorCode> {
        if let Some(t) = self.txns.borrow_mut().get_mut(id) {
            t.pending = true;
        }
        let stored = self.store(host, id, Some(&next)).await;
        let mut txns = self.txns.borrow_mut();
        match stored {
            Ok(()) => {
                let mut next = next;
                next.pending = false;
                txns.insert(id.to_string(), next);
            }
            Err(_) => {
                if let Some(t) = txns.get_mut(id) {
                    t.pending = false;
                }
            }
        }
        stored
    }

    fn get(&self, id: &str) -> Option<TxnMetadata> {
        self.txns.borrow().get(id).cloned()
    }

    /// InitProducerId with a transactional id: the producer id and epoch to use.
    pub async fn init_producer_id<H: Host>(
        &self,
        host: &Rc<H>,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ErrorCode> {
        // Empty, or too long for `__transaction_state`'s key (an int16 length).
        if id.is_empty() || id.len() > i16::MAX as usize {
            return Err(ErrorCode::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(ErrorCode::InvalidTransactionTimeout);
        }
        self.locate(host.as_ref(), id)?;
        let current = match self.get(id) {
            Some(t) => t,
            None => {
                let pid = host.clone().allocate_producer_id().await?;
                self.locate(host.as_ref(), id)?;
                // Made meanwhile by a concurrent request: use that one.
                self.txns
                    .borrow_mut()
                    .entry(id.to_string())
                    .or_insert_with(|| TxnMetadata::new(pid, timeout_ms, now_ms()))
                    .clone()
            }
        };
        let next = match current.plan_init(timeout_ms, expected, now_ms()) {
            InitPlan::Refuse(code) => return Err(code),
            InitPlan::Write(next) => next,
            InitPlan::Rotate { record_last_epoch } => {
                let pid = host.clone().allocate_producer_id().await?;
                current.rotated(pid, record_last_epoch, timeout_ms, now_ms())
            }
            InitPlan::Fence(aborting) => {
                info!(
                    transactional_id = id,
                    epoch = aborting.producer_epoch,
                    "fencing the open transaction of a re-initialised producer"
                );
                self.transition(host.as_ref(), id, aborting).await?;
                self.complete_in_background(host, id);
                return Err(ErrorCode::ConcurrentTransactions);
            }
        };
        let answer = (next.producer_id, next.producer_epoch);
        self.transition(host.as_ref(), id, next).await?;
        Ok(answer)
    }

    /// AddPartitionsToTxn (v0–v3) and AddOffsetsToTxn: adds partitions to the
    /// producer's transaction, starting one if none is open.
    pub async fn add_partitions<H: Host>(
        &self,
        host: &Rc<H>,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), ErrorCode> {
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        self.locate(host.as_ref(), id)?;
        let current = self.get(id).ok_or(ErrorCode::InvalidProducerIdMapping)?;
        match current.plan_add(pid, epoch, partitions, now_ms())? {
            None => Ok(()),
            Some(next) => self.transition(host.as_ref(), id, next).await,
        }
    }

    /// AddPartitionsToTxn v4+ verify_only: per partition, NONE if it is in the
    /// producer's open transaction, TRANSACTION_ABORTABLE if not; or one error for
    /// all.
    pub fn verify<H: Host>(
        &self,
        host: &Rc<H>,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<bool>, ErrorCode> {
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        self.locate(host.as_ref(), id)?;
        let current = self.get(id).ok_or(ErrorCode::InvalidProducerIdMapping)?;
        current.verify(pid, epoch)?;
        Ok(partitions
            .iter()
            .map(|p| current.state == TxnState::Ongoing && current.partitions.contains(p))
            .collect())
    }

    /// EndTxn (v0–v4): answered once PrepareCommit/PrepareAbort is stored; the
    /// markers and the final state follow in the background.
    pub async fn end_txn<H: Host>(
        &self,
        host: &Rc<H>,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), ErrorCode> {
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        self.locate(host.as_ref(), id)?;
        let current = self.get(id).ok_or(ErrorCode::InvalidProducerIdMapping)?;
        let Some(next) = current.plan_end(pid, epoch, commit, true, now_ms())? else {
            return Ok(());
        };
        self.transition(host.as_ref(), id, next).await?;
        self.complete_in_background(host, id);
        Ok(())
    }

    /// Has the markers of `id`'s ending transaction written, then stores its end, for
    /// as long as this core coordinates the id's partition at `coordinator_epoch`.
    fn spawn_completion<H: Host>(
        &self,
        host: &Rc<H>,
        id: &str,
        partition: i32,
        coordinator_epoch: i32,
    ) {
        let host = host.clone();
        let id = id.to_string();
        glommio::spawn_local(async move { complete(host, id, partition, coordinator_epoch).await })
            .detach();
    }

    /// As `spawn_completion`, where `id` is coordinated now.
    fn complete_in_background<H: Host>(&self, host: &Rc<H>, id: &str) {
        if let Ok((_, partition, epoch)) = self.locate(host.as_ref(), id) {
            self.spawn_completion(host, id, partition, epoch);
        }
    }

    /// A transactional id's state as DescribeTransactions shows it.
    pub fn describe(
        &self,
        host: &dyn crate::group::Host,
        id: &str,
    ) -> Result<TxnMetadata, ErrorCode> {
        self.locate(host, id)?;
        self.get(id).ok_or(ErrorCode::TransactionalIdNotFound)
    }

    /// Every transaction coordinated on this core; `Err` while a partition loads.
    pub fn list(&self) -> Result<Vec<ListedTxn>, ErrorCode> {
        if !self.loading.borrow().is_empty() {
            return Err(ErrorCode::CoordinatorLoadInProgress);
        }
        Ok(self
            .txns
            .borrow()
            .iter()
            .map(|(id, t)| ListedTxn {
                transactional_id: id.clone(),
                producer_id: t.producer_id,
                state: t.state,
                start_ms: t.start_ms,
            })
            .collect())
    }

    /// Aborts open transactions past their timeout (fencing their producers) and
    /// forgets ids idle past `transactional.id.expiration.ms` (run periodically).
    pub async fn tick<H: Host>(&self, host: &Rc<H>) {
        let now = now_ms();
        let timed_out: Vec<String> = self
            .txns
            .borrow()
            .iter()
            .filter(|(_, t)| t.timed_out_abort(now).is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in timed_out {
            // Looked at again right before the write (each write before it yielded):
            // a request may have changed or be changing the id meanwhile.
            let Some(next) = self.get(&id).and_then(|t| t.timed_out_abort(now)) else {
                continue;
            };
            info!(transactional_id = %id, epoch = next.producer_epoch, "aborting a transaction past its timeout");
            if self.transition(host.as_ref(), &id, next).await.is_ok() {
                self.complete_in_background(host, &id);
            }
        }
        let expired: Vec<String> = self
            .txns
            .borrow()
            .iter()
            .filter(|(_, t)| {
                !t.pending && t.state.is_idle() && t.last_update_ms <= now - self.id_expiration_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            match self.txns.borrow_mut().get_mut(&id) {
                Some(t)
                    if !t.pending
                        && t.state.is_idle()
                        && t.last_update_ms <= now - self.id_expiration_ms =>
                {
                    t.pending = true
                }
                _ => continue,
            }
            let stored = self.store(host.as_ref(), &id, None).await;
            let mut txns = self.txns.borrow_mut();
            if stored.is_ok() {
                info!(transactional_id = %id, "transactional id expired");
                txns.remove(&id);
            } else if let Some(t) = txns.get_mut(&id) {
                t.pending = false;
            }
        }
    }

    pub fn is_loaded(&self, partition: i32, coordinator_epoch: i32) -> bool {
        self.loaded.borrow().get(&partition) == Some(&coordinator_epoch)
    }

    /// Loads `__transaction_state` partition `partition` (of `partition_count`) when
    /// this node becomes its leader at `coordinator_epoch`; returns the ids whose
    /// transactions were ending, for `resume`.
    pub async fn load_partition(
        &self,
        log: &PartitionLog,
        partition: i32,
        partition_count: i32,
        coordinator_epoch: i32,
    ) -> std::io::Result<Vec<String>> {
        self.loading.borrow_mut().insert(partition);
        self.loaded.borrow_mut().remove(&partition);
        self.drop_ids_of(partition, partition_count);
        let replayed = replay(log).await;
        self.loading.borrow_mut().remove(&partition);
        let found = replayed?;
        let mut ending = Vec::new();
        let mut txns = self.txns.borrow_mut();
        for (id, t) in found {
            if t.state.is_preparing() {
                ending.push(id.clone());
            }
            txns.insert(id, t);
        }
        self.loaded
            .borrow_mut()
            .insert(partition, coordinator_epoch);
        Ok(ending)
    }

    /// Resumes the transactions a load of `partition` at `coordinator_epoch` found
    /// ending: their markers, then their end. (The view naming this node the leader
    /// may not be published yet: the tasks wait for it.)
    pub fn resume<H: Host>(
        &self,
        host: &Rc<H>,
        partition: i32,
        coordinator_epoch: i32,
        ids: Vec<String>,
    ) {
        for id in ids {
            info!(transactional_id = %id, "resuming an ending transaction after a coordinator move");
            self.spawn_completion(host, &id, partition, coordinator_epoch);
        }
    }

    /// Drops the ids of a partition this node no longer leads; `partition_count`
    /// `None`: the topic is gone, and every id with it.
    pub fn unload_partition(&self, partition: i32, partition_count: Option<i32>) {
        self.loading.borrow_mut().remove(&partition);
        if self.loaded.borrow_mut().remove(&partition).is_none() {
            return;
        }
        match partition_count {
            Some(count) => self.drop_ids_of(partition, count),
            None => self.txns.borrow_mut().clear(),
        }
    }

    fn drop_ids_of(&self, partition: i32, partition_count: i32) {
        self.txns
            .borrow_mut()
            .retain(|id, _| log_format::partition_for(id, partition_count) != partition);
    }

    /// Partitions loaded here, with their coordinator epochs.
    pub fn loaded_partitions(&self) -> Vec<(i32, i32)> {
        self.loaded.borrow().iter().map(|(&p, &e)| (p, e)).collect()
    }
}

/// The last state of each id in a `__transaction_state` log (tombstones remove).
async fn replay(log: &PartitionLog) -> std::io::Result<HashMap<String, TxnMetadata>> {
    let mut found = HashMap::new();
    log.for_each_batch(|batch| {
        let walked = for_each_record(batch, |r| {
            let Some(key) = r.key else { return };
            match log_format::decode(key, r.value) {
                Some((id, Some(t))) => {
                    found.insert(id, t);
                }
                Some((id, None)) => {
                    found.remove(&id);
                }
                None => {}
            }
        });
        if let Err(e) = walked {
            warn!(error = %e, "skipping an unreadable batch of __transaction_state");
        }
    })
    .await?;
    Ok(found)
}

/// Errors after which a marker is written again (the leader moved or is catching
/// up); others end the attempt, as Kafka's TransactionMarkerRequestCompletionHandler.
fn marker_retriable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UnknownTopicOrPartition
            | ErrorCode::NotLeaderOrFollower
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::NotEnoughReplicasAfterAppend
            | ErrorCode::RequestTimedOut
            | ErrorCode::KafkaStorageError
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::NotCoordinator
            | ErrorCode::UnknownServerError
    )
}

/// The markers of `id`'s ending transaction, then its CompleteCommit/CompleteAbort.
/// Stops if this core stops coordinating the id (its new coordinator resumes), or
/// if a partition refuses the marker as fenced.
async fn complete<H: Host>(host: Rc<H>, id: String, partition: i32, epoch: i32) {
    let coordinator = host.txns();
    let Some(preparing) = coordinator.get(&id).filter(|t| t.state.is_preparing()) else {
        return;
    };
    let mut remaining: Vec<(String, i32)> = preparing.partitions.iter().cloned().collect();
    while !remaining.is_empty() {
        if !coordinator.is_loaded(partition, epoch) {
            return;
        }
        // A partition of a deleted topic has no one to write its marker: done.
        let cluster = host.cluster();
        remaining.retain(|(t, p)| {
            cluster
                .topic(t)
                .is_some_and(|m| (0..m.partition_count()).contains(p))
        });
        if remaining.is_empty() {
            break;
        }
        let request = MarkerRequest {
            producer_id: preparing.producer_id,
            producer_epoch: preparing.producer_epoch,
            commit: preparing.state == TxnState::PrepareCommit,
            coordinator_epoch: epoch,
            partitions: remaining.clone(),
        };
        let results = host.clone().write_markers(request).await;
        let mut retry = Vec::new();
        for (p, code) in results {
            match code {
                ErrorCode::None
                | ErrorCode::UnsupportedForMessageFormat
                | ErrorCode::UnsupportedVersion => {}
                code if marker_retriable(code) => retry.push(p),
                code => {
                    warn!(transactional_id = %id, topic = %p.0, partition = p.1, ?code, "a partition refused the transaction marker; giving up on this transaction's markers");
                    return;
                }
            }
        }
        remaining = retry;
        if !remaining.is_empty() {
            glommio::timer::sleep(coordinator.retry_backoff).await;
        }
    }
    // Store the end; a coordinator that is not available yet is asked again.
    loop {
        if !coordinator.is_loaded(partition, epoch) {
            return;
        }
        let Some(current) = coordinator.get(&id).filter(|t| t.state.is_preparing()) else {
            return;
        };
        if current.pending {
            glommio::timer::sleep(coordinator.retry_backoff).await;
            continue;
        }
        match coordinator
            .transition(host.as_ref(), &id, current.completed(now_ms()))
            .await
        {
            Ok(()) => return,
            // Not available yet, or a resumed load whose view is not published yet:
            // again, while the partition stays loaded at this epoch.
            Err(ErrorCode::CoordinatorNotAvailable | ErrorCode::NotCoordinator) => {
                glommio::timer::sleep(coordinator.retry_backoff).await;
            }
            Err(code) => {
                warn!(transactional_id = %id, ?code, "storing a transaction's end failed");
                return;
            }
        }
    }
}

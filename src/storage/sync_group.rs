//! Group commit: one per shard. Appends that must be durable before they are
//! acknowledged ask the shard's `SyncGroup` to fdatasync their partition's dirty
//! files. Requests made together share a round, which syncs every file they named
//! once, concurrently (io_uring). Up to `ROUNDS_IN_FLIGHT` rounds run at once: a
//! request made while one round is syncing starts the next at once instead of
//! waiting for it (which made a request wait up to two sync latencies); requests made
//! while every slot is busy share the round that starts when one frees. Durable
//! throughput therefore grows with load instead of being capped at one append per
//! sync latency.
//!
//! Invariants: a request is completed only by a round that started after it was made,
//! so its write (completed before the request) is covered by that round's fdatasync.
//! Rounds answer in the order they started (a round that finishes early waits for
//! the one before it), so an answer means every earlier request is durable too — the
//! high watermark relies on it (`PartitionLog::synced`).

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use super::file::LogFile;
use futures::channel::oneshot;

type Done = oneshot::Sender<Result<(), String>>;

/// Rounds syncing at once. Two: a request never waits behind a round in progress,
/// and under load most requests still share a round.
const ROUNDS_IN_FLIGHT: usize = 2;

#[derive(Default)]
struct NextRound {
    files: Vec<Rc<LogFile>>,
    waiters: Vec<Done>,
}

#[derive(Default)]
pub struct SyncGroup {
    next: RefCell<NextRound>,
    /// A round is spawned and will take `next` once it has yielded.
    scheduled: Cell<bool>,
    /// Rounds started and not yet answered.
    in_flight: Cell<usize>,
    /// Resolves once the latest started round has answered its requests.
    last_answered: RefCell<Option<oneshot::Receiver<()>>>,
    rounds: Cell<u64>,
    requests: Cell<u64>,
    /// Tests only: the next round waits for this before it syncs.
    #[cfg(test)]
    held: RefCell<Option<oneshot::Receiver<()>>>,
}

impl SyncGroup {
    /// Makes the writes already completed on `files` durable. Resolves after a sync
    /// round that started after this call has fdatasynced every one of them, and
    /// every round started before it has answered.
    pub async fn sync(self: &Rc<Self>, files: Vec<Rc<LogFile>>) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut next = self.next.borrow_mut();
            for f in files {
                if !next.files.iter().any(|g| Rc::ptr_eq(g, &f)) {
                    next.files.push(f);
                }
            }
            next.waiters.push(tx);
        }
        self.requests.set(self.requests.get() + 1);
        self.schedule();
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(io::Error::other("sync group stopped")),
        }
    }

    /// Spawns a round if requests wait for one, none is spawned yet and a slot is free.
    fn schedule(self: &Rc<Self>) {
        if self.scheduled.get()
            || self.in_flight.get() >= ROUNDS_IN_FLIGHT
            || self.next.borrow().waiters.is_empty()
        {
            return;
        }
        self.scheduled.set(true);
        glommio::spawn_local(self.clone().round()).detach();
    }

    async fn round(self: Rc<Self>) {
        // glommio runs a spawned task at once; yielding first lets the requests made
        // in the same turn (the other partitions of a produce, other connections'
        // appends completing together) join this round.
        glommio::executor().yield_now().await;
        self.scheduled.set(false);
        let round = std::mem::take(&mut *self.next.borrow_mut());
        if round.waiters.is_empty() {
            return;
        }
        self.in_flight.set(self.in_flight.get() + 1);
        self.rounds.set(self.rounds.get() + 1);
        let (answered, answered_rx) = oneshot::channel();
        let previous = self.last_answered.replace(Some(answered_rx));
        #[cfg(test)]
        {
            let held = self.held.borrow_mut().take();
            if let Some(release) = held {
                let _ = release.await;
            }
        }
        let syncs = round.files.iter().map(|f| f.fdatasync());
        let failed = futures::future::join_all(syncs)
            .await
            .into_iter()
            .find_map(|r| r.err().map(|e| e.to_string()));
        if let Some(previous) = previous {
            // Err: that round's task is gone, which only happens at shutdown.
            let _ = previous.await;
        }
        for w in round.waiters {
            let _ = w.send(match &failed {
                None => Ok(()),
                Some(e) => Err(e.clone()),
            });
        }
        let _ = answered.send(());
        self.in_flight.set(self.in_flight.get() - 1);
        self.schedule();
    }

    /// Tests only: the next round to start waits for `release` before it syncs, so
    /// that a test can look at what its requesters see meanwhile.
    #[cfg(test)]
    pub fn hold_next_round(&self, release: oneshot::Receiver<()>) {
        *self.held.borrow_mut() = Some(release);
    }

    /// (sync rounds run, sync requests served) since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.rounds.get(), self.requests.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::file::WriteMode;
    use crate::storage::test_support::on_executor_in_scratch_dir;

    #[test]
    fn requests_made_during_a_round_share_the_next_one() {
        on_executor_in_scratch_dir("sync", |dir| async move {
            let mut files = Vec::new();
            for i in 0..4 {
                let path = dir.join(format!("f{i}"));
                let f = LogFile::open(&path, WriteMode::Buffered, true)
                    .await
                    .unwrap();
                f.append(0, &[&[1u8; 4096]]).await.unwrap();
                files.push(Rc::new(f));
            }
            let group = Rc::new(SyncGroup::default());
            // A first request alone: its round starts before anything else asks.
            let (g, f0) = (group.clone(), files[0].clone());
            let first = glommio::spawn_local(async move { g.sync(vec![f0]).await });
            while group.counts().0 == 0 {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            // Twenty more, made together (no yield between them): whether or not
            // the first round is still running, they must share exactly one round.
            let rest: Vec<_> = (0..20)
                .map(|i| group.sync(vec![files[i % 4].clone()]))
                .collect();
            let results = futures::future::join_all(rest).await;
            first.await.unwrap();
            assert!(results.iter().all(|r| r.is_ok()));
            assert_eq!(group.counts(), (2, 21));
        });
    }

    #[test]
    fn a_request_made_during_a_round_starts_its_own_but_is_answered_after_it() {
        on_executor_in_scratch_dir("sync-overlap", |dir| async move {
            let f = LogFile::open(&dir.join("f"), WriteMode::Buffered, true)
                .await
                .unwrap();
            f.append(0, &[&[1u8; 4096]]).await.unwrap();
            let f = Rc::new(f);
            let group = Rc::new(SyncGroup::default());
            let answered = Rc::new(RefCell::new(Vec::new()));
            let request = |name: &'static str| {
                let (g, f, answered) = (group.clone(), f.clone(), answered.clone());
                glommio::spawn_local(async move {
                    g.sync(vec![f]).await.unwrap();
                    answered.borrow_mut().push(name);
                })
            };
            // The first round is held before its fdatasync.
            let (release, held) = oneshot::channel();
            group.hold_next_round(held);
            let first = request("first");
            while group.counts().0 < 1 {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            // The second request does not wait for the first round to start its own.
            let second = request("second");
            for _ in 0..1000 {
                if group.counts().0 == 2 {
                    break;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            assert_eq!(
                group.counts(),
                (2, 2),
                "a second round runs beside the held one"
            );
            // Its sync is done long before the first round's, but its answer waits.
            glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            assert!(answered.borrow().is_empty());
            release.send(()).unwrap();
            first.await;
            second.await;
            assert_eq!(*answered.borrow(), ["first", "second"]);
        });
    }
}

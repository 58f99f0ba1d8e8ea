//! Group commit: one per shard. Appends that must be durable before they are
//! acknowledged ask the shard's `SyncGroup` to fdatasync their partition's dirty
//! files. Requests that arrive while a sync round is in flight all join the *next*
//! round, which syncs every file they named once, concurrently (io_uring). Durable
//! throughput therefore grows with load instead of being capped at one append per
//! sync latency.
//!
//! Invariant: a request is completed only by a round that started after it was made,
//! so its write (completed before the request) is covered by that round's fdatasync.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use super::file::LogFile;
use futures::channel::oneshot;

type Done = oneshot::Sender<Result<(), String>>;

#[derive(Default)]
struct NextRound {
    files: Vec<Rc<LogFile>>,
    waiters: Vec<Done>,
}

#[derive(Default)]
pub struct SyncGroup {
    next: RefCell<NextRound>,
    running: Cell<bool>,
    rounds: Cell<u64>,
    requests: Cell<u64>,
    /// Tests only: the next round waits for this before it syncs.
    #[cfg(test)]
    held: RefCell<Option<oneshot::Receiver<()>>>,
}

impl SyncGroup {
    /// Makes the writes already completed on `files` durable. Resolves after a sync
    /// round that started after this call has fdatasynced every one of them.
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
        if !self.running.get() {
            self.running.set(true);
            glommio::spawn_local(self.clone().run()).detach();
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(io::Error::other("sync group stopped")),
        }
    }

    async fn run(self: Rc<Self>) {
        loop {
            let round = std::mem::take(&mut *self.next.borrow_mut());
            if round.waiters.is_empty() {
                self.running.set(false);
                return;
            }
            self.rounds.set(self.rounds.get() + 1);
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
            for w in round.waiters {
                let _ = w.send(match &failed {
                    None => Ok(()),
                    Some(e) => Err(e.clone()),
                });
            }
        }
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
}

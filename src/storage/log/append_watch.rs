//! One task waiting for the next append to any of many logs: a long-polling fetch
//! on a shard's partitions. One shared flag is registered with each log (a reference
//! count and a slot in the log's list), instead of a channel per log and a future per
//! log polled on every wake-up, so a fetch of a thousand quiet partitions costs little
//! more per round than a fetch of one.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// What each log holds for a watch.
#[derive(Default)]
pub struct AppendWatch {
    fired: Cell<bool>,
    /// The watcher stopped waiting: logs drop it when they next look.
    done: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl AppendWatch {
    pub(super) fn fire(&self) {
        if !self.fired.replace(true) {
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Fired or given up: a log may forget it.
    pub(super) fn is_spent(&self) -> bool {
        self.fired.get() || self.done.get()
    }
}

/// The watcher's side: register it with logs (`PartitionLog::watch_appends`), then
/// await `appended`. Dropping it tells the logs to forget it.
pub struct AppendWatcher(Rc<AppendWatch>);

impl AppendWatcher {
    pub fn new() -> AppendWatcher {
        AppendWatcher(Rc::new(AppendWatch::default()))
    }

    pub(super) fn watch(&self) -> Rc<AppendWatch> {
        self.0.clone()
    }

    /// Completes at the first append to any log it is registered with.
    pub fn appended(&self) -> Appended<'_> {
        Appended(&self.0)
    }
}

impl Default for AppendWatcher {
    fn default() -> Self {
        AppendWatcher::new()
    }
}

impl Drop for AppendWatcher {
    fn drop(&mut self) {
        self.0.done.set(true);
        self.0.waker.borrow_mut().take();
    }
}

pub struct Appended<'a>(&'a AppendWatch);

impl Future for Appended<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.fired.get() {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    #[test]
    fn a_watch_fires_once_and_is_spent_when_fired_or_dropped() {
        let watcher = AppendWatcher::new();
        let (a, b) = (watcher.watch(), watcher.watch());
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut appended = Box::pin(watcher.appended());
        assert!(appended.as_mut().poll(&mut cx).is_pending());
        assert!(!a.is_spent());
        b.fire();
        a.fire();
        assert!(appended.as_mut().poll(&mut cx).is_ready());
        assert!(a.is_spent());

        let other = AppendWatcher::new();
        let held = other.watch();
        drop(other);
        assert!(held.is_spent(), "a dropped watcher is forgotten");
    }
}

//! A FIFO gate: one holder at a time, admitted strictly in the order `enter` was
//! called. glommio's `Semaphore` is not FIFO (a newcomer can take a just-released
//! permit ahead of a queued waiter), and appends to a partition must keep the order
//! in which requests arrived, so the permit is handed directly to the oldest waiter.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use futures::channel::oneshot;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("gate closed")]
pub struct GateClosed;

#[derive(Default)]
pub struct FifoGate {
    held: Cell<bool>,
    closed: Cell<bool>,
    waiters: RefCell<VecDeque<oneshot::Sender<()>>>,
}

/// Holding the gate; dropping it admits the next waiter.
pub struct GatePass<'a> {
    gate: &'a FifoGate,
}

/// A place in line, taken synchronously by `FifoGate::ticket`.
pub enum Ticket {
    Admitted,
    Waiting(oneshot::Receiver<()>),
    Closed,
}

impl FifoGate {
    /// Takes this caller's place in line now; `admit` waits for its turn.
    pub fn ticket(&self) -> Ticket {
        if self.closed.get() {
            Ticket::Closed
        } else if !self.held.get() {
            self.held.set(true);
            Ticket::Admitted
        } else {
            let (tx, rx) = oneshot::channel();
            self.waiters.borrow_mut().push_back(tx);
            Ticket::Waiting(rx)
        }
    }

    /// Waits for `ticket`'s turn and holds the gate until the pass is dropped.
    pub async fn admit(&self, ticket: Ticket) -> Result<GatePass<'_>, GateClosed> {
        match ticket {
            Ticket::Closed => return Err(GateClosed),
            Ticket::Admitted => {}
            Ticket::Waiting(rx) => rx.await.map_err(|_| GateClosed)?,
        }
        // From here this caller holds the gate; dropping the pass hands it on.
        let pass = GatePass { gate: self };
        if self.closed.get() {
            return Err(GateClosed);
        }
        Ok(pass)
    }

    fn release(&self) {
        let mut waiters = self.waiters.borrow_mut();
        // Hand the gate to the oldest waiter still waiting; `held` stays true.
        while let Some(next) = waiters.pop_front() {
            if next.send(()).is_ok() {
                return;
            }
        }
        self.held.set(false);
    }

    /// Refuses all further entries; those already waiting fail as they are admitted.
    pub fn close(&self) {
        self.closed.set(true);
    }
}

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn admits_in_call_order_even_when_polled_out_of_order() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let gate = Rc::new(FifoGate::default());
                let order = Rc::new(RefCell::new(Vec::new()));
                let first = gate.admit(gate.ticket()).await.unwrap();
                // Take places 1..=5 in line, then start them in reverse order.
                let waits: Vec<_> = (1..=5).map(|i| (i, gate.ticket())).collect();
                let mut tasks = Vec::new();
                for (i, w) in waits.into_iter().rev() {
                    let order = order.clone();
                    let gate = gate.clone();
                    let fut = async move {
                        let _pass = gate.admit(w).await.unwrap();
                        order.borrow_mut().push(i);
                        glommio::yield_if_needed().await;
                    };
                    tasks.push(fut);
                }
                drop(first);
                futures::future::join_all(tasks).await;
                assert_eq!(*order.borrow(), vec![1, 2, 3, 4, 5]);
                gate.close();
                assert!(gate.admit(gate.ticket()).await.is_err());
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

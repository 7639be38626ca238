//! A plugin's mailbox: the few jobs its worker thread is to take next, in order.
//!
//! The gateway task pushes (never waiting: how many messages a plugin gets at once is bounded
//! by `flow`, which keeps the rest of its backlog in the journal); the plugin's worker thread
//! pops, blocking until a job arrives or the mailbox is closed and drained. A push wakes the
//! thread only if it is asleep: under a stream the thread finds the next job queued, and the
//! gateway makes no system call to hand it over.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// A queue between the gateway task and one worker thread.
pub struct Mailbox<T> {
    state: Mutex<State<T>>,
    arrived: Condvar,
}

struct State<T> {
    queue: VecDeque<T>,
    closed: bool,
    /// The worker waits for a push.
    asleep: bool,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Mailbox<T> {
    /// An empty mailbox.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
                asleep: false,
            }),
            arrived: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A worker that panicked while holding the lock left a consistent queue behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `item` behind what is there.
    pub fn push(&self, item: T) {
        self.push_all([item]);
    }

    /// Queues `items` behind what is there, in order, with at most one wake-up.
    pub fn push_all(&self, items: impl IntoIterator<Item = T>) {
        let mut state = self.lock();
        state.queue.extend(items);
        let wake = state.asleep && !state.queue.is_empty();
        drop(state);
        if wake {
            self.arrived.notify_one();
        }
    }

    /// Takes the next item, blocking the calling thread; `None` once closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.queue.pop_front() {
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state.asleep = true;
            state = self
                .arrived
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.asleep = false;
        }
    }

    /// Takes the next item if one is queued, without waiting.
    pub fn try_pop(&self) -> Option<T> {
        self.lock().queue.pop_front()
    }

    /// Whether an item is queued.
    pub fn has_queued(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// Lets the worker finish what is queued and then stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_order_and_close_drains_first() {
        let m = Mailbox::new();
        m.push(1);
        m.push(2);
        m.close();
        assert_eq!((m.pop(), m.pop(), m.pop()), (Some(1), Some(2), None));
    }

    #[test]
    fn a_waiting_worker_is_woken_by_a_push() {
        let m = std::sync::Arc::new(Mailbox::new());
        let worker = {
            let m = m.clone();
            std::thread::spawn(move || m.pop())
        };
        m.push(7);
        assert_eq!(worker.join().ok().flatten(), Some(7));
    }

    #[test]
    fn a_worker_asleep_before_a_batch_is_woken_and_takes_it_in_order() {
        let m = std::sync::Arc::new(Mailbox::new());
        let worker = {
            let m = m.clone();
            std::thread::spawn(move || std::iter::from_fn(|| m.pop()).collect::<Vec<_>>())
        };
        // Whether the worker is asleep yet or not, it must get every item, then the close.
        m.push_all([1, 2, 3]);
        m.push_all(Vec::new());
        m.push(4);
        m.close();
        assert_eq!(worker.join().ok(), Some(vec![1, 2, 3, 4]));
        assert_eq!(m.try_pop(), None);
    }
}

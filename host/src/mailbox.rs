//! A plugin's bounded inbound queue, with an explicit policy for when it is full.
//!
//! The MQTT task pushes (never waiting: with the `block` policy it gets the item back and
//! holds it until [`Mailbox::room`] fires); the plugin's worker thread pops, blocking until a
//! message arrives or the mailbox is closed and drained.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::config::Overflow;

/// What became of a pushed item.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// It is queued.
    Queued,
    /// The queue is full and the policy is `block`: here it is back; retry after `room`.
    Full(T),
    /// The queue was full: this item (the new one, or the oldest) was dropped.
    Dropped(T),
}

/// A bounded queue between the MQTT task and one worker thread.
pub struct Mailbox<T> {
    state: Mutex<State<T>>,
    arrived: Condvar,
    room: Notify,
    depth: usize,
    overflow: Overflow,
}

struct State<T> {
    queue: VecDeque<T>,
    closed: bool,
}

impl<T> Mailbox<T> {
    /// An empty mailbox holding at most `depth` items.
    pub fn new(depth: usize, overflow: Overflow) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(depth.min(4096)),
                closed: false,
            }),
            arrived: Condvar::new(),
            room: Notify::new(),
            depth,
            overflow,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A worker that panicked while holding the lock left a consistent queue behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Offers `item` without waiting.
    pub fn push(&self, item: T) -> Pushed<T> {
        let mut state = self.lock();
        let outcome = if state.queue.len() < self.depth {
            state.queue.push_back(item);
            Pushed::Queued
        } else {
            match self.overflow {
                Overflow::Block => return Pushed::Full(item),
                Overflow::DropNewest => return Pushed::Dropped(item),
                Overflow::DropOldest => {
                    let oldest = state.queue.pop_front();
                    state.queue.push_back(item);
                    oldest.map_or(Pushed::Queued, Pushed::Dropped)
                }
            }
        };
        self.arrived.notify_one();
        outcome
    }

    /// Queues `item` whatever the depth and policy: for the few control items (a version
    /// swap) that must reach the worker in order with the messages and may not be dropped.
    pub fn push_control(&self, item: T) {
        self.lock().queue.push_back(item);
        self.arrived.notify_one();
    }

    /// Waits until an item may fit.
    pub async fn room(&self) {
        let notified = self.room.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.lock().queue.len() < self.depth {
            return;
        }
        notified.await;
    }

    /// Takes the next item, blocking the calling thread; `None` once closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.queue.pop_front() {
                drop(state);
                self.room.notify_waiters();
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state = self
                .arrived
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Lets the worker finish what is queued and then stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
    }

    /// Takes every item waiting, without handling them.
    pub fn drain(&self) -> Vec<T> {
        let items = self.lock().queue.drain(..).collect();
        self.room.notify_waiters();
        items
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_order_and_close_drains_first() {
        let m = Mailbox::new(3, Overflow::Block);
        assert_eq!(m.push(1), Pushed::Queued);
        assert_eq!(m.push(2), Pushed::Queued);
        m.close();
        assert_eq!((m.pop(), m.pop(), m.pop()), (Some(1), Some(2), None));
    }

    #[test]
    fn each_overflow_policy_does_what_it_says() {
        let block = Mailbox::new(1, Overflow::Block);
        block.push(1);
        assert_eq!(block.push(2), Pushed::Full(2));
        let newest = Mailbox::new(1, Overflow::DropNewest);
        newest.push(1);
        assert_eq!(newest.push(2), Pushed::Dropped(2));
        let oldest = Mailbox::new(1, Overflow::DropOldest);
        oldest.push(1);
        assert_eq!(oldest.push(2), Pushed::Dropped(1));
        assert_eq!(oldest.pop(), Some(2));
    }

    #[test]
    fn a_blocked_pusher_is_woken_when_the_worker_takes_an_item() {
        let m = std::sync::Arc::new(Mailbox::new(1, Overflow::Block));
        m.push(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let worker = {
            let m = m.clone();
            std::thread::spawn(move || m.pop())
        };
        rt.block_on(m.room());
        assert_eq!(worker.join().ok().flatten(), Some(1));
        assert_eq!(m.push(2), Pushed::Queued);
    }
}

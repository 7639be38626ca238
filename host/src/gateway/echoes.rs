//! What the gateway published for its plugins, recognised when the broker hands it back.
//!
//! The gateway is one MQTT client for all its plugins, so the broker delivers a plugin's output
//! to the gateway again whenever some plugin's filter matches it, and MQTT 3.1.1 has no way to
//! mark where a message came from. So each output is remembered for [`TTL`] by its topic and a
//! keyed hash of its payload, with the plugin that published it and how many plugins the
//! message chain has gone through ([`Echo::hops`]). When the same topic and payload come back,
//! the router skips the plugin that published it (unless its manifest asks for `loopback`), and
//! a chain longer than [`MAX_HOPS`] is a routing cycle, broken with a dead letter.
//!
//! The limit of this: a message another client publishes with the very same topic and payload
//! within [`TTL`] of a plugin's own output is taken for that output (it is then not delivered
//! back to that plugin, which has just produced the same thing itself).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an output is remembered.
pub const TTL: Duration = Duration::from_secs(30);
/// Plugins a chain of messages may pass through before it is taken for a cycle.
pub const MAX_HOPS: u8 = 8;
/// Most outputs remembered at once; the oldest are forgotten first.
const CAPACITY: usize = 65_536;

/// An output recognised on its way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    /// The plugin that published it.
    pub origin: Arc<str>,
    /// Plugins the chain has passed through, this output's publisher included.
    pub hops: u8,
}

type Key = (String, u64);

/// Recently published outputs.
pub struct Echoes {
    hasher: RandomState,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Each output with when it was last recorded.
    by_key: HashMap<Key, (Instant, Echo)>,
    order: VecDeque<(Instant, Key)>,
}

impl Default for Echoes {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            table: Mutex::default(),
        }
    }
}

impl Echoes {
    /// Remembers that `origin` published `payload` on `topic`, `hops` plugins into its chain.
    pub fn record(&self, topic: &str, payload: &[u8], origin: &Arc<str>, hops: u8) {
        let key = (topic.to_owned(), self.hasher.hash_one(payload));
        let now = Instant::now();
        let mut table = self.lock();
        table.expire(now);
        if table.order.len() >= CAPACITY {
            table.forget_oldest();
        }
        let echo = Echo {
            origin: origin.clone(),
            hops,
        };
        table.by_key.insert(key.clone(), (now, echo));
        table.order.push_back((now, key));
    }

    /// The output `topic` and `payload` are, if the gateway published them lately.
    pub fn recognise(&self, topic: &str, payload: &[u8]) -> Option<Echo> {
        let key = (topic.to_owned(), self.hasher.hash_one(payload));
        let mut table = self.lock();
        table.expire(Instant::now());
        table.by_key.get(&key).map(|(_, echo)| echo.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Table {
    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= TTL)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((at, key)) = self.order.pop_front()
            && self.by_key.get(&key).is_some_and(|(last, _)| *last == at)
        {
            // Removed only if not recorded again since.
            self.by_key.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_is_recognised_with_its_origin_and_hops() {
        let echoes = Echoes::default();
        let origin: Arc<str> = "a".into();
        echoes.record("out/x", b"1", &origin, 2);
        assert_eq!(
            echoes.recognise("out/x", b"1"),
            Some(Echo { origin, hops: 2 })
        );
        assert_eq!(echoes.recognise("out/x", b"2"), None);
        assert_eq!(echoes.recognise("out/y", b"1"), None);
    }
}

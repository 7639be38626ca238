//! The outbox: the outputs the broker does not have yet, each plugin's in its own queue.
//!
//! Outputs go out in order per plugin, the plugins taking turns, so a plugin with thousands
//! of outputs waiting delays a neighbour's by one output a turn, not by all of them.
//!
//! The cap (`journal.max-outbox-mib`) is shared the way a fair scheduler shares a link: every
//! plugin (running, or with outputs still waiting) is guaranteed an equal share of it, and may
//! borrow what the others leave unclaimed. A plugin's claim is the larger of its share and what
//! its outputs hold; the outbox is full when the claims add up to the cap. Then only a plugin
//! holding at least its share feels it: under `block` it gets no more messages until the
//! broker takes its outputs; under `drop-oldest` its oldest unsent outputs are dropped, the
//! plugin furthest over its share first. A neighbour under its share is never held back and
//! never loses an output, whatever a flooding plugin does.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use crate::config::OutboxOverflow;
use crate::gateway::journal::Output;

/// One plugin's part of the outbox.
#[derive(Debug, Default)]
struct Queue {
    /// Its kept outputs not yet sent on this connection, in order.
    unsent: VecDeque<Output>,
    /// Bytes of its kept outputs the broker does not have yet, sent or not.
    bytes: u64,
    /// Bytes of its outputs in the group commit being made: kept as good as.
    coming: u64,
    /// Whether it has a lane (is running): it keeps its share while it has nothing waiting.
    running: bool,
    /// Whether it is in an episode of holding its share of a full outbox, for the log: the
    /// episode ends only when it is down to three quarters of its share (or the outbox to three
    /// quarters of the cap), so one long outage is logged once, not at every commit.
    full: bool,
    /// Outputs dropped in that episode.
    dropped: u64,
}

impl Queue {
    fn held(&self) -> u64 {
        self.bytes + self.coming
    }

    fn is_party(&self) -> bool {
        self.running || self.held() > 0
    }
}

/// The outbox, owned by the message path.
#[derive(Debug)]
pub struct Outbox {
    cap: u64,
    overflow: OutboxOverflow,
    max_unacked: usize,
    plugins: BTreeMap<String, Queue>,
    /// Outputs sent on this connection, waiting for the broker's acknowledgement.
    unacked: BTreeMap<u64, Output>,
    /// The plugin whose output went out last: the next turn is the next plugin after it.
    last_turn: Option<String>,
}

impl Outbox {
    /// An outbox of `cap` bytes, with the outputs a journal held when it was opened (in
    /// order). At most `max_unacked` outputs are on the wire at once.
    pub fn new(
        cap: u64,
        overflow: OutboxOverflow,
        max_unacked: usize,
        recovered: Vec<Output>,
    ) -> Self {
        let mut outbox = Self {
            cap,
            overflow,
            max_unacked,
            plugins: BTreeMap::new(),
            unacked: BTreeMap::new(),
            last_turn: None,
        };
        outbox.keep(recovered);
        outbox
    }

    /// Plugin `name` runs: it is guaranteed its share from now on.
    pub fn join(&mut self, name: &str) {
        self.plugins.entry(name.to_owned()).or_default().running = true;
    }

    /// Plugin `name` no longer runs: what it left still goes out, and its share goes to the
    /// others once that is sent.
    pub fn leave(&mut self, name: &str) {
        if let Some(queue) = self.plugins.get_mut(name) {
            queue.running = false;
        }
        self.tidy(name);
    }

    /// Plugin `name` made an output of `bytes` that the group commit being made will keep.
    pub fn made(&mut self, name: &str, bytes: u64) {
        self.plugins.entry(name.to_owned()).or_default().coming += bytes;
    }

    /// The group commit is made: these outputs are kept (in order), and what was coming is
    /// either among them or, if `kept` is empty because the commit failed, gone.
    pub fn keep(&mut self, kept: Vec<Output>) {
        for queue in self.plugins.values_mut() {
            queue.coming = 0;
        }
        for output in kept {
            let queue = self.plugins.entry(output.plugin.clone()).or_default();
            queue.bytes += output.bytes();
            queue.unsent.push_back(output);
        }
        let idle: Vec<String> = self
            .plugins
            .iter()
            .filter(|(_, q)| !q.is_party())
            .map(|(n, _)| n.clone())
            .collect();
        idle.iter().for_each(|name| self.tidy(name));
    }

    /// The broker has output `key`; false if it was not on the wire (a late acknowledgement
    /// from before a reconnection, say).
    pub fn delivered(&mut self, key: u64) -> bool {
        let Some(output) = self.unacked.remove(&key) else {
            return false;
        };
        if let Some(queue) = self.plugins.get_mut(&output.plugin) {
            queue.bytes = queue.bytes.saturating_sub(output.bytes());
        }
        self.tidy(&output.plugin);
        true
    }

    /// A new connection: what was on the wire goes again, first in its plugin's queue.
    pub fn reconnected(&mut self) {
        let resend = std::mem::take(&mut self.unacked);
        for output in resend.into_values().rev() {
            let queue = self.plugins.entry(output.plugin.clone()).or_default();
            queue.unsent.push_front(output);
        }
    }

    /// Hands outputs to `publish`, the plugins taking turns, while fewer than `max_unacked` are
    /// on the wire and `publish` takes them (false: its queue is full, the rest goes later).
    pub fn send(&mut self, mut publish: impl FnMut(&Output) -> bool) {
        while self.unacked.len() < self.max_unacked {
            let Some(name) = self.next_turn() else {
                return;
            };
            let Some(queue) = self.plugins.get_mut(&name) else {
                return;
            };
            let Some(output) = queue.unsent.pop_front() else {
                return;
            };
            if !publish(&output) {
                queue.unsent.push_front(output);
                return;
            }
            self.unacked.insert(output.key, output);
            self.last_turn = Some(name);
        }
    }

    /// Whether plugin `name` must wait for the broker before it gets another message.
    pub fn holds_back(&self, name: &str) -> bool {
        self.overflow == OutboxOverflow::Block
            && self.plugins.get(name).is_some_and(|q| self.is_full_for(q))
    }

    /// Applies the overflow policy after a commit and logs each plugin's episodes of a full
    /// outbox; returns the outputs dropped, for the journal to forget.
    pub fn enforce(&mut self) -> Vec<Output> {
        // Who holds its share of a full outbox, before the policy makes room.
        let (share, claimed) = (self.share(), self.claimed());
        let full: Vec<bool> = self
            .plugins
            .values()
            .map(|q| q.held() >= share && claimed >= self.cap)
            .collect();
        let mut dropped = Vec::new();
        if self.overflow == OutboxOverflow::DropOldest {
            while self.claimed() >= self.cap
                && let Some(output) = self.drop_oldest_over_share()
            {
                dropped.push(output);
            }
        }
        let (share, claimed) = (self.share(), self.claimed());
        let overflow = self.overflow;
        for ((name, queue), full) in self.plugins.iter_mut().zip(full) {
            let roomy = queue.held() <= share / 4 * 3 || claimed <= self.cap / 4 * 3;
            match (queue.full, full, roomy) {
                (false, true, _) => match overflow {
                    OutboxOverflow::Block => tracing::warn!(
                        plugin = name.as_str(),
                        bytes = queue.held(),
                        share,
                        "outbox full (this plugin holds its share of `journal.max-outbox-mib`): it gets no more messages until the broker takes its outputs"
                    ),
                    OutboxOverflow::DropOldest => tracing::warn!(
                        plugin = name.as_str(),
                        bytes = queue.held(),
                        share,
                        "outbox full (this plugin holds its share of `journal.max-outbox-mib`): its oldest unsent outputs are dropped (edgewise_outputs_dropped_total)"
                    ),
                },
                (true, _, true) => tracing::info!(
                    plugin = name.as_str(),
                    dropped = std::mem::take(&mut queue.dropped),
                    "outbox has room again for this plugin"
                ),
                _ => {}
            }
            queue.full = full || (queue.full && !roomy);
        }
        dropped
    }

    /// Outputs the broker does not have yet.
    pub fn undelivered(&self) -> usize {
        self.unacked.len() + self.plugins.values().map(|q| q.unsent.len()).sum::<usize>()
    }

    /// What each plugin is guaranteed.
    fn share(&self) -> u64 {
        let parties = self.plugins.values().filter(|q| q.is_party()).count();
        self.cap / parties.max(1) as u64
    }

    /// What the plugins claim: each the larger of its share and what it holds.
    fn claimed(&self) -> u64 {
        let share = self.share();
        self.plugins
            .values()
            .filter(|q| q.is_party())
            .map(|q| q.held().max(share))
            .sum()
    }

    fn is_full_for(&self, queue: &Queue) -> bool {
        queue.held() >= self.share() && self.claimed() >= self.cap
    }

    /// Drops the oldest unsent output of the plugin furthest over its share, if any plugin is
    /// over it with an output not yet on the wire.
    fn drop_oldest_over_share(&mut self) -> Option<Output> {
        let share = self.share();
        let queue = self
            .plugins
            .values_mut()
            .filter(|q| q.held() > share && !q.unsent.is_empty())
            .max_by_key(|q| q.held())?;
        let output = queue.unsent.pop_front()?;
        queue.bytes = queue.bytes.saturating_sub(output.bytes());
        queue.dropped += 1;
        Some(output)
    }

    /// The next plugin after the last one served (wrapping around) with an output unsent.
    fn next_turn(&self) -> Option<String> {
        let after = match &self.last_turn {
            Some(name) => Bound::Excluded(name.as_str()),
            None => Bound::Unbounded,
        };
        self.plugins
            .range::<str, _>((after, Bound::Unbounded))
            .chain(self.plugins.iter())
            .find(|(_, q)| !q.unsent.is_empty())
            .map(|(name, _)| name.clone())
    }

    /// Forgets `name`'s queue once it neither runs nor holds anything.
    fn tidy(&mut self, name: &str) {
        if self
            .plugins
            .get(name)
            .is_some_and(|q| !q.is_party() && q.unsent.is_empty())
        {
            self.plugins.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::journal::stored_bytes;

    /// An output of `plugin` that counts for exactly `bytes`.
    fn output(key: u64, plugin: &str, bytes: u64) -> Output {
        let topic = format!("{plugin}/out");
        let overhead = stored_bytes(&topic, b"");
        Output {
            key,
            plugin: plugin.to_owned(),
            topic,
            payload: vec![b'x'; (bytes - overhead) as usize],
            qos: 1,
        }
    }

    /// An outbox of 1000 bytes shared by `plugins`, none of it sent.
    fn outbox(overflow: OutboxOverflow, plugins: &[&str]) -> Outbox {
        let mut outbox = Outbox::new(1000, overflow, 100, Vec::new());
        plugins.iter().for_each(|p| outbox.join(p));
        outbox
    }

    /// Makes and keeps `count` outputs of `bytes` each for `plugin`, keys from `first`.
    fn produce(outbox: &mut Outbox, plugin: &str, first: u64, count: u64, bytes: u64) {
        let kept: Vec<Output> = (first..first + count)
            .map(|k| output(k, plugin, bytes))
            .collect();
        kept.iter().for_each(|o| outbox.made(plugin, o.bytes()));
        outbox.keep(kept);
    }

    fn sent_order(outbox: &mut Outbox) -> Vec<(String, u64)> {
        let mut order = Vec::new();
        outbox.send(|o| {
            order.push((o.plugin.clone(), o.key));
            true
        });
        order
    }

    #[test]
    fn a_flooding_plugin_is_held_back_while_its_neighbour_keeps_its_share() {
        let mut outbox = outbox(OutboxOverflow::Block, &["flood", "calm"]);
        produce(&mut outbox, "flood", 0, 6, 100);
        // Shares of 500 each: flood holds 600, calm claims its 500 while it holds nothing.
        assert!(outbox.holds_back("flood"), "600 + calm's 500 reach the cap");
        assert!(!outbox.holds_back("calm"));
        produce(&mut outbox, "calm", 100, 4, 100);
        assert!(!outbox.holds_back("calm"), "400 of its 500");
        produce(&mut outbox, "calm", 104, 1, 100);
        assert!(outbox.holds_back("calm"), "its share is full too");
        assert!(outbox.enforce().is_empty(), "block drops nothing");
    }

    #[test]
    fn alone_a_plugin_may_use_the_whole_cap() {
        let mut outbox = outbox(OutboxOverflow::Block, &["only"]);
        produce(&mut outbox, "only", 0, 9, 100);
        assert!(!outbox.holds_back("only"));
        produce(&mut outbox, "only", 9, 1, 100);
        assert!(outbox.holds_back("only"));
    }

    #[test]
    fn a_plugin_borrows_what_its_neighbours_leave_unclaimed() {
        // Three plugins share 1000: 333 each. One that stopped keeps no share.
        let mut outbox = outbox(OutboxOverflow::Block, &["a", "b", "c"]);
        produce(&mut outbox, "a", 0, 4, 100);
        assert!(outbox.holds_back("a"), "400 + 333 + 333 ≥ 1000");
        outbox.leave("c");
        assert!(!outbox.holds_back("a"), "400 of a share grown to 500");
    }

    #[test]
    fn drop_oldest_takes_from_the_plugin_over_its_share_never_from_the_neighbour() {
        let mut outbox = outbox(OutboxOverflow::DropOldest, &["flood", "calm"]);
        produce(&mut outbox, "calm", 0, 3, 100);
        produce(&mut outbox, "flood", 10, 9, 100);
        let dropped = outbox.enforce();
        let keys: Vec<(String, u64)> = dropped.iter().map(|o| (o.plugin.clone(), o.key)).collect();
        // calm claims its share of 500, flood holds 900: flood's oldest go until it is down to
        // its share.
        let expected: Vec<(String, u64)> = (10..14).map(|k| ("flood".into(), k)).collect();
        assert_eq!(keys, expected);
        assert_eq!(outbox.undelivered(), 3 + 5);
        assert!(outbox.enforce().is_empty(), "nobody is over its share now");
    }

    #[test]
    fn outputs_go_out_in_order_per_plugin_the_plugins_taking_turns() {
        let mut outbox = outbox(OutboxOverflow::Block, &["a", "b"]);
        produce(&mut outbox, "a", 0, 3, 100);
        produce(&mut outbox, "b", 3, 1, 100);
        let order = sent_order(&mut outbox);
        let expected = [("a", 0), ("b", 3), ("a", 1), ("a", 2)];
        assert_eq!(
            order,
            expected.map(|(p, k)| (p.to_owned(), k)).to_vec(),
            "b waits for one of a's outputs, not three"
        );
    }

    #[test]
    fn what_was_on_the_wire_goes_again_first_after_a_reconnection() {
        let mut outbox = outbox(OutboxOverflow::Block, &["a"]);
        produce(&mut outbox, "a", 0, 4, 100);
        let mut taken = 0;
        outbox.send(|_| {
            taken += 1;
            taken <= 2
        });
        assert!(outbox.delivered(0));
        outbox.reconnected();
        assert!(
            !outbox.delivered(1),
            "a late acknowledgement of the old connection"
        );
        let keys: Vec<u64> = sent_order(&mut outbox)
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        assert_eq!(keys, vec![1, 2, 3]);
    }

    #[test]
    fn delivered_outputs_give_their_share_back() {
        let mut outbox = outbox(OutboxOverflow::Block, &["a"]);
        produce(&mut outbox, "a", 0, 10, 100);
        assert!(outbox.holds_back("a"));
        sent_order(&mut outbox);
        (0..3).for_each(|k| assert!(outbox.delivered(k)));
        assert!(!outbox.holds_back("a"));
        assert_eq!(outbox.undelivered(), 7);
    }

    #[test]
    fn outputs_of_a_commit_being_made_count_and_a_failed_commit_gives_them_back() {
        let mut outbox = outbox(OutboxOverflow::Block, &["a"]);
        outbox.made("a", 1000);
        assert!(
            outbox.holds_back("a"),
            "what the commit will keep counts already"
        );
        outbox.keep(Vec::new());
        assert!(!outbox.holds_back("a"));
    }

    #[test]
    fn a_removed_plugin_s_outputs_still_go_out_and_then_it_is_forgotten() {
        let mut outbox = outbox(OutboxOverflow::Block, &["gone", "stays"]);
        produce(&mut outbox, "gone", 0, 2, 100);
        outbox.leave("gone");
        assert_eq!(sent_order(&mut outbox).len(), 2);
        assert!(outbox.delivered(0) && outbox.delivered(1));
        assert_eq!(
            outbox.share(),
            1000,
            "the share is the remaining plugin's alone"
        );
    }
}

//! The message path through the [`Journal`]: what the gateway task does between the broker and
//! the plugins' threads.
//!
//! In: a message routed to plugins joins the current group commit; when the commit is made
//! (the event loop is idle, the batch is full, or it is `commit-interval-ms` old), every
//! message in it is durable, and only then is each acknowledged to the broker, in the order
//! they arrived (MQTT-4.6.0-2). Each plugin then has its own backlog in the journal; a few of
//! its messages at a time ([`WINDOW`]) are in its thread's mailbox, and as it finishes them
//! ([`Done`]) the next ones follow, half a window at a time. A slow or stuck plugin only grows its own backlog: with
//! `drop-oldest` or `drop-newest` bounded by `queue.depth`, with `block` by the journal's
//! size; a full journal stops the gateway taking messages (the broker holds them).
//!
//! Out: a plugin's outputs are written in the same transaction that removes the message from
//! its backlog, then published in order; each stays in the journal until the broker
//! acknowledges it, so none is lost to a dropped connection or a restart. The [`Outbox`] sends
//! them, in order per plugin, the plugins taking turns, and shares its cap
//! (`journal.max-outbox-mib`) fairly: only a plugin holding its share of a full outbox is held
//! back (`block`) or loses its oldest unsent outputs (`drop-oldest`).
//!
//! A message the broker sends again (MQTT's DUP flag, after a connection dropped before our
//! acknowledgement reached it) that is already in the journal is recognised by its packet id
//! and content, acknowledged, and not handed to the plugins twice.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::config::{OutboxOverflow, Overflow};
use crate::gateway::journal::{Batch, Entry, Journal, JournalError, Output};
use crate::gateway::outbox::Outbox;
use crate::metrics::{JournalMetrics, PluginMetrics};
use crate::mqtt::{Client, Delivery, Receipt};
use crate::worker::Message;
use crate::worker::mailbox::Mailbox;
use crate::worker::thread::{Done, Job};

/// Messages of one plugin in its thread's mailbox at once under `block`; the rest wait in the
/// journal. Under the drop policies the window is one message, so that every message but the
/// one in the plugin's hands can still be dropped.
pub const WINDOW: usize = 64;

/// Most messages in one group commit.
const MAX_BATCH: usize = 1024;

/// Packet ids remembered to recognise redeliveries.
const REMEMBERED: usize = 4096;

/// One plugin as the path sees it.
pub struct Lane {
    /// The plugin's mailbox.
    pub mailbox: Arc<Mailbox<Job>>,
    /// Its metrics (drops, queue depth).
    pub metrics: PluginMetrics,
    /// In its mailbox or being handled.
    queued: usize,
    /// Most in its mailbox at once.
    window: usize,
    /// Only in the journal, in arrival order.
    waiting: VecDeque<u64>,
}

impl Lane {
    /// A lane feeding `mailbox`.
    pub fn new(mailbox: Arc<Mailbox<Job>>, metrics: PluginMetrics) -> Self {
        Self {
            mailbox,
            metrics,
            queued: 0,
            window: WINDOW,
            waiting: VecDeque::new(),
        }
    }

    fn backlog(&self) -> usize {
        self.queued + self.waiting.len()
    }

    /// What the overflow policy counts: everything but the message in the plugin's hands.
    fn queue(&self) -> usize {
        self.backlog().saturating_sub(1)
    }
}

/// How the path is set up.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Longest a message waits for its group commit.
    pub commit_interval: Duration,
    /// A plugin's backlog under the drop policies.
    pub depth: usize,
    /// What to do when a plugin's backlog is full.
    pub overflow: Overflow,
    /// Most outputs sent and not yet acknowledged at once; the rest wait in the outbox. It must
    /// stay below rumqttc's own in-flight window, with room for the gateway's other publishes:
    /// rumqttc takes no request at all while that window is full, so our PUBACKs for inbound
    /// messages would queue behind outputs, and a broker that holds its PUBACKs until we
    /// acknowledge its deliveries (rumqttd) would wait for us while we wait for it.
    pub max_unacked: usize,
    /// Most bytes the outputs waiting for the broker may hold.
    pub max_outbox: u64,
    /// What to do when they hold that much.
    pub outbox_overflow: OutboxOverflow,
}

/// Something that arrived while the journal was full.
enum Held {
    /// A message for plugins: delivery, targets, hops, connection.
    Message(Delivery, Vec<Arc<str>>, u8, u64),
    /// A message that only needs its acknowledgement (on the gateway's own topics).
    Ack(Receipt, u64),
}

/// The path, owned by the gateway task.
pub struct Flow {
    journal: Journal,
    policy: Policy,
    batch: Batch,
    /// Acknowledgements due once the batch is committed, in arrival order, with the connection
    /// they belong to.
    acks: Vec<(Receipt, u64)>,
    /// Acknowledgements of committed messages that did not fit the client's request queue yet,
    /// in order: they go before anything else.
    unsent_acks: VecDeque<(Receipt, u64)>,
    /// The messages of the batch, by seq, to hand to plugins once committed without reading
    /// them back.
    fresh: HashMap<u64, Entry>,
    batch_started: Option<Instant>,
    lanes: BTreeMap<Arc<str>, Lane>,
    outbox: Outbox,
    recent: HashMap<u16, u64>,
    recent_order: VecDeque<u16>,
    /// What arrived while the journal was full, unacknowledged (the broker's in-flight window
    /// bounds it), in arrival order.
    held: VecDeque<Held>,
    full_logged: bool,
    metrics: JournalMetrics,
}

impl Flow {
    /// The path over `journal`, with the outputs it held when opened (`Recovered::outbox`) to
    /// send first; the backlogs it held are handed to their lanes by [`Flow::add_lane`].
    pub fn new(
        journal: Journal,
        outbox: Vec<Output>,
        policy: Policy,
        metrics: JournalMetrics,
    ) -> Self {
        let mut flow = Self {
            journal,
            policy,
            batch: Batch::default(),
            acks: Vec::new(),
            unsent_acks: VecDeque::new(),
            fresh: HashMap::new(),
            batch_started: None,
            lanes: BTreeMap::new(),
            outbox: Outbox::new(
                policy.max_outbox,
                policy.outbox_overflow,
                policy.max_unacked,
                outbox,
            ),
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            held: VecDeque::new(),
            full_logged: false,
            metrics,
        };
        // An outbox left full (the broker was away at the last shutdown) holds the plugins
        // back from the start, or sheds what no longer fits a smaller cap.
        flow.enforce_outbox_cap();
        flow.set_gauges();
        flow
    }

    /// Adds plugin `name`'s lane, with `backlog` (seqs in the journal from before) to hand it
    /// first.
    pub fn add_lane(&mut self, name: Arc<str>, mut lane: Lane, backlog: Vec<u64>) {
        lane.waiting.extend(backlog);
        if self.policy.overflow != Overflow::Block {
            lane.window = 1;
        }
        self.outbox.join(&name);
        self.lanes.insert(name.clone(), lane);
        self.refill(&name, false);
    }

    /// Forgets plugin `name`: its lane and its whole backlog.
    pub fn remove_lane(&mut self, name: &str) -> Result<usize, JournalError> {
        self.lanes.remove(name);
        self.outbox.leave(name);
        self.journal.forget(name)
    }

    /// Records the filters the broker session is subscribed to (see `Journal`).
    pub fn record_subscriptions(
        &mut self,
        filters: &std::collections::BTreeSet<String>,
    ) -> Result<(), JournalError> {
        self.journal.record_subscriptions(filters)
    }

    /// Forgets backlogs of plugins that are not here (removed while the gateway was down).
    pub fn forget(&mut self, name: &str) -> Result<usize, JournalError> {
        self.journal.forget(name)
    }

    /// A message from the broker for `targets` (already routed), received on connection
    /// `generation`.
    pub fn arrive(
        &mut self,
        delivery: Delivery,
        targets: Vec<Arc<str>>,
        hops: u8,
        generation: u64,
    ) {
        if self.journal.is_full() || !self.held.is_empty() {
            if !self.full_logged {
                tracing::warn!(
                    bytes = self.journal.bytes(),
                    "journal full: holding new messages unacknowledged (the broker keeps the rest) until plugins catch up"
                );
                self.full_logged = true;
            }
            if delivery.receipt.wanted() {
                self.held
                    .push_back(Held::Message(delivery, targets, hops, generation));
            } else {
                tracing::warn!(
                    topic = delivery.topic,
                    "journal full: QoS 0 message dropped"
                );
            }
            return;
        }
        self.accept(delivery, targets, hops, generation);
    }

    fn accept(&mut self, delivery: Delivery, targets: Vec<Arc<str>>, hops: u8, generation: u64) {
        if delivery.pkid != 0 {
            let hash = content_hash(&delivery);
            if delivery.dup && self.recent.get(&delivery.pkid) == Some(&hash) {
                tracing::debug!(
                    topic = delivery.topic,
                    "redelivery of a journaled message: acknowledged again, not handled twice"
                );
                self.ack_after_commit(delivery.receipt, generation);
                return;
            }
            // A first delivery under this packet id means the broker had our acknowledgement
            // of the one before: only this message is remembered under it.
            self.remember(delivery.pkid, hash);
        }
        let seq = self.journal.next_seq();
        let entry = Entry {
            seq,
            topic: delivery.topic,
            payload: delivery.payload,
            received_at_ms: crate::clock::now_ms(),
            hops,
        };
        let mut kept = Vec::with_capacity(targets.len());
        for name in targets {
            // Counted at once, so that a burst within one commit meets the policy too; a
            // message dropped from the same batch is written and removed in one transaction.
            let Some(lane) = self.lanes.get_mut(&name) else {
                continue;
            };
            if self.policy.overflow != Overflow::Block && lane.queue() >= self.policy.depth {
                let dropped_oldest = self.policy.overflow == Overflow::DropOldest
                    && lane.waiting.pop_front().is_some_and(|old| {
                        self.batch.done.push((name.to_string(), old));
                        true
                    });
                lane.metrics.drops.inc();
                tracing::warn!(
                    plugin = &*name,
                    topic = entry.topic,
                    dropped = lane.metrics.drops.get(),
                    "backlog full: message dropped by the overflow policy"
                );
                if !dropped_oldest {
                    continue;
                }
            }
            lane.waiting.push_back(seq);
            kept.push(name.to_string());
        }
        if !kept.is_empty() {
            self.batch.arrived.push((entry.clone(), kept));
            self.fresh.insert(seq, entry);
        }
        self.ack_after_commit(delivery.receipt, generation);
    }

    /// A message that needs nothing but its acknowledgement, in its place in arrival order.
    pub fn acknowledge(&mut self, receipt: Receipt, generation: u64) {
        if self.held.is_empty() {
            self.ack_after_commit(receipt, generation);
        } else if receipt.wanted() {
            self.held.push_back(Held::Ack(receipt, generation));
        }
    }

    fn ack_after_commit(&mut self, receipt: Receipt, generation: u64) {
        if receipt.wanted() {
            self.acks.push((receipt, generation));
        }
        self.batch_started.get_or_insert_with(Instant::now);
    }

    fn remember(&mut self, pkid: u16, hash: u64) {
        if self.recent.insert(pkid, hash).is_none() {
            self.recent_order.push_back(pkid);
        }
        if self.recent_order.len() > REMEMBERED
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent.remove(&old);
        }
    }

    /// A plugin's thread finished a message.
    pub fn done(&mut self, done: Done) {
        let Done {
            plugin,
            seq,
            outputs,
            qos,
            ..
        } = done;
        self.batch.done.push((plugin.to_string(), seq));
        for (topic, payload) in outputs {
            let bytes = crate::gateway::journal::stored_bytes(&topic, &payload);
            self.outbox.made(&plugin, bytes);
            self.batch
                .outputs
                .push((plugin.to_string(), topic, payload, qos));
        }
        self.batch_started.get_or_insert_with(Instant::now);
        let Some(lane) = self.lanes.get_mut(&plugin) else {
            return;
        };
        lane.queued = lane.queued.saturating_sub(1);
        // Its next messages need not wait for this to be committed, only for their own
        // commit. Refilled half a window at a time: one journal read and at most one wake-up
        // for many messages, while the other half keeps the plugin busy.
        if lane.queued <= lane.window / 2 {
            self.refill(&plugin, false);
        }
    }

    /// The broker has output `key`.
    pub fn delivered(&mut self, key: u64) {
        if self.outbox.delivered(key) {
            self.batch.delivered.push(key);
            self.batch_started.get_or_insert_with(Instant::now);
        }
    }

    /// Whether a group commit is waiting.
    pub fn has_batch(&self) -> bool {
        self.batch_started.is_some()
    }

    /// Whether the batch should be committed now, without waiting for the event loop to go
    /// idle.
    pub fn batch_due(&self) -> bool {
        self.batch.arrived.len() + self.acks.len() >= MAX_BATCH
            || self
                .batch_started
                .is_some_and(|t| t.elapsed() >= self.policy.commit_interval)
    }

    /// Commits the batch; then acknowledges its messages in order on `client` (if still on
    /// `generation`), hands them to the plugins' mailboxes and sends what the outbox holds.
    pub fn commit(&mut self, client: &Client, generation: u64) -> Result<(), JournalError> {
        self.batch_started = None;
        let batch = std::mem::take(&mut self.batch);
        let kept = if batch.is_empty() {
            Vec::new()
        } else {
            match self.journal.commit(batch) {
                Ok(kept) => kept,
                Err(e) => {
                    // Nothing of the batch is acknowledged or handed on: the broker sends its
                    // messages again once the connection is renewed, and they are new to us.
                    self.outbox.keep(Vec::new());
                    self.acks.clear();
                    for lane in self.lanes.values_mut() {
                        lane.waiting.retain(|seq| !self.fresh.contains_key(seq));
                    }
                    self.fresh.clear();
                    self.recent.clear();
                    self.recent_order.clear();
                    return Err(e);
                }
            }
        };
        self.outbox.keep(kept);
        self.enforce_outbox_cap();
        self.unsent_acks.extend(self.acks.drain(..));
        self.flush_acks(client, generation);
        let names: Vec<Arc<str>> = self.lanes.keys().cloned().collect();
        for name in names {
            self.refill(&name, true);
        }
        self.fresh.clear();
        if !self.journal.is_full() {
            self.full_logged = false;
            while !self.journal.is_full()
                && let Some(held) = self.held.pop_front()
            {
                match held {
                    Held::Message(delivery, targets, hops, generation) => {
                        self.accept(delivery, targets, hops, generation);
                    }
                    Held::Ack(receipt, generation) => self.ack_after_commit(receipt, generation),
                }
            }
        }
        self.send(client, generation);
        self.set_gauges();
        Ok(())
    }

    /// The journal's gauges, as of the last commit.
    fn set_gauges(&self) {
        let m = &self.metrics;
        m.backlog_bytes.set(self.journal.backlog_bytes() as i64);
        m.outbox_bytes.set(self.journal.outbox_bytes() as i64);
        m.outputs_waiting.set(self.undelivered() as i64);
    }

    /// Applies the outbox's overflow policy after a commit: what it drops, the next commit
    /// forgets.
    fn enforce_outbox_cap(&mut self) {
        for output in self.outbox.enforce() {
            self.metrics.output_dropped(&output.plugin);
            self.batch.dropped.push(output.key);
            self.batch_started.get_or_insert_with(Instant::now);
        }
    }

    /// Moves plugin `name`'s next waiting messages into its mailbox, as far as its window
    /// allows: from the batch just committed (`committed`), or read back from the journal.
    /// Messages of a batch not yet committed wait for it.
    pub fn refill(&mut self, name: &str, committed: bool) {
        let paused = self.outbox.holds_back(name);
        let Some(lane) = self.lanes.get_mut(name) else {
            return;
        };
        // Under `block`, a plugin holding its share of a full outbox waits for the broker.
        let mut room = match paused {
            true => 0,
            false => lane.window.saturating_sub(lane.queued),
        };
        let (mut from_disk, mut jobs) = (Vec::new(), Vec::new());
        while room > 0
            && let Some(&seq) = lane.waiting.front()
        {
            if let Some(entry) = self.fresh.get(&seq) {
                // Older ones first: whatever is read back precedes this batch.
                if !committed || !from_disk.is_empty() {
                    break;
                }
                jobs.push(job(entry));
            } else {
                from_disk.push(seq);
            }
            lane.waiting.pop_front();
            room -= 1;
        }
        if !from_disk.is_empty() {
            match self.journal.read(name, &from_disk) {
                Ok(entries) => jobs.extend(entries.iter().map(job)),
                Err(e) => {
                    tracing::error!(
                        plugin = name,
                        "{e}: its waiting messages stay in the journal"
                    );
                    for seq in from_disk.into_iter().rev() {
                        lane.waiting.push_front(seq);
                    }
                }
            }
        }
        lane.queued += jobs.len();
        lane.mailbox.push_all(jobs);
        lane.metrics.queue_depth.set(lane.backlog() as i64);
    }

    /// A new connection: what was sent on the old one and not acknowledged goes again, first.
    pub fn reconnected(&mut self) {
        self.outbox.reconnected();
    }

    /// Queues the acknowledgements of committed messages, in order, while the client takes
    /// them. An earlier connection's packet ids mean nothing on this one: the broker sends
    /// those messages again, and they are recognised as journaled.
    fn flush_acks(&mut self, client: &Client, generation: u64) {
        while let Some((receipt, of)) = self.unsent_acks.pop_front() {
            if of == generation && client.try_ack(&receipt).is_err() {
                self.unsent_acks.push_front((receipt, of));
                break;
            }
        }
    }

    /// Sends what is due on `client` (of connection `generation`): acknowledgements first,
    /// then the outbox in order, while the client takes them.
    pub fn send(&mut self, client: &Client, generation: u64) {
        self.flush_acks(client, generation);
        self.outbox.send(|output| {
            let qos = match output.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            // False when the request queue is full: the rest goes after the next events.
            client
                .try_publish_tracked(output.key, &output.topic, qos, output.payload.clone())
                .is_ok()
        });
    }

    /// Plugins with messages still in the journal, and how many.
    pub fn unfinished(&self) -> Vec<(Arc<str>, usize)> {
        self.lanes
            .iter()
            .filter(|(_, l)| l.backlog() > 0)
            .map(|(n, l)| (n.clone(), l.backlog()))
            .collect()
    }

    /// Whether the journal is full: new messages wait at the broker.
    pub fn is_full(&self) -> bool {
        self.journal.is_full()
    }

    /// Outputs the broker does not have yet.
    pub fn undelivered(&self) -> usize {
        self.outbox.undelivered()
    }
}

/// The job that hands `entry` to a plugin: the plugin's own copy of the payload, the one
/// thing it gets to keep.
fn job(entry: &Entry) -> Job {
    Job::Message {
        msg: Message {
            topic: entry.topic.clone(),
            payload: entry.payload.to_vec(),
            received_at_ms: entry.received_at_ms,
        },
        seq: entry.seq,
        hops: entry.hops,
    }
}

fn content_hash(delivery: &Delivery) -> u64 {
    let mut hasher = DefaultHasher::new();
    delivery.topic.hash(&mut hasher);
    delivery.payload.hash(&mut hasher);
    hasher.finish()
}

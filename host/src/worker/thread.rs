//! A plugin's own thread: the loop that takes its mailbox's jobs in order and hands each
//! message to the [`Worker`].
//!
//! Each message's outputs (or, if it failed, its dead letter) go back to the gateway task as a
//! [`Done`] (those of a burst of quick messages together, see [`Held`]), which writes them to the journal's outbox in the same transaction that takes the
//! message off the plugin's backlog, and publishes them from there. A hot swap arrives as a
//! [`Job::Swap`] between two messages: every message before it is handled by the old version,
//! every one after by the new; during [`probation`] the old version stays ready, and if the new
//! one keeps trapping the thread goes back to it, hands it the message that trapped, and
//! reports [`Report::RolledBack`]. Plugin code runs on this thread only, never on the
//! gateway's. The thread knows nothing of MQTT or of management: what it has to say goes up
//! as a [`Report`], and a swap's replies through the [`Progress`] the swap carries.
//!
//! [`probation`]: super::probation

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::mailbox::Mailbox;
use super::probation::{Outcome, Probation, Trial};
use super::shadow::ShadowTap;
use super::vitals::Vitals;
use super::{Message, Worker};
use crate::metrics::{PluginMetrics, observe};

/// What a plugin's thread is given, in order.
pub enum Job {
    /// One inbound message from the plugin's backlog in the journal.
    Message {
        /// The message.
        msg: Message,
        /// Its seq in the journal.
        seq: u64,
        /// Plugins its chain has passed through before (0 for a message from outside).
        hops: u8,
    },
    /// A new version to switch to before the next message.
    Swap(Box<Swap>),
    /// An operator started the plugin: forget its failures, even if it was failed for good.
    Revive,
    /// Offer every message from now on to a shadow (`Some`), or stop (`None`).
    Shadow(Option<ShadowTap>),
}

/// A hot swap, ready: the new version is instantiated and its `init` has run.
pub struct Swap {
    /// The new version.
    pub worker: Worker,
    /// How it is watched, if at all.
    pub probation: Option<Probation>,
    /// Where the swap's progress goes.
    pub progress: Box<dyn Progress>,
    /// When the update was asked for.
    pub received: Instant,
}

/// Where a hot swap's progress is told: the replies to the command that asked for it.
pub trait Progress: Send {
    /// Tells `state` (`live`, `rolled-back`, ...) with `detail`.
    fn send(&self, state: &str, detail: Value);
}

/// A plugin's thread is done with one message: what it published (or its dead letter).
#[derive(Debug)]
pub struct Done {
    /// The plugin.
    pub plugin: Arc<str>,
    /// The message's seq.
    pub seq: u64,
    /// Plugins the message's chain had passed through before this one.
    pub hops: u8,
    /// Its outputs: topic and payload.
    pub outputs: Vec<(String, Vec<u8>)>,
    /// The QoS they go out with.
    pub qos: u8,
}

/// What a plugin's thread tells the gateway task.
pub enum Report {
    /// It is done with these messages, in order.
    Done(Vec<Done>),
    /// A new version kept trapping on probation; the thread went back to the previous one.
    RolledBack {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
        /// The swap's progress, to tell the rollback.
        progress: Box<dyn Progress>,
    },
}

/// What every plugin thread shares.
#[derive(Clone)]
pub struct Shared {
    /// Where the thread's reports go: to the gateway task.
    pub reports: UnboundedSender<Report>,
    /// How new versions are watched.
    pub probation: Probation,
}

/// Most [`Done`]s held back to go up together.
const HOLD_MAX: usize = 32;

/// Longest a [`Done`] is held back.
const HOLD_FOR: Duration = Duration::from_millis(1);

/// A call shorter than this makes the next one likely short too: its [`Done`] may wait for it.
const QUICK_CALL: Duration = Duration::from_micros(200);

/// The [`Done`]s of a burst of quick messages, held back to go up to the gateway task as one
/// report: one wake-up of the task per burst instead of one per message. A `Done` is held only
/// while more messages are queued, the calls are quick, and for at most [`HOLD_FOR`]; a slow
/// plugin, or the last message of a burst, reports at once.
#[derive(Default)]
struct Held {
    dones: Vec<Done>,
    since: Option<Instant>,
}

impl Held {
    /// Holds `done`, or sends everything held if it should go now (`more_queued` and
    /// `call` say whether the next call is likely to follow soon). False if the gateway task
    /// is gone.
    fn add(&mut self, done: Done, call: Duration, more_queued: bool, shared: &Shared) -> bool {
        self.dones.push(done);
        let since = *self.since.get_or_insert_with(Instant::now);
        let hold = more_queued
            && call < QUICK_CALL
            && self.dones.len() < HOLD_MAX
            && since.elapsed() < HOLD_FOR;
        hold || self.send(shared)
    }

    /// Sends what is held. False if the gateway task is gone.
    fn send(&mut self, shared: &Shared) -> bool {
        self.since = None;
        if self.dones.is_empty() {
            return true;
        }
        let dones = std::mem::take(&mut self.dones);
        shared.reports.send(Report::Done(dones)).is_ok()
    }
}

/// A new version on probation, with the old one kept ready.
struct OnProbation {
    previous: Worker,
    trial: Trial,
    progress: Box<dyn Progress>,
}

/// A plugin's worker thread: start the plugin, then handle each queued message, publish its
/// outputs (or its failure to the dead-letter topic), then let go of it, which acknowledges it.
/// Swaps versions where the mailbox says so, and goes back during probation if the new one
/// keeps trapping. Reports its vitals around every message.
pub fn serve(
    mut worker: Worker,
    mailbox: &Mailbox<Job>,
    shared: &Shared,
    dead_letter_topic: &str,
    metrics: &PluginMetrics,
    vitals: &Vitals,
) {
    vitals.entering_call();
    match worker.start() {
        Ok(()) => tracing::info!(plugin = worker.plugin().name(), "plugin started"),
        Err(failure) => tracing::error!(plugin = worker.plugin().name(), "{failure}"),
    }
    vitals.left_call(&worker);
    let origin: Arc<str> = worker.plugin().name().into();
    let mut probation: Option<OnProbation> = None;
    let mut shadow: Option<ShadowTap> = None;
    let mut held = Held::default();
    loop {
        let job = match mailbox.try_pop() {
            Some(job) => job,
            None => {
                // Nothing queued: what is held goes up before the thread waits.
                if !held.send(shared) {
                    return;
                }
                match mailbox.pop() {
                    Some(job) => job,
                    None => return,
                }
            }
        };
        let (msg, seq, hops) = match job {
            Job::Message { msg, seq, hops } => (msg, seq, hops),
            Job::Revive => {
                worker.revive();
                vitals.left_call(&worker);
                continue;
            }
            Job::Shadow(tap) => {
                shadow = tap;
                continue;
            }
            Job::Swap(swap) => {
                let swap = *swap;
                // A shadow compares with one live version: a new one ends it.
                shadow = None;
                let previous = std::mem::replace(&mut worker, swap.worker);
                let name = worker.plugin().name().to_owned();
                tracing::info!(plugin = name, version = %worker.plugin().manifest().version, "hot swap: new version live");
                swap.progress.send(
                    "live",
                    json!({ "swap_ms": swap.received.elapsed().as_secs_f64() * 1e3 }),
                );
                probation = swap.probation.map(|policy| OnProbation {
                    previous,
                    trial: Trial::new(policy),
                    progress: swap.progress,
                });
                continue;
            }
        };
        metrics.messages_in.inc();
        vitals.entering_call();
        let (traps, started) = (worker.stats().traps, Instant::now());
        let mut handled = worker.handle(&msg);
        let trapped = worker.stats().traps - traps;
        metrics.traps.inc_by(trapped);
        match probation.as_mut().map(|p| p.trial.record(trapped > 0)) {
            None | Some(Outcome::Continue) => {}
            Some(Outcome::Commit) => probation = None,
            Some(Outcome::RollBack) => {
                // Back to the old version, which also takes the message the new one trapped on.
                let Some(p) = probation.take() else { continue };
                let reason = handled
                    .as_ref()
                    .err()
                    .map(|e| e.failure.to_string())
                    .unwrap_or_default();
                tracing::error!(
                    plugin = worker.plugin().name(),
                    "new version trapped on probation ({reason}): rolling back"
                );
                worker = p.previous;
                // The messages before this one were the new version's: they report first.
                held.send(shared);
                let _ = shared.reports.send(Report::RolledBack {
                    plugin: worker.plugin().name().to_owned(),
                    reason: format!("the new version trapped on probation: {reason}"),
                    progress: p.progress,
                });
                handled = worker.handle(&msg);
            }
        }
        let call = started.elapsed();
        observe(&metrics.handling, call);
        vitals.left_call(&worker);
        let handled_ok = handled.is_ok();
        let outputs = match handled {
            Ok(published) => {
                metrics.messages_out.inc_by(published.len() as u64);
                published
                    .into_iter()
                    .map(|p| (p.topic, p.payload))
                    .collect()
            }
            Err(error) => {
                metrics.failures.inc();
                let letter = dead_letter(
                    json!({
                        "plugin": error.plugin,
                        "topic": error.topic,
                        "error": error.failure.to_string(),
                        "attempts": error.attempts,
                    }),
                    &msg.payload,
                    worker.plugin().limits().max_payload_bytes as usize,
                );
                vec![(
                    dead_letter_topic.to_owned(),
                    letter.to_string().into_bytes(),
                )]
            }
        };
        if let Some(tap) = &shadow {
            let live = handled_ok.then_some(outputs.as_slice());
            if !tap.offer(&msg, live, call.as_secs_f64() * 1e3) {
                shadow = None;
            }
        }
        let done = Done {
            plugin: origin.clone(),
            seq,
            hops,
            outputs,
            qos: worker.plugin().manifest().publish_qos,
        };
        if !held.add(done, call, mailbox.has_queued(), shared) {
            // The gateway task is gone (shutting down): the message stays in the journal.
            return;
        }
    }
}

/// How much of an input over the limit a dead letter keeps: enough to recognise it.
const DEAD_LETTER_EXCERPT: usize = 1024;

/// A dead letter: `fields` with the input in base64, whole if it is within `limit` (so it can
/// be replayed), else its first kilobyte, marked `truncated`, so a dead letter is never too
/// large to publish.
pub fn dead_letter(mut fields: Value, payload: &[u8], limit: usize) -> Value {
    let truncated = payload.len() > limit;
    let kept = if truncated {
        &payload[..DEAD_LETTER_EXCERPT.min(payload.len())]
    } else {
        payload
    };
    if let Some(map) = fields.as_object_mut() {
        map.insert("payload_base64".into(), json!(BASE64.encode(kept)));
        map.insert("payload_bytes".into(), json!(payload.len()));
        map.insert("truncated".into(), json!(truncated));
    }
    fields
}

//! A candidate version in shadow: it gets a copy of every message the live version handles, on
//! a thread of its own, and its outputs are compared with the live version's, never published
//! as the plugin's (only under `edgewise/<gateway>/shadow/<plugin>/...`, when asked).
//!
//! The live thread hands each message and its outputs to a [`ShadowTap`] after it is done with
//! them; the tap never blocks: when the shadow is [`TAP_DEPTH`] messages behind, the message is
//! skipped (counted). So the live version's messages, outputs and order are untouched, and its
//! latency grows only by a copy of the message and the CPU the shadow takes beside it.
//!
//! The shadow thread compares per message: with an `[evaluate]` classification, the labels
//! (and which label turned into which); otherwise the outputs, topic and payload, exactly. It
//! reports a [`Snapshot`] every second, and when the trial's window ends (enough messages
//! compared, or the time is up) its [`Judgement`]. The manager decides what follows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use edgewise_signing::TopicFilter;
use edgewise_signing::command::ShadowTrial;
use edgewise_signing::evaluate::TaskKind;
use serde::Serialize;
use serde_json::Value;

use super::{Message, Worker};
use crate::evaluate::gate::round;
use crate::evaluate::metrics::percentile;

/// Messages the shadow may be behind before the live thread skips it.
pub const TAP_DEPTH: usize = 64;

/// Disagreements kept as examples.
const SAMPLES: usize = 5;

/// Latencies kept for the percentiles (the most recent).
const LATENCIES: usize = 1000;

/// How often the shadow reports how it is doing.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// What the live thread hands the shadow: a message and what the live version made of it.
struct Observed {
    msg: Message,
    /// The live version's outputs, or `None` if it failed on the message.
    live: Option<Vec<(String, Vec<u8>)>>,
    live_ms: f64,
}

/// The live thread's end: offers each message to the shadow without ever waiting for it.
pub struct ShadowTap {
    tx: SyncSender<Observed>,
    behind: Arc<AtomicUsize>,
    skipped: Arc<AtomicU64>,
}

impl ShadowTap {
    /// Offers `msg` and the live outputs (`None`: it failed) to the shadow. False when the
    /// shadow is gone: drop the tap.
    pub fn offer(&self, msg: &Message, live: Option<&[(String, Vec<u8>)]>, live_ms: f64) -> bool {
        if self.behind.load(Ordering::Relaxed) >= TAP_DEPTH {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let observed = Observed {
            msg: msg.clone(),
            live: live.map(<[_]>::to_vec),
            live_ms,
        };
        match self.tx.try_send(observed) {
            Ok(()) => {
                self.behind.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// How the shadow is doing, for the status and the metrics.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    /// The candidate's version.
    pub version: String,
    /// Messages both versions handled and that were compared.
    pub compared: u64,
    /// Of those, the ones they agreed on.
    pub agreed: u64,
    /// `agreed / compared` (1 before any comparison).
    pub agreement: f64,
    /// Messages the shadow skipped because it was behind.
    pub skipped: u64,
    /// Messages the candidate failed on.
    pub failed: u64,
    /// With labels: how often each live label became another in the shadow, `live→shadow`.
    pub disagreements: BTreeMap<String, u64>,
    /// The first disagreements, as examples: topic, live outputs, shadow outputs.
    pub samples: Vec<Value>,
    /// Time of one message in each version, p50 and p99, ms.
    pub live_p50_ms: f64,
    /// See `live_p50_ms`.
    pub live_p99_ms: f64,
    /// See `live_p50_ms`.
    pub shadow_p50_ms: f64,
    /// See `live_p50_ms`.
    pub shadow_p99_ms: f64,
    /// Seconds since the shadow started.
    pub elapsed_s: f64,
}

/// The trial's outcome, when its window ended.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// Whether the criteria hold.
    pub passed: bool,
    /// In words.
    pub reason: String,
    /// The numbers it was judged on.
    pub snapshot: Snapshot,
}

/// What the shadow thread says, to whoever started it.
pub enum Said {
    /// How it is doing (every second while messages come).
    Progress(Snapshot),
    /// Its window ended: judged.
    Judged(Judgement),
    /// The live version went away (stopped, removed, swapped): the trial ends unjudged.
    LiveGone(Snapshot),
}

/// How two versions' outputs are compared.
#[derive(Clone)]
pub enum Comparison {
    /// By the label at this JSON pointer, in the first output on `topic` that has one.
    Label {
        /// The pointer.
        pointer: String,
        /// Only outputs on these topics.
        topic: Option<TopicFilter>,
    },
    /// Topic and payload, all of them, exactly.
    Exact,
}

impl Comparison {
    /// By label for a manifest whose `[evaluate]` is a classification, else exactly.
    pub fn for_manifest(manifest: &edgewise_signing::Manifest) -> Self {
        match &manifest.evaluate {
            Some(e) if e.kind == TaskKind::Classification => Comparison::Label {
                pointer: e.label.clone().unwrap_or_default(),
                topic: e.topic.as_deref().and_then(|t| TopicFilter::parse(t).ok()),
            },
            _ => Comparison::Exact,
        }
    }

    /// The label of a version's outputs (`(failed)`, `(none)` as in an evaluation).
    fn label(&self, outputs: Option<&[(String, Vec<u8>)]>) -> String {
        let Comparison::Label { pointer, topic } = self else {
            return String::new();
        };
        let Some(outputs) = outputs else {
            return crate::evaluate::FAILED.into();
        };
        let outputs: Vec<Value> = outputs
            .iter()
            .filter(|(t, _)| topic.as_ref().is_none_or(|f| f.matches(t)))
            .filter_map(|(_, p)| serde_json::from_slice(p).ok())
            .collect();
        crate::evaluate::predicted_label(&outputs, pointer).0
    }
}

/// Where the shadow sends what it says, and publishes its outputs when asked.
pub trait ShadowSink: Send + 'static {
    /// Hears a report.
    fn said(&self, said: Said);
    /// Publishes one output of the candidate (called only when the trial asks for it).
    fn publish(&self, topic: &str, payload: &[u8]);
}

/// Starts `worker` (the candidate, its `init` done) in shadow on a thread of its own; the tap
/// goes to the live plugin's thread.
pub fn spawn(
    worker: Worker,
    trial: ShadowTrial,
    comparison: Comparison,
    sink: impl ShadowSink,
) -> std::io::Result<ShadowTap> {
    let (tx, rx) = std::sync::mpsc::sync_channel(TAP_DEPTH);
    let behind = Arc::new(AtomicUsize::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    let tap = ShadowTap {
        tx,
        behind: behind.clone(),
        skipped: skipped.clone(),
    };
    let name = format!("shadow-{}", worker.plugin().name());
    std::thread::Builder::new().name(name).spawn(move || {
        let shadow = Shadow {
            worker,
            trial,
            comparison,
            started: Instant::now(),
            snapshot: Snapshot::default(),
            live_ms: Vec::new(),
            shadow_ms: Vec::new(),
        };
        shadow.serve(&rx, &behind, &skipped, &sink);
    })?;
    Ok(tap)
}

struct Shadow {
    worker: Worker,
    trial: ShadowTrial,
    comparison: Comparison,
    started: Instant,
    snapshot: Snapshot,
    live_ms: Vec<f64>,
    shadow_ms: Vec<f64>,
}

impl Shadow {
    fn serve(
        mut self,
        rx: &Receiver<Observed>,
        behind: &AtomicUsize,
        skipped: &AtomicU64,
        sink: &impl ShadowSink,
    ) {
        self.snapshot.version = self.worker.plugin().manifest().version.to_string();
        let window = Duration::from_secs(self.trial.max_seconds);
        let mut judged = false;
        let mut last_report = Instant::now();
        loop {
            let observed = match rx.recv_timeout(REPORT_EVERY) {
                Ok(observed) => Some(observed),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.refresh(skipped);
                    sink.said(Said::LiveGone(self.snapshot));
                    return;
                }
            };
            if let Some(observed) = observed {
                behind.fetch_sub(1, Ordering::Relaxed);
                self.compare(observed, sink);
            }
            let ended =
                self.snapshot.compared >= self.trial.messages || self.started.elapsed() >= window;
            if last_report.elapsed() >= REPORT_EVERY || (ended && !judged) {
                self.refresh(skipped);
                last_report = Instant::now();
                if ended && !judged {
                    // Judged once; the shadow keeps comparing until the manager ends it (an
                    // operator may promote by hand).
                    judged = true;
                    sink.said(Said::Judged(self.judge()));
                } else {
                    sink.said(Said::Progress(self.snapshot.clone()));
                }
            }
        }
    }

    fn compare(&mut self, observed: Observed, sink: &impl ShadowSink) {
        let started = Instant::now();
        let shadow: Option<Vec<(String, Vec<u8>)>> =
            self.worker.handle(&observed.msg).ok().map(|published| {
                published
                    .into_iter()
                    .map(|p| (p.topic, p.payload))
                    .collect()
            });
        push_bounded(&mut self.shadow_ms, started.elapsed().as_secs_f64() * 1e3);
        push_bounded(&mut self.live_ms, observed.live_ms);
        let s = &mut self.snapshot;
        s.compared += 1;
        if shadow.is_none() {
            s.failed += 1;
        }
        let (agree, live_label, shadow_label) = match &self.comparison {
            Comparison::Exact => (observed.live == shadow, None, None),
            labelled @ Comparison::Label { .. } => {
                let (l, sh) = (
                    labelled.label(observed.live.as_deref()),
                    labelled.label(shadow.as_deref()),
                );
                (l == sh, Some(l), Some(sh))
            }
        };
        if agree {
            s.agreed += 1;
        } else {
            if let (Some(l), Some(sh)) = (live_label, shadow_label) {
                *s.disagreements.entry(format!("{l}→{sh}")).or_default() += 1;
            }
            if s.samples.len() < SAMPLES {
                s.samples.push(serde_json::json!({
                    "topic": observed.msg.topic,
                    "live": render(observed.live.as_deref()),
                    "shadow": render(shadow.as_deref()),
                }));
            }
        }
        if self.trial.publish {
            for (topic, payload) in shadow.iter().flatten() {
                sink.publish(topic, payload);
            }
        }
    }

    fn refresh(&mut self, skipped: &AtomicU64) {
        let sorted = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v
        };
        let (live, shadow) = (sorted(&self.live_ms), sorted(&self.shadow_ms));
        let s = &mut self.snapshot;
        s.skipped = skipped.load(Ordering::Relaxed);
        s.agreement = if s.compared == 0 {
            1.0
        } else {
            s.agreed as f64 / s.compared as f64
        };
        s.agreement = round(s.agreement);
        s.live_p50_ms = round(percentile(&live, 50.0));
        s.live_p99_ms = round(percentile(&live, 99.0));
        s.shadow_p50_ms = round(percentile(&shadow, 50.0));
        s.shadow_p99_ms = round(percentile(&shadow, 99.0));
        s.elapsed_s = round(self.started.elapsed().as_secs_f64());
    }

    fn judge(&self) -> Judgement {
        let s = &self.snapshot;
        let t = &self.trial;
        let (passed, reason) = if s.compared == 0 {
            (
                false,
                format!("no message to compare in {} s", t.max_seconds),
            )
        } else if s.failed > 0 {
            (
                false,
                format!(
                    "the candidate failed on {} of {} messages",
                    s.failed, s.compared
                ),
            )
        } else if (s.agreed as f64) < t.min_agreement * s.compared as f64 {
            (
                false,
                format!(
                    "agreement {:.4} over {} messages is below {}",
                    s.agreement, s.compared, t.min_agreement
                ),
            )
        } else {
            (
                true,
                format!(
                    "agreement {:.4} over {} messages, at least {}",
                    s.agreement, s.compared, t.min_agreement
                ),
            )
        };
        Judgement {
            passed,
            reason,
            snapshot: s.clone(),
        }
    }
}

fn push_bounded(v: &mut Vec<f64>, x: f64) {
    if v.len() == LATENCIES {
        v.remove(0);
    }
    v.push(x);
}

/// Outputs as an example shows them: `[{"topic", "payload"}]`, or `"failed"`.
fn render(outputs: Option<&[(String, Vec<u8>)]>) -> Value {
    match outputs {
        None => Value::from("failed"),
        Some(outputs) => outputs
            .iter()
            .map(|(t, p)| serde_json::json!({ "topic": t, "payload": String::from_utf8_lossy(p) }))
            .collect(),
    }
}

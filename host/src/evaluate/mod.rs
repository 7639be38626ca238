//! Evaluation: run a plugin over the labelled evaluation set it ships, measure it, and judge
//! its gates.
//!
//! The same code serves `edgewise eval` on an author's machine and the gateway's gate before an
//! update goes live. An evaluation set is replay JSON Lines (see [`crate::replay`]) whose lines
//! carry `expect`: a label (classification), a number (regression), a list of
//! `[start_ms, end_ms]` segments for the stream of the line's topic (segments), or a list of
//! boxes `[x1, y1, x2, y2]` (or `{"box", "label"}`) in the message (detection). Lines without
//! `expect` still run (a stream needs its whole audio), they are just not scored. The
//! manifest's `[evaluate]` table ([`edgewise_signing::evaluate`]) says how to read a prediction
//! from the plugin's outputs; [`metrics`] computes the numbers, [`gate`] judges them.
//!
//! A plugin is evaluated on a worker of its own, never on the live one: its state, its
//! counters and its failures stay apart from the data path.

pub mod gate;
pub mod metrics;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use edgewise_signing::TopicFilter;
use edgewise_signing::evaluate::{Evaluate, TaskKind};
use serde::Serialize;
use serde_json::Value;

use self::metrics::{Confusion, SegmentCounts};
use crate::runtime::plugin::CompiledPlugin;
use crate::worker::supervisor::RestartPolicy;
use crate::worker::{Message, Worker};

/// The label of a sample whose message produced no readable prediction.
pub const NO_PREDICTION: &str = "(none)";
/// The label of a sample whose message failed (a trap, a timeout, an error).
pub const FAILED: &str = "(failed)";

/// One line of an evaluation set.
pub struct Sample {
    /// The message to feed the plugin.
    pub message: Message,
    /// What it should produce, if labelled.
    pub expect: Option<Value>,
}

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A line of the set is not a sample.
    #[error("{file}:{line}: {problem}")]
    Line {
        /// The file.
        file: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The set has no labelled sample.
    #[error("the evaluation set has no line with `expect`: there is nothing to score")]
    Unlabelled,
    /// The evaluation ran out of time.
    #[error("the evaluation took longer than {seconds} s ({done} of {total} messages run)")]
    TooSlow {
        /// The limit.
        seconds: u64,
        /// Messages run by then.
        done: usize,
        /// Messages in the set.
        total: usize,
    },
    /// The plugin could not start.
    #[error("plugin `{plugin}` did not start: {reason}")]
    Start {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
}

/// Reads the samples of one evaluation file (`source` names it in errors). A line that is
/// not a sample is an error: a gate must not pass on a set it could only partly read.
pub fn read_samples(text: &str, source: &str) -> Result<Vec<Sample>, EvalError> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (message, expect) =
            crate::replay::parse_line(line).map_err(|problem| EvalError::Line {
                file: source.to_owned(),
                line: i + 1,
                problem,
            })?;
        samples.push(Sample { message, expect });
    }
    Ok(samples)
}

/// When an evaluation must be done by, and the limit it came from (for the error).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// The instant.
    pub at: Instant,
    /// The limit in seconds.
    pub seconds: u64,
}

impl Deadline {
    /// `seconds` from now.
    pub fn after(seconds: u64) -> Self {
        Self {
            at: Instant::now() + std::time::Duration::from_secs(seconds),
            seconds,
        }
    }
}

/// What an evaluation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plugin.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// Every metric by name (`accuracy`, `f1[bearing]`, `p99_ms`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Classification: the confusion matrix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Confusion>,
    /// How long the whole run took, in ms.
    pub elapsed_ms: f64,
}

/// Runs `plugin` over `samples` as `spec` says to read its outputs, on a worker of its own;
/// gives up with [`EvalError::TooSlow`] once `deadline` has passed, if one is given.
pub fn evaluate(
    plugin: Arc<CompiledPlugin>,
    spec: &Evaluate,
    samples: &[Sample],
    deadline: Option<Deadline>,
) -> Result<Report, EvalError> {
    if samples.iter().all(|s| s.expect.is_none()) {
        return Err(EvalError::Unlabelled);
    }
    let started = Instant::now();
    let name = plugin.name().to_owned();
    let version = plugin.manifest().version.to_string();
    let mut worker = Worker::new(plugin, RestartPolicy::default());
    worker.start().map_err(|failure| EvalError::Start {
        plugin: name.clone(),
        reason: failure.to_string(),
    })?;
    let only = spec
        .topic
        .as_deref()
        .and_then(|t| TopicFilter::parse(t).ok());
    let mut runs = Vec::with_capacity(samples.len());
    let mut latencies = Vec::with_capacity(samples.len());
    for (done, sample) in samples.iter().enumerate() {
        if let Some(d) = deadline
            && Instant::now() >= d.at
        {
            return Err(EvalError::TooSlow {
                seconds: d.seconds,
                done,
                total: samples.len(),
            });
        }
        let t = Instant::now();
        let outcome = worker.handle(&sample.message);
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        runs.push(outcome.ok().map(|published| {
            published
                .into_iter()
                .filter(|p| only.as_ref().is_none_or(|f| f.matches(&p.topic)))
                .filter_map(|p| serde_json::from_slice::<Value>(&p.payload).ok())
                .collect::<Vec<_>>()
        }));
    }
    let stats = worker.stats();
    let mut report = Report {
        plugin: name,
        version,
        metrics: BTreeMap::new(),
        confusion: None,
        elapsed_ms: 0.0,
    };
    let scored = match spec.kind {
        TaskKind::Classification => classification(spec, samples, &runs, &mut report),
        TaskKind::Segments => segments(spec, samples, &runs, &mut report),
        TaskKind::Detection => detection(spec, samples, &runs, &mut report),
        TaskKind::Regression => regression(spec, samples, &runs, &mut report),
    };
    latencies.sort_by(f64::total_cmp);
    let m = &mut report.metrics;
    m.insert("samples".into(), scored as f64);
    m.insert("failed".into(), stats.failed as f64);
    m.insert("p50_ms".into(), metrics::percentile(&latencies, 50.0));
    m.insert("p99_ms".into(), metrics::percentile(&latencies, 99.0));
    m.insert("mean_ms".into(), metrics::mean(&latencies));
    m.insert(
        "peak_memory_mib".into(),
        stats.peak_memory_bytes as f64 / f64::from(1 << 20),
    );
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// The prediction in a message's outputs: the label at `pointer` in the first output that has
/// a value there (a string, or a number or bool as written), with that output; `(none)` when no
/// output has one or it is not a label. The shadow reads a prediction the same way.
pub fn predicted_label<'a>(outputs: &'a [Value], pointer: &str) -> (String, Option<&'a Value>) {
    let output = outputs.iter().find(|o| o.pointer(pointer).is_some());
    let label = match output.and_then(|o| o.pointer(pointer)) {
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => label_text(v),
        _ => NO_PREDICTION.to_owned(),
    };
    (label, output)
}

fn classification(
    spec: &Evaluate,
    samples: &[Sample],
    runs: &[Option<Vec<Value>>],
    report: &mut Report,
) -> usize {
    let label = spec.label.as_deref().unwrap_or_default();
    let mut pairs = Vec::new();
    // One score list per label for ROC AUC: the score the sample's output gave that label.
    let mut scores: Vec<BTreeMap<String, f64>> = Vec::new();
    for (sample, run) in samples.iter().zip(runs) {
        let Some(expected) = sample.expect.as_ref().map(label_text) else {
            continue;
        };
        let (predicted, output) = match run {
            None => (FAILED.to_owned(), None),
            Some(outputs) => predicted_label(outputs, label),
        };
        let sample_scores = spec
            .scores
            .as_deref()
            .and_then(|p| output.and_then(|o| o.pointer(p)))
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        scores.push(sample_scores);
        pairs.push((expected, predicted));
    }
    let confusion = Confusion::new(pairs.iter().map(|(e, p)| (e.as_str(), p.as_str())));
    let m = &mut report.metrics;
    m.insert("accuracy".into(), confusion.accuracy());
    m.insert("macro_f1".into(), confusion.macro_f1());
    m.insert("micro_f1".into(), confusion.micro_f1());
    let mut aucs = Vec::new();
    for class in confusion.classes() {
        if let Some(s) = confusion.scores(class) {
            m.insert(format!("precision[{class}]"), s.precision);
            m.insert(format!("recall[{class}]"), s.recall);
            m.insert(format!("f1[{class}]"), s.f1);
        }
        if spec.scores.is_some() {
            // A sample with no score for the class ranks lowest: a failure is never a hit.
            let values: Vec<f64> = scores
                .iter()
                .map(|s| s.get(class).copied().unwrap_or(f64::NEG_INFINITY))
                .collect();
            let positives: Vec<bool> = pairs.iter().map(|(e, _)| e == class).collect();
            if let Some(auc) = metrics::roc_auc(&values, &positives) {
                m.insert(format!("auc[{class}]"), auc);
                aucs.push(auc);
            }
        }
    }
    if !aucs.is_empty() {
        m.insert("macro_auc".into(), metrics::mean(&aucs));
    }
    report.confusion = Some(confusion);
    pairs.len()
}

/// A label as text: `"bearing"`, or `1`, `true` as written.
fn label_text(label: &Value) -> String {
    match label {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn segments(
    spec: &Evaluate,
    samples: &[Sample],
    runs: &[Option<Vec<Value>>],
    report: &mut Report,
) -> usize {
    let (start, end) = (
        spec.start.as_deref().unwrap_or_default(),
        spec.end.as_deref().unwrap_or_default(),
    );
    // By stream: the input topic; a stream's outputs are those its messages caused.
    let mut expected: BTreeMap<&str, Vec<metrics::Interval>> = BTreeMap::new();
    let mut found: BTreeMap<&str, Vec<metrics::Interval>> = BTreeMap::new();
    for (sample, run) in samples.iter().zip(runs) {
        let stream = sample.message.topic.as_str();
        if let Some(Value::Array(segments)) = &sample.expect {
            let entry = expected.entry(stream).or_default();
            entry.extend(segments.iter().filter_map(interval));
        }
        for output in run.iter().flatten() {
            let at = |p: &str| output.pointer(p).and_then(Value::as_f64);
            if let (Some(s), Some(e)) = (at(start), at(end)) {
                found.entry(stream).or_default().push((s, e));
            }
        }
    }
    let min_overlap = spec.min_overlap.unwrap_or(0.5);
    let counts = expected
        .keys()
        .chain(found.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|stream| {
            let none = Vec::new();
            SegmentCounts::compare(
                expected.get(stream).unwrap_or(&none),
                found.get(stream).unwrap_or(&none),
                min_overlap,
            )
        })
        .fold(SegmentCounts::default(), |sum, c| sum + c);
    for (name, value) in counts.metrics() {
        report.metrics.insert(name.into(), value);
    }
    counts.expected as usize
}

/// `[start, end]` as an interval, if it is two numbers in order.
fn interval(v: &Value) -> Option<metrics::Interval> {
    match v.as_array()?.as_slice() {
        [s, e] => Some((s.as_f64()?, e.as_f64()?)).filter(|(s, e)| e >= s),
        _ => None,
    }
}

fn detection(
    spec: &Evaluate,
    samples: &[Sample],
    runs: &[Option<Vec<Value>>],
    report: &mut Report,
) -> usize {
    let pointer = spec.bbox.as_deref().unwrap_or_default();
    let label_of = |v: &Value| {
        spec.label
            .as_deref()
            .and_then(|p| v.pointer(p))
            .map(label_text)
    };
    let mut counts = metrics::BoxCounts::default();
    let mut scored = 0;
    for (sample, run) in samples.iter().zip(runs) {
        let Some(Value::Array(expected)) = &sample.expect else {
            continue;
        };
        scored += 1;
        // Labelled as `[x1, y1, x2, y2]`, or `{"box": [...], "label": "..."}`.
        let expected: Vec<metrics::Boxed> = expected
            .iter()
            .filter_map(|e| {
                let (corners, label) = match e {
                    Value::Object(o) => (o.get("box")?, o.get("label")),
                    corners => (corners, None),
                };
                Some(metrics::Boxed {
                    corners: corners_of(corners)?,
                    label: label.map(label_text),
                })
            })
            .collect();
        let found: Vec<metrics::Boxed> = run
            .iter()
            .flatten()
            .filter_map(|o| {
                Some(metrics::Boxed {
                    corners: corners_of(o.pointer(pointer)?)?,
                    label: label_of(o),
                })
            })
            .collect();
        counts.add_frame(&expected, &found, spec.min_overlap.unwrap_or(0.5));
    }
    for (name, value) in counts.metrics() {
        report.metrics.insert(name.into(), value);
    }
    scored
}

/// `[x1, y1, x2, y2]` as corners, if it is four numbers.
fn corners_of(v: &Value) -> Option<[f64; 4]> {
    match v.as_array()?.as_slice() {
        [a, b, c, d] => Some([a.as_f64()?, b.as_f64()?, c.as_f64()?, d.as_f64()?]),
        _ => None,
    }
}

fn regression(
    spec: &Evaluate,
    samples: &[Sample],
    runs: &[Option<Vec<Value>>],
    report: &mut Report,
) -> usize {
    let pointer = spec.value.as_deref().unwrap_or_default();
    let mut pairs = Vec::new();
    let mut unanswered = 0;
    for (sample, run) in samples.iter().zip(runs) {
        let Some(truth) = sample.expect.as_ref().and_then(Value::as_f64) else {
            continue;
        };
        // The value in the first output that has one.
        let predicted = run
            .iter()
            .flatten()
            .find_map(|o| o.pointer(pointer))
            .and_then(Value::as_f64);
        match predicted {
            Some(p) => pairs.push((truth, p)),
            None => unanswered += 1,
        }
    }
    for (name, value) in metrics::regression(&pairs, spec.tolerance.unwrap_or(0.0)) {
        report.metrics.insert(name.into(), value);
    }
    report
        .metrics
        .insert("unanswered".into(), unanswered as f64);
    pairs.len() + unanswered as usize
}

/// A candidate's evaluation, beside the running version's (or `--against`) on the same set,
/// with the gates judged.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The gates, and whether all passed.
    #[serde(flatten)]
    pub verdict: gate::Verdict,
    /// The candidate's measurements.
    pub report: Report,
    /// The baseline's on the same samples, if there was one that could run them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Report>,
}

impl Evaluation {
    /// Evaluates `candidate` (and `baseline`, for relative gates) over `samples` and judges
    /// the candidate's gates, both within `deadline` if one is given. A baseline that cannot
    /// run the set is left out, with a warning: its gates are then judged as for a first
    /// install.
    pub fn run(
        candidate: Arc<CompiledPlugin>,
        baseline: Option<Arc<CompiledPlugin>>,
        spec: &Evaluate,
        samples: &[Sample],
        deadline: Option<Deadline>,
    ) -> Result<Self, EvalError> {
        let report = evaluate(candidate, spec, samples, deadline)?;
        let baseline = baseline.and_then(|b| {
            evaluate(b, spec, samples, deadline)
                .inspect_err(|e| {
                    tracing::warn!("the version to compare with could not be evaluated: {e}")
                })
                .ok()
        });
        let verdict = gate::judge(&spec.parsed_gates(), &report, baseline.as_ref());
        Ok(Self {
            verdict,
            report,
            baseline,
        })
    }

    /// What a reply and the status carry: the verdict, the gates and the candidate's metrics,
    /// rounded; not the confusion matrix (`edgewise eval` shows it).
    pub fn summary(&self) -> Value {
        let rounded = |r: &Report| -> BTreeMap<String, f64> {
            r.metrics
                .iter()
                .map(|(k, v)| (k.clone(), gate::round(*v)))
                .collect()
        };
        let mut summary = serde_json::json!({
            "passed": self.verdict.passed,
            "gates": self.verdict.gates,
            "metrics": rounded(&self.report),
            "elapsed-ms": gate::round(self.report.elapsed_ms),
        });
        if let (Some(b), Some(s)) = (&self.baseline, summary.as_object_mut()) {
            s.insert(
                "running".into(),
                serde_json::json!({ "version": b.version, "metrics": rounded(b) }),
            );
        }
        summary
    }
}

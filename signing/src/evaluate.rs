//! The manifest's `[evaluate]` table: the evaluation set a plugin ships, how to read its
//! outputs, and the gates an update must pass.
//!
//! ```toml
//! [evaluate]
//! data = ["eval/heldout.jsonl"]        # replay JSON Lines, each line with its `expect`
//! kind = "classification"              # or "segments", "detection", "regression"
//! topic = "plant/+/vibration/diagnosis" # only outputs on these topics count (default: all)
//! label = "/class"                     # JSON pointer to the predicted label
//! scores = "/probabilities"            # optional: {label: score}, for ROC AUC
//! gates = ["accuracy >= 0.9", "f1[bearing] >= 0.9", "macro_f1 >= running - 0.01"]
//! ```
//!
//! Checked here, at parse time, so that `edgewise pack` refuses a typo in a gate; the gateway
//! computes the metrics (`edgewise_host::evaluate`). `docs/evaluation.md` defines each metric.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::topic::TopicFilter;

/// The `[evaluate]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Evaluate {
    /// The evaluation set: JSON Lines files of the plugin's directory, packed and pinned.
    pub data: Vec<PathBuf>,
    /// What the plugin's outputs are.
    pub kind: TaskKind,
    /// Only outputs on topics matching this filter count; by default every output.
    pub topic: Option<String>,
    /// Classification: a JSON pointer to the predicted label (a string) in an output.
    pub label: Option<String>,
    /// Classification: a JSON pointer to an object of label → score, for ROC AUC.
    pub scores: Option<String>,
    /// Segments: a JSON pointer to a segment's start (ms) in an output that closes one.
    pub start: Option<String>,
    /// Segments: a JSON pointer to its end (ms).
    pub end: Option<String>,
    /// Segments and detection: the overlap over union a labelled segment or box needs with a
    /// found one to count as found (default 0.5).
    pub min_overlap: Option<f64>,
    /// Detection: a JSON pointer to a found box, `[x1, y1, x2, y2]`, in an output (one output
    /// per box).
    #[serde(rename = "box")]
    pub bbox: Option<String>,
    /// Regression: a JSON pointer to the predicted number.
    pub value: Option<String>,
    /// Regression: how far a prediction may be from the truth and still count as right.
    pub tolerance: Option<f64>,
    /// What must hold for the plugin to pass, e.g. `accuracy >= 0.95`.
    #[serde(default)]
    pub gates: Vec<String>,
}

/// The kind of task an evaluation set labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// One label per input message.
    Classification,
    /// Time intervals per input topic (a stream), e.g. speech in audio.
    Segments,
    /// Boxes per input message, e.g. plates in a frame, matched by overlap over union.
    Detection,
    /// One number per input message.
    Regression,
}

impl TaskKind {
    /// The metrics this kind computes (besides the ones every kind has).
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            TaskKind::Classification => &["accuracy", "macro_f1", "micro_f1", "macro_auc"],
            TaskKind::Segments => &[
                "coverage",
                "time_precision",
                "missed_ms",
                "false_ms",
                "segment_recall",
                "segment_precision",
            ],
            TaskKind::Detection => &[
                "precision",
                "recall",
                "f1",
                "mean_iou",
                "exact_match",
                "cer",
            ],
            TaskKind::Regression => &["mae", "rmse", "max_error", "within_tolerance", "unanswered"],
        }
    }

    /// The per-label metrics, written `name[label]` (classification only).
    pub fn labelled_metrics(self) -> &'static [&'static str] {
        match self {
            TaskKind::Classification => &["precision", "recall", "f1", "auc"],
            TaskKind::Segments | TaskKind::Detection | TaskKind::Regression => &[],
        }
    }

    fn name(self) -> &'static str {
        match self {
            TaskKind::Classification => "classification",
            TaskKind::Segments => "segments",
            TaskKind::Detection => "detection",
            TaskKind::Regression => "regression",
        }
    }
}

/// Metrics of every kind: how many samples ran, how many failed, latency and memory.
pub const COMMON_METRICS: [&str; 6] = [
    "samples",
    "failed",
    "p50_ms",
    "p99_ms",
    "mean_ms",
    "peak_memory_mib",
];

/// A parsed gate: `<metric> <op> <bound>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// The metric, e.g. `f1[bearing]`.
    pub metric: String,
    /// The comparison.
    pub op: Comparison,
    /// What it is compared with.
    pub bound: Bound,
}

/// `>=`, `<=`, `>` or `<`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>=`
    AtLeast,
    /// `<=`
    AtMost,
    /// `>`
    Above,
    /// `<`
    Below,
}

/// The right-hand side of a gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// A number.
    Absolute(f64),
    /// The same metric of the version running now (or of `--against`), plus this offset:
    /// `running - 0.01` is `Relative(-0.01)`. Without a running version the gate is skipped.
    Relative(f64),
}

impl Comparison {
    /// Whether `value <op> bound` holds.
    pub fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Comparison::AtLeast => value >= bound,
            Comparison::AtMost => value <= bound,
            Comparison::Above => value > bound,
            Comparison::Below => value < bound,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Comparison::AtLeast => ">=",
            Comparison::AtMost => "<=",
            Comparison::Above => ">",
            Comparison::Below => "<",
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.metric, self.op.symbol())?;
        match self.bound {
            Bound::Absolute(x) => write!(f, "{x}"),
            Bound::Relative(0.0) => f.write_str("running"),
            Bound::Relative(d) if d < 0.0 => write!(f, "running - {}", -d),
            Bound::Relative(d) => write!(f, "running + {d}"),
        }
    }
}

impl Gate {
    /// Parses `accuracy >= 0.95`, `f1[bearing] >= 0.9`, `p99_ms <= 5`,
    /// `macro_f1 >= running - 0.01`, checking the metric exists for `kind`.
    pub fn parse(text: &str, kind: TaskKind) -> Result<Gate, String> {
        let expected = || {
            format!(
                "`{text}` is not a gate; write `<metric> <op> <number>` or `<metric> <op> running - <number>`, with <op> one of >=, <=, >, <"
            )
        };
        let (metric, op, rest) = [
            (">=", Comparison::AtLeast),
            ("<=", Comparison::AtMost),
            (">", Comparison::Above),
            ("<", Comparison::Below),
        ]
        .iter()
        .find_map(|(symbol, op)| {
            text.split_once(symbol)
                .map(|(metric, rest)| (metric.trim(), *op, rest.trim()))
        })
        .ok_or_else(expected)?;
        check_metric(metric, kind)?;
        let number = |s: &str| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(expected)
        };
        let bound = match rest.strip_prefix("running") {
            Some(offset) => {
                let offset = offset.trim();
                Bound::Relative(if offset.is_empty() {
                    0.0
                } else if let Some(d) = offset.strip_prefix('-') {
                    -number(d)?
                } else if let Some(d) = offset.strip_prefix('+') {
                    number(d)?
                } else {
                    return Err(expected());
                })
            }
            None => Bound::Absolute(number(rest)?),
        };
        Ok(Gate {
            metric: metric.to_owned(),
            op,
            bound,
        })
    }
}

/// Refuses a metric `kind` does not compute, naming the ones it does.
fn check_metric(metric: &str, kind: TaskKind) -> Result<(), String> {
    let known = COMMON_METRICS.contains(&metric) || kind.metrics().contains(&metric);
    let labelled = metric
        .strip_suffix(']')
        .and_then(|m| m.split_once('['))
        .is_some_and(|(name, label)| kind.labelled_metrics().contains(&name) && !label.is_empty());
    if known || labelled {
        return Ok(());
    }
    let mut names: Vec<String> = COMMON_METRICS
        .iter()
        .chain(kind.metrics())
        .map(|m| (*m).to_owned())
        .collect();
    names.extend(
        kind.labelled_metrics()
            .iter()
            .map(|m| format!("{m}[<label>]")),
    );
    Err(format!(
        "`{metric}` is not a metric of a {} evaluation; expected one of {}",
        kind.name(),
        names.join(", ")
    ))
}

impl Evaluate {
    /// The parsed gates (validation guarantees they parse).
    pub fn parsed_gates(&self) -> Vec<Gate> {
        self.gates
            .iter()
            .filter_map(|g| Gate::parse(g, self.kind).ok())
            .collect()
    }

    /// The table's consistency: data files inside the plugin, the pointers its kind needs,
    /// gates that parse. `Err` is (key under `evaluate.`, problem).
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((format!("evaluate.{key}"), problem));
        if self.data.is_empty() {
            return bad("data", "name at least one JSON Lines file".into());
        }
        if let Some(topic) = &self.topic
            && let Err(e) = TopicFilter::parse(topic)
        {
            return bad("topic", format!("`{topic}`: {e}"));
        }
        let needs: &[(&str, &Option<String>)] = match self.kind {
            TaskKind::Classification => &[("label", &self.label)],
            TaskKind::Segments => &[("start", &self.start), ("end", &self.end)],
            TaskKind::Detection => &[("box", &self.bbox)],
            TaskKind::Regression => &[("value", &self.value)],
        };
        for (key, pointer) in needs {
            if pointer.is_none() {
                return bad(
                    key,
                    format!(
                        "a {} evaluation needs `{key}`, a JSON pointer into an output",
                        self.kind.name()
                    ),
                );
            }
        }
        for (key, pointer) in [
            ("label", &self.label),
            ("scores", &self.scores),
            ("start", &self.start),
            ("end", &self.end),
            ("box", &self.bbox),
            ("value", &self.value),
        ] {
            if let Some(p) = pointer
                && !(p.is_empty() || p.starts_with('/'))
            {
                return bad(
                    key,
                    format!("`{p}` is not a JSON pointer (RFC 6901): it starts with `/`"),
                );
            }
        }
        if let Some(x) = self.min_overlap
            && !(x > 0.0 && x <= 1.0)
        {
            return bad("min-overlap", format!("{x} is not a fraction in (0, 1]"));
        }
        if let Some(x) = self.tolerance
            && !(x.is_finite() && x >= 0.0)
        {
            return bad("tolerance", format!("{x} is not a number ≥ 0"));
        }
        for (i, gate) in self.gates.iter().enumerate() {
            Gate::parse(gate, self.kind)
                .map_err(|problem| (format!("evaluate.gates[{i}]"), problem))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_read_as_written() {
        let kind = TaskKind::Classification;
        let gate = Gate::parse("f1[bearing] >= 0.9", kind).expect("present");
        assert_eq!(gate.metric, "f1[bearing]");
        assert_eq!(gate.op, Comparison::AtLeast);
        assert_eq!(gate.bound, Bound::Absolute(0.9));
        let gate = Gate::parse("macro_f1>=running-0.01", kind).expect("present");
        assert_eq!(gate.bound, Bound::Relative(-0.01));
        assert_eq!(gate.to_string(), "macro_f1 >= running - 0.01");
        assert_eq!(
            Gate::parse("p99_ms < running + 2", kind)
                .expect("present")
                .bound,
            Bound::Relative(2.0)
        );
        assert_eq!(
            Gate::parse("accuracy > running", kind)
                .expect("present")
                .to_string(),
            "accuracy > running"
        );
    }

    #[test]
    fn a_gate_on_an_unknown_metric_names_the_known_ones() {
        let e = Gate::parse("acuracy >= 0.9", TaskKind::Classification).expect_err("refused");
        assert!(e.contains("`acuracy` is not a metric"), "{e}");
        assert!(e.contains("accuracy, macro_f1"), "{e}");
        assert!(e.contains("f1[<label>]"), "{e}");
        let e = Gate::parse("f1[bearing] >= 0.9", TaskKind::Segments).expect_err("refused");
        assert!(e.contains("segments evaluation"), "{e}");
        assert!(Gate::parse("coverage >= 0.9", TaskKind::Segments).is_ok());
    }

    #[test]
    fn malformed_gates_say_how_to_write_one() {
        for text in [
            "accuracy = 0.9",
            "accuracy >= high",
            "accuracy >= running * 2",
            "accuracy >= NaN",
        ] {
            let e = Gate::parse(text, TaskKind::Classification).expect_err("refused");
            assert!(e.contains("is not a gate"), "{text}: {e}");
        }
    }
}

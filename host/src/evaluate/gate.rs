//! Judging an evaluation's gates: each `<metric> <op> <bound>` of the manifest against the
//! report, a relative bound against the version running now (or `--against`).

use edgewise_signing::evaluate::{Bound, Gate};
use serde::Serialize;

use super::Report;

/// One gate's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judged {
    /// The gate as written.
    pub gate: String,
    /// The metric's value, if it was computed.
    pub value: Option<f64>,
    /// What it was compared with, if there was something to compare with.
    pub bound: Option<f64>,
    /// Whether it passed. A relative gate with no running version passes (there is nothing
    /// to be worse than); a gate on a metric that was not computed fails.
    pub passed: bool,
    /// Why it passed or failed, when the numbers alone do not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Every gate's outcome, and whether all passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Each gate, in the manifest's order.
    pub gates: Vec<Judged>,
    /// Whether every gate passed.
    pub passed: bool,
}

impl Verdict {
    /// The failed gates in words, e.g. `f1[bearing] = 0.71, needs >= 0.9`.
    pub fn failures(&self) -> String {
        let failed: Vec<String> = self
            .gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| match (g.value, g.bound) {
                (Some(v), Some(b)) => format!("{} (got {}, bound {})", g.gate, round(v), round(b)),
                _ => format!("{} ({})", g.gate, g.note.as_deref().unwrap_or("not met")),
            })
            .collect();
        failed.join("; ")
    }
}

/// Judges `gates` on `report`; relative bounds against `baseline`.
pub fn judge(gates: &[Gate], report: &Report, baseline: Option<&Report>) -> Verdict {
    let gates: Vec<Judged> = gates
        .iter()
        .map(|gate| judge_one(gate, report, baseline))
        .collect();
    let passed = gates.iter().all(|g| g.passed);
    Verdict { gates, passed }
}

fn judge_one(gate: &Gate, report: &Report, baseline: Option<&Report>) -> Judged {
    let value = report.metrics.get(&gate.metric).copied();
    let mut judged = Judged {
        gate: gate.to_string(),
        value,
        bound: None,
        passed: false,
        note: None,
    };
    let bound = match gate.bound {
        Bound::Absolute(x) => x,
        Bound::Relative(offset) => {
            let Some(baseline) = baseline else {
                judged.passed = true;
                judged.note = Some("no running version to compare with".into());
                return judged;
            };
            match baseline.metrics.get(&gate.metric) {
                Some(running) => running + offset,
                None => {
                    judged.note = Some(format!(
                        "the running version has no `{}` on this set",
                        gate.metric
                    ));
                    return judged;
                }
            }
        }
    };
    judged.bound = Some(bound);
    match value {
        Some(v) => judged.passed = gate.op.holds(v, bound),
        None => {
            judged.note = Some(format!(
                "`{}` was not computed: is the label in the set, or the output's score read?",
                gate.metric
            ))
        }
    }
    judged
}

/// Four significant decimals: enough to read, short enough for a reply.
pub fn round(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use edgewise_signing::evaluate::TaskKind;

    use super::*;

    fn report(metrics: &[(&str, f64)]) -> Report {
        Report {
            plugin: "p".into(),
            version: "1.0.0".into(),
            metrics: metrics
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect::<BTreeMap<_, _>>(),
            confusion: None,
            elapsed_ms: 0.0,
        }
    }

    fn gates(texts: &[&str]) -> Vec<Gate> {
        texts
            .iter()
            .map(|t| Gate::parse(t, TaskKind::Classification).expect("present"))
            .collect()
    }

    #[test]
    fn absolute_gates_compare_with_their_number() {
        let r = report(&[("accuracy", 0.93), ("p99_ms", 4.0)]);
        let v = judge(&gates(&["accuracy >= 0.95", "p99_ms <= 5"]), &r, None);
        assert!(!v.passed);
        assert_eq!(
            v.gates.iter().map(|g| g.passed).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(v.failures(), "accuracy >= 0.95 (got 0.93, bound 0.95)");
    }

    #[test]
    fn relative_gates_compare_with_the_running_version() {
        let g = gates(&["macro_f1 >= running - 0.01"]);
        let candidate = report(&[("macro_f1", 0.90)]);
        assert!(judge(&g, &candidate, Some(&report(&[("macro_f1", 0.905)]))).passed);
        let worse = judge(&g, &candidate, Some(&report(&[("macro_f1", 0.92)])));
        assert!(!worse.passed);
        assert_eq!(worse.gates[0].bound.map(round), Some(0.91));
        // A first install has nothing to be worse than.
        let first = judge(&g, &candidate, None);
        assert!(first.passed);
        assert!(
            first.gates[0]
                .note
                .as_deref()
                .expect("present")
                .contains("no running")
        );
    }

    #[test]
    fn a_gate_on_a_metric_never_computed_fails() {
        let v = judge(&gates(&["f1[bearing] >= 0.9"]), &report(&[]), None);
        assert!(!v.passed);
        assert!(
            v.failures().contains("was not computed"),
            "{}",
            v.failures()
        );
    }
}

//! An update's evaluation gate: before a new version is installed, it runs over the
//! evaluation set its bundle ships, and so does the version running now, on this thread (off
//! the data path: the live plugin keeps its messages). A failing gate refuses the update with
//! the metrics in the reply and in the running plugin's status entry, and nothing in the store
//! changes; a passing one's results are kept with the release and shown in its status entry.

use std::sync::Arc;

use edgewise_signing::VerifiedBundle;
use serde_json::{Value, json};

use super::{Change, Manager, Replier, Unfinished, describe};
use crate::evaluate::{Deadline, Evaluation, Sample, read_samples};
use crate::runtime::plugin::CompiledPlugin;

impl Manager {
    /// Runs `bundle`'s gate on `candidate`, its compiled plugin, if the bundle ships an
    /// evaluation set: `Ok(Some(results))` if it passed, `Ok(None)` with no set, and
    /// `Err` (already answered) if it failed or could not run.
    pub(super) fn gate(
        &self,
        bundle: &VerifiedBundle,
        candidate: &Arc<CompiledPlugin>,
        reply: &Replier,
    ) -> Result<Option<Value>, Unfinished> {
        let Some(spec) = &bundle.manifest.evaluate else {
            return Ok(None);
        };
        let plugin = &bundle.manifest.name;
        let refuse = |reason: String, evaluation: Option<Value>| {
            let mut refusal = json!({ "reason": reason, "bundle": describe(bundle) });
            if let (Some(e), Some(r)) = (&evaluation, refusal.as_object_mut()) {
                r.insert("evaluation".into(), e.clone());
            }
            reply.send("refused", refusal.clone());
            let _ = self.changes.send(Change::Health {
                plugin: plugin.clone(),
                entry: json!({ "refused-update": refusal }),
            });
            tracing::warn!(
                plugin,
                "update to {} refused: {reason}",
                bundle.manifest.version
            );
            Unfinished::Answered(reason)
        };
        let samples = samples(bundle).map_err(|reason| refuse(reason, None))?;
        reply.send(
            "evaluating",
            json!({ "samples": samples.len(), "gates": spec.gates }),
        );
        // The running version, with its settings, on the same set: the baseline of `running`.
        let running = self
            .store
            .active(plugin)
            .ok()
            .and_then(|(bundle, overrides)| {
                self.compile(&bundle, &overrides)
                    .inspect_err(|e| {
                        tracing::warn!(
                            plugin,
                            "the running version cannot be compiled to compare with: {e}"
                        )
                    })
                    .ok()
            });
        let deadline = Deadline::after(self.config.update.gate_timeout_s);
        let evaluation = Evaluation::run(
            candidate.clone(),
            running.map(Arc::new),
            spec,
            &samples,
            Some(deadline),
        )
        .map_err(|e| refuse(format!("the evaluation could not run: {e}"), None))?;
        let summary = evaluation.summary();
        tracing::info!(
            plugin,
            version = %bundle.manifest.version,
            passed = evaluation.verdict.passed,
            samples = samples.len(),
            gate_ms = format!("{:.1}", evaluation.report.elapsed_ms),
            "evaluation gate"
        );
        if !evaluation.verdict.passed {
            let reason = format!("evaluation gate failed: {}", evaluation.verdict.failures());
            return Err(refuse(reason, Some(summary)));
        }
        reply.send("evaluated", summary.clone());
        Ok(Some(summary))
    }
}

/// The bundle's evaluation set, read from the bundle (checked against its pins again).
fn samples(bundle: &VerifiedBundle) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for file in bundle.manifest.evaluate.iter().flat_map(|e| &e.data) {
        let bytes = bundle.file(file).map_err(|e| e.to_string())?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{} is not UTF-8 text", file.display()))?;
        samples
            .extend(read_samples(&text, &file.display().to_string()).map_err(|e| e.to_string())?);
    }
    Ok(samples)
}

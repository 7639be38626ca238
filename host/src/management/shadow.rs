//! Shadow trials: `update` with a `shadow` trial starts the new version beside the live one
//! (see [`crate::worker::shadow`]) instead of swapping it in, and promotes or abandons it when
//! the trial is judged, or when an operator says `promote` or `abandon`.
//!
//! The bundle waits in the store's `incoming/` meanwhile, verified, admitted and gated, but
//! not installed: until it is promoted the store is as it was. A shadow does not survive a
//! restart of the gateway (the trial starts again when the update is sent again).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Instant;

use edgewise_signing::command::ShadowTrial;
use edgewise_signing::{VerifiedBundle, namespace};
use rumqttc::QoS;
use serde_json::{Value, json};

use super::store::Admit;
use super::{Change, Manager, Replier, Request, Unfinished, describe};
use crate::mqtt::Link;
use crate::worker::Worker;
use crate::worker::shadow::{self, Comparison, Said, ShadowSink, Snapshot};

/// A shadow running now.
pub(crate) struct Running {
    bundle: VerifiedBundle,
    /// The bundle's file, kept for the install at promotion.
    kept: PathBuf,
    trial: ShadowTrial,
    /// The replies of the update that started it.
    reply: Replier,
    /// The last numbers it reported.
    last: Snapshot,
    /// The bundle digest, when a fleet roll-out started the trial and waits for its end.
    rollout: Option<String>,
}

/// What the shadow thread says goes to the manager's thread; its outputs, when asked, to the
/// broker.
struct ToManager {
    plugin: String,
    requests: Sender<Request>,
    link: Arc<Link>,
    gateway: String,
}

impl ShadowSink for ToManager {
    fn said(&self, said: Said) {
        let _ = self.requests.send(Request::Shadow {
            plugin: self.plugin.clone(),
            said,
        });
    }

    fn publish(&self, topic: &str, payload: &[u8]) {
        let topic = namespace::shadow_output(&self.gateway, &self.plugin, topic);
        let (client, _) = self.link.client();
        if let Err(e) = client.try_publish(&topic, QoS::AtMostOnce, false, payload.to_vec()) {
            tracing::debug!(plugin = self.plugin, "shadow output not published: {e}");
        }
    }
}

impl Manager {
    /// Starts `verified`, read from the file `staged`, in shadow of its live plugin: after the
    /// same checks and gate as an update, and its `init`.
    pub(super) fn start_shadow(
        &mut self,
        verified: &VerifiedBundle,
        staged: PathBuf,
        trial: ShadowTrial,
        reply: &Replier,
    ) -> Result<(), Unfinished> {
        let plugin = verified.manifest.name.clone();
        let fail = |reason: String| Unfinished::Failed(reason);
        trial
            .check()
            .map_err(|e| fail(format!("shadow trial: {e}")))?;
        self.trust
            .keyring_in_force(self.store.keyring())
            .map_err(fail)?;
        reply.send("verified", json!({ "bundle": describe(verified) }));
        if self.shadows.contains_key(&plugin) {
            return Err(fail(format!(
                "a shadow of `{plugin}` runs already: promote or abandon it first"
            )));
        }
        let Ok((_, overrides)) = self.store.active(&plugin) else {
            return Err(fail(format!(
                "`{plugin}` does not run here: a shadow needs a live version to compare with (send a plain update to install it)"
            )));
        };
        if !self
            .store
            .admission(verified, Admit::Update)
            .map_err(|e| fail(e.to_string()))?
        {
            return Err(fail(format!(
                "{} is already the running bundle of `{plugin}`",
                verified.digest
            )));
        }
        let candidate = Arc::new(self.compile(verified, &overrides).map_err(fail)?);
        self.gate(verified, &candidate, reply)?;
        let mut worker = Worker::new(candidate, self.config.restart.policy());
        worker
            .start()
            .map_err(|e| fail(format!("the new version failed to start: {e}")))?;
        let kept = staged.with_extension("shadow");
        std::fs::rename(&staged, &kept)
            .map_err(|e| fail(format!("cannot keep the bundle for the trial: {e}")))?;
        let sink = ToManager {
            plugin: plugin.clone(),
            requests: self.requests.clone(),
            link: self.link.clone(),
            gateway: self.config.gateway_id.clone(),
        };
        let comparison = Comparison::for_manifest(&verified.manifest);
        let tap = shadow::spawn(worker, trial.clone(), comparison, sink)
            .map_err(|e| fail(format!("cannot start the shadow's thread: {e}")))?;
        let _ = self.changes.send(Change::Shadow {
            plugin: plugin.clone(),
            tap: Some(tap),
        });
        reply.send(
            "shadowing",
            json!({ "bundle": describe(verified), "trial": trial }),
        );
        self.shadows.insert(
            plugin,
            Running {
                bundle: verified.clone(),
                kept,
                trial,
                reply: reply.clone(),
                last: Snapshot::default(),
                rollout: None,
            },
        );
        Ok(())
    }

    /// Marks `plugin`'s shadow as the fleet roll-out's trial of bundle `digest`.
    pub(super) fn shadow_for_rollout(&mut self, plugin: &str, digest: &str) {
        if let Some(running) = self.shadows.get_mut(plugin) {
            running.rollout = Some(digest.to_owned());
        }
    }

    /// What a shadow thread said.
    pub(super) fn shadow_said(&mut self, plugin: String, said: Said) {
        let Some(running) = self.shadows.get_mut(&plugin) else {
            // A shadow that was promoted or abandoned, saying its last.
            return;
        };
        match said {
            Said::Progress(snapshot) => {
                self.metrics.set_shadow(&plugin, &snapshot);
                running.last = snapshot.clone();
                self.shadow_status(&plugin, "running", &snapshot, None);
            }
            Said::Judged(judgement) => {
                self.metrics.set_shadow(&plugin, &judgement.snapshot);
                running.last = judgement.snapshot.clone();
                tracing::info!(
                    plugin,
                    passed = judgement.passed,
                    "shadow trial judged: {}",
                    judgement.reason
                );
                match (judgement.passed, running.trial.promote) {
                    (true, true) => self.promote(&plugin, None, Some(judgement.reason)),
                    (true, false) => {
                        let detail =
                            json!({ "reason": judgement.reason, "shadow": judgement.snapshot });
                        running.reply.send("ready", detail);
                        self.shadow_status(
                            &plugin,
                            "ready",
                            &judgement.snapshot,
                            Some(&judgement.reason),
                        );
                    }
                    (false, _) => self.abandon(&plugin, None, &judgement.reason),
                }
            }
            Said::LiveGone(_) => {
                self.abandon(&plugin, None, "the live version stopped or was replaced")
            }
        }
    }

    /// Promotes `plugin`'s shadow: an update to its bundle, gated again, with probation. The
    /// replies go to `command`'s (a `promote` command), else to the update's that started it.
    pub(super) fn promote(&mut self, plugin: &str, command: Option<&Replier>, why: Option<String>) {
        let Some(running) = self.end_shadow(plugin, command) else {
            return;
        };
        let reply = command.unwrap_or(&running.reply).clone();
        let why = why.unwrap_or_else(|| "an operator promoted it".into());
        running
            .reply
            .send("promoted", json!({ "reason": why, "shadow": running.last }));
        let outcome = self.update(
            running.bundle.clone(),
            Some(&running.kept),
            &reply,
            Instant::now(),
            Admit::Update,
            Some(plugin),
        );
        let _ = std::fs::remove_file(&running.kept);
        match outcome {
            Ok(change) => {
                let _ = self.changes.send(change);
                if let Some(digest) = &running.rollout {
                    self.rollout_bundle_live(digest);
                }
            }
            Err(unfinished) => {
                let (Unfinished::Failed(reason) | Unfinished::Answered(reason)) = unfinished;
                reply.send("failed", json!({ "reason": reason }));
                if running.rollout.is_some() {
                    self.rollout_failed(format!(
                        "the promotion of `{plugin}`'s shadow failed: {reason}"
                    ));
                }
            }
        }
    }

    /// Abandons `plugin`'s shadow: the live version goes on, the candidate is dropped.
    pub(super) fn abandon(&mut self, plugin: &str, command: Option<&Replier>, reason: &str) {
        let Some(running) = self.end_shadow(plugin, command) else {
            return;
        };
        let _ = std::fs::remove_file(&running.kept);
        tracing::warn!(plugin, "shadow abandoned: {reason}");
        let detail = json!({ "reason": reason, "shadow": running.last });
        running.reply.send("abandoned", detail.clone());
        if let Some(reply) = command {
            reply.send("done", detail);
        }
        self.shadow_status(plugin, "abandoned", &running.last, Some(reason));
        if running.rollout.is_some() {
            self.rollout_failed(format!("the shadow of `{plugin}` was abandoned: {reason}"));
        }
    }

    /// Forgets `plugin`'s shadow and has its live thread drop the tap (its thread then ends);
    /// with none, tells `command` so.
    fn end_shadow(&mut self, plugin: &str, command: Option<&Replier>) -> Option<Running> {
        let Some(running) = self.shadows.remove(plugin) else {
            if let Some(reply) = command {
                let reason = format!("no shadow of `{plugin}` runs");
                reply.send("failed", json!({ "reason": reason }));
            }
            return None;
        };
        let _ = self.changes.send(Change::Shadow {
            plugin: plugin.to_owned(),
            tap: None,
        });
        Some(running)
    }

    fn shadow_status(&self, plugin: &str, state: &str, snapshot: &Snapshot, reason: Option<&str>) {
        let mut shadow = serde_json::to_value(snapshot).unwrap_or(Value::Null);
        if let Some(s) = shadow.as_object_mut() {
            s.insert("state".into(), json!(state));
            if let Some(reason) = reason {
                s.insert("reason".into(), json!(reason));
            }
            if let Some(running) = self.shadows.get(plugin) {
                s.insert("digest".into(), json!(running.bundle.digest));
            }
        }
        let _ = self.changes.send(Change::Health {
            plugin: plugin.to_owned(),
            entry: json!({ "shadow": shadow }),
        });
    }
}

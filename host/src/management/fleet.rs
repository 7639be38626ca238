//! Fleet roll-outs: a signed desired state per group, retained on the broker, applied here.
//!
//! A desired state lists the plugins of the group and their bundle digests; the manager installs
//! what is missing (asking for its bundles' chunks under `edgewise/bundles/<digest>`), swaps what
//! differs, removes what is not listed, and reports its progress in the gateway's status. Its
//! version, issue time and expiry are judged by [`Trust`](super::trust::Trust), which keeps the
//! one applied, so an older desired state is refused. A fleet never rolls a plugin back: a
//! bundle signed as a rollback goes in only by an operator's rollback command.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use edgewise_signing::VerifiedBundle;
use edgewise_signing::command::DesiredState;
use edgewise_signing::namespace;
use serde_json::json;

use super::reply::Replier;
use super::store::Admit;
use super::{Awaited, Change, Manager, Unfinished};

/// A desired state being applied: the bundles still awaited.
pub(super) struct Rollout {
    desired: DesiredState,
    waiting: BTreeSet<String>,
    reply: Replier,
}

impl Manager {
    pub(super) fn report(
        &self,
        desired: Option<&DesiredState>,
        state: &str,
        error: Option<String>,
    ) {
        let mut fleet = json!({
            "group": self.config.group,
            "version": desired.map(|d| d.version),
            "state": state,
        });
        if let (Some(f), Some(canary)) = (
            fleet.as_object_mut(),
            desired.and_then(|d| d.canary.as_ref()),
        ) {
            let role = canary.gateways.contains(&self.config.gateway_id);
            f.insert("canary".into(), json!(role));
            if !role {
                f.insert("canaries".into(), json!(canary.gateways));
            }
        }
        if let (Some(f), Some(error)) = (fleet.as_object_mut(), error) {
            tracing::warn!("fleet: {error}");
            f.insert("error".into(), json!(error));
        }
        let _ = self.changes.send(Change::Fleet(fleet));
    }

    /// A desired state arrived: install what is missing (asking for its bundles), swap what
    /// differs, remove what is not listed. What cannot be applied leaves the plugins as they
    /// were, and the status says why.
    pub(super) fn desired(&mut self, payload: &[u8]) {
        if payload.is_empty() {
            return; // a cleared retained message
        }
        let desired = match DesiredState::verify(payload, self.store.keyring()) {
            Ok(d) => d,
            Err(e) => return self.report(None, "refused", Some(e.to_string())),
        };
        if Some(&desired.group) != self.config.group.as_ref() {
            let error = format!("desired state for group `{}`", desired.group);
            return self.report(Some(&desired), "refused", Some(error));
        }
        let in_force = self.trust.keyring_in_force(self.store.keyring());
        if let Err(error) = in_force.and_then(|()| self.trust.check_desired(&desired)) {
            return self.report(Some(&desired), "refused", Some(error));
        }
        // Recorded before anything is done, as a command's sequence number is: a replay of an
        // older one is refused from now on, and the gateway's trust is fresh again.
        if let Err(e) = self.trust.accept_desired(&desired) {
            return self.report(Some(&desired), "failed", Some(e.to_string()));
        }
        // A newer desired state replaces a roll-out still waiting for its canaries.
        self.stop_following();
        match &desired.canary {
            Some(canary) if !canary.gateways.contains(&self.config.gateway_id) => {
                self.follow(desired)
            }
            _ => self.apply(desired),
        }
    }

    /// Applies `desired`: removes what it does not list, asks for the bundles it lacks.
    pub(super) fn apply(&mut self, desired: DesiredState) {
        let installed = match self.store.list() {
            Ok(list) => list,
            Err(e) => return self.report(Some(&desired), "failed", Some(e.to_string())),
        };
        let id = format!("fleet-{}", desired.version);
        let reply = Replier::new(self.link.clone(), &self.config.gateway_id, &id);
        for (name, _, _) in installed
            .iter()
            .filter(|(n, _, _)| !desired.plugins.contains_key(n))
        {
            match self.store.remove(name) {
                Ok(()) => {
                    let _ = self.changes.send(Change::Removed {
                        plugin: name.clone(),
                        reply: reply.clone(),
                    });
                }
                Err(e) => return self.report(Some(&desired), "failed", Some(e.to_string())),
            }
        }
        let waiting: BTreeSet<String> = desired
            .plugins
            .iter()
            .filter(|(name, digest)| !installed.iter().any(|(n, d, _)| n == *name && d == *digest))
            .map(|(_, digest)| digest.clone())
            .collect();
        let topics = waiting
            .iter()
            .map(|d| namespace::bundle_chunks(d))
            .collect();
        self.rollout = Some(Rollout {
            desired: desired.clone(),
            waiting,
            reply,
        });
        self.report(Some(&desired), "applying", None);
        let _ = self.changes.send(Change::Subscribe(topics));
        self.finish_if_done();
    }

    /// Bundle `digest` is assembled in a file (or a chunk of it was refused): an `update` or
    /// a rollback command, and a roll-out, may be waiting for it. The file is verified where it
    /// lies, once, and moves into the store; whatever is left of it is deleted.
    pub(super) fn bundle(&mut self, digest: &str, assembled: Result<PathBuf, String>) {
        self.take_bundle(digest, assembled);
        // Nobody waits for it any more: its chunks need not come again at a reconnection.
        let rollout_waits = self
            .rollout
            .as_ref()
            .is_some_and(|r| r.waiting.contains(digest));
        if !rollout_waits && !self.awaiting.contains_key(digest) {
            let topics = vec![namespace::bundle_chunks(digest)];
            let _ = self.changes.send(super::Change::Unsubscribe(topics));
        }
    }

    fn take_bundle(&mut self, digest: &str, assembled: Result<PathBuf, String>) {
        let awaited = self.awaiting.remove(digest);
        let rollout = self
            .rollout
            .as_ref()
            .filter(|r| r.waiting.contains(digest))
            .map(|r| (r.desired.clone(), r.reply.clone()));
        if awaited.is_none() && rollout.is_none() {
            if let Ok(path) = assembled {
                let _ = std::fs::remove_file(path);
            }
            return;
        }
        let verified = assembled
            .map_err(|reason| format!("bundle {digest}: {reason}"))
            .and_then(|path| match self.verify_staged(digest, &path) {
                Ok(verified) => Ok((verified, path)),
                Err(reason) => {
                    let _ = std::fs::remove_file(path);
                    Err(reason)
                }
            });
        let (verified, staged) = match verified {
            Ok(verified) => verified,
            Err(reason) => {
                if let Some(awaited) = awaited {
                    awaited.reply.send("failed", json!({ "reason": reason }));
                }
                if let Some((desired, _)) = rollout {
                    self.rollout = None;
                    self.report(Some(&desired), "failed", Some(reason));
                }
                return;
            }
        };
        // The first to install it moves the file into the store; a second finds it there.
        let mut staged = Some(staged);
        let (shadowed, awaited) = match awaited {
            Some(a) if a.shadow.is_some() => (Some(a), None),
            plain => (None, plain),
        };
        if let Some(Awaited {
            reply,
            shadow: Some(trial),
            ..
        }) = shadowed
            // Taken out of `staged` whole: the trial keeps the file until it ends.
            && let Some(path) = staged.take()
            && let Err(unfinished) = self.start_shadow(&verified, path.clone(), trial, &reply)
        {
            let _ = std::fs::remove_file(path);
            if let Unfinished::Failed(reason) = unfinished {
                reply.send("failed", json!({ "reason": reason }));
            }
        }
        if let Some(awaited) = awaited {
            let reply = awaited.reply;
            let (admit, plugin) = match &awaited.rollback_of {
                Some(plugin) => (Admit::Rollback(digest), Some(plugin.as_str())),
                None => (Admit::Update, None),
            };
            let outcome = self.update_from(
                &verified,
                &mut staged,
                &reply,
                awaited.received,
                admit,
                plugin,
            );
            match outcome {
                Ok(change) => {
                    let _ = self.changes.send(change);
                }
                Err(Unfinished::Failed(reason)) => {
                    reply.send("failed", json!({ "reason": reason }))
                }
                Err(Unfinished::Answered(_)) => {}
            }
        }
        let Some((desired, reply)) = rollout else {
            return;
        };
        // A plugin the state asks to try in shadow first, and that runs here: a shadow trial,
        // whose promotion (or abandonment) ends this bundle's part of the roll-out.
        let plugin = verified.manifest.name.clone();
        if let Some(trial) = desired.shadow.get(&plugin).cloned()
            && self.store.active(&plugin).is_ok()
            && let Some(path) = staged.take()
        {
            match self.start_shadow(&verified, path.clone(), trial, &reply) {
                Ok(()) => self.shadow_for_rollout(&plugin, digest),
                Err(unfinished) => {
                    let _ = std::fs::remove_file(path);
                    let (Unfinished::Failed(error) | Unfinished::Answered(error)) = unfinished;
                    self.rollout_failed(error);
                }
            }
            return;
        }
        // A fleet never rolls a plugin back: a bundle signed as a rollback is refused here.
        let outcome = self.update_from(
            &verified,
            &mut staged,
            &reply,
            Instant::now(),
            Admit::Update,
            None,
        );
        match outcome {
            Ok(change) => {
                let _ = self.changes.send(change);
                if let Some(r) = self.rollout.as_mut() {
                    r.waiting.remove(digest);
                }
                self.finish_if_done();
            }
            Err(unfinished) => {
                let (Unfinished::Failed(error) | Unfinished::Answered(error)) = unfinished;
                self.rollout = None;
                self.report(Some(&desired), "failed", Some(error));
            }
        }
    }

    /// [`Manager::update`] from the file `staged` if it is still there (taken, and whatever is
    /// left of it deleted), else from the store.
    fn update_from(
        &self,
        verified: &VerifiedBundle,
        staged: &mut Option<PathBuf>,
        reply: &Replier,
        received: Instant,
        admit: Admit,
        plugin: Option<&str>,
    ) -> Result<super::Change, Unfinished> {
        let from = staged.take();
        let outcome = self.update(
            verified.clone(),
            from.as_deref(),
            reply,
            received,
            admit,
            plugin,
        );
        if let Some(from) = from {
            let _ = std::fs::remove_file(from);
        }
        outcome
    }

    /// Bundle `digest` of the roll-out is live (its shadow was promoted).
    pub(super) fn rollout_bundle_live(&mut self, digest: &str) {
        if let Some(r) = self.rollout.as_mut() {
            r.waiting.remove(digest);
        }
        self.finish_if_done();
    }

    /// The roll-out cannot complete: it ends here, and the status says why.
    pub(super) fn rollout_failed(&mut self, error: String) {
        if let Some(rollout) = self.rollout.take() {
            self.report(Some(&rollout.desired), "failed", Some(error));
        }
    }

    fn finish_if_done(&mut self) {
        if let Some(rollout) = self.rollout.take_if(|r| r.waiting.is_empty()) {
            self.report(Some(&rollout.desired), "converged", None);
        }
    }
}

//! Fleet roll-outs: a signed desired state per group, retained on the broker, applied here.
//!
//! A desired state lists the plugins of the group and their bundle digests; the manager installs
//! what is missing (asking for its bundles on `edgewise/bundles/<digest>`), swaps what
//! differs, removes what is not listed, and reports its progress in the gateway's status. The
//! version applied is kept in `<store>/fleet.json`, so an older desired state is refused.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use edgewise_signing::command::DesiredState;
use edgewise_signing::namespace;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::reply::Replier;
use super::store::write_atomically;
use super::{Change, Manager, Unfinished};

/// A desired state being applied: the bundles still awaited.
pub(super) struct Rollout {
    desired: DesiredState,
    waiting: BTreeSet<String>,
    reply: Replier,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct FleetFile {
    applied_version: u64,
}

impl Manager {
    fn fleet_path(&self) -> PathBuf {
        self.store.root().join("fleet.json")
    }

    fn applied_version(&self) -> u64 {
        std::fs::read(self.fleet_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<FleetFile>(&b).ok())
            .unwrap_or_default()
            .applied_version
    }

    fn report(&self, desired: Option<&DesiredState>, state: &str, error: Option<String>) {
        let mut fleet = json!({
            "group": self.config.group,
            "version": desired.map(|d| d.version),
            "state": state,
        });
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
        let applied = self.applied_version();
        if desired.version < applied {
            let error = format!(
                "version {} is older than version {applied} applied here",
                desired.version
            );
            return self.report(Some(&desired), "refused", Some(error));
        }
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
        let topics = waiting.iter().map(|d| namespace::bundle(d)).collect();
        self.rollout = Some(Rollout {
            desired: desired.clone(),
            waiting,
            reply,
        });
        self.report(Some(&desired), "applying", None);
        let _ = self.changes.send(Change::Subscribe(topics));
        self.finish_if_done();
    }

    /// A bundle an `update` by digest or a roll-out may be waiting for.
    pub(super) fn bundle(&mut self, digest: &str, bytes: &[u8]) {
        if !bytes.is_empty()
            && let Some((reply, received)) = self.awaiting.remove(digest)
        {
            let actual = edgewise_signing::Bundle::parse(bytes).map(|b| b.digest());
            if actual.as_deref().ok() != Some(digest) {
                let reason = format!("the bundle on edgewise/bundles/{digest} is not that bundle");
                return reply.send("failed", json!({ "reason": reason }));
            }
            match self.update_bytes(bytes, &reply, received) {
                Ok(change) => {
                    let _ = self.changes.send(change);
                }
                Err(Unfinished::Failed(reason)) => {
                    reply.send("failed", json!({ "reason": reason }))
                }
                Err(Unfinished::Answered) => {}
            }
        }
        let Some(rollout) = self.rollout.as_ref() else {
            return;
        };
        if bytes.is_empty() || !rollout.waiting.contains(digest) {
            return;
        }
        let desired = rollout.desired.clone();
        let reply = rollout.reply.clone();
        let actual = edgewise_signing::Bundle::parse(bytes).map(|b| b.digest());
        if actual.as_deref().ok() != Some(digest) {
            let error = format!("the bundle on edgewise/bundles/{digest} is not that bundle");
            return self.report(Some(&desired), "failed", Some(error));
        }
        match self.update_bytes(bytes, &reply, Instant::now()) {
            Ok(change) => {
                let _ = self.changes.send(change);
                if let Some(r) = self.rollout.as_mut() {
                    r.waiting.remove(digest);
                }
                self.finish_if_done();
            }
            Err(unfinished) => {
                let error = match unfinished {
                    Unfinished::Failed(reason) => reason,
                    Unfinished::Answered => "the new version was rolled back".into(),
                };
                self.rollout = None;
                self.report(Some(&desired), "failed", Some(error));
            }
        }
    }

    fn finish_if_done(&mut self) {
        let Some(rollout) = self.rollout.take_if(|r| r.waiting.is_empty()) else {
            return;
        };
        let file = serde_json::to_vec(&FleetFile {
            applied_version: rollout.desired.version,
        })
        .unwrap_or_default();
        match write_atomically(&self.fleet_path(), &file) {
            Ok(()) => self.report(Some(&rollout.desired), "converged", None),
            Err(e) => self.report(Some(&rollout.desired), "failed", Some(e.to_string())),
        }
    }
}

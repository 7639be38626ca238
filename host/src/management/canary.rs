//! Canary roll-outs, as a gateway that is not a canary sees one: a desired state that names
//! canaries is held back here until every canary's retained status shows it applied and
//! healthy for the bake time; then it is applied. A canary that fails halts the roll-out here,
//! with its name and its reason in this gateway's status.
//!
//! The canaries apply the state at once, as any gateway does (`fleet`). What a canary's health
//! means: online, the roll-out's version `converged`, and every plugin of the state running the
//! bundle it names, with no rollback. A canary that reports the version `failed` or `refused`,
//! or whose plugin was rolled back after converging, has failed. The statuses are read from the
//! broker and not signed: a forged one could hold a roll-out back or release it early, but only
//! ever to the desired state the operators signed (see docs/evaluation.md).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgewise_signing::command::DesiredState;
use edgewise_signing::namespace;
use serde_json::Value;

use super::{Change, Manager};

/// A desired state held back until its canaries are healthy.
pub(crate) struct Following {
    desired: DesiredState,
    /// Each canary's health, as its last status showed it.
    canaries: BTreeMap<String, Health>,
    /// Since when every canary has been healthy.
    all_healthy_since: Option<Instant>,
}

/// One canary, as its status shows it.
#[derive(Debug, Clone, PartialEq)]
enum Health {
    /// No status yet, or the state not applied yet.
    Waiting(String),
    /// Applied and healthy.
    Healthy,
    /// It failed: the roll-out halts.
    Failed(String),
}

impl Manager {
    /// Holds `desired` back until its canaries are healthy: watches their statuses.
    pub(super) fn follow(&mut self, desired: DesiredState) {
        let canaries: BTreeMap<String, Health> = desired
            .canary
            .iter()
            .flat_map(|c| &c.gateways)
            .map(|g| (g.clone(), Health::Waiting("no status yet".into())))
            .collect();
        let topics: Vec<String> = canaries.keys().map(|g| namespace::status(g)).collect();
        self.report(Some(&desired), "waiting-for-canaries", None);
        self.following = Some(Following {
            desired,
            canaries,
            all_healthy_since: None,
        });
        let _ = self.changes.send(Change::Subscribe(topics));
    }

    /// Stops watching the canaries of a held-back roll-out, if any.
    pub(super) fn stop_following(&mut self) {
        if let Some(following) = self.following.take() {
            let topics = following
                .canaries
                .keys()
                .map(|g| namespace::status(g))
                .collect();
            let _ = self.changes.send(Change::Unsubscribe(topics));
        }
    }

    /// A status of another gateway arrived: if it is a canary of the held-back roll-out, judge
    /// its health.
    pub(super) fn peer_status(&mut self, gateway: &str, status: &[u8]) {
        let Some(following) = self.following.as_mut() else {
            return;
        };
        let Some(health) = following.canaries.get_mut(gateway) else {
            return;
        };
        let status: Value = serde_json::from_slice(status).unwrap_or(Value::Null);
        *health = judge(&following.desired, &status);
        if let Health::Failed(why) = health.clone() {
            let desired = following.desired.clone();
            let error = format!(
                "canary {gateway} failed: {why}; the roll-out is halted here (nothing changed)"
            );
            self.stop_following();
            return self.report(Some(&desired), "halted", Some(error));
        }
        let all = following.canaries.values().all(|h| *h == Health::Healthy);
        match (all, following.all_healthy_since) {
            (true, None) => {
                following.all_healthy_since = Some(Instant::now());
                let bake = following.desired.canary.as_ref().map_or(0, |c| c.bake_s);
                let desired = following.desired.clone();
                self.report(
                    Some(&desired),
                    "baking",
                    Some(format!("every canary healthy; following in {bake} s")),
                );
            }
            (false, Some(_)) => {
                following.all_healthy_since = None;
                let waiting: Vec<String> = following
                    .canaries
                    .iter()
                    .filter_map(|(g, h)| match h {
                        Health::Waiting(why) => Some(format!("{g}: {why}")),
                        _ => None,
                    })
                    .collect();
                let desired = following.desired.clone();
                self.report(
                    Some(&desired),
                    "waiting-for-canaries",
                    Some(waiting.join("; ")),
                );
            }
            _ => {}
        }
        self.follow_if_baked();
    }

    /// How long until the held-back roll-out's bake time is over, if it is baking.
    pub(super) fn bake_left(&self) -> Option<Duration> {
        let following = self.following.as_ref()?;
        let since = following.all_healthy_since?;
        let bake = Duration::from_secs(following.desired.canary.as_ref()?.bake_s);
        Some(bake.saturating_sub(since.elapsed()))
    }

    /// Applies the held-back roll-out once its canaries have been healthy for the bake time.
    pub(super) fn follow_if_baked(&mut self) {
        if self.bake_left() != Some(Duration::ZERO) {
            return;
        }
        if let Some(following) = self.following.as_ref() {
            let desired = following.desired.clone();
            tracing::info!(
                version = desired.version,
                "fleet: every canary healthy for the bake time; applying the roll-out"
            );
            self.stop_following();
            self.apply(desired);
        }
    }
}

/// A canary's health for `desired`, from its status.
fn judge(desired: &DesiredState, status: &Value) -> Health {
    let fleet = &status["fleet"];
    if fleet["version"].as_u64() != Some(desired.version) {
        return Health::Waiting("not at this version yet".into());
    }
    match fleet["state"].as_str() {
        Some("failed" | "refused" | "halted") => {
            let error = fleet["error"].as_str().unwrap_or("no reason given");
            return Health::Failed(error.to_owned());
        }
        Some("converged") => {}
        other => return Health::Waiting(other.unwrap_or("no state").to_owned()),
    }
    if status["state"] != "online" {
        return Health::Waiting("offline".into());
    }
    let plugins: Vec<&Value> = status["plugins"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    for (name, digest) in &desired.plugins {
        let Some(entry) = plugins.iter().find(|p| p["name"] == name.as_str()) else {
            return Health::Waiting(format!("`{name}` not in its status yet"));
        };
        if let Some(why) = entry["rolled-back"].as_str() {
            return Health::Failed(format!("`{name}` was rolled back: {why}"));
        }
        if entry["digest"].as_str() != Some(digest.as_str()) {
            return Health::Failed(format!("`{name}` does not run the bundle of this roll-out"));
        }
        match entry["state"].as_str() {
            Some("running") => {}
            Some("failed") => {
                let error = entry["error"].as_str().unwrap_or("no reason given");
                return Health::Failed(format!("`{name}` failed: {error}"));
            }
            other => return Health::Waiting(format!("`{name}` is {}", other.unwrap_or("?"))),
        }
    }
    Health::Healthy
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn desired() -> DesiredState {
        DesiredState {
            group: "line".into(),
            version: 7,
            issued_at_ms: 7,
            expires_at_ms: 8,
            plugins: [("vib".to_owned(), "d2".to_owned())].into(),
            canary: None,
            shadow: Default::default(),
        }
    }

    fn status(fleet_state: &str, entry: Value) -> Value {
        json!({ "state": "online", "fleet": { "version": 7, "state": fleet_state, "error": "gate failed" }, "plugins": [entry] })
    }

    #[test]
    fn a_canary_is_healthy_when_converged_and_running_the_bundle() {
        let ok = json!({ "name": "vib", "digest": "d2", "state": "running" });
        assert_eq!(judge(&desired(), &status("converged", ok)), Health::Healthy);
    }

    #[test]
    fn a_canary_that_failed_rolled_back_or_runs_another_bundle_fails() {
        let ok = json!({ "name": "vib", "digest": "d2", "state": "running" });
        assert_eq!(
            judge(&desired(), &status("failed", ok)),
            Health::Failed("gate failed".into())
        );
        let rolled =
            json!({ "name": "vib", "digest": "d1", "state": "running", "rolled-back": "trapped" });
        assert!(
            matches!(judge(&desired(), &status("converged", rolled)), Health::Failed(w) if w.contains("rolled back: trapped"))
        );
        let other = json!({ "name": "vib", "digest": "d1", "state": "running" });
        assert!(matches!(
            judge(&desired(), &status("converged", other)),
            Health::Failed(_)
        ));
    }

    #[test]
    fn a_canary_not_there_yet_is_waited_for() {
        let ok = json!({ "name": "vib", "digest": "d2", "state": "running" });
        assert!(matches!(
            judge(&desired(), &status("applying", ok.clone())),
            Health::Waiting(_)
        ));
        let mut older = status("converged", ok);
        older["fleet"]["version"] = json!(6);
        assert!(matches!(judge(&desired(), &older), Health::Waiting(_)));
    }
}

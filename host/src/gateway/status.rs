//! The gateway's status document, retained on `edgewise/<gateway>/status`: who it is, each
//! plugin's entry (version, state, why), and the fleet roll-out's progress.
//!
//! Each plugin's entry is made when it loads, and its state is read from the plugin thread's
//! [`Vitals`](crate::worker::vitals::Vitals) on a timer ([`Status::read_vitals`]), so the
//! status stays true even when a thread cannot speak. The last will (`offline`) is
//! `mqtt::offline_status`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::slot::Slot;
use crate::metrics::Metrics;

/// What the status says.
pub struct Status {
    gateway: String,
    instance: String,
    started_at_ms: u64,
    /// Each plugin's entry, by name: loaded, refused or failed.
    pub plugins: BTreeMap<String, Value>,
    /// The fleet roll-out's progress (`null` outside a fleet).
    pub fleet: Value,
    /// The state of the gateway's trust: keyring, what is stale (`null` when unmanaged).
    pub trust: Value,
    /// The gateway's public decryption key, base64, for `edgewise pack --encrypt-for`
    /// (`null` when it has none).
    pub decryption_key: Option<String>,
}

impl Status {
    /// The status of gateway `gateway` of fleet `group` as this process (`instance`), with the
    /// entries of plugins refused before loading. A gateway of a group says so from the start,
    /// before any desired state has reached it, so that `fleet status` counts it.
    pub fn new(
        gateway: &str,
        group: Option<&str>,
        instance: &str,
        plugins: BTreeMap<String, Value>,
    ) -> Self {
        Self {
            gateway: gateway.to_owned(),
            instance: instance.to_owned(),
            started_at_ms: crate::clock::now_ms(),
            plugins,
            fleet: group.map_or(
                Value::Null,
                |group| json!({ "group": group, "version": null, "state": "waiting" }),
            ),
            trust: Value::Null,
            decryption_key: None,
        }
    }

    /// The document, as published.
    pub fn render(&self) -> String {
        json!({
            "state": "online",
            "gateway": self.gateway,
            "pid": std::process::id(),
            "instance": self.instance,
            "started_at_ms": self.started_at_ms,
            "plugins": self.plugins.values().collect::<Vec<_>>(),
            "fleet": self.fleet,
            "trust": self.trust,
            "decryption_key": self.decryption_key,
        })
        .to_string()
    }

    /// The plugins in state `failed` (for good, or at load).
    pub fn failed_plugins(&self) -> std::collections::BTreeSet<String> {
        self.plugins
            .iter()
            .filter(|(_, entry)| entry["state"] == "failed")
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Sets plugin `name`'s state.
    pub fn set_state(&mut self, name: &str, state: &str) {
        if let Some(entry) = self.plugins.get_mut(name).and_then(Value::as_object_mut) {
            entry.insert("state".into(), json!(state));
        }
    }

    /// Adds `fields` to plugin `name`'s entry.
    pub fn merge(&mut self, name: &str, fields: Value) {
        if let (Some(old), Value::Object(new)) = (
            self.plugins.get_mut(name).and_then(Value::as_object_mut),
            fields,
        ) {
            old.extend(new);
        }
    }

    /// Reads every live plugin's vitals into its entry and state gauge; true if any entry
    /// changed.
    pub fn read_vitals(&mut self, slots: &[Slot], metrics: &Metrics) -> bool {
        let mut changed = false;
        for slot in slots.iter().filter(|s| !s.removed) {
            let Some(entry) = self
                .plugins
                .get_mut(&slot.name)
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            if slot.stopped {
                metrics.set_state(&slot.name, "stopped");
                continue;
            }
            let mut fields = slot.vitals.render(slot.allowance);
            // The status changes when the state or the reason does, not with every tick of a
            // countdown.
            let same = ["state", "reason"]
                .iter()
                .all(|k| entry.get(*k) == fields.get(*k));
            entry.remove("error");
            entry.remove("resting_ms");
            entry.remove("stuck_ms");
            entry.append(&mut fields);
            if let Some(state) = entry.get("state").and_then(Value::as_str) {
                metrics.set_state(&slot.name, state);
            }
            changed |= !same;
        }
        changed
    }
}

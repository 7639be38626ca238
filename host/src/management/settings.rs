//! Plugin settings changed while the gateway runs: by an operator's `ctl config` command, or
//! by a reload of `gateway.toml` (SIGHUP, `systemctl reload edgewise`).
//!
//! A plugin's settings are its manifest's defaults, under the `[settings.<plugin>]` table of
//! `gateway.toml`, under the overrides `ctl config` saved in the store (the most specific
//! wins). Either way a change is all or nothing for a plugin: every key must be one its
//! manifest declares and the plugin must start with the result; the new settings take its
//! place between two messages (as a hot swap does, without probation), and until then, or if
//! it is refused, the plugin keeps running with what it had.

use std::collections::BTreeMap;
use std::time::Instant;

use edgewise_signing::manifest::Setting;
use serde_json::json;

use super::{Change, Manager, Replier};
use crate::config::Config;
use crate::runtime::plugin::check_declared;

/// The reply id under which a reload's outcome is published: `edgewise/<gateway>/reply/reload`.
pub const RELOAD_REPLY: &str = "reload";

impl Manager {
    /// Changes `plugin`'s setting overrides: `set` over the ones it has, less `unset`. Only
    /// once the plugin has started with the result are they saved, so a refused change leaves
    /// the overrides as they were.
    pub(super) fn configure(
        &self,
        plugin: &str,
        set: &BTreeMap<String, Setting>,
        unset: &[String],
        reply: &Replier,
        received: Instant,
    ) -> Result<Change, String> {
        let (bundle, mut overrides) = self.store.active(plugin).map_err(|e| e.to_string())?;
        check_declared(&bundle.manifest, set.keys().chain(unset))?;
        for key in unset {
            overrides.remove(key);
        }
        overrides.extend(set.iter().map(|(k, v)| (k.clone(), v.to_string())));
        let change = self.prepare(&bundle, &overrides, false, reply, received)?;
        self.store
            .set_settings(plugin, &overrides)
            .map_err(|e| e.to_string())?;
        Ok(change)
    }

    /// Takes the `[settings.<plugin>]` tables of a re-read `gateway.toml`: each installed
    /// plugin whose table changed restarts with it, or, if the table is refused, keeps running
    /// with the one it had (and that one stays in force here too). Outcomes are replied, one
    /// a plugin, as [`RELOAD_REPLY`].
    pub(super) fn reload(&mut self, reread: &Config) {
        let reply = Replier::new(self.link.clone(), &self.config.gateway_id, RELOAD_REPLY);
        let installed = match self.store.list() {
            Ok(installed) => installed,
            Err(e) => {
                reply.send("failed", json!({ "reason": e.to_string() }));
                return;
            }
        };
        let mut changed = 0;
        for (plugin, _, _) in installed {
            let table = reread.settings.get(&plugin);
            if table == self.config.settings.get(&plugin) {
                continue;
            }
            changed += 1;
            let before = set_table(&mut self.config.settings, &plugin, table.cloned());
            match self.restart_with_table(&plugin, &reply) {
                Ok(change) => {
                    let _ = self.changes.send(change);
                }
                Err(reason) => {
                    set_table(&mut self.config.settings, &plugin, before);
                    tracing::error!(
                        plugin,
                        "[settings.{plugin}] not applied, the plugin keeps its settings: {reason}"
                    );
                    reply.send("failed", json!({ "plugin": plugin, "reason": reason }));
                }
            }
        }
        if changed == 0 {
            reply.send(
                "done",
                json!({ "unchanged": "no installed plugin's [settings] table changed" }),
            );
        }
    }

    /// The change that restarts `plugin` with the `[settings.<plugin>]` table now in force.
    fn restart_with_table(&self, plugin: &str, reply: &Replier) -> Result<Change, String> {
        let (bundle, overrides) = self.store.active(plugin).map_err(|e| e.to_string())?;
        // The table's keys and values are checked against the manifest as the plugin loads.
        self.prepare(&bundle, &overrides, false, reply, Instant::now())
            .map_err(|e| format!("gateway.toml: {e}"))
    }
}

/// Puts `table` (or none) in as `plugin`'s settings; returns the one it replaces.
fn set_table(
    tables: &mut BTreeMap<String, BTreeMap<String, Setting>>,
    plugin: &str,
    table: Option<BTreeMap<String, Setting>>,
) -> Option<BTreeMap<String, Setting>> {
    match table {
        Some(table) => tables.insert(plugin.to_owned(), table),
        None => tables.remove(plugin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_set_and_removed_gives_back_the_one_before() {
        let mut tables = BTreeMap::new();
        let table: BTreeMap<String, Setting> = toml::from_str("limit = 80").expect("a table");
        assert_eq!(set_table(&mut tables, "t", Some(table.clone())), None);
        assert_eq!(set_table(&mut tables, "t", None), Some(table));
        assert!(tables.is_empty());
    }
}

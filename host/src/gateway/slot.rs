//! A running plugin as the gateway sees it ([`Slot`]), and how one is found, loaded and
//! started on its own thread.
//!
//! Plugins come from the [`Store`] (signed bundles, verified again at this load). Unsigned
//! plugin directories are refused unless the operator passed `--allow-unsigned`, which is
//! logged as a warning at start and shown in the status. A plugin that fails to load is
//! reported with its reason and skipped; the others run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use edgewise_signing::{Keyring, Manifest, TopicFilter, VerifiedBundle};
use serde_json::{Value, json};

use super::GatewayError;
use super::flow::Lane;
use crate::config::Config;
use crate::management::store::Store;
use crate::metrics::{Metrics, PluginMetrics};
use crate::runtime::Compiler;
use crate::runtime::plugin::{CompiledPlugin, MANIFEST_FILE};
use crate::worker::Worker;
use crate::worker::mailbox::Mailbox;
use crate::worker::thread::{Job, Shared, serve};
use crate::worker::vitals::Vitals;

/// How `edgewise run` was asked to behave beyond its config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Development only: load the unsigned plugin directories under `plugins`.
    pub allow_unsigned: bool,
}

/// Where a plugin comes from.
pub enum Source {
    /// A verified signed bundle from the store, with an operator's setting overrides and the
    /// results of the evaluation gate it passed here, if it was gated.
    Bundle(Box<VerifiedBundle>, BTreeMap<String, String>, Option<Value>),
    /// An unsigned plugin directory (development).
    Directory(PathBuf),
}

/// A running plugin.
pub struct Slot {
    /// Its name.
    pub name: String,
    /// The topic filters it receives.
    pub filters: Vec<TopicFilter>,
    /// Whether its own outputs are routed back to it (the manifest's `loopback`).
    pub loopback: bool,
    /// What its thread takes messages and swaps from.
    pub mailbox: Arc<Mailbox<Job>>,
    /// Its metrics.
    pub metrics: PluginMetrics,
    /// What its thread last reported.
    pub vitals: Arc<Vitals>,
    /// How long one message may keep its thread before the plugin counts as stuck.
    pub allowance: Duration,
    /// Its thread, until joined.
    pub thread: Option<JoinHandle<()>>,
    /// Stopped by an operator: it gets no messages.
    pub stopped: bool,
    /// Removed: its thread finishes and it is gone.
    pub removed: bool,
}

impl Slot {
    /// Starts the thread that serves `worker`'s plugin from a new mailbox.
    pub fn spawn(
        worker: Worker,
        config: &Config,
        shared: &Shared,
        metrics: &Arc<Metrics>,
    ) -> Result<Slot, String> {
        let name = worker.plugin().name().to_owned();
        let filters = worker.plugin().subscribe().to_vec();
        let loopback = worker.plugin().manifest().loopback;
        let allowance = stuck_after(&worker);
        let plugin_metrics = metrics.plugin(&name);
        let vitals = Arc::new(Vitals::default());
        // The backlog is in the journal; the mailbox holds a window of it (see `flow`).
        let mailbox = Arc::new(Mailbox::new());
        let dead_letter_topic = config.dead_letter_topic(&name);
        let thread = {
            let (mailbox, shared, metrics) =
                (mailbox.clone(), shared.clone(), plugin_metrics.clone());
            let vitals = vitals.clone();
            std::thread::Builder::new()
                .name(format!("plugin-{name}"))
                .spawn(move || {
                    serve(
                        worker,
                        &mailbox,
                        &shared,
                        &dead_letter_topic,
                        &metrics,
                        &vitals,
                    )
                })
                .map_err(|e| format!("cannot start its thread: {e}"))?
        };
        Ok(Slot {
            name,
            filters,
            loopback,
            mailbox,
            metrics: plugin_metrics,
            vitals,
            allowance,
            thread: Some(thread),
            stopped: false,
            removed: false,
        })
    }

    /// Its lane on the message path.
    pub fn lane(&self) -> Lane {
        Lane::new(self.mailbox.clone(), self.metrics.clone())
    }

    /// Whether it takes messages.
    pub fn routed(&self) -> bool {
        !self.stopped && !self.removed
    }
}

/// How long one message may keep a plugin's thread before the plugin counts as stuck: every
/// attempt at its deadline (or at starting an instance), plus a margin for the host's own work.
fn stuck_after(worker: &Worker) -> Duration {
    let limits = worker.plugin().limits();
    let attempt = limits.time_per_message_ms.max(limits.init_time_ms);
    let attempts = u64::from(worker.policy().attempts);
    Duration::from_millis(attempts * attempt) + STUCK_MARGIN
}

/// What the host may add to a plugin's deadlines before the plugin counts as stuck.
const STUCK_MARGIN: Duration = Duration::from_secs(1);

/// The store (when a keyring is configured), what to run from it and with `--allow-unsigned`
/// from plugin directories (each with whether an operator stopped it), and the status of
/// those refused before loading.
pub type Sources = (Option<Store>, Vec<(Source, bool)>, BTreeMap<String, Value>);

/// What to run: every plugin in the store, and with `--allow-unsigned` the plugin directories.
pub fn plugin_sources(config: &Config, options: Options) -> Result<Sources, GatewayError> {
    let mut sources = Vec::new();
    let mut refused = BTreeMap::new();
    let mut names = Vec::new();
    let store = match &config.keyring {
        Some(path) => {
            let keyring = Keyring::from_file(path)?;
            let store = Store::open(&config.store, keyring, config.max_bundle_bytes())?;
            for loaded in store.load_all()? {
                match loaded.bundle {
                    Ok(bundle) => {
                        names.push(loaded.plugin);
                        let evaluation = store.evaluation(&bundle.digest);
                        let source = Source::Bundle(Box::new(bundle), loaded.settings, evaluation);
                        sources.push((source, loaded.stopped));
                    }
                    Err(error) => {
                        tracing::error!(plugin = loaded.plugin, "{error}");
                        let entry = json!({ "name": loaded.plugin, "state": "failed", "error": error.to_string() });
                        refused.insert(loaded.plugin, entry);
                    }
                }
            }
            Some(store)
        }
        None => {
            tracing::warn!(
                "no `keyring` configured: no signed plugin can be trusted, and management commands are off"
            );
            None
        }
    };
    let Some(root) = &config.plugins else {
        return Ok((store, sources, refused));
    };
    let dirs = plugin_dirs(root)?;
    if dirs.is_empty() {
        return Ok((store, sources, refused));
    }
    if !options.allow_unsigned {
        for dir in dirs {
            let name = dir_name(&dir);
            let error = format!(
                "unsigned plugin directory {} refused: pack and install it as a signed bundle, or run with --allow-unsigned for development",
                dir.display()
            );
            tracing::error!(plugin = name, "{error}");
            refused.insert(
                name.clone(),
                json!({ "name": name, "state": "refused", "error": error }),
            );
        }
        return Ok((store, sources, refused));
    }
    tracing::warn!(
        "DEVELOPMENT MODE (--allow-unsigned): running UNSIGNED plugins from {}; never do this in production",
        root.display()
    );
    for dir in dirs {
        if names.contains(&dir_name(&dir)) {
            tracing::warn!(
                plugin = dir_name(&dir),
                "installed as a signed bundle: its unsigned directory is ignored"
            );
            continue;
        }
        sources.push((Source::Directory(dir), false));
    }
    Ok((store, sources, refused))
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Loads one plugin, ready to start on its thread; the error is its name and status entry.
pub fn load_plugin(
    compiler: &Compiler,
    config: &Config,
    source: Source,
    metrics: &Arc<Metrics>,
) -> Result<(Worker, Value), (String, Value)> {
    let label = match &source {
        Source::Bundle(bundle, ..) => bundle.manifest.name.clone(),
        Source::Directory(dir) => dir_name(dir),
    };
    let failed = |error: String| {
        tracing::error!(plugin = label, "{error}");
        (
            label.clone(),
            json!({ "name": label, "state": "failed", "error": error }),
        )
    };
    let (plugin, origin) = match source {
        Source::Bundle(bundle, overrides, evaluation) => {
            let mut settings = config.settings_for(&bundle.manifest.name);
            settings.extend(overrides);
            let plugin = compiler
                .plugin(&bundle, &settings)
                .map_err(|e| failed(e.to_string()))?;
            let mut origin = crate::management::describe(&bundle);
            if let (Some(o), Some(e)) = (origin.as_object_mut(), evaluation) {
                o.insert("evaluation".into(), e);
            }
            (plugin, origin)
        }
        Source::Directory(dir) => {
            let manifest =
                Manifest::from_file(&dir.join(MANIFEST_FILE)).map_err(|e| failed(e.to_string()))?;
            let settings = config.settings_for(&manifest.name);
            let plugin =
                CompiledPlugin::from_manifest(&compiler.runtime, &dir, manifest, &settings)
                    .map_err(|e| failed(e.to_string()))?;
            (plugin, json!({ "signed": false }))
        }
    };
    let name = plugin.name().to_owned();
    let version = plugin.manifest().version.to_string();
    metrics.instrument(&plugin);
    // Started on its own thread (see `serve`): plugin code never runs on the gateway's.
    let worker = Worker::new(Arc::new(plugin), config.restart.policy());
    let mut entry = json!({ "name": name, "version": version, "state": "starting" });
    if let (Some(entry), Value::Object(origin)) = (entry.as_object_mut(), origin) {
        for (k, v) in origin {
            entry.entry(k).or_insert(v);
        }
    }
    // Whether it starts is its thread's to say, after this line: "plugin started" or the error.
    tracing::info!(
        plugin = name,
        version,
        "plugin compiled; starting it on its own thread"
    );
    Ok((worker, entry))
}

/// The plugin directories under `root`: every subdirectory holding a plugin.toml, by name.
fn plugin_dirs(root: &Path) -> Result<Vec<PathBuf>, GatewayError> {
    let entries = std::fs::read_dir(root).map_err(|source| GatewayError::Plugins {
        path: root.to_owned(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

//! A plugin, checked, compiled and linked once: ready to instantiate.
//!
//! A plugin comes from a verified signed bundle ([`CompiledPlugin::from_bundle`]) or, in
//! development, from a plain directory ([`CompiledPlugin::load`]). Either way its limits are
//! capped by the host's, its component compiled and checked against the `edgewise:plugin`
//! world (its imports are all provided, its `handler` export is there), and its models loaded.
//! Every failure is a [`LoadError`] that names the plugin and the file. Never runs plugin code.
//!
//! Compiled components of bundles go through the [`Cache`], which binds each to its bundle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use edgewise_signing::{Limits, Manifest, ManifestError, TopicFilter, VerifiedBundle};
use wasmtime::component::Component;

use crate::bindings::PluginPre;
use crate::capability::HostState;
use crate::capability::host::Grants;
use crate::capability::log::{HostCounters, PluginLog};
use crate::capability::nn::{ModelError, ModelSet};
use crate::runtime::cache::Cache;
use crate::runtime::{EpochTicker, Runtime};

/// The manifest's file name inside a plugin directory.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component file could not be read.
    #[error("plugin `{plugin}`: cannot read component {}: {source}", path.display())]
    ReadComponent {
        /// The plugin's name.
        plugin: String,
        /// The component's path.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The file is a core wasm module, not a component.
    #[error(
        "plugin `{plugin}`: {} is a core WebAssembly module, not a component; build the plugin \
         with `--target wasm32-wasip2`", path.display()
    )]
    NotAComponent {
        /// The plugin's name.
        plugin: String,
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid WebAssembly, or did not compile.
    #[error("plugin `{plugin}`: {} does not compile: {reason}", path.display())]
    Compile {
        /// The plugin's name.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// The compiler's account.
        reason: String,
    },
    /// The component imports something the gateway does not provide, or lacks the handler.
    #[error("plugin `{plugin}`: the component does not fit the edgewise:plugin world: {reason}")]
    World {
        /// The plugin's name.
        plugin: String,
        /// What is missing or extra.
        reason: String,
    },
    /// A setting given to the plugin is not one its manifest declares, or not a value it
    /// accepts.
    #[error("plugin `{plugin}`: {problem}")]
    Setting {
        /// The plugin's name.
        plugin: String,
        /// Which setting, and what is accepted.
        problem: String,
    },
    /// A model could not be loaded.
    #[error("plugin `{plugin}`: {source}")]
    Model {
        /// The plugin's name.
        plugin: String,
        /// What went wrong with which model.
        source: ModelError,
    },
}

/// A plugin ready to instantiate: compiled once, shared by all of its instances.
pub struct CompiledPlugin {
    manifest: Manifest,
    pre: PluginPre<HostState>,
    models: ModelSet,
    grants: Grants,
    subscribe: Vec<TopicFilter>,
    counters: Arc<OnceLock<HostCounters>>,
    /// Keeps the epoch ticker running while this plugin can be called: its deadlines depend
    /// on it.
    _ticker: Arc<EpochTicker>,
}

impl CompiledPlugin {
    /// Loads the plugin in `dir`; `settings` override the manifest's `[settings]`.
    pub fn load(
        runtime: &Runtime,
        dir: &Path,
        settings: &BTreeMap<String, String>,
    ) -> Result<Self, LoadError> {
        let manifest = Manifest::from_file(&dir.join(MANIFEST_FILE))?;
        Self::from_manifest(runtime, dir, manifest, settings)
    }

    /// Like [`CompiledPlugin::load`], with the directory's manifest already read.
    pub fn from_manifest(
        runtime: &Runtime,
        dir: &Path,
        manifest: Manifest,
        settings: &BTreeMap<String, String>,
    ) -> Result<Self, LoadError> {
        let settings = checked_settings(&manifest, settings)?;
        let path = dir.join(&manifest.component);
        let bytes = std::fs::read(&path).map_err(|source| LoadError::ReadComponent {
            plugin: manifest.name.clone(),
            path: path.clone(),
            source,
        })?;
        let component = compile(runtime, &manifest.name, &path, &bytes)?;
        let read = |file: &Path| std::fs::read(dir.join(file));
        Self::link(runtime, manifest, component, dir, &read, settings)
    }

    /// Loads the plugin in a verified bundle, compiling its component or taking it from
    /// `cache` (a directory this host alone writes).
    pub fn from_bundle(
        runtime: &Runtime,
        bundle: &VerifiedBundle,
        settings: &BTreeMap<String, String>,
        cache: Option<&Cache>,
    ) -> Result<Self, LoadError> {
        let manifest = bundle.manifest.clone();
        let settings = checked_settings(&manifest, settings)?;
        let origin = PathBuf::from(format!("bundle {}", &bundle.digest[..16]));
        let path = origin.join(&manifest.component);
        // Read from the bundle and checked against its pin again (see `VerifiedBundle::file`);
        // an encrypted model is decrypted here, in memory only.
        let read = |file: &Path| {
            bundle
                .plain_file(file)
                .map(|mut plain| std::mem::take(&mut *plain))
                .map_err(std::io::Error::other)
        };
        // Read only when it must be compiled: a cached component needs none of it.
        let compile = || {
            let bytes = read(&manifest.component).map_err(|source| LoadError::ReadComponent {
                plugin: manifest.name.clone(),
                path: path.clone(),
                source,
            })?;
            compile(runtime, &manifest.name, &path, &bytes)
        };
        let component = match cache {
            Some(cache) => {
                cache.component(runtime.engine(), &manifest.name, &bundle.digest, compile)?
            }
            None => compile()?,
        };
        Self::link(runtime, manifest, component, &origin, &read, settings)
    }

    fn link(
        runtime: &Runtime,
        manifest: Manifest,
        component: Component,
        origin: &Path,
        read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
        settings: BTreeMap<String, String>,
    ) -> Result<Self, LoadError> {
        let plugin = manifest.name.clone();
        let world_error = |e: wasmtime::Error| LoadError::World {
            plugin: plugin.clone(),
            reason: format!("{e:#}"),
        };
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(world_error)?;
        let pre = PluginPre::new(instance_pre).map_err(world_error)?;
        let limits = manifest.limits.capped_by(runtime.caps());
        let models = ModelSet::load(&manifest.models, origin, read, limits.time_per_message_ms)
            .map_err(|source| LoadError::Model {
                plugin: plugin.clone(),
                source,
            })?;

        let name: Arc<str> = plugin.as_str().into();
        let counters = Arc::new(OnceLock::new());
        let grants = Grants {
            name: name.clone(),
            publish: manifest.publish_filters().into(),
            settings: Arc::new(settings),
            limits,
            log: PluginLog::new(name, counters.clone()),
            refusals: Arc::default(),
        };
        let subscribe = manifest.subscribe_filters();
        Ok(Self {
            manifest,
            pre,
            models,
            grants,
            subscribe,
            counters,
            _ticker: runtime.ticker(),
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The manifest it was loaded from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The limits in force: the manifest's, capped by the host's.
    pub fn limits(&self) -> &Limits {
        &self.grants.limits
    }

    /// The topic filters it subscribes to.
    pub fn subscribe(&self) -> &[TopicFilter] {
        &self.subscribe
    }

    /// Whether `other` runs model `name` on the very same optimised graph (a model that did not
    /// change between two versions is not loaded again while one of them holds it).
    pub fn shares_model_with(&self, other: &CompiledPlugin, name: &str) -> bool {
        self.models.shares_graph_with(&other.models, name)
    }

    /// Counts what the host refuses or drops for this plugin into `counters` (first call wins).
    pub fn count_into(&self, counters: HostCounters) {
        let _ = self.counters.set(counters);
    }

    /// Reports the duration of every inference this plugin runs to `observer`.
    pub fn observe_inference(&self, observer: crate::capability::nn::InferenceObserver) {
        self.models.observe_inference(observer);
    }

    pub(crate) fn pre(&self) -> &PluginPre<HostState> {
        &self.pre
    }

    pub(crate) fn models(&self) -> &ModelSet {
        &self.models
    }

    pub(crate) fn grants(&self) -> &Grants {
        &self.grants
    }
}

/// The settings the plugin runs with: its manifest's defaults with `overrides` over them, as
/// text. Every override must be a setting the manifest declares, with a value it accepts.
fn checked_settings(
    manifest: &Manifest,
    overrides: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, LoadError> {
    let refuse = |problem| LoadError::Setting {
        plugin: manifest.name.clone(),
        problem,
    };
    check_declared(manifest, overrides.keys()).map_err(refuse)?;
    let mut settings: BTreeMap<String, String> = manifest
        .settings
        .iter()
        .map(|(key, decl)| (key.clone(), decl.default_value().to_string()))
        .collect();
    for (key, value) in overrides {
        if let Some(decl) = manifest.settings.get(key) {
            decl.check(value)
                .map_err(|problem| refuse(format!("setting `{key}`: {problem}")))?;
        }
        settings.insert(key.clone(), value.clone());
    }
    Ok(settings)
}

/// Refuses keys `manifest` does not declare in `[settings]`, naming the ones it does.
pub fn check_declared<'a>(
    manifest: &Manifest,
    keys: impl IntoIterator<Item = &'a String>,
) -> Result<(), String> {
    let quoted = |names: Vec<&str>| {
        let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        names.join(", ")
    };
    let unknown: Vec<&str> = keys
        .into_iter()
        .filter(|key| !manifest.settings.contains_key(*key))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<&str> = manifest.settings.keys().map(String::as_str).collect();
    Err(format!(
        "`{}` has no setting {}; its manifest declares {}",
        manifest.name,
        quoted(unknown),
        if known.is_empty() {
            "none".to_owned()
        } else {
            quoted(known)
        }
    ))
}

fn compile(
    runtime: &Runtime,
    plugin: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<Component, LoadError> {
    if is_core_module(bytes) {
        return Err(LoadError::NotAComponent {
            plugin: plugin.to_owned(),
            path: path.to_owned(),
        });
    }
    Component::new(runtime.engine(), bytes).map_err(|e| LoadError::Compile {
        plugin: plugin.to_owned(),
        path: path.to_owned(),
        reason: format!("{e:#}"),
    })
}

/// A core module starts with the wasm magic and version 1; a component has another version
/// and layer.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm\x01\0\0\0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let text = "name = \"threshold\"\nversion = \"0.1.0\"\napi = \"0.1\"\ncomponent = \"p.wasm\"\nsubscribe = [\"a/b\"]\n[settings]\nlimit = 80\n[settings.mode]\ndefault = \"above\"\nchoices = [\"above\", \"below\"]\n";
        Manifest::parse(text, Path::new("plugin.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_go_over_the_defaults() {
        let settings = checked_settings(&manifest(), &overrides(&[("limit", "90.5")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings, overrides(&[("limit", "90.5"), ("mode", "above")]));
    }

    #[test]
    fn an_undeclared_key_is_named_with_the_ones_that_exist() {
        let error = checked_settings(&manifest(), &overrides(&[("limt", "1"), ("limit", "2")]))
            .map(|_| ())
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            "plugin `threshold`: `threshold` has no setting `limt`; its manifest declares `limit`, `mode`"
        );
    }

    #[test]
    fn a_value_the_declaration_does_not_accept_is_refused_with_what_it_does() {
        for (key, value, expected) in [
            (
                "limit",
                "hot",
                "setting `limit`: `hot` is not accepted: expected number",
            ),
            (
                "mode",
                "sideways",
                "setting `mode`: `sideways` is not accepted: expected one of `above`, `below`",
            ),
        ] {
            let error = checked_settings(&manifest(), &overrides(&[(key, value)]))
                .map(|_| ())
                .expect_err("refused");
            assert_eq!(error.to_string(), format!("plugin `threshold`: {expected}"));
        }
    }
}

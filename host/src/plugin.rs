//! A plugin directory, checked, compiled and linked once: ready to instantiate.
//!
//! [`CompiledPlugin::load`] reads `plugin.toml`, caps its limits by the host's, compiles the
//! component, checks that it fits the `edgewise:plugin` world (its imports are all provided,
//! its `handler` export is there), and loads its models. Every failure is a [`LoadError`] that
//! names the plugin and the file. Reads files; never runs plugin code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgewise_signing::{Limits, Manifest, ManifestError, TopicFilter};
use wasmtime::component::Component;

use crate::bindings::PluginPre;
use crate::capability::HostState;
use crate::capability::host::Grants;
use crate::capability::nn::{ModelError, ModelSet};
use crate::runtime::Runtime;

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
        let plugin = manifest.name.clone();
        let path = dir.join(&manifest.component);
        let bytes = std::fs::read(&path).map_err(|source| LoadError::ReadComponent {
            plugin: plugin.clone(),
            path: path.clone(),
            source,
        })?;
        if is_core_module(&bytes) {
            return Err(LoadError::NotAComponent { plugin, path });
        }
        let component =
            Component::new(runtime.engine(), &bytes).map_err(|e| LoadError::Compile {
                plugin: plugin.clone(),
                path,
                reason: format!("{e:#}"),
            })?;
        let world_error = |e: wasmtime::Error| LoadError::World {
            plugin: plugin.clone(),
            reason: format!("{e:#}"),
        };
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(world_error)?;
        let pre = PluginPre::new(instance_pre).map_err(world_error)?;
        let models = ModelSet::load(&manifest.models, dir).map_err(|source| LoadError::Model {
            plugin: plugin.clone(),
            source,
        })?;

        let mut merged: BTreeMap<String, String> = manifest
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        merged.extend(settings.iter().map(|(k, v)| (k.clone(), v.clone())));
        let grants = Grants {
            name: plugin.as_str().into(),
            publish: manifest.publish_filters().into(),
            settings: Arc::new(merged),
            limits: manifest.limits.capped_by(runtime.caps()),
        };
        let subscribe = manifest.subscribe_filters();
        Ok(Self {
            manifest,
            pre,
            models,
            grants,
            subscribe,
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

/// A core module starts with the wasm magic and version 1; a component has another version
/// and layer.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm\x01\0\0\0")
}

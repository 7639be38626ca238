//! wasi-nn for plugins: models named in the manifest, loaded once, served by name.
//!
//! At load time [`ModelSet::load`] reads every model a manifest declares and hands it to its
//! backend to parse and optimise, once. Each instance then gets a [`WasiNnCtx`] whose registry
//! shares those graphs, so `wasi:nn/graph.load-by-name` is a lookup, and a fresh instance after
//! a trap reuses the optimised models. Loading raw model bytes from the guest
//! (`wasi:nn/graph.load`) is refused: models must be declared, so they can be signed and
//! are optimised once. Backends sit behind cargo features, one file each: `tract` (ONNX, the
//! default).

#[cfg(feature = "tract")]
pub mod tract;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use edgewise_signing::ModelSpec;
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendFromDir, BackendGraph, BackendInner, Id,
    NamedTensor,
};
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding, WasiNnCtx};
use wasmtime_wasi_nn::{Backend, ExecutionContext, Graph, GraphRegistry, Registry, Tensor};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file could not be read.
    #[error("model `{model}`: cannot read {}: {source}", file.display())]
    Read {
        /// The model's name.
        model: String,
        /// Its file.
        file: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// No backend in this build serves the encoding.
    #[error("model `{model}`: no backend for encoding `{encoding}` in this build")]
    NoBackend {
        /// The model's name.
        model: String,
        /// The encoding asked for.
        encoding: String,
    },
    /// The backend refused the model: not a valid model, or shapes that do not fit.
    #[error("model `{model}` ({}): {reason}", file.display())]
    Invalid {
        /// The model's name.
        model: String,
        /// Its file.
        file: PathBuf,
        /// The backend's account.
        reason: String,
    },
}

/// A backend that prepares models ahead of time from their bytes and declared input shapes.
pub trait Preload: Send + Sync {
    /// The encoding this backend serves.
    fn encoding(&self) -> GraphEncoding;
    /// Parses and optimises a model.
    fn preload(&self, bytes: &[u8], spec: &ModelSpec) -> Result<Graph, String>;
}

/// The backends compiled into this build.
pub fn backends() -> Vec<Arc<dyn Preload>> {
    vec![
        #[cfg(feature = "tract")]
        Arc::new(tract::Tract),
    ]
}

/// Called with the duration of every inference.
pub type InferenceObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// The models of one plugin, loaded and optimised, shared by all its instances.
#[derive(Clone, Default)]
pub struct ModelSet {
    graphs: Arc<HashMap<String, Graph>>,
    /// The optimised graphs behind `graphs`, by model name (shared with other sets).
    prepared: Arc<HashMap<String, Arc<Graph>>>,
    encodings: Arc<[GraphEncoding]>,
    observer: Arc<OnceLock<InferenceObserver>>,
}

impl ModelSet {
    /// Loads every model in `specs`, reading each file with `read` (`origin` names where
    /// they come from in errors).
    pub fn load(
        specs: &[ModelSpec],
        origin: &Path,
        read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<Self, ModelError> {
        let backends = backends();
        let observer: Arc<OnceLock<InferenceObserver>> = Arc::default();
        let mut prepared = HashMap::new();
        let mut graphs = HashMap::new();
        for spec in specs {
            let backend = backends
                .iter()
                .find(|b| b.encoding().to_string() == spec.encoding)
                .ok_or_else(|| ModelError::NoBackend {
                    model: spec.name.clone(),
                    encoding: spec.encoding.clone(),
                })?;
            let file = origin.join(&spec.file);
            let bytes = read(&spec.file).map_err(|source| ModelError::Read {
                model: spec.name.clone(),
                file: file.clone(),
                source,
            })?;
            let graph =
                prepare(backend.as_ref(), &bytes, spec).map_err(|reason| ModelError::Invalid {
                    model: spec.name.clone(),
                    file,
                    reason,
                })?;
            prepared.insert(spec.name.clone(), graph.clone());
            let timed = Timed {
                graph,
                observer: observer.clone(),
            };
            graphs.insert(
                spec.name.clone(),
                Graph::from(Box::new(timed) as Box<dyn BackendGraph>),
            );
        }
        let encodings = backends.iter().map(|b| b.encoding()).collect();
        Ok(Self {
            graphs: Arc::new(graphs),
            prepared: Arc::new(prepared),
            encodings,
            observer,
        })
    }

    /// Whether `other` serves model `name` with the very same optimised graph.
    pub fn shares_graph_with(&self, other: &ModelSet, name: &str) -> bool {
        match (self.prepared.get(name), other.prepared.get(name)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Reports the duration of every inference on these models to `observer` (first call wins).
    pub fn observe_inference(&self, observer: InferenceObserver) {
        let _ = self.observer.set(observer);
    }

    /// A wasi-nn context for one instance: these models by name, nothing else.
    pub fn context(&self) -> WasiNnCtx {
        let backends = self
            .encodings
            .iter()
            .map(|&encoding| Backend::from(ByNameOnly(encoding)));
        WasiNnCtx::new(backends, Registry::from(Shared(self.graphs.clone())))
    }
}

/// Optimised models by content and declared shapes, for as long as some plugin holds them: a
/// new version of a plugin whose model did not change (a hot swap, new settings) gets the same
/// optimised graph instead of parsing and optimising the file again.
type Prepared = Mutex<HashMap<String, Weak<Graph>>>;

fn prepare(backend: &dyn Preload, bytes: &[u8], spec: &ModelSpec) -> Result<Arc<Graph>, String> {
    static PREPARED: OnceLock<Prepared> = OnceLock::new();
    let key = format!(
        "{}:{}:{:?}",
        spec.encoding,
        edgewise_signing::bundle::sha256_hex(bytes),
        spec.inputs
    );
    let cache = PREPARED.get_or_init(Prepared::default);
    if let Some(graph) = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .and_then(Weak::upgrade)
    {
        return Ok(graph);
    }
    let graph = Arc::new(backend.preload(bytes, spec)?);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|_, weak| weak.strong_count() > 0);
    cache.insert(key, Arc::downgrade(&graph));
    Ok(graph)
}

/// A graph whose inferences are timed.
struct Timed {
    graph: Arc<Graph>,
    observer: Arc<OnceLock<InferenceObserver>>,
}

impl BackendGraph for Timed {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let context = TimedContext {
            context: self.graph.init_execution_context()?,
            observer: self.observer.clone(),
        };
        Ok(ExecutionContext::from(
            Box::new(context) as Box<dyn BackendExecutionContext>
        ))
    }
}

struct TimedContext {
    context: ExecutionContext,
    observer: Arc<OnceLock<InferenceObserver>>,
}

impl BackendExecutionContext for TimedContext {
    fn set_input(&mut self, id: Id, tensor: &Tensor) -> Result<(), BackendError> {
        self.context.set_input(id, tensor)
    }

    fn get_output(&mut self, id: Id) -> Result<Tensor, BackendError> {
        self.context.get_output(id)
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let start = Instant::now();
        let outputs = BackendExecutionContext::compute(&mut *self.context, inputs);
        if let Some(observe) = self.observer.get() {
            observe(start.elapsed());
        }
        outputs
    }
}

/// The per-instance registry: a view of the plugin's shared graphs.
struct Shared(Arc<HashMap<String, Graph>>);

impl GraphRegistry for Shared {
    fn get(&self, name: &str) -> Option<&Graph> {
        self.0.get(name)
    }

    fn get_mut(&mut self, _name: &str) -> Option<&mut Graph> {
        // Graphs are shared between instances and never changed.
        None
    }
}

/// Stands for a backend inside an instance, where only `load-by-name` is allowed: `load` from
/// guest bytes is an error that tells the author what to do instead.
struct ByNameOnly(GraphEncoding);

impl BackendInner for ByNameOnly {
    fn encoding(&self) -> GraphEncoding {
        self.0
    }

    fn load(&mut self, _: &[&[u8]], _: ExecutionTarget) -> Result<Graph, BackendError> {
        Err(BackendError::BackendAccess(wasmtime::format_err!(
            "models are not loaded from plugin memory: declare the model under [[models]] in \
             plugin.toml and use load-by-name"
        )))
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        None
    }
}

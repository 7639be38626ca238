//! wasi-nn for plugins: models named in the manifest, loaded once, served by name.
//!
//! At load time [`ModelSet::load`] reads every model a manifest declares and hands it to its
//! backend to parse and optimise, once, with every input shape fixed. The backend runs it once
//! to check the shapes and measures what one compute costs: a compute cannot be interrupted
//! once started, so a model that cannot fit the plugin's per-message deadline is refused here,
//! and [`wit`] refuses to start a compute that could not finish before the current call's
//! deadline. Each instance then sees those graphs through [`wit`], the `wasi:nn` interface as
//! plugins get it: `load-by-name` is a lookup, and loading raw model bytes from the guest is
//! refused (models must be declared, so they are signed and optimised once). Backends sit
//! behind cargo features, one file each: `tract` (ONNX, the default).

#[cfg(feature = "tract")]
pub mod tract;
pub mod wit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use edgewise_signing::ModelSpec;
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor,
};
use wasmtime_wasi_nn::wit::GraphEncoding;
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

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
    /// One compute of the model takes longer than the plugin's whole per-message deadline.
    #[error(
        "model `{model}`: one compute takes {cost_ms:.1} ms on this gateway, more than the plugin's \
         time-per-message-ms of {budget_ms}; a compute cannot be interrupted, so the model is \
         refused: raise the limit or ship a smaller model"
    )]
    TooSlow {
        /// The model's name.
        model: String,
        /// What one compute cost, measured at load.
        cost_ms: f64,
        /// The plugin's per-message deadline.
        budget_ms: u64,
    },
}

/// A model prepared by its backend: the optimised graph and what one compute costs.
pub struct Prepared {
    /// The optimised graph.
    pub graph: Graph,
    /// The time of one compute on this machine, measured at load.
    pub cost: Duration,
}

/// A backend that prepares models ahead of time from their bytes and declared input shapes.
pub trait Preload: Send + Sync {
    /// The encoding this backend serves.
    fn encoding(&self) -> GraphEncoding;
    /// Parses and optimises a model with every input shape fixed, runs it to check the shapes
    /// and measures one compute. It owns `bytes`, to let them go as soon as they are parsed: a
    /// large model is then in memory about twice at its load, not three times.
    fn preload(&self, bytes: Vec<u8>, spec: &ModelSpec) -> Result<Prepared, String>;
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

/// One model as a plugin's instances see it: its timed graph and the cost of one compute.
pub struct Model {
    /// The graph, with every compute reported to the plugin's inference observer.
    pub graph: Graph,
    /// What one compute costs, measured at load.
    pub cost: Duration,
}

/// The models of one plugin, loaded and optimised, shared by all its instances.
#[derive(Clone, Default)]
pub struct ModelSet {
    models: Arc<HashMap<String, Arc<Model>>>,
    /// The prepared graphs behind `models`, by model name (shared with other sets).
    prepared: Arc<HashMap<String, Arc<Prepared>>>,
    observer: Arc<OnceLock<InferenceObserver>>,
}

impl ModelSet {
    /// Loads every model in `specs`, reading each file with `read` (`origin` names where
    /// they come from in errors); refuses a model whose one compute takes longer than
    /// `budget_ms`, the plugin's per-message deadline.
    pub fn load(
        specs: &[ModelSpec],
        origin: &Path,
        read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
        budget_ms: u64,
    ) -> Result<Self, ModelError> {
        let backends = backends();
        let observer: Arc<OnceLock<InferenceObserver>> = Arc::default();
        let mut prepared = HashMap::new();
        let mut models = HashMap::new();
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
            let ready =
                prepare(backend.as_ref(), bytes, spec).map_err(|reason| ModelError::Invalid {
                    model: spec.name.clone(),
                    file,
                    reason,
                })?;
            if ready.cost > Duration::from_millis(budget_ms) {
                return Err(ModelError::TooSlow {
                    model: spec.name.clone(),
                    cost_ms: ready.cost.as_secs_f64() * 1e3,
                    budget_ms,
                });
            }
            prepared.insert(spec.name.clone(), ready.clone());
            let timed = Timed {
                prepared: ready.clone(),
                observer: observer.clone(),
            };
            let model = Model {
                graph: Graph::from(Box::new(timed) as Box<dyn BackendGraph>),
                cost: ready.cost,
            };
            models.insert(spec.name.clone(), Arc::new(model));
        }
        Ok(Self {
            models: Arc::new(models),
            prepared: Arc::new(prepared),
            observer,
        })
    }

    /// The model named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
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
}

/// Optimised models by content and declared shapes, for as long as some plugin holds them: a
/// new version of a plugin whose model did not change (a hot swap, new settings) gets the same
/// optimised graph instead of parsing and optimising the file again.
type PreparedCache = Mutex<HashMap<String, Weak<Prepared>>>;

fn prepare(
    backend: &dyn Preload,
    bytes: Vec<u8>,
    spec: &ModelSpec,
) -> Result<Arc<Prepared>, String> {
    static PREPARED: OnceLock<PreparedCache> = OnceLock::new();
    let key = format!(
        "{}:{}:{:?}",
        spec.encoding,
        edgewise_signing::bundle::sha256_hex(&bytes),
        spec.inputs
    );
    let cache = PREPARED.get_or_init(PreparedCache::default);
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
    prepared: Arc<Prepared>,
    observer: Arc<OnceLock<InferenceObserver>>,
}

impl BackendGraph for Timed {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let context = TimedContext {
            context: self.prepared.graph.init_execution_context()?,
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

//! The `wasi:nn` interface as a plugin sees it, served from the plugin's [`ModelSet`].
//!
//! Each call is bounded on the host side: every tensor the plugin creates and every output a
//! compute returns is charged to the instance's host-memory account until the plugin drops it;
//! a compute that could not finish before the call's deadline is not started (tract cannot be
//! interrupted); a backend panic is caught and traps this instance only. What goes over traps
//! with an [`Exceeded`] that names it. Ordinary failures (an unknown model, a wrong shape)
//! reach the plugin as wasi-nn errors, with the cause logged under the plugin's name.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi_nn::ExecutionContext;
use wasmtime_wasi_nn::backend::NamedTensor as BackendTensor;
use wasmtime_wasi_nn::wit::TensorType as BackendType;

use super::ModelSet;
use crate::bindings::wasi::nn::errors::{self, ErrorCode};
use crate::bindings::wasi::nn::graph::{self, ExecutionTarget, GraphBuilder, GraphEncoding};
use crate::bindings::wasi::nn::inference::{self, NamedTensor};
use crate::bindings::wasi::nn::tensor::{self, TensorData, TensorDimensions, TensorType};
use crate::capability::budget::{Charge, Charged, Deadline, Exceeded, HostMemory};

/// What the host holds for one execution context (its own state is small; this bounds how
/// many a plugin can keep).
const CONTEXT_BYTES: usize = 4096;

/// Longest error text handed to a plugin.
const MAX_ERROR_TEXT: usize = 1024;

/// A model a plugin holds (`wasi:nn/graph.graph`).
pub struct NnGraph {
    name: String,
    model: Arc<super::Model>,
}

/// An execution context a plugin holds (`wasi:nn/inference.graph-execution-context`).
pub struct NnContext {
    model: String,
    cost: Duration,
    context: ExecutionContext,
    _charge: Charge,
}

/// A tensor a plugin holds (`wasi:nn/tensor.tensor`), charged to its host memory.
pub type NnTensor = Charged<wasmtime_wasi_nn::Tensor>;

/// A wasi-nn error a plugin holds (`wasi:nn/errors.error`).
pub struct NnError {
    code: ErrorCode,
    message: String,
}

/// What the wasi-nn functions work on: the instance's resources, its models and budgets.
pub struct NnView<'a> {
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
    /// The plugin's models.
    pub models: &'a ModelSet,
    /// The instance's host-memory account.
    pub memory: &'a Arc<HostMemory>,
    /// When the current call must be over.
    pub deadline: Deadline,
    /// The plugin's name, for log lines.
    pub plugin: &'a str,
}

/// Marks [`NnView`] as the data the wasi-nn bindings get.
pub struct HasNn;

impl HasData for HasNn {
    type Data<'a> = NnView<'a>;
}

type Fallible<T> = wasmtime::Result<Result<Resource<T>, Resource<NnError>>>;

impl NnView<'_> {
    /// An error resource for the plugin; the cause is logged with the plugin's name.
    fn fail(&mut self, code: ErrorCode, message: String) -> wasmtime::Result<Resource<NnError>> {
        tracing::warn!(plugin = self.plugin, "wasi-nn: {message}");
        let mut message = message;
        if message.len() > MAX_ERROR_TEXT {
            let cut = message.floor_char_boundary(MAX_ERROR_TEXT);
            message.truncate(cut);
        }
        Ok(self.table.push(NnError { code, message })?)
    }
}

impl graph::Host for NnView<'_> {
    fn load(
        &mut self,
        _: Vec<GraphBuilder>,
        _: GraphEncoding,
        _: ExecutionTarget,
    ) -> Fallible<NnGraph> {
        Ok(Err(self.fail(
            ErrorCode::UnsupportedOperation,
            "models are not loaded from plugin memory: declare the model under [[models]] in \
             plugin.toml and use load-by-name"
                .into(),
        )?))
    }

    fn load_by_name(&mut self, name: String) -> Fallible<NnGraph> {
        match self.models.get(&name) {
            Some(model) => {
                let model = model.clone();
                Ok(Ok(self.table.push(NnGraph { name, model })?))
            }
            None => Ok(Err(self.fail(
                ErrorCode::NotFound,
                format!("no model named `{name}`: models must be declared under [[models]]"),
            )?)),
        }
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(&mut self, graph: Resource<NnGraph>) -> Fallible<NnContext> {
        let graph = self.table.get(&graph)?;
        let (model, cost) = (graph.name.clone(), graph.model.cost);
        let charge = self.memory.charge("an execution context", CONTEXT_BYTES)?;
        match graph.model.graph.init_execution_context() {
            Ok(context) => Ok(Ok(self.table.push(NnContext {
                model,
                cost,
                context,
                _charge: charge,
            })?)),
            Err(e) => {
                let message = format!("model `{model}`: {}", error_text(&e));
                Ok(Err(self.fail(ErrorCode::RuntimeError, message)?))
            }
        }
    }

    fn drop(&mut self, graph: Resource<NnGraph>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    fn compute(
        &mut self,
        context: Resource<NnContext>,
        inputs: Vec<NamedTensor>,
    ) -> wasmtime::Result<Result<Vec<NamedTensor>, Resource<NnError>>> {
        let (model, cost) = {
            let c = self.table.get(&context)?;
            (c.model.clone(), c.cost)
        };
        if !self.deadline.allows(cost) {
            return Err(Exceeded::Deadline {
                during: format!(
                    "about to compute model `{model}` (about {:.1} ms), which could not finish in time",
                    cost.as_secs_f64() * 1e3
                ),
            }
            .into());
        }
        // The inputs are consumed, as wasi-nn says; their charges go when they do.
        let mut named = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let tensor = self.table.delete(tensor)?;
            named.push(BackendTensor {
                name,
                tensor: tensor.value,
            });
        }
        let exec = &mut self.table.get_mut(&context)?.context;
        let outcome = catch_unwind(AssertUnwindSafe(|| exec.compute_with_io(named)));
        let outputs = match outcome {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(e)) => {
                let message = format!("model `{model}`: inference failed: {}", error_text(&e));
                return Ok(Err(self.fail(ErrorCode::RuntimeError, message)?));
            }
            Err(panic) => {
                return Err(Exceeded::HostPanic(format!(
                    "model `{model}`: {}",
                    panic_text(panic.as_ref())
                ))
                .into());
            }
        };
        let mut handed = Vec::with_capacity(outputs.len());
        for BackendTensor { name, tensor } in outputs {
            let bytes = tensor_bytes(&tensor);
            let tensor = Charged::new(self.memory, "a model output", bytes, tensor)?;
            handed.push((name, self.table.push(tensor)?));
        }
        Ok(Ok(handed))
    }

    fn drop(&mut self, context: Resource<NnContext>) -> wasmtime::Result<()> {
        self.table.delete(context)?;
        Ok(())
    }
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dimensions: TensorDimensions,
        ty: TensorType,
        data: TensorData,
    ) -> wasmtime::Result<Resource<NnTensor>> {
        let tensor = wasmtime_wasi_nn::Tensor::new(dimensions, to_backend(ty), data);
        let bytes = tensor_bytes(&tensor);
        let tensor = Charged::new(self.memory, "a tensor", bytes, tensor)?;
        Ok(self.table.push(tensor)?)
    }

    fn dimensions(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<TensorDimensions> {
        Ok(self.table.get(&tensor)?.value.dimensions.clone())
    }

    fn ty(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<TensorType> {
        Ok(from_backend(self.table.get(&tensor)?.value.ty))
    }

    fn data(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<TensorData> {
        // The copy goes straight into the plugin's linear memory, which its own cap bounds.
        Ok(self.table.get(&tensor)?.value.data.clone())
    }

    fn drop(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<()> {
        self.table.delete(tensor)?;
        Ok(())
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, error: Resource<NnError>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&error)?.code)
    }

    fn data(&mut self, error: Resource<NnError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.message.clone())
    }

    fn drop(&mut self, error: Resource<NnError>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        Ok(())
    }
}

/// What the host holds for a tensor: its data and its dimensions.
fn tensor_bytes(tensor: &wasmtime_wasi_nn::Tensor) -> usize {
    tensor.data.len() + tensor.dimensions.len() * 4
}

/// The cause of a backend error: wasi-nn wraps it in a generic "failed while accessing backend".
fn error_text(error: &wasmtime_wasi_nn::backend::BackendError) -> String {
    match error {
        wasmtime_wasi_nn::backend::BackendError::BackendAccess(cause) => format!("{cause:#}"),
        other => other.to_string(),
    }
}

/// The message of a caught panic.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_owned())
}

fn to_backend(ty: TensorType) -> BackendType {
    match ty {
        TensorType::Fp16 => BackendType::Fp16,
        TensorType::Fp32 => BackendType::Fp32,
        TensorType::Fp64 => BackendType::Fp64,
        TensorType::Bf16 => BackendType::Bf16,
        TensorType::U8 => BackendType::U8,
        TensorType::I32 => BackendType::I32,
        TensorType::I64 => BackendType::I64,
    }
}

fn from_backend(ty: BackendType) -> TensorType {
    match ty {
        BackendType::Fp16 => TensorType::Fp16,
        BackendType::Fp32 => TensorType::Fp32,
        BackendType::Fp64 => TensorType::Fp64,
        BackendType::Bf16 => TensorType::Bf16,
        BackendType::U8 => TensorType::U8,
        BackendType::I32 => TensorType::I32,
        BackendType::I64 => TensorType::I64,
    }
}

#[cfg(test)]
mod tests {
    //! A real backend cannot be made to panic or overrun by a plugin any more (shapes are
    //! fixed and checked, costs measured at load), so these stand in a backend that does.

    use std::collections::HashMap;
    use std::time::Instant;

    use wasmtime_wasi_nn::Graph;
    use wasmtime_wasi_nn::backend::{BackendError, BackendExecutionContext, BackendGraph, Id};

    use super::*;
    use crate::bindings::wasi::nn::graph::{Host as _, HostGraph as _};
    use crate::bindings::wasi::nn::inference::HostGraphExecutionContext as _;
    use crate::bindings::wasi::nn::tensor::HostTensor as _;
    use crate::capability::nn::Model;

    struct Panics;

    impl BackendGraph for Panics {
        fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
            Ok(ExecutionContext::from(
                Box::new(Panics) as Box<dyn BackendExecutionContext>
            ))
        }
    }

    impl BackendExecutionContext for Panics {
        fn set_input(&mut self, _: Id, _: &wasmtime_wasi_nn::Tensor) -> Result<(), BackendError> {
            Ok(())
        }
        fn get_output(&mut self, _: Id) -> Result<wasmtime_wasi_nn::Tensor, BackendError> {
            panic!("not called")
        }
        fn compute(
            &mut self,
            _: Option<Vec<BackendTensor>>,
        ) -> Result<Option<Vec<BackendTensor>>, BackendError> {
            panic!("capacity overflow")
        }
    }

    fn models(cost: Duration) -> ModelSet {
        let model = Model {
            graph: Graph::from(Box::new(Panics) as Box<dyn BackendGraph>),
            cost,
        };
        ModelSet {
            models: Arc::new(HashMap::from([("m".to_owned(), Arc::new(model))])),
            ..ModelSet::default()
        }
    }

    /// Loads model `m`, makes a context and one input tensor, and computes under `deadline`.
    fn compute(models: &ModelSet, memory: &Arc<HostMemory>, deadline: Deadline) -> wasmtime::Error {
        let mut table = ResourceTable::new();
        let mut view = NnView {
            table: &mut table,
            models,
            memory,
            deadline,
            plugin: "p",
        };
        let graph = view
            .load_by_name("m".into())
            .expect("no trap")
            .expect("found");
        let context = view
            .init_execution_context(graph)
            .expect("no trap")
            .expect("a context");
        let input = view
            .new(vec![1], TensorType::Fp32, vec![0; 4])
            .expect("charged");
        view.compute(context, vec![("x".into(), input)])
            .expect_err("a trap")
    }

    #[test]
    fn a_backend_panic_traps_the_plugin_and_gives_its_memory_back() {
        let memory = HostMemory::new(1);
        let trap = compute(&models(Duration::ZERO), &memory, Deadline::default());
        assert!(
            matches!(trap.downcast_ref::<Exceeded>(), Some(Exceeded::HostPanic(m)) if m.contains("capacity overflow")),
            "{trap:#}"
        );
        // The table is gone with the instance: nothing stays charged.
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn a_compute_that_cannot_finish_before_the_deadline_is_not_started() {
        let memory = HostMemory::new(1);
        let soon = Deadline::at(Instant::now() + Duration::from_millis(10));
        let trap = compute(&models(Duration::from_secs(5)), &memory, soon);
        assert!(
            matches!(trap.downcast_ref::<Exceeded>(), Some(Exceeded::Deadline { during }) if during.contains("could not finish in time")),
            "{trap:#}"
        );
    }
}

//! Inference through wasi-nn, on models the gateway loaded for this plugin.
//!
//! Models are declared in the plugin's manifest (`[[models]]`); the gateway loads and optimises
//! them once, and [`Model::by_name`] hands one out. The plugin never holds model bytes.
//!
//! ```ignore
//! let mut model = Model::by_name("vibration")?;
//! let out = model.run(&[("features", Tensor::f32(&[1, 8], &features)?)])?;
//! let probabilities = out.f32("probabilities")?;
//! ```

use std::fmt;

use crate::__bindings::wasi::nn::{errors, graph, inference, tensor};

/// A wasi-nn failure, with the operation and model it happened in.
#[derive(Debug, Clone)]
pub struct NnError {
    context: String,
    code: Option<errors::ErrorCode>,
    detail: String,
}

impl NnError {
    fn from_wasi(context: String, e: errors::Error) -> Self {
        NnError {
            context,
            code: Some(e.code()),
            detail: e.data(),
        }
    }

    fn usage(context: String, detail: String) -> Self {
        NnError {
            context,
            code: None,
            detail,
        }
    }

    /// Whether the model name was unknown to the gateway.
    pub fn is_not_found(&self) -> bool {
        matches!(self.code, Some(errors::ErrorCode::NotFound))
    }
}

impl fmt::Display for NnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{}: {code:?}: {}", self.context, self.detail),
            None => write!(f, "{}: {}", self.context, self.detail),
        }
    }
}

impl std::error::Error for NnError {}

/// A model loaded by the gateway, ready to run. Keep it in the plugin's state: it holds an
/// execution context that is reused across calls.
pub struct Model {
    name: String,
    context: inference::GraphExecutionContext,
    // The graph outlives its execution context.
    _graph: graph::Graph,
}

impl Model {
    /// The model declared under `name` in the plugin's manifest.
    pub fn by_name(name: &str) -> Result<Model, NnError> {
        let graph = graph::load_by_name(name)
            .map_err(|e| NnError::from_wasi(format!("loading model `{name}`"), e))?;
        let context = graph
            .init_execution_context()
            .map_err(|e| NnError::from_wasi(format!("starting model `{name}`"), e))?;
        Ok(Model {
            name: name.to_owned(),
            context,
            _graph: graph,
        })
    }

    /// Runs the model on named inputs and returns its named outputs.
    pub fn run(&mut self, inputs: &[(&str, Tensor)]) -> Result<Outputs, NnError> {
        let inputs = inputs
            .iter()
            .map(|(name, t)| {
                let resource = tensor::Tensor::new(&t.dimensions, t.ty, &t.data);
                ((*name).to_owned(), resource)
            })
            .collect::<Vec<_>>();
        let outputs = self
            .context
            .compute(inputs)
            .map_err(|e| NnError::from_wasi(format!("running model `{}`", self.name), e))?;
        Ok(Outputs {
            model: self.name.clone(),
            tensors: outputs,
        })
    }
}

/// An input tensor: a shape, an element type and the elements, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dimensions: Vec<u32>,
    ty: tensor::TensorType,
    data: Vec<u8>,
}

impl Tensor {
    /// An `f32` tensor of `shape`; `values.len()` must be the product of `shape`.
    pub fn f32(shape: &[u32], values: &[f32]) -> Result<Tensor, NnError> {
        Self::build(
            shape,
            tensor::TensorType::Fp32,
            values.len(),
            values.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    /// An `i64` tensor of `shape`; `values.len()` must be the product of `shape`.
    pub fn i64(shape: &[u32], values: &[i64]) -> Result<Tensor, NnError> {
        Self::build(
            shape,
            tensor::TensorType::I64,
            values.len(),
            values.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    fn build(
        shape: &[u32],
        ty: tensor::TensorType,
        len: usize,
        bytes: impl Iterator<Item = u8>,
    ) -> Result<Tensor, NnError> {
        let expected: u64 = shape.iter().map(|&d| u64::from(d)).product();
        if expected != len as u64 {
            return Err(NnError::usage(
                "building tensor".into(),
                format!("shape {shape:?} holds {expected} elements, {len} given"),
            ));
        }
        Ok(Tensor {
            dimensions: shape.to_vec(),
            ty,
            data: bytes.collect(),
        })
    }
}

/// The outputs of one [`Model::run`], by name.
pub struct Outputs {
    model: String,
    tensors: Vec<(String, tensor::Tensor)>,
}

impl Outputs {
    /// The names of the outputs, in the model's order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    /// The shape of output `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<u32>, NnError> {
        Ok(self.get(name)?.dimensions())
    }

    /// Output `name` as `f32` values; an error if it is another type.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, NnError> {
        self.decode::<_, 4>(name, tensor::TensorType::Fp32, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
    }

    /// Output `name` as `i64` values; an error if it is another type.
    pub fn i64(&self, name: &str) -> Result<Vec<i64>, NnError> {
        self.decode::<_, 8>(name, tensor::TensorType::I64, |b| {
            i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        })
    }

    fn decode<T, const N: usize>(
        &self,
        name: &str,
        ty: tensor::TensorType,
        from: impl Fn(&[u8]) -> T,
    ) -> Result<Vec<T>, NnError> {
        let t = self.get(name)?;
        if t.ty() != ty {
            return Err(NnError::usage(
                format!("reading output `{name}` of model `{}`", self.model),
                format!("it holds {:?}, not {ty:?}", t.ty()),
            ));
        }
        Ok(t.data().chunks_exact(N).map(from).collect())
    }

    fn get(&self, name: &str) -> Result<&tensor::Tensor, NnError> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                NnError::usage(
                    format!("reading output `{name}` of model `{}`", self.model),
                    format!(
                        "no such output; it has {:?}",
                        self.names().collect::<Vec<_>>()
                    ),
                )
            })
    }
}

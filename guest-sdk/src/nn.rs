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

/// The element type of a tensor.
pub use crate::__bindings::wasi::nn::tensor::TensorType;

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
    pub fn run(&mut self, inputs: &[(&str, Tensor<'_>)]) -> Result<Outputs, NnError> {
        let inputs = inputs
            .iter()
            .map(|(name, t)| {
                let resource = tensor::Tensor::new(&t.dimensions, t.ty, t.data);
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

/// An input tensor: a shape, an element type and the elements, row-major. It borrows the
/// values it is made from: nothing is copied until the host takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<'a> {
    dimensions: Vec<u32>,
    ty: tensor::TensorType,
    data: &'a [u8],
}

impl<'a> Tensor<'a> {
    /// An `f32` tensor of `shape`; `values.len()` must be the product of `shape`.
    pub fn f32(shape: &[u32], values: &'a [f32]) -> Result<Self, NnError> {
        Self::build(
            shape,
            TensorType::Fp32,
            values.len(),
            bytemuck::cast_slice(values),
        )
    }

    /// An `i64` tensor of `shape`; `values.len()` must be the product of `shape`.
    pub fn i64(shape: &[u32], values: &'a [i64]) -> Result<Self, NnError> {
        Self::build(
            shape,
            TensorType::I64,
            values.len(),
            bytemuck::cast_slice(values),
        )
    }

    /// A tensor of `shape` from the raw little-endian bytes of elements of type `ty`.
    pub fn from_bytes(shape: &[u32], ty: TensorType, bytes: &'a [u8]) -> Result<Self, NnError> {
        let size = match ty {
            TensorType::Fp16 | TensorType::Bf16 => 2,
            TensorType::Fp32 | TensorType::I32 => 4,
            TensorType::Fp64 | TensorType::I64 => 8,
            TensorType::U8 => 1,
        };
        if !bytes.len().is_multiple_of(size) {
            return Err(NnError::usage(
                "building tensor".into(),
                format!(
                    "{} bytes is not a whole number of {ty:?} elements",
                    bytes.len()
                ),
            ));
        }
        Self::build(shape, ty, bytes.len() / size, bytes)
    }

    // wasm is little-endian, as wasi-nn's tensor bytes are: values are passed as they lie.
    fn build(shape: &[u32], ty: TensorType, len: usize, bytes: &'a [u8]) -> Result<Self, NnError> {
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
            data: bytes,
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

    /// The element type of output `name`.
    pub fn ty(&self, name: &str) -> Result<TensorType, NnError> {
        Ok(self.get(name)?.ty())
    }

    /// Output `name` as `f32` values; an error if it is another type.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, NnError> {
        self.decode(name, TensorType::Fp32)
    }

    /// Output `name` as `i64` values; an error if it is another type.
    pub fn i64(&self, name: &str) -> Result<Vec<i64>, NnError> {
        self.decode(name, TensorType::I64)
    }

    /// Output `name` as its raw little-endian bytes, whatever its type.
    pub fn bytes(&self, name: &str) -> Result<Vec<u8>, NnError> {
        Ok(self.get(name)?.data())
    }

    fn decode<T: bytemuck::Pod>(&self, name: &str, ty: TensorType) -> Result<Vec<T>, NnError> {
        let t = self.get(name)?;
        if t.ty() != ty {
            return Err(NnError::usage(
                format!("reading output `{name}` of model `{}`", self.model),
                format!("it holds {:?}, not {ty:?}", t.ty()),
            ));
        }
        // Copies into a vector aligned for `T`, whatever the alignment of the bytes.
        Ok(bytemuck::pod_collect_to_vec(&t.data()))
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

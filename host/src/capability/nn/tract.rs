//! The tract backend: ONNX models, parsed and optimised once, run on the CPU in pure Rust.
//!
//! Input shapes declared in the manifest are fixed before optimisation (tract optimises far
//! better with concrete shapes). Tensors cross as little-endian bytes: f32, f64, i32, i64 and
//! u8 in, the same out. Every error names the model input or output it is about. tract reports
//! errors as `anyhow` (its `TractResult`), so this file builds on that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use edgewise_signing::ModelSpec;
use prost::Message as _;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor,
};
use wasmtime_wasi_nn::wit::{GraphEncoding, TensorType};
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

use super::{Preload, Prepared};

/// The tract ONNX backend.
pub struct Tract;

/// Computes timed at load, after one to warm up.
const MEASURED_RUNS: usize = 3;

impl Preload for Tract {
    fn encoding(&self) -> GraphEncoding {
        GraphEncoding::Onnx
    }

    fn preload(&self, bytes: Vec<u8>, spec: &ModelSpec) -> Result<Prepared, String> {
        let model = TractModel::optimise(bytes, spec).map_err(|e| format!("{e:#}"))?;
        let cost = model.measure().map_err(|e| format!("{e:#}"))?;
        Ok(Prepared {
            graph: Graph::from(Box::new(model) as Box<dyn BackendGraph>),
            cost,
        })
    }
}

/// An optimised model and what it expects. Clones share the optimised plan.
#[derive(Clone)]
pub struct TractModel {
    plan: Arc<TypedSimplePlan>,
    inputs: Vec<Port>,
    outputs: Vec<String>,
}

/// One model input: its name, element type and, when fixed, shape.
#[derive(Clone)]
struct Port {
    name: String,
    datum: DatumType,
    shape: Option<Vec<usize>>,
}

impl TractModel {
    /// Parses ONNX bytes, fixes the declared input shapes, and optimises.
    pub fn optimise(bytes: Vec<u8>, spec: &ModelSpec) -> TractResult<Self> {
        // Decoded from the bytes themselves, which go once decoded: tract's own reader would
        // copy them first (`model_for_read` reads into a buffer of its own).
        let proto = tract_onnx::pb::ModelProto::decode(bytes::Bytes::from(bytes))
            .context("Reading proto model")?;
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .context("Translating proto model to model")?;
        drop(proto);
        let names = input_names(&model)?;
        for (name, shape) in &spec.inputs {
            let ix = names.iter().position(|n| n == name).ok_or_else(|| {
                anyhow!("declared input `{name}` is not in the model; its inputs are {names:?}")
            })?;
            let datum = model
                .input_fact(ix)?
                .datum_type
                .concretize()
                .unwrap_or(f32::datum_type());
            model.set_input_fact(ix, InferenceFact::dt_shape(datum, shape.as_slice()))?;
        }
        let typed = model.into_optimized()?;
        let inputs = typed
            .input_outlets()?
            .iter()
            .enumerate()
            .map(|(ix, outlet)| {
                let fact = typed.input_fact(ix)?;
                Ok(Port {
                    name: typed.node(outlet.node).name.clone(),
                    datum: fact.datum_type,
                    shape: fact.shape.as_concrete().map(<[usize]>::to_vec),
                })
            })
            .collect::<TractResult<Vec<_>>>()?;
        let outputs = typed
            .output_outlets()?
            .iter()
            .map(|&o| {
                typed
                    .outlet_label(o)
                    .unwrap_or(&typed.node(o.node).name)
                    .to_owned()
            })
            .collect();
        let model = Self {
            plan: typed.into_runnable()?,
            inputs,
            outputs,
        };
        Ok(model)
    }

    /// Runs the model on zeros: once to check that the declared shapes fit (so a model that
    /// does not fails at load, not on the first message), then [`MEASURED_RUNS`] times to
    /// measure one compute, of which the slowest counts. Every input shape must be fixed: a
    /// compute cannot be interrupted, so its cost must not depend on what a plugin sends.
    fn measure(&self) -> TractResult<Duration> {
        let zeros = self
            .inputs
            .iter()
            .map(|p| {
                let shape = p.shape.as_ref().ok_or_else(|| {
                    anyhow!(
                        "input `{}` has no fixed shape: declare it under the model's `inputs` \
                         in plugin.toml (a compute's cost must be known before it starts)",
                        p.name
                    )
                })?;
                Ok(TValue::from(tract_onnx::prelude::Tensor::zero_dt(
                    p.datum, shape,
                )?))
            })
            .collect::<TractResult<TVec<_>>>()?;
        let run = || {
            let started = Instant::now();
            let outputs = self.plan.run(zeros.clone());
            clear_upper_simd_state();
            outputs
                .map(|_| started.elapsed())
                .map_err(|e| anyhow!("does not run on its declared input shapes: {e:#}"))
        };
        run()?;
        let mut slowest = Duration::ZERO;
        for _ in 0..MEASURED_RUNS {
            slowest = slowest.max(run()?);
        }
        Ok(slowest)
    }

    /// The input names, in the model's order.
    pub fn input_names(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(|p| p.name.as_str())
    }

    /// Runs the model on wasi-nn tensors given by input name; outputs come back by name.
    pub fn run(&self, inputs: Vec<NamedTensor>) -> TractResult<Vec<NamedTensor>> {
        let mut slots: Vec<Option<TValue>> = vec![None; self.inputs.len()];
        for NamedTensor { name, tensor } in inputs {
            let ix = self
                .inputs
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| {
                    anyhow!(
                        "the model has no input `{name}`; its inputs are {:?}",
                        self.input_names().collect::<Vec<_>>()
                    )
                })?;
            slots[ix] = Some(self.inputs[ix].convert(&tensor)?.into());
        }
        let inputs = slots
            .into_iter()
            .zip(&self.inputs)
            .map(|(slot, port)| slot.ok_or_else(|| anyhow!("input `{}` was not given", port.name)))
            .collect::<TractResult<TVec<_>>>()?;
        let outputs = self.plan.run(inputs);
        clear_upper_simd_state();
        outputs?
            .into_iter()
            .zip(&self.outputs)
            .map(|(value, name)| {
                Ok(NamedTensor {
                    name: name.clone(),
                    tensor: to_wasi(name, &value)?,
                })
            })
            .collect()
    }
}

impl Port {
    fn convert(&self, t: &Tensor) -> TractResult<tract_onnx::prelude::Tensor> {
        let shape: Vec<usize> = t.dimensions.iter().map(|&d| d as usize).collect();
        if let Some(fixed) = &self.shape
            && *fixed != shape
        {
            anyhow::bail!(
                "input `{}` must have shape {fixed:?}, got {shape:?}",
                self.name
            );
        }
        let datum = datum_of(t.ty).ok_or_else(|| {
            anyhow!(
                "input `{}`: tensor type {:?} is not supported",
                self.name,
                t.ty
            )
        })?;
        if datum != self.datum {
            anyhow::bail!(
                "input `{}` must be {:?}, got {datum:?}",
                self.name,
                self.datum
            );
        }
        let count: usize = shape.iter().product();
        let expected = count * datum.size_of();
        if t.data.len() != expected {
            anyhow::bail!(
                "input `{}`: shape {shape:?} of {datum:?} needs {expected} bytes, got {}",
                self.name,
                t.data.len()
            );
        }
        let b = &t.data;
        match datum {
            DatumType::F32 => tensor_from::<f32>(&shape, b),
            DatumType::F64 => tensor_from::<f64>(&shape, b),
            DatumType::I32 => tensor_from::<i32>(&shape, b),
            DatumType::I64 => tensor_from::<i64>(&shape, b),
            _ => tensor_from::<u8>(&shape, b),
        }
    }
}

/// A tract tensor from little-endian bytes (the host is little-endian, as wasi-nn is): one
/// copy into an aligned vector, which the tensor then owns.
fn tensor_from<T: Datum + bytemuck::Pod>(
    shape: &[usize],
    bytes: &[u8],
) -> TractResult<tract_onnx::prelude::Tensor> {
    let values: Vec<T> = bytemuck::pod_collect_to_vec(bytes);
    Ok(tract_ndarray::ArrayD::from_shape_vec(shape, values)?.into_tensor())
}

fn datum_of(ty: TensorType) -> Option<DatumType> {
    Some(match ty {
        TensorType::Fp32 => DatumType::F32,
        TensorType::Fp64 => DatumType::F64,
        TensorType::I32 => DatumType::I32,
        TensorType::I64 => DatumType::I64,
        TensorType::U8 => DatumType::U8,
        TensorType::Fp16 | TensorType::Bf16 => return None,
    })
}

fn to_wasi(name: &str, value: &TValue) -> TractResult<Tensor> {
    let ty = match value.datum_type() {
        DatumType::F32 => TensorType::Fp32,
        DatumType::F64 => TensorType::Fp64,
        DatumType::I32 => TensorType::I32,
        DatumType::I64 => TensorType::I64,
        DatumType::U8 | DatumType::Bool => TensorType::U8,
        other => anyhow::bail!("output `{name}` is {other:?}, which wasi-nn cannot carry"),
    };
    let dimensions = value.shape().iter().map(|&d| d as u32).collect();
    // On every target Edgewise runs on (and in wasm) memory is little-endian, as wasi-nn wants.
    Ok(Tensor::new(dimensions, ty, value.as_bytes().to_vec()))
}

fn input_names(model: &InferenceModel) -> TractResult<Vec<String>> {
    Ok(model
        .input_outlets()?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect())
}

impl BackendGraph for TractModel {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let context = TractContext {
            model: self.clone(),
        };
        Ok(ExecutionContext::from(
            Box::new(context) as Box<dyn BackendExecutionContext>
        ))
    }
}

/// One plugin's execution context over a shared model.
struct TractContext {
    model: TractModel,
}

impl BackendExecutionContext for TractContext {
    fn set_input(&mut self, _: Id, _: &Tensor) -> Result<(), BackendError> {
        Err(unsupported("set-input (use compute with named inputs)"))
    }

    fn get_output(&mut self, _: Id) -> Result<Tensor, BackendError> {
        Err(unsupported("get-output (use compute with named inputs)"))
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let inputs = inputs.ok_or_else(|| unsupported("compute without inputs"))?;
        // The caller (`nn::wit`) logs the cause with the plugin's name and hands it on.
        self.model
            .run(inputs)
            .map(Some)
            .map_err(|e| BackendError::BackendAccess(wasmtime::format_err!("{e:#}")))
    }
}

fn unsupported(what: &str) -> BackendError {
    BackendError::BackendAccess(wasmtime::format_err!(
        "{what} is not supported by the tract backend"
    ))
}

/// tract's x86 AVX kernels can return with the upper halves of the YMM registers in use. Code
/// that then runs legacy (non-VEX) SSE instructions, as Cranelift's code for plugins does for
/// its vector spills and as the host's own Rust built for baseline x86-64 does, pays a
/// state-transition penalty on each one until something clears the state: measured here, the
/// vibration plugin's feature loops ran 20x slower after every inference (1.3 ms per message
/// instead of 60 us). `vzeroupper` clears it.
#[allow(unsafe_code)]
pub fn clear_upper_simd_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), which is all `vzeroupper` needs. It
        // zeroes only bits 128 and up of the vector registers; this function and its callers
        // are compiled without AVX, so no value of theirs lives there.
        unsafe { std::arch::x86_64::_mm256_zeroupper() }
    }
}

//! Runs any declared ONNX model on raw tensors: the generic inference plugin.
//!
//! Each message's payload is the model's `f32` inputs, little-endian, one after another in the
//! order and shapes the `inputs` setting gives (`"features:1x8"` or `"input:1x576,state:2x1x128"`).
//! Each output is published as its raw little-endian bytes to `<prefix>/<output name>`.
//! Useful for trying a model on a gateway before writing a plugin around it, and as the
//! thinnest possible layer over wasi-nn, which is what the benchmarks measure.

use edgewise_guest::nn::{Model, Tensor, TensorType};
use edgewise_guest::{Error, Message, Plugin, Result, config, export_plugin, publish};

struct Input {
    name: String,
    shape: Vec<u32>,
    len: usize,
}

struct OnnxRunner {
    model: Model,
    inputs: Vec<Input>,
    prefix: String,
}

fn parse_inputs(spec: &str) -> Result<Vec<Input>> {
    spec.split(',')
        .map(|item| {
            let (name, dims) = item.trim().split_once(':').ok_or_else(|| {
                Error::msg(format!("setting `inputs`: `{item}` is not name:AxBxC"))
            })?;
            let shape = dims
                .split('x')
                .map(|d| {
                    d.parse::<u32>()
                        .map_err(|e| Error::msg(format!("setting `inputs`: `{item}`: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let len = shape.iter().map(|&d| d as usize).product();
            Ok(Input {
                name: name.to_owned(),
                shape,
                len,
            })
        })
        .collect()
}

impl Plugin for OnnxRunner {
    fn init() -> Result<Self> {
        let model_name = config("model").unwrap_or_else(|| "model".to_owned());
        let spec = config("inputs")
            .ok_or_else(|| Error::msg("setting `inputs` is required, e.g. \"x:1x8\""))?;
        Ok(OnnxRunner {
            model: Model::by_name(&model_name)?,
            inputs: parse_inputs(&spec)?,
            prefix: config("prefix").unwrap_or_else(|| "onnx".to_owned()),
        })
    }

    fn on_message(&mut self, msg: Message) -> Result<()> {
        let expected: usize = self.inputs.iter().map(|i| i.len * 4).sum();
        if msg.payload.len() != expected {
            return Err(Error::msg(format!(
                "payload has {} bytes, the inputs need {expected}",
                msg.payload.len()
            )));
        }
        let mut at = 0;
        let mut tensors = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let bytes = &msg.payload[at..at + input.len * 4];
            tensors.push((
                input.name.as_str(),
                Tensor::from_bytes(&input.shape, TensorType::Fp32, bytes)?,
            ));
            at += bytes.len();
        }
        let outputs = self.model.run(&tensors)?;
        for name in outputs.names() {
            publish(&format!("{}/{name}", self.prefix), outputs.bytes(name)?)?;
        }
        Ok(())
    }
}

export_plugin!(OnnxRunner);

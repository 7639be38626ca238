//! Industrial IoT: diagnoses rotating machines from accelerometer windows with an ONNX model.
//!
//! Input on `plant/<machine>/vibration`: `{"rpm": 1800, "rate_hz": 2048, "samples": [...]}`.
//! The plugin computes 8 features (`features.rs`), runs the `vibration` model declared in
//! plugin.toml through wasi-nn, and publishes to `plant/<machine>/vibration/diagnosis`:
//! `{"machine", "class", "confidence", "probabilities": {class: p}}`. Windows whose
//! confidence is under the `min-confidence` setting are reported as class `uncertain`.

mod features;

use edgewise_guest::nn::{Model, Tensor};
use edgewise_guest::{Error, Message, Plugin, Result, export_plugin, publish_json, setting};
use serde::{Deserialize, Serialize};

const CLASSES: [&str; 4] = ["healthy", "imbalance", "misalignment", "bearing"];
const MIN_SAMPLES: usize = 64;

#[derive(Deserialize)]
struct Window {
    rpm: f64,
    rate_hz: f64,
    samples: Vec<f64>,
}

#[derive(Serialize)]
struct Diagnosis<'a> {
    machine: &'a str,
    class: &'a str,
    confidence: f64,
    probabilities: serde_json::Map<String, serde_json::Value>,
}

struct VibrationFault {
    model: Model,
    min_confidence: f32,
}

impl Plugin for VibrationFault {
    fn init() -> Result<Self> {
        Ok(VibrationFault {
            model: Model::by_name("vibration")?,
            min_confidence: setting("min-confidence", 0.0)?,
        })
    }

    fn on_message(&mut self, msg: Message) -> Result<()> {
        let machine = msg.topic.split('/').nth(1).unwrap_or("unknown");
        let window: Window = msg.json()?;
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if window.samples.len() < MIN_SAMPLES || !positive(window.rpm) || !positive(window.rate_hz)
        {
            return Err(Error::msg(format!(
                "need rpm > 0, rate_hz > 0 and at least {MIN_SAMPLES} samples, got rpm {} rate {} and {} samples",
                window.rpm,
                window.rate_hz,
                window.samples.len()
            )));
        }
        let features =
            features::features(&window.samples, window.rate_hz, window.rpm).map(|f| f as f32);
        let out = self
            .model
            .run(&[("features", Tensor::f32(&[1, 8], &features)?)])?;
        let probabilities = out.f32("probabilities")?;
        let (best, confidence) =
            probabilities
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |best, (i, p)| if p > best.1 { (i, p) } else { best },
                );
        let class = if confidence >= self.min_confidence {
            CLASSES[best]
        } else {
            "uncertain"
        };
        let probabilities = CLASSES
            .iter()
            .zip(&probabilities)
            .map(|(c, p)| ((*c).to_owned(), serde_json::Value::from(round4(*p))))
            .collect();
        let diagnosis = Diagnosis {
            machine,
            class,
            confidence: round4(confidence),
            probabilities,
        };
        publish_json(&format!("plant/{machine}/vibration/diagnosis"), &diagnosis)?;
        Ok(())
    }
}

/// Four decimals are plenty for a probability, and keep the JSON readable.
fn round4(p: f32) -> f64 {
    (f64::from(p) * 1e4).round() / 1e4
}

export_plugin!(VibrationFault);

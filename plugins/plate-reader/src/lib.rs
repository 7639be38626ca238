//! Smart traffic: reads licence plates from gate camera frames and counts the vehicles through.
//!
//! Input on `traffic/<camera>/frame`: one JPEG or PNG frame (up to 1920x1080, `frame.rs`).
//! PP-OCR's detector finds the frame's text lines (`detect.rs`); each is straightened and read
//! by PP-OCR's recogniser (`recognise.rs`); readings whose letters and digits match a plate
//! pattern are plates (`plates.rs`). Publishes, per new visit (`traffic.rs`):
//! `traffic/<camera>/plate` `{"plate", "country", "confidence", "box", "at_ms"}`, and when a
//! count window has ended, `traffic/<camera>/count` `{"camera", "from_ms", "to_ms", "vehicles"}`.

mod detect;
mod frame;
mod plates;
mod recognise;
mod traffic;

use edgewise_guest::nn::Model;
use edgewise_guest::{Error, Message, Plugin, Result, export_plugin, publish_json, setting};
use serde::Serialize;

#[derive(Serialize)]
struct PlateSeen<'a> {
    plate: &'a str,
    country: &'a str,
    confidence: f64,
    #[serde(rename = "box")]
    bounds: [f64; 4],
    at_ms: u64,
}

#[derive(Serialize)]
struct VehicleCount<'a> {
    camera: &'a str,
    from_ms: u64,
    to_ms: u64,
    vehicles: u64,
}

struct PlateReader {
    detector: detect::Detector,
    recogniser: recognise::Recogniser,
    patterns: plates::Patterns,
    min_confidence: f32,
    traffic: traffic::Traffic,
}

impl Plugin for PlateReader {
    fn init() -> Result<Self> {
        let patterns: String = setting("patterns", String::new())?;
        let seconds = |key: &str, default: u64| -> Result<u64> {
            Ok(setting(key, default)?.saturating_mul(1000))
        };
        Ok(PlateReader {
            detector: detect::Detector::new(Model::by_name("text-detector")?),
            recogniser: recognise::Recogniser::new(Model::by_name("text-recogniser")?),
            patterns: patterns
                .parse()
                .map_err(|e: Error| e.context("setting `patterns`"))?,
            min_confidence: setting("min-confidence", 0.7)?,
            traffic: traffic::Traffic::new(
                seconds("dedupe-window-s", 30)?,
                seconds("count-window-s", 60)?,
                setting("max-cameras", 64)?,
            ),
        })
    }

    fn on_message(&mut self, msg: Message) -> Result<()> {
        let camera = msg.topic.split('/').nth(1).unwrap_or("unknown");
        let at_ms = msg.received_at_ms;
        let frame = frame::Frame::decode(&msg.payload)?;
        // The window closes on any frame that arrives after it, with plates or without.
        if let Some(count) = self.traffic.frame(camera, at_ms) {
            let count = VehicleCount {
                camera,
                from_ms: count.from_ms,
                to_ms: count.to_ms,
                vehicles: count.vehicles,
            };
            publish_json(&format!("traffic/{camera}/count"), &count)?;
        }
        let mut readings = Vec::new();
        for line in self.detector.find(&frame)? {
            readings.push((line, self.recogniser.read(&frame, &line)?));
        }
        for plate in plates::plates(&readings, &self.patterns, self.min_confidence) {
            if !self.traffic.sighting(camera, &plate.plate, at_ms) {
                continue;
            }
            let seen = PlateSeen {
                plate: &plate.plate,
                country: &plate.country,
                confidence: round(plate.confidence, 1e4),
                bounds: plate.bounds.map(|v| round(v, 10.0)),
                at_ms,
            };
            publish_json(&format!("traffic/{camera}/plate"), &seen)?;
        }
        Ok(())
    }
}

/// Runs one of the OCR models on its single input `x` and returns its single output: shape and
/// values. `what` names the model in errors.
fn run_model(
    model: &mut Model,
    shape: [usize; 4],
    input: &[f32],
    what: &str,
) -> Result<(Vec<u32>, Vec<f32>)> {
    let shape = shape.map(|d| d as u32);
    let out = model.run(&[("x", edgewise_guest::nn::Tensor::f32(&shape, input)?)])?;
    let name = out
        .names()
        .next()
        .ok_or_else(|| Error::msg(format!("the {what} gave no output")))?
        .to_owned();
    Ok((out.shape(&name)?, out.f32(&name)?))
}

fn round(value: f32, scale: f64) -> f64 {
    (f64::from(value) * scale).round() / scale
}

export_plugin!(PlateReader);

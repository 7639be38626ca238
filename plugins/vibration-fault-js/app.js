// The vibration-fault example in JavaScript: the same features, the same model, the same
// outputs.
//
// Input on `plant/<machine>/vibration`: `{"rpm": 1800, "rate_hz": 2048, "samples": [...]}`.
// Computes the 8 features of `plugins/vibration-fault/src/features.rs` in doubles, operation for
// operation, runs the `vibration` model through wasi:nn and publishes the diagnosis to
// `plant/<machine>/vibration/diagnosis`: what the Rust plugin publishes, number for number.
import * as edgewise from "../../guest-sdk/js/edgewise.js";

const CLASSES = ["healthy", "imbalance", "misalignment", "bearing"];
const MIN_SAMPLES = 64;

function amplitudeAt(samples, rateHz, freqHz) {
  const step = (2.0 * Math.PI * freqHz) / rateHz;
  const [stepSin, stepCos] = [Math.sin(step), Math.cos(step)];
  let [cos, sin, re, im] = [1.0, 0.0, 0.0, 0.0];
  for (const x of samples) {
    re += x * cos;
    im += x * sin;
    [cos, sin] = [cos * stepCos - sin * stepSin, cos * stepSin + sin * stepCos];
  }
  return (2.0 * Math.hypot(re, im)) / samples.length;
}

function features(samples, rateHz, rpm) {
  const n = samples.length;
  const shaftHz = rpm / 60.0;
  let [total, squares] = [0.0, 0.0];
  for (const x of samples) {
    total += x;
    squares += x * x;
  }
  const mean = total / n;
  const rms = Math.sqrt(squares / n);
  let [second, fourth] = [0.0, 0.0];
  for (const x of samples) {
    const d2 = (x - mean) * (x - mean);
    second += d2;
    fourth += d2 * d2;
  }
  const variance = second / n;
  const kurtosis = fourth / n / (variance * variance);
  let peak = 0.0;
  for (const x of samples) peak = Math.max(peak, Math.abs(x));
  const [a1, a2, a3] = [1.0, 2.0, 3.0].map((k) => amplitudeAt(samples, rateHz, k * shaftHz));
  let diff = 0.0;
  for (let i = 1; i < n; i++) {
    const step = samples[i] - samples[i - 1];
    diff += step * step;
  }
  const diffRms = Math.sqrt(diff / (n - 1.0));
  return [rms, peak / rms, kurtosis, a1, a2, a3, diffRms, a2 / (a1 + 1e-3)];
}

/** As Rust's `(p * 1e4).round() / 1e4`: halves away from zero (Math.round goes up). */
function round4(p) {
  const scaled = p * 1e4;
  let whole = Math.floor(scaled);
  if (scaled - whole >= 0.5) whole += 1;
  return whole / 1e4;
}

class VibrationFault extends edgewise.Plugin {
  init() {
    this.model = edgewise.Model.byName("vibration");
    this.minConfidence = edgewise.setting("min-confidence", 0.0);
  }

  onMessage(msg) {
    const parts = msg.topic.split("/");
    const machine = parts.length > 1 ? parts[1] : "unknown";
    const window = msg.json();
    const [rpm, rateHz] = [Number(window.rpm), Number(window.rate_hz)];
    const samples = Array.from(window.samples ?? [], Number);
    const positive = (x) => Number.isFinite(x) && x > 0.0;
    if (samples.length < MIN_SAMPLES || !positive(rpm) || !positive(rateHz)) {
      throw new RangeError(`need rpm > 0, rate_hz > 0 and at least ${MIN_SAMPLES} samples`);
    }
    const out = this.model.run({ features: [[1, 8], features(samples, rateHz, rpm)] });
    const probabilities = out.f32("probabilities");
    let [best, confidence] = [0, -Infinity];
    probabilities.forEach((p, i) => {
      if (p > confidence) [best, confidence] = [i, p];
    });
    edgewise.publishJson(`plant/${machine}/vibration/diagnosis`, {
      machine,
      class: confidence >= this.minConfidence ? CLASSES[best] : "uncertain",
      confidence: round4(confidence),
      probabilities: Object.fromEntries(CLASSES.map((c, i) => [c, round4(probabilities[i])])),
    });
  }
}

export const handler = edgewise.handler(VibrationFault);

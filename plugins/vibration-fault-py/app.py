"""The vibration-fault example in Python: the same features, the same model, the same outputs.

Input on `plant/<machine>/vibration`: `{"rpm": 1800, "rate_hz": 2048, "samples": [...]}`.
Computes the 8 features of `plugins/vibration-fault/src/features.rs` in float64, operation for
operation (explicit loops: Python's `sum` of floats compensates its rounding, Rust's does not),
runs the `vibration` model through wasi:nn and publishes the diagnosis to
`plant/<machine>/vibration/diagnosis`, byte for byte what the Rust plugin publishes.
"""
import math

import edgewise_plugin as edgewise

CLASSES = ["healthy", "imbalance", "misalignment", "bearing"]
MIN_SAMPLES = 64


def amplitude_at(samples, rate_hz, freq_hz):
    step = 2.0 * math.pi * freq_hz / rate_hz
    step_sin, step_cos = math.sin(step), math.cos(step)
    cos, sin = 1.0, 0.0
    re, im = 0.0, 0.0
    for x in samples:
        re += x * cos
        im += x * sin
        cos, sin = cos * step_cos - sin * step_sin, cos * step_sin + sin * step_cos
    return 2.0 * math.hypot(re, im) / len(samples)


def features(samples, rate_hz, rpm):
    n = float(len(samples))
    shaft_hz = rpm / 60.0
    total = squares = 0.0
    for x in samples:
        total += x
        squares += x * x
    mean = total / n
    rms = math.sqrt(squares / n)
    second = fourth = 0.0
    for x in samples:
        d = x - mean
        d2 = d * d
        second += d2
        fourth += d2 * d2
    var = second / n
    kurtosis = fourth / n / (var * var)
    peak = 0.0
    for x in samples:
        peak = max(peak, abs(x))
    a1, a2, a3 = (amplitude_at(samples, rate_hz, k * shaft_hz) for k in (1.0, 2.0, 3.0))
    diff = 0.0
    for before, after in zip(samples, samples[1:]):
        step = after - before
        diff += step * step
    diff_rms = math.sqrt(diff / (n - 1.0))
    return [rms, peak / rms, kurtosis, a1, a2, a3, diff_rms, a2 / (a1 + 1e-3)]


def round4(p):
    """As Rust's `(p * 1e4).round() / 1e4`: halves away from zero (Python's round() goes to
    even)."""
    scaled = p * 1e4
    whole = math.floor(scaled)
    if scaled - whole >= 0.5:
        whole += 1
    return whole / 1e4


class VibrationFault(edgewise.Plugin):
    def init(self):
        self.model = edgewise.Model.by_name("vibration")
        self.min_confidence = edgewise.setting("min-confidence", 0.0)

    def on_message(self, msg):
        parts = msg.topic.split("/")
        machine = parts[1] if len(parts) > 1 else "unknown"
        window = msg.json()
        rpm, rate_hz, samples = float(window["rpm"]), float(window["rate_hz"]), [float(x) for x in window["samples"]]
        positive = lambda x: math.isfinite(x) and x > 0.0
        if len(samples) < MIN_SAMPLES or not positive(rpm) or not positive(rate_hz):
            raise ValueError(f"need rpm > 0, rate_hz > 0 and at least {MIN_SAMPLES} samples")
        out = self.model.run({"features": ([1, 8], features(samples, rate_hz, rpm))})
        probabilities = out.f32("probabilities")
        best, confidence = 0, -math.inf
        for i, p in enumerate(probabilities):
            if p > confidence:
                best, confidence = i, p
        label = CLASSES[best] if confidence >= self.min_confidence else "uncertain"
        edgewise.publish_json(f"plant/{machine}/vibration/diagnosis", {
            "machine": machine,
            "class": label,
            "confidence": round4(confidence),
            "probabilities": {c: round4(p) for c, p in zip(CLASSES, probabilities)},
        })


Handler = edgewise.handler(VibrationFault)

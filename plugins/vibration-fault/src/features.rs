//! The 8 vibration features the classifier was trained on, computed as `model/train.py` does.

/// Feature vector for one window of samples from a machine turning at `rpm`.
pub fn features(samples: &[f64], rate_hz: f64, rpm: f64) -> [f64; 8] {
    let n = samples.len() as f64;
    let shaft_hz = rpm / 60.0;
    let mean = samples.iter().sum::<f64>() / n;
    let rms = (samples.iter().map(|x| x * x).sum::<f64>() / n).sqrt();
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let kurtosis = samples.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n / (var * var);
    let peak = samples.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
    let [a1, a2, a3] = [1.0, 2.0, 3.0].map(|k| amplitude_at(samples, rate_hz, k * shaft_hz));
    let diff_rms = (samples
        .windows(2)
        .map(|w| (w[1] - w[0]).powi(2))
        .sum::<f64>()
        / (n - 1.0))
        .sqrt();
    [
        rms,
        peak / rms,
        kurtosis,
        a1,
        a2,
        a3,
        diff_rms,
        a2 / (a1 + 1e-3),
    ]
}

/// Amplitude of the component at `freq_hz` (a single-bin DFT, like Goertzel).
///
/// The phasor turns by a fixed step per sample, so it is rotated rather than recomputed: two
/// trigonometric calls per window instead of two per sample, which in wasm (software `sin` and
/// `cos`) was 99 % of the plugin's time. Over a 512-sample window the rotation drifts from
/// `cos`/`sin` of the exact phase by under 1e-12.
fn amplitude_at(samples: &[f64], rate_hz: f64, freq_hz: f64) -> f64 {
    let step = 2.0 * std::f64::consts::PI * freq_hz / rate_hz;
    let (step_sin, step_cos) = step.sin_cos();
    let (mut cos, mut sin) = (1.0_f64, 0.0_f64);
    let (mut re, mut im) = (0.0, 0.0);
    for x in samples {
        re += x * cos;
        im += x * sin;
        (cos, sin) = (
            cos * step_cos - sin * step_sin,
            cos * step_sin + sin * step_cos,
        );
    }
    2.0 * re.hypot(im) / samples.len() as f64
}

//! Smart-traffic benchmark: the plate reader's time per frame on its evaluation frames
//! (decode, text detection, one recognition per text line, plate matching), by frame size, the
//! frames per second one core reads, and the memory it takes. Each frame's time is split into
//! the models' computes (tract, native in the host, timed by the host's inference observer: the
//! first compute of a frame is the detector, the others the recogniser, one per text line) and
//! the rest (the plugin's own work in wasm: decoding, geometry, crops, CTC, plates), with the
//! frame's time as a ratio to its models' time: what running the pipeline as a plugin adds over
//! running the same models with tract directly. The models alone, plugin vs tract called
//! directly, are rows of the `runtime` benchmark (`scripts/bench runtime`).
//!
//! Run it with `scripts/bench traffic`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use edgewise_host::worker::{Message, Worker};
use edgewise_tests::{eval_set, load, plugin_dir};

const ROUNDS: usize = 5;

/// Width and height from a JPEG's start-of-frame header.
fn jpeg_size(jpeg: &[u8]) -> (u16, u16) {
    let at = jpeg
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .expect("a JPEG start of frame");
    let be = |i: usize| u16::from_be_bytes([jpeg[at + i], jpeg[at + i + 1]]);
    (be(7), be(5))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let frames: Vec<Vec<u8>> = std::fs::read_to_string(eval_set("plate-reader"))
        .expect("frames.jsonl")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            BASE64
                .decode(v["payload_base64"].as_str().expect("payload_base64"))
                .expect("base64")
        })
        .collect();
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    let plugin = load(&plugin_dir("plate-reader"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let computes: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let observed = computes.clone();
    plugin.observe_inference(Box::new(move |took| {
        observed.lock().expect("computes").push(took)
    }));
    let mut w = Worker::new(Arc::new(plugin), Default::default());
    w.start().expect("plate-reader starts");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut by_size: std::collections::BTreeMap<(u16, u16), Vec<f64>> = Default::default();
    // Per frame size: (detector ms, recogniser ms, recogniser runs), summed.
    let mut models: std::collections::BTreeMap<(u16, u16), (f64, f64, usize)> = Default::default();
    let mut plates = 0;
    for round in 0..=ROUNDS {
        for (i, jpeg) in frames.iter().enumerate() {
            // Frames a minute apart: every plate is a new visit, as in the evaluation.
            let msg = Message {
                topic: "traffic/bench/frame".into(),
                payload: jpeg.clone(),
                received_at_ms: ((round * frames.len() + i) as u64) * 61_000,
            };
            computes.lock().expect("computes").clear();
            let start = Instant::now();
            let published = w.handle(&msg).expect("frame read");
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if round > 0 {
                // Round 0 warms up.
                by_size.entry(jpeg_size(jpeg)).or_default().push(ms);
                let took = computes.lock().expect("computes").clone();
                let sum = models.entry(jpeg_size(jpeg)).or_default();
                if let Some((det, rec)) = took.split_first() {
                    sum.0 += det.as_secs_f64() * 1e3;
                    sum.1 += rec.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3;
                    sum.2 += rec.len();
                }
                plates += published
                    .iter()
                    .filter(|p| p.topic.ends_with("/plate"))
                    .count();
            }
        }
    }
    println!(
        "plate-reader: {} frames x {ROUNDS} rounds, {} plates read per round; load and start {load_ms:.0} ms\n",
        frames.len(),
        plates / ROUNDS
    );
    println!(
        "{:<12} {:>7} {:>9} {:>9} {:>9} {:>14} {:>9} {:>16} {:>9} {:>13}",
        "frame",
        "frames",
        "p50",
        "p99",
        "mean",
        "frames/s/core",
        "det",
        "rec (lines)",
        "models",
        "frame/models"
    );
    let mut all = Vec::new();
    for ((width, height), mut ms) in by_size {
        ms.sort_by(f64::total_cmp);
        all.extend_from_slice(&ms);
        let n = ms.len() as f64;
        let mean = ms.iter().sum::<f64>() / n;
        let (det, rec, lines) = models[&(width, height)];
        let (det, rec) = (det / n, rec / n);
        println!(
            "{:<12} {:>7} {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>14.1} {:>6.1} ms {:>7.1} ms ({:>4.1}) {:>6.1} ms {:>13.3}",
            format!("{width}x{height}"),
            ms.len() / ROUNDS,
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            mean,
            1e3 / mean,
            det,
            rec,
            lines as f64 / n,
            det + rec,
            mean / (det + rec)
        );
    }
    all.sort_by(f64::total_cmp);
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    println!(
        "{:<12} {:>7} {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>14.1}",
        "all",
        all.len() / ROUNDS,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        mean,
        1e3 / mean
    );
    println!(
        "\npeak linear memory {:.1} MiB; process peak RSS {:.0} MiB ({:.0} MiB before the plugin loaded)",
        w.stats().peak_memory_bytes as f64 / 1048576.0,
        peak_rss_mib(),
        rss_before
    );
}

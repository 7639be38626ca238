//! Plugin runtime benchmark: instantiation, a no-op call, and inference through a plugin
//! versus the same model called directly through tract, in one process, on one machine.
//!
//! Run it with `scripts/bench`, which prepares the plugins and models first. Each pair is
//! measured in alternating batches (plugin, native, plugin, ...) so that drift on a shared,
//! noisy machine hits both sides alike, and the ratio of the medians is reported. With
//! `EDGEWISE_BENCH_DETAIL=1` each inference row is followed by where its overhead goes;
//! `EDGEWISE_BENCH_ONLY=Silero` runs only the inference rows whose name contains that text.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgewise_host::capability::nn::tract::{TractModel, clear_upper_simd_state};
use edgewise_host::runtime::instance::Instance;
use edgewise_host::worker::{Message, Worker};
use edgewise_tests::{copy_plugin, edit, load, message, model_file, plugin_dir, repo, worker};
use tract_onnx::prelude::*;
use wasmtime_wasi_nn::backend::NamedTensor;
use wasmtime_wasi_nn::wit::TensorType;

const ROUNDS: usize = 31;
const BATCH: Duration = Duration::from_millis(20);

/// Nanoseconds per call of `f`, over `iters` calls.
fn time(f: &mut dyn FnMut(), iters: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

/// How many calls of `f` fill one batch.
fn calibrate(f: &mut dyn FnMut()) -> u64 {
    for _ in 0..3 {
        f(); // warm up
    }
    let per_call = time(f, 10).max(1.0);
    ((BATCH.as_nanos() as f64 / per_call) as u64).max(1)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median ns per call of `a` and of `b`, measured in alternating batches.
fn pair(a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> (f64, f64) {
    let (na, nb) = (calibrate(a), calibrate(b));
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ta.push(time(a, na));
        tb.push(time(b, nb));
    }
    (median(ta), median(tb))
}

fn single(a: &mut dyn FnMut()) -> f64 {
    let n = calibrate(a);
    median((0..ROUNDS).map(|_| time(a, n)).collect())
}

fn human(ns: f64) -> String {
    match ns {
        ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        ns => format!("{ns:.0} ns"),
    }
}

fn row(what: &str, plugin: f64, native: Option<f64>, target: &str) {
    let (native, ratio) = match native {
        Some(n) => (human(n), format!("{:.3}", plugin / n)),
        None => (String::new(), String::new()),
    };
    println!(
        "{what:<42} {:>11} {native:>11} {ratio:>7}   {target}",
        human(plugin)
    );
}

/// A model planned by tract directly, with fixed input shapes.
fn native_plan(model: &Path, shapes: &[&[usize]]) -> Arc<TypedSimplePlan> {
    let mut m = tract_onnx::onnx()
        .model_for_path(model)
        .expect("model parses");
    for (ix, shape) in shapes.iter().enumerate() {
        m.set_input_fact(ix, f32::fact(*shape).into())
            .expect("input fact");
    }
    m.into_optimized()
        .and_then(|m| m.into_runnable())
        .expect("model optimises")
}

/// One inference with tract called directly: tensors built from the values, then the plan.
fn run_native(plan: &Arc<TypedSimplePlan>, inputs: &[(&str, &[usize], Vec<f32>)]) {
    let tensors: TVec<TValue> = inputs
        .iter()
        .map(|(_, shape, values)| Tensor::from_shape(shape, values).expect("tensor").into())
        .collect();
    plan.run(tensors).expect("native inference");
    // What the backend does after tract too: without it the caller's own SSE code pays for
    // tract's dirty AVX state (see `clear_upper_simd_state`), and native would look slower.
    clear_upper_simd_state();
}

/// An onnx-runner plugin serving `model` with the given inputs.
fn runner(model: &Path, inputs: &[(&str, &[usize])]) -> (tempfile::TempDir, Worker) {
    let dir = copy_plugin("onnx-runner");
    std::fs::copy(model, dir.path().join("model/model.onnx")).expect("copy model");
    let declared: Vec<String> = inputs.iter().map(|(n, s)| format!("{n} = {s:?}")).collect();
    let setting: Vec<String> = inputs
        .iter()
        .map(|(n, s)| {
            format!(
                "{n}:{}",
                s.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x")
            )
        })
        .collect();
    edit(
        dir.path(),
        "plugin.toml",
        "inputs = { features = [1, 8] }",
        &format!("inputs = {{ {} }}", declared.join(", ")),
    );
    edit(
        dir.path(),
        "plugin.toml",
        "inputs = \"features:1x8\"",
        &format!("inputs = \"{}\"", setting.join(",")),
    );
    let plugin = load(dir.path(), &[]).unwrap_or_else(|e| panic!("{e}"));
    (dir, Worker::new(Arc::new(plugin), Default::default()))
}

/// Plugin vs native for one model, inputs given as (name, shape, values).
fn inference(what: &str, model: &Path, inputs: &[(&str, &[usize], Vec<f32>)], target: &str) {
    if std::env::var("EDGEWISE_BENCH_ONLY").is_ok_and(|only| !what.contains(&only)) {
        return;
    }
    let named: Vec<(&str, &[usize])> = inputs.iter().map(|(n, s, _)| (*n, *s)).collect();
    let (_dir, mut w) = runner(model, &named);
    let payload: Vec<u8> = inputs
        .iter()
        .flat_map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()))
        .collect();
    let msg: Message = message("onnx/in", payload);
    let plan = native_plan(model, &named.iter().map(|(_, s)| *s).collect::<Vec<_>>());
    let mut plugin = || {
        w.handle(&msg).expect("plugin inference");
    };
    let mut native = || run_native(&plan, inputs);
    let (p, n) = pair(&mut plugin, &mut native);
    row(what, p, Some(n), target);
    if std::env::var_os("EDGEWISE_BENCH_DETAIL").is_some() {
        detail(model, &named, inputs, &mut native);
    }
}

/// Where the plugin's overhead goes: the backend called directly (no wasm, same conversions),
/// and a second native plan (how much two plans of one model differ on this machine).
fn detail(
    model: &Path,
    named: &[(&str, &[usize])],
    inputs: &[(&str, &[usize], Vec<f32>)],
    native: &mut dyn FnMut(),
) {
    let spec = edgewise_signing::ModelSpec {
        name: "bench".into(),
        encoding: "onnx".into(),
        file: model.into(),
        inputs: named
            .iter()
            .map(|(n, s)| ((*n).to_owned(), s.to_vec()))
            .collect(),
    };
    let bytes = std::fs::read(model).expect("model file");
    let direct = TractModel::optimise(bytes.clone(), &spec).expect("backend loads the model");
    let mut backend = || {
        let tensors = inputs
            .iter()
            .map(|(name, shape, values)| NamedTensor {
                name: (*name).to_owned(),
                tensor: wasmtime_wasi_nn::Tensor::new(
                    shape.iter().map(|&d| d as u32).collect(),
                    TensorType::Fp32,
                    values.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            })
            .collect();
        direct.run(tensors).expect("backend inference");
    };
    let (b, n) = pair(&mut backend, native);
    row("  the tract backend called directly", b, Some(n), "");
    let second = native_plan(model, &named.iter().map(|(_, s)| *s).collect::<Vec<_>>());
    let mut native2 = || run_native(&second, inputs);
    let (b, n) = pair(&mut native2, native);
    row("  a second native plan of the same model", b, Some(n), "");
}

fn signal(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i as f32) * 0.37).sin() * 0.3).collect()
}

fn main() {
    // `cargo bench` passes `--bench`; with a filter argument from `cargo test --benches`, skip.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "edgewise plugin runtime benchmark: {ROUNDS} alternating rounds, medians, {cores} cores\n"
    );
    println!(
        "{:<42} {:>11} {:>11} {:>7}   target",
        "what", "plugin", "native", "ratio"
    );

    let noop = load(&plugin_dir("hostile"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let start = single(&mut || {
        Instance::start(&noop).expect("instance starts");
    });
    row("instantiate + init (no-op plugin)", start, None, "<= 50 µs");

    let mut w = worker("hostile", &[]);
    let msg = message("hostile/in/bench", "noop");
    let call = single(&mut || {
        w.handle(&msg).expect("no-op");
    });
    row(
        "on-message round trip (no-op plugin)",
        call,
        None,
        "<= 2 µs",
    );

    inference(
        "MLP 8-16-4 (vibration-fault)",
        &model_file("vibration-fault", "vibration.onnx"),
        &[(
            "features",
            &[1, 8],
            vec![0.4, 3.1, 2.9, 0.2, 0.1, 0.05, 0.3, 0.5],
        )],
        "-",
    );
    inference(
        "Silero VAD, one 32 ms frame",
        &model_file("voice-activity", "silero_vad_16k.onnx"),
        &[
            ("input", &[1, 576], signal(576)),
            ("state", &[2, 1, 128], vec![0.0; 256]),
        ],
        "<= 1.15",
    );
    // Smaller than the plate reader runs them (detector 640x384, recogniser 48x320): the
    // runner takes its input and gives each output as one message, and the host caps a
    // message at 1 MiB (the recogniser's output at 48x320 is 40 x 6625 floats, 1.06 MB).
    inference(
        "PP-OCRv4 text detector, 320x256 input",
        &model_file("plate-reader", "text_det.onnx"),
        &[("x", &[1, 3, 256, 320], signal(3 * 256 * 320))],
        "<= 1.05",
    );
    inference(
        "PP-OCRv4 text recogniser, 48x160 line",
        &model_file("plate-reader", "text_rec.onnx"),
        &[("x", &[1, 3, 48, 160], signal(3 * 48 * 160))],
        "<= 1.05",
    );
    let convnet = repo().join("target/bench/convnet.onnx");
    if convnet.is_file() {
        inference(
            "convnet on a 96x96 image (>= 1 ms)",
            &convnet,
            &[("image", &[1, 3, 96, 96], signal(3 * 96 * 96))],
            "<= 1.05",
        );
    } else {
        println!(
            "(convnet skipped: {} missing; scripts/bench makes it)",
            convnet.display()
        );
    }
}

//! The plugin languages side by side (issue 15): the `threshold` example written in Rust, in
//! Python (componentize-py) and in JavaScript (componentize-qjs), plus the JavaScript
//! candidates not chosen when `scripts/bench languages` built them (ComponentizeJS, and
//! componentize-qjs's size-optimised runtime), each figure also as a ratio to Rust.
//! Printed, not asserted. Run with `scripts/bench languages`.
//!
//! In process, on the runtime the gateway uses (cranelift, pooling allocator): component
//! size, compile time and compiled-cache size, the least `memory-mib` that starts it,
//! instantiate + `init`, and an `on-message` round trip that publishes nothing (a reading below
//! the limit). The memory the compiled code costs a process that maps it from the compiled
//! cache, as a gateway restarting with a store does (measured in a fresh process: this one has
//! just compiled). Through `edgewise run` and a Mosquitto started here: a flood in which every
//! message makes one alert (QoS 1 in and out), and the gateway's resident memory with that one
//! plugin loaded, after the flood; that gateway compiled the plugin when it started, and the
//! compiler's heap stays with the process.

use std::path::{Path, PathBuf};
use std::time::Instant;

use edgewise_host::runtime::instance::Instance;
use edgewise_host::worker::Worker;
use edgewise_tests::load::{Load, drive};
use edgewise_tests::mqtt::{Broker, Gateway};
use edgewise_tests::{copy_dir, edit, load, message, plugin_dir, repo, runtime};

const FLOOD: usize = 4000;
const ROUNDS: usize = 21;

struct Figures {
    size: f64,
    compile: f64,
    compiled: f64,
    memory_mib: f64,
    cached_rss: f64,
    start: f64,
    round_trip: f64,
    per_second: f64,
    rss: f64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median seconds per call of `f`, over rounds of calls that each last about 20 ms.
fn per_call(f: &mut dyn FnMut()) -> f64 {
    f();
    let once = Instant::now();
    f();
    let n = ((0.02 / once.elapsed().as_secs_f64().max(1e-9)) as usize).max(1);
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..n {
                    f();
                }
                start.elapsed().as_secs_f64() / n as f64
            })
            .collect(),
    )
}

/// The least whole `memory-mib` (of those tried) at which the plugin starts.
fn least_memory_mib(dir: &Path) -> f64 {
    for mib in [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64] {
        let copy = tempfile::tempdir().expect("temporary directory");
        copy_dir(dir, copy.path());
        let manifest = std::fs::read_to_string(copy.path().join("plugin.toml")).expect("manifest");
        let current = manifest
            .lines()
            .find(|l| l.starts_with("memory-mib"))
            .expect("memory-mib in the manifest")
            .to_owned();
        edit(
            copy.path(),
            "plugin.toml",
            &current,
            &format!("memory-mib = {mib}"),
        );
        if let Ok(plugin) = load(copy.path(), &[])
            && Instance::start(&plugin).is_ok()
        {
            return f64::from(mib);
        }
    }
    f64::NAN
}

fn in_process(dir: &Path) -> Figures {
    let bytes = std::fs::read(dir.join("plugin.wasm")).expect("plugin.wasm");
    let engine = runtime().engine();
    let started = Instant::now();
    let component = wasmtime::component::Component::new(engine, &bytes).expect("compiles");
    let compile = started.elapsed().as_secs_f64();
    let serialized = component.serialize().expect("serialises");
    let compiled = serialized.len() as f64;
    let cwasm = tempfile::NamedTempFile::new().expect("temporary file");
    std::fs::write(cwasm.path(), &serialized).expect("write the compiled component");
    let cached_rss = resident_when_deserialized(cwasm.path());
    let plugin = load(dir, &[]).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let start = per_call(&mut || {
        Instance::start(&plugin).expect("starts");
    });
    let mut worker = Worker::new(std::sync::Arc::new(plugin), Default::default());
    let below = message("sensors/oven/reading", r#"{"value": 20.5}"#);
    let round_trip = per_call(&mut || {
        worker.handle(&below).expect("handled");
    });
    Figures {
        size: bytes.len() as f64,
        compile,
        compiled,
        memory_mib: least_memory_mib(dir),
        cached_rss,
        start,
        round_trip,
        per_second: f64::NAN,
        rss: f64::NAN,
    }
}

/// A field of /proc/<pid>/status in MiB (`VmRSS`, `RssAnon`, ...).
fn status_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(&pid.to_string(), "VmRSS")
}

/// The resident memory a fresh process (this benchmark, run again) gains by mapping the
/// compiled component in `cwasm`, in MiB.
fn resident_when_deserialized(cwasm: &Path) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().expect("this benchmark"))
        .env(DESERIALIZE, cwasm)
        .output()
        .expect("the benchmark runs again");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN)
}

/// Set to a compiled component's path: the process maps it, prints the resident memory that
/// cost, and exits.
const DESERIALIZE: &str = "EDGEWISE_BENCH_DESERIALIZE";

#[allow(unsafe_code)]
fn deserialize_and_report(cwasm: &Path) {
    let engine = runtime().engine();
    let before = status_mib("self", "VmRSS");
    // SAFETY: the file is wasmtime's own serialisation, written a moment ago by the parent
    // process from `Component::serialize` with the same engine configuration.
    let component = unsafe { wasmtime::component::Component::deserialize_file(engine, cwasm) }
        .expect("deserialises");
    println!("{:.2}", status_mib("self", "VmRSS") - before);
    drop(component);
}

/// Alerts per second through `edgewise run` with the plugin in `dir` as `threshold`, and the
/// gateway's resident memory after the flood.
async fn through_gateway(broker: &Broker, run: &str, dir: &Path) -> (f64, f64) {
    let gateway = tokio::task::block_in_place(|| {
        let mut gateway = Gateway::prepare(broker, &format!("lang-{run}"), &[], "");
        let plugin = gateway.dir().join("plugins/threshold");
        std::fs::create_dir_all(&plugin).expect("plugin directory");
        copy_dir(dir, &plugin);
        gateway.launch(broker);
        gateway
    });
    // Every message is a new sensor's first reading above the limit: one alert each.
    let input = |i: usize| format!("sensors/{run}x{i}/reading");
    let payload = |_: usize| br#"{"value": 95.5}"#.to_vec();
    let prefix = format!("alerts/{run}x");
    let sequence = |t: &str| t.strip_prefix(&prefix).and_then(|s| s.parse().ok());
    let load = Load {
        input_topic: &input,
        payload: &payload,
        output_filter: "alerts/#".to_owned(),
        sequence_of: &sequence,
    };
    let flood = drive(broker.port, &format!("{run}-load"), &load, FLOOD, None).await;
    assert_eq!(
        flood.received,
        FLOOD,
        "every alert arrived: {}",
        gateway.log()
    );
    let rss = gateway.pid().map_or(f64::NAN, rss_mib);
    (flood.per_second(), rss)
}

fn ratio(x: f64, rust: f64) -> String {
    if x.is_nan() || rust.is_nan() {
        String::new()
    } else {
        format!("({:.1}x)", x / rust)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if let Some(cwasm) = std::env::var_os(DESERIALIZE) {
        deserialize_and_report(Path::new(&cwasm));
        return;
    }
    let bench = repo().join("target/bench");
    let mut languages: Vec<(&str, PathBuf)> = vec![
        ("Rust (cargo)", plugin_dir("threshold")),
        ("Python (componentize-py)", plugin_dir("threshold-py")),
        ("JavaScript (componentize-qjs)", plugin_dir("threshold-js")),
    ];
    for (what, dir) in [
        ("  the same, --opt-size runtime", "threshold-qjs-opt-size"),
        ("  JavaScript (ComponentizeJS)", "threshold-componentize-js"),
    ] {
        if bench.join(dir).join("plugin.wasm").is_file() {
            languages.push((what, bench.join(dir)));
        }
    }
    let broker = Broker::start();
    println!(
        "plugin languages: the threshold example; {ROUNDS} rounds, medians; a flood of {FLOOD} \
         alerts through mosquitto on 127.0.0.1:{}\n",
        broker.port
    );
    println!(
        "{:<34} {:>13} {:>13} {:>13} {:>14} {:>9} {:>15} {:>15} {:>15} {:>13}",
        "language",
        "component",
        "compile",
        "compiled",
        "from cache",
        "memory",
        "start + init",
        "round trip",
        "alerts/s",
        "gateway RSS"
    );
    let mut rust: Option<Figures> = None;
    for (run, (what, dir)) in languages.iter().enumerate() {
        let mut f = in_process(dir);
        (f.per_second, f.rss) = through_gateway(&broker, &format!("r{run}"), dir).await;
        let r = rust.as_ref().unwrap_or(&f);
        println!(
            "{what:<34} {:>6.2} MB {:>5} {:>7.2} s {:>5} {:>6.1} MB {:>5} {:>5.1} MiB {:>5} {:>5.0} MiB {:>8.1} µs {:>6} {:>8.2} µs {:>6} {:>8.0} {:>6} {:>6.0} MiB {:>6}",
            f.size / 1e6,
            ratio(f.size, r.size),
            f.compile,
            ratio(f.compile, r.compile),
            f.compiled / 1e6,
            ratio(f.compiled, r.compiled),
            f.cached_rss,
            ratio(f.cached_rss, r.cached_rss),
            f.memory_mib,
            f.start * 1e6,
            ratio(f.start, r.start),
            f.round_trip * 1e6,
            ratio(f.round_trip, r.round_trip),
            f.per_second,
            ratio(f.per_second, r.per_second),
            f.rss,
            ratio(f.rss, r.rss),
        );
        if rust.is_none() {
            rust = Some(f);
        }
    }
}

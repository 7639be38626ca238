//! The model-lifecycle benchmark (issue 12): printed, not asserted. Run with
//! `scripts/bench evaluation`.
//!
//! - **Gate time**: what an update's evaluation gate adds, for each example plugin: the new
//!   version and the running one over the evaluation set the bundle ships (the gateway compiles
//!   both from its cache; that is not counted). Median of 5. Goal: under 1 s for a few hundred
//!   samples.
//! - **Live latency with a shadow**: `vibration-fault` through `edgewise run` and Mosquitto, a
//!   paced stream of windows, publisher to diagnosis, p50 and p99, without a shadow and then
//!   with a shadow of the same plugin beside it (`push --shadow`, never judged during the run).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgewise_host::evaluate::{Evaluation, Sample, read_samples};
use edgewise_host::management::store::{Admit, Store};
use edgewise_signing::bundle::DEFAULT_MAX_BYTES;
use edgewise_signing::{Keyring, SecretKey};
use edgewise_tests::load::{Figures, Load, drive};
use edgewise_tests::mqtt::{Broker, Gateway};
use edgewise_tests::{edgewise, eval_set, load, pack_example, plugin_dir};

/// Paced messages per run, and their rate.
const PACED: usize = 1500;
const RATE_HZ: f64 = 300.0;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn gate_time(plugin: &str) {
    let dir = plugin_dir(plugin);
    let candidate = Arc::new(load(&dir, &[]).expect("candidate loads"));
    let running = Arc::new(load(&dir, &[]).expect("running version loads"));
    let spec = candidate
        .manifest()
        .evaluate
        .clone()
        .expect("an [evaluate] table");
    let mut samples: Vec<Sample> = Vec::new();
    for file in &spec.data {
        let text = std::fs::read_to_string(dir.join(file)).expect("evaluation set");
        samples.extend(read_samples(&text, &file.display().to_string()).expect("samples"));
    }
    let mut gate = Vec::new();
    let mut alone = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let e = Evaluation::run(
            candidate.clone(),
            Some(running.clone()),
            &spec,
            &samples,
            None,
        )
        .expect("evaluation runs");
        gate.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(e.verdict.passed, "the example passes its own gate");
        let t = Instant::now();
        Evaluation::run(candidate.clone(), None, &spec, &samples, None).expect("evaluation runs");
        alone.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "  {plugin:<16} {:>5} messages  gate (new + running) {:>7.1} ms   new version alone {:>7.1} ms",
        samples.len(),
        median(gate),
        median(alone)
    );
}

/// A gateway running vibration-fault v1 from its store, and the operator key file to manage it.
fn gateway(broker: &Broker, work: &Path, release: &SecretKey) -> Gateway {
    let operator = SecretKey::generate().expect("key");
    let keyring = work.join("keyring.toml");
    edgewise_tests::write_keyring(&keyring, release, &operator);
    std::fs::write(work.join("ops.key"), operator.to_pem().expect("PEM")).expect("key");
    let mut gw = Gateway::prepare(broker, "bench-shadow", &[], "");
    gw.signed_only(&keyring);
    Store::open(
        &gw.dir().join("store"),
        Keyring::from_file(&keyring).expect("keyring"),
        DEFAULT_MAX_BYTES,
    )
    .expect("store")
    .install(
        &pack_example("vibration-fault", release, &[], false),
        Path::new("v1.ewb"),
        Admit::Update,
    )
    .expect("install");
    gw.launch(broker);
    gw
}

/// Starts a shadow of vibration-fault that stays until the gateway stops: `push --shadow`
/// with a window no run reaches, left waiting for its outcome.
fn start_shadow(broker: &Broker, work: &Path, release: &SecretKey) -> Child {
    let v2 = work.join("v2.ewb");
    std::fs::write(
        &v2,
        pack_example(
            "vibration-fault",
            release,
            &[
                ("release = 1", "release = 2"),
                ("version = \"0.1.0\"", "version = \"0.2.0\""),
            ],
            false,
        ),
    )
    .expect("bundle");
    let mut child = Command::new(edgewise())
        .arg("push")
        .arg(&v2)
        .args(["--gateway", "bench-shadow", "--shadow", "--no-promote"])
        .args([
            "--shadow-messages",
            "100000000",
            "--shadow-seconds",
            "36000",
        ])
        .args(["--broker", &format!("mqtt://127.0.0.1:{}", broker.port)])
        .arg("--key")
        .arg(work.join("ops.key"))
        .args(["--timeout", "3600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("edgewise push");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let status = broker
            .retained("edgewise/bench-shadow/status", Duration::from_secs(1))
            .unwrap_or_default();
        if status.contains("\"shadow\":{") && status.contains("\"state\":\"running\"") {
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the shadow did not start");
}

fn row(what: &str, f: &Figures) {
    println!(
        "  {what:<22} {:>5}/{:<5} delivered   p50 {:>6.2} ms   p99 {:>6.2} ms",
        f.received,
        f.sent,
        f.percentile(0.5).as_secs_f64() * 1e3,
        f.percentile(0.99).as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    println!("evaluation gate on an update, per example plugin (median of 5):");
    gate_time("vibration-fault");
    gate_time("voice-activity");

    let windows: Vec<Vec<u8>> = std::fs::read_to_string(eval_set("vibration-fault"))
        .expect("windows")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["payload"].to_string().into_bytes()
        })
        .collect();
    let broker = Broker::start();
    let work = tempfile::tempdir().expect("temporary directory");
    let release = SecretKey::generate().expect("key");
    let mut gw = gateway(&broker, work.path(), &release);
    broker
        .retained("edgewise/bench-shadow/status", Duration::from_secs(30))
        .expect("the gateway is up");
    let input_topic = |i: usize| format!("plant/m{i}/vibration");
    let payload = |i: usize| windows[i % windows.len()].clone();
    let sequence_of = |topic: &str| {
        topic
            .strip_prefix("plant/m")?
            .strip_suffix("/vibration/diagnosis")?
            .parse()
            .ok()
    };
    let load = Load {
        input_topic: &input_topic,
        payload: &payload,
        output_filter: "plant/+/vibration/diagnosis".into(),
        sequence_of: &sequence_of,
    };
    println!(
        "\nvibration-fault through the gateway, {PACED} windows paced at {RATE_HZ} msg/s, publisher -> diagnosis:"
    );
    let alone = drive(broker.port, "alone", &load, PACED, Some(RATE_HZ)).await;
    row("live, no shadow", &alone);
    let mut push = start_shadow(&broker, work.path(), &release);
    let shadowed = drive(broker.port, "shadowed", &load, PACED, Some(RATE_HZ)).await;
    row("live, shadow beside it", &shadowed);
    let ratio = shadowed.percentile(0.99).as_secs_f64() / alone.percentile(0.99).as_secs_f64();
    println!("  p99 with a shadow / without: {ratio:.2}x");
    let status = broker
        .retained("edgewise/bench-shadow/status", Duration::from_secs(5))
        .unwrap_or_default();
    if let Some(shadow) = serde_json::from_str::<serde_json::Value>(&status)
        .ok()
        .and_then(|s| s["plugins"][0].get("shadow").cloned())
    {
        println!(
            "  the shadow: compared {}, agreed {}, skipped {}; live p99 {} ms, shadow p99 {} ms (one message on its thread)",
            shadow["compared"],
            shadow["agreed"],
            shadow["skipped"],
            shadow["live-p99-ms"],
            shadow["shadow-p99-ms"]
        );
    }
    let _ = push.kill();
    let _ = push.wait();
    gw.terminate();
}

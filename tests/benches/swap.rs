//! The hot-swap benchmark (issue 5): printed, not asserted. Run with `scripts/bench swap`.
//!
//! - **Swap time**, for the `template` plugin (no model) and for `onnx-runner` serving a 2 MiB
//!   model: from the command's arrival to the new version taking messages, as the gateway
//!   reports it (`swap_ms` in the `live` reply), and as the operator sees it (command published
//!   to `live` received). Median of 5 swaps each, to releases 2 to 6.
//! - **Zero loss**: a paced QoS 1 stream of numbered messages through `template`, with a swap
//!   in the middle, at rising rates; every output is counted, so a lost or doubled message
//!   shows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgewise_host::management::store::{Admit, Store};
use edgewise_signing::bundle::DEFAULT_MAX_BYTES;
use edgewise_signing::command::{Action, Command};
use edgewise_signing::{Keyring, SecretKey};
use edgewise_tests::mqtt::{Broker, Gateway};
use edgewise_tests::{copy_plugin, edit, repo};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

struct Keys {
    release: SecretKey,
    operator: SecretKey,
    keyring: PathBuf,
    _dir: tempfile::TempDir,
}

/// A plugin packed at `release`, with an optional model file swapped in.
fn bundle(keys: &Keys, plugin: &str, model: Option<&Path>, release: u32) -> Vec<u8> {
    let dir = copy_plugin(plugin);
    if let Some(model) = model {
        std::fs::copy(model, dir.path().join("model/model.onnx")).expect("model");
    }
    edit(
        dir.path(),
        "plugin.toml",
        "release = 1",
        &format!("release = {release}"),
    );
    edgewise_signing::bundle::pack(dir.path(), &keys.release, false, &mut |_| {})
        .expect("pack")
        .to_bytes()
}

/// A gateway running `plugin` release 1 from its store.
fn gateway(broker: &Broker, keys: &Keys, id: &str, first: &[u8]) -> Gateway {
    let mut gw = Gateway::prepare(broker, id, &[], "");
    gw.signed_only(&keys.keyring);
    let keyring = Keyring::from_file(&keys.keyring).expect("keyring");
    Store::open(&gw.dir().join("store"), keyring, DEFAULT_MAX_BYTES)
        .expect("store")
        .install(first, Path::new("first.ewb"), Admit::Update)
        .expect("install");
    gw.launch(broker);
    gw
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn connect(id: &str, port: u16) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Uploads `bundle` to `broker` (retained, in chunks) and returns a signed update command for
/// it.
fn update(broker: &Broker, keys: &Keys, gateway: &str, seq: u64, bundle: &[u8]) -> String {
    let digest = tokio::task::block_in_place(|| broker.upload_bundle(bundle));
    Command {
        id: format!("swap-{seq}"),
        gateway: gateway.into(),
        seq,
        issued_at_ms: now_ms(),
        expires_at_ms: now_ms() + 60_000,
        action: Action::Update {
            digest,
            shadow: None,
        },
    }
    .sign(&keys.operator)
}

/// Sends `command` and waits for its `live` reply: (gateway's swap_ms, operator's ms).
async fn swap(port: u16, gateway: &str, seq: u64, command: String) -> (f64, f64) {
    let (client, mut eventloop) = connect(&format!("operator-{seq}"), port);
    let reply_topic = format!("edgewise/{gateway}/reply/swap-{seq}");
    client
        .subscribe(&reply_topic, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut sent = Instant::now();
    loop {
        match eventloop.poll().await.expect("broker") {
            Event::Incoming(Packet::SubAck(_)) => {
                sent = Instant::now();
                let topic = format!("edgewise/{gateway}/cmd");
                client
                    .publish(topic, QoS::AtLeastOnce, false, command.clone())
                    .await
                    .expect("publish");
            }
            Event::Incoming(Packet::Publish(p)) => {
                let reply: serde_json::Value =
                    serde_json::from_slice(&p.payload).expect("JSON reply");
                match reply["state"].as_str() {
                    Some("live") => {
                        let swap_ms = reply["swap_ms"].as_f64().unwrap_or(f64::NAN);
                        return (swap_ms, sent.elapsed().as_secs_f64() * 1e3);
                    }
                    Some("failed" | "refused" | "rolled-back") => panic!("swap failed: {reply}"),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Streams `count` numbered messages at `rate`/s with a swap at the middle; returns
/// (outputs missing, outputs doubled, achieved rate, the swap's `swap_ms`).
async fn stream_with_swap(
    port: u16,
    gateway: &str,
    rate: f64,
    count: usize,
    command: String,
    seq: u64,
) -> (usize, usize, f64, f64) {
    let (sink, mut sink_loop) = connect(&format!("sink-{seq}"), port);
    sink.subscribe("echo/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sink_loop.poll().await.expect("broker") {
            break;
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sink_task = tokio::spawn(async move {
        while let Ok(event) = sink_loop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let _ = tx.send(String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
    });
    let (source, mut source_loop) = connect(&format!("source-{seq}"), port);
    let source_task = tokio::spawn(async move { while source_loop.poll().await.is_ok() {} });
    let swapper = {
        let gateway = gateway.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(count as f64 / rate / 2.0)).await;
            swap(port, &gateway, seq, command).await
        })
    };
    let start = Instant::now();
    for i in 0..count {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        source
            .publish("sensors/bench", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .expect("publish");
    }
    let sent_for = start.elapsed();
    let (swap_ms, _) = swapper.await.expect("the swap went live");
    let mut seen: HashMap<usize, usize> = HashMap::new();
    while seen.len() < count {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(payload)) => {
                if let Ok(i) = payload.parse::<usize>() {
                    *seen.entry(i).or_default() += 1;
                }
            }
            _ => break,
        }
    }
    // Anything doubled would arrive right behind.
    while let Ok(Some(payload)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
    {
        if let Ok(i) = payload.parse::<usize>() {
            *seen.entry(i).or_default() += 1;
        }
    }
    sink_task.abort();
    source_task.abort();
    let missing = count - seen.len();
    let doubled = seen.values().filter(|n| **n > 1).count();
    (
        missing,
        doubled,
        count as f64 / sent_for.as_secs_f64(),
        swap_ms,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let key = || SecretKey::generate().expect("key");
    let (release, operator) = (key(), key());
    let keyring = dir.path().join("keyring.toml");
    std::fs::write(
        &keyring,
        format!(
            "version = 1\n[[keys]]\nname = \"r\"\nrole = \"release\"\npublic-key = \"{}\"\n[[keys]]\nname = \"o\"\nrole = \"operator\"\npublic-key = \"{}\"\n",
            release.public(),
            operator.public()
        ),
    )
    .expect("keyring");
    let keys = Keys {
        release,
        operator,
        keyring,
        _dir: dir,
    };
    let broker = Broker::start();
    let port = broker.port;
    let mlp = repo().join("target/bench/mlp2mb.onnx");
    assert!(
        mlp.is_file(),
        "run scripts/bench swap (it writes {})",
        mlp.display()
    );

    println!("hot-swap benchmark: mosquitto on 127.0.0.1:{port}; median of 5 swaps");
    let mut seq = now_ms();
    for (label, plugin, model) in [
        ("template, no model", "template", None),
        (
            "onnx-runner, 2 MiB model",
            "onnx-runner",
            Some(mlp.as_path()),
        ),
    ] {
        let id = format!("swap-{plugin}");
        let gw = tokio::task::block_in_place(|| {
            gateway(&broker, &keys, &id, &bundle(&keys, plugin, model, 1))
        });
        let (mut inside, mut outside) = (Vec::new(), Vec::new());
        for release in 2..=6 {
            seq += 1;
            let command = update(
                &broker,
                &keys,
                &id,
                seq,
                &bundle(&keys, plugin, model, release),
            );
            let (swap_ms, seen_ms) = swap(port, &id, seq, command).await;
            inside.push(swap_ms);
            outside.push(seen_ms);
        }
        println!(
            "  {label:<26} received -> live {:>7.1} ms (gateway); published -> live reply {:>7.1} ms (operator)",
            median(inside),
            median(outside)
        );
        drop(gw);
    }

    println!(
        "\nzero loss: numbered QoS 1 messages through template for 2 s, a swap in the middle:"
    );
    let id = "swap-stream";
    let _gw = tokio::task::block_in_place(|| {
        gateway(&broker, &keys, id, &bundle(&keys, "template", None, 1))
    });
    let mut release = 1;
    for rate in [1000.0, 2500.0, 5000.0, 7500.0, 10000.0] {
        release += 1;
        seq += 1;
        let command = update(
            &broker,
            &keys,
            id,
            seq,
            &bundle(&keys, "template", None, release),
        );
        let count = (rate * 2.0) as usize;
        let (missing, doubled, achieved, swap_ms) =
            stream_with_swap(port, id, rate, count, command, seq).await;
        println!(
            "  offered {rate:>6.0} msg/s (sent at {achieved:>6.0}): {count} messages, {missing} missing, {doubled} doubled; swap live in {swap_ms:.1} ms"
        );
    }
}

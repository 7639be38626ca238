//! The gateway benchmark (issue 3): printed, not asserted. Run with `scripts/bench`.
//!
//! Everything runs against one Mosquitto started here, one system under test at a time, with
//! the same load generator and sink (rumqttc clients in this process):
//!
//! - **pass-through**: `edgewise run` with the `template` plugin (republishes each message under
//!   `echo/`) versus a native Rust rumqttc program doing the same, with the same semantics
//!   (QoS 1 in, manual acknowledgement after the output is queued, QoS 1 out): the ceiling.
//!   Throughput from a flood; latency from a paced stream, less the broker's own latency
//!   (publisher → broker → subscriber with nothing in between).
//! - **inference**: `edgewise run` with `vibration-fault` versus `paho_onnxruntime.py`, a
//!   paho-mqtt subscriber running the same features and `vibration.onnx` with onnxruntime.
//! - **memory**: the gateway's resident set with the three example plugins loaded and fed.
//! - **containment** (issue 9): `template`'s latency and throughput with the `hostile` plugin
//!   beside it, quiet, and then misbehaving in each way the host contains (a steady stream of
//!   offending messages during the run), against the quiet case (goal: p99 within 1.5x).
//!
//! - **broker sizing** (issue 10, `EDGEWISE_BENCH_SECTION=broker-sizing` only): what a stock
//!   Mosquitto costs the gateway. Messages lost at the broker when the gateway is away for
//!   1.5 s of a 2000 msg/s stream, with `max_queued_messages` at its default (1000) and sized
//!   (100 000); and the added latency of a paced stream with `set_tcp_nodelay` off and on.
//!
//! `EDGEWISE_BENCH_SECTION=containment` runs only the containment part, `=pass-through` only
//! the first two (pass-through and latency). `EDGEWISE_BENCH_FSYNC=0` runs the gateway with
//! `[journal] fsync = false`. The pass-through rows also print the bytes the gateway process
//! wrote to disk per message (its journal: `write_bytes` in /proc/<pid>/io).
//! `EDGEWISE_BENCH_FLOOD` (default 8 000) sets a flood's size, longer for profiling.
//! `EDGEWISE_BENCH_ROUNDS` (default 3) sets how many times each flood runs, alternating the
//! systems compared so that a noisy neighbour hurts both alike.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgewise_tests::load::{Figures, Load, client, drive, options};
use edgewise_tests::mqtt::{Broker, Gateway, free_port, http_get};
use edgewise_tests::{eval_set, repo, wav_pcm};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::mpsc;

/// The flood's size: 8 000 messages, or `EDGEWISE_BENCH_FLOOD` (a longer flood, to profile).
fn flood_size() -> usize {
    std::env::var("EDGEWISE_BENCH_FLOOD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8000)
}
const INFERENCE_FLOOD: usize = 3000;
const PACED: usize = 1000;
const PACED_RATE_HZ: f64 = 500.0;

/// The native ceiling: a rumqttc program that republishes `sensors/#` under `echo/`, QoS 1 in
/// and out, acknowledging each input after queueing its output. Built as rumqttc's examples
/// are: the event loop polled by one task, requests sent from another. Returns once subscribed.
async fn native_pass_through(port: u16) -> tokio::task::JoinHandle<()> {
    let mut options = options("native-pass-through", port);
    options.set_manual_acks(true);
    let (client, mut eventloop) = self::client(options, 1024);
    client
        .subscribe("sensors/#", QoS::AtLeastOnce)
        .await
        .expect("native subscribes");
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("native pass-through: {e}"),
        }
    }
    let (inputs, mut received) = mpsc::unbounded_channel();
    let handler = tokio::spawn(async move {
        while let Some(p) = received.recv().await {
            let p: rumqttc::Publish = p;
            let out = format!("echo/{}", p.topic);
            if client
                .publish(out, QoS::AtLeastOnce, false, p.payload.clone())
                .await
                .is_ok()
            {
                let _ = client.ack(&p).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let _ = inputs.send(p);
            }
        }
        handler.abort();
    })
}

/// The Python baseline, started and subscribed.
fn python_baseline(port: u16) -> Child {
    let mut child = Command::new("python3")
        .arg(repo().join("tests/benches/paho_onnxruntime.py"))
        .arg(port.to_string())
        .arg(repo().join("plugins/vibration-fault/model"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let stdout = child.stdout.take().expect("stdout");
    let ready = BufReader::new(stdout).lines().next();
    assert!(
        matches!(ready, Some(Ok(ref line)) if line == "ready"),
        "the Python baseline did not start (pip install -r scripts/bench-requirements.txt): {ready:?}"
    );
    child
}

/// Resident and peak resident memory of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Kills a gateway and clears its persistent session, so the broker stops queueing for it.
async fn forget(gateway: Gateway, port: u16) {
    let id = format!("edgewise-{}", gateway.id);
    drop(gateway);
    let mut options = options(&id, port);
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("clearing the session of {id}: {e}"),
        }
    }
    let _ = client.disconnect().await;
    let _ = eventloop.poll().await;
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The gateway's `[journal]` lines for this run (after its `[broker]` table).
fn journal_config() -> String {
    match std::env::var("EDGEWISE_BENCH_FSYNC").as_deref() {
        Ok("0") => "\n[journal]\nfsync = false\n".into(),
        _ => String::new(),
    }
}

/// Bytes process `pid` has caused to be written to storage so far.
fn disk_writes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn row(what: &str, f: &Figures) {
    println!(
        "  {what:<34} {:>6}/{:<6} {:>9.0} msg/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        f.received,
        f.sent,
        f.per_second(),
        f.percentile(0.5).as_secs_f64() * 1e3,
        f.percentile(0.99).as_secs_f64() * 1e3,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("EDGEWISE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    if std::env::var("EDGEWISE_BENCH_SECTION").as_deref() == Ok("broker-sizing") {
        broker_sizing().await;
        return;
    }
    let broker = Broker::start();
    let port = broker.port;
    if std::env::var("EDGEWISE_BENCH_SECTION").as_deref() == Ok("containment") {
        containment(&broker, rounds).await;
        return;
    }
    let mut run_id = 0;
    let mut next_run = || {
        run_id += 1;
        format!("r{run_id}")
    };

    println!("gateway benchmark: mosquitto on 127.0.0.1:{port}; QoS 1 in and out");
    let pass_through_flood = flood_size();
    println!("\npass-through, flood of {pass_through_flood} messages of 64 bytes:");
    let pass_through = |run: String| {
        let prefix = format!("sensors/{run}/");
        let echo = format!("echo/sensors/{run}/");
        (prefix, echo)
    };
    let payload = |_: usize| vec![b'x'; 64];
    let mut native_rates = Vec::new();
    let mut edgewise_rates = Vec::new();
    let mut paced = Vec::new();
    for round in 0..rounds {
        for system in ["native rumqttc pass-through", "edgewise + template plugin"] {
            let (prefix, echo) = pass_through(next_run());
            let input = |i: usize| format!("{prefix}{i}");
            let sequence = |t: &str| t.strip_prefix(&echo).and_then(|s| s.parse().ok());
            let load = Load {
                input_topic: &input,
                payload: &payload,
                output_filter: format!("{echo}#"),
                sequence_of: &sequence,
            };
            let (native, gateway) = if system.starts_with("native") {
                (Some(native_pass_through(port).await), None)
            } else {
                let id = format!("bench-{}", next_run());
                let gateway = tokio::task::block_in_place(|| {
                    Gateway::start(&broker, &id, &["template"], &journal_config())
                });
                (None, Some(gateway))
            };
            let written = gateway.as_ref().and_then(|g| g.pid()).map(disk_writes);
            let flood = drive(port, &next_run(), &load, pass_through_flood, None).await;
            row(&format!("{system} (round {})", round + 1), &flood);
            if let (Some(before), Some(pid)) = (written, gateway.as_ref().and_then(|g| g.pid())) {
                let bytes = disk_writes(pid).saturating_sub(before);
                println!(
                    "  {:<34} {:.0} bytes written to disk per message",
                    "",
                    bytes as f64 / pass_through_flood as f64
                );
            }
            if round == 0 {
                let (prefix, echo) = pass_through(next_run());
                let input = |i: usize| format!("{prefix}{i}");
                let sequence = |t: &str| t.strip_prefix(&echo).and_then(|s| s.parse().ok());
                let load = Load {
                    input_topic: &input,
                    payload: &payload,
                    output_filter: format!("{echo}#"),
                    sequence_of: &sequence,
                };
                let pid = gateway.as_ref().and_then(|g| g.pid());
                let written = pid.map(disk_writes);
                paced.push((
                    system,
                    drive(port, &next_run(), &load, PACED, Some(PACED_RATE_HZ)).await,
                ));
                if let (Some(before), Some(pid)) = (written, pid) {
                    let bytes = disk_writes(pid).saturating_sub(before);
                    println!(
                        "  paced at {PACED_RATE_HZ} msg/s: {:.0} bytes written to disk per message, {:.2} GB a day at 100 msg/s",
                        bytes as f64 / PACED as f64,
                        bytes as f64 / PACED as f64 * 100.0 * 86_400.0 / 1e9
                    );
                }
            }
            match system.starts_with("native") {
                true => native_rates.push(flood.per_second()),
                false => edgewise_rates.push(flood.per_second()),
            }
            if let Some(native) = native {
                native.abort();
            }
            if let Some(gateway) = gateway {
                forget(gateway, port).await;
            }
        }
    }
    let (native, edgewise) = (median(native_rates), median(edgewise_rates));
    println!(
        "  median: native {native:.0} msg/s, edgewise {edgewise:.0} msg/s: edgewise at {:.0} % of native (target >= 80 %)",
        100.0 * edgewise / native
    );

    println!("\nlatency, {PACED} messages paced at {PACED_RATE_HZ} msg/s:");
    let direct = {
        let run = next_run();
        let prefix = format!("direct/{run}/");
        let input = |i: usize| format!("{prefix}{i}");
        let sequence = |t: &str| t.strip_prefix(&prefix).and_then(|s| s.parse().ok());
        let load = Load {
            input_topic: &input,
            payload: &payload,
            output_filter: format!("{prefix}#"),
            sequence_of: &sequence,
        };
        drive(port, &next_run(), &load, PACED, Some(PACED_RATE_HZ)).await
    };
    row("broker alone (no pass-through)", &direct);
    for (system, figures) in &paced {
        row(system, figures);
    }
    if std::env::var("EDGEWISE_BENCH_SECTION").as_deref() == Ok("pass-through") {
        return;
    }
    for (system, figures) in &paced {
        println!(
            "  added by {system}: p50 {:.2} ms, p99 {:.2} ms",
            (figures.percentile(0.5).as_secs_f64() - direct.percentile(0.5).as_secs_f64()) * 1e3,
            (figures.percentile(0.99).as_secs_f64() - direct.percentile(0.99).as_secs_f64()) * 1e3,
        );
    }

    println!("\ninference (vibration-fault, 512-sample windows), flood of {INFERENCE_FLOOD}:");
    let windows: Vec<Vec<u8>> = std::fs::read_to_string(eval_set("vibration-fault"))
        .expect("held-out windows")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["payload"].to_string().into_bytes()
        })
        .collect();
    let window = |i: usize| windows[i % windows.len()].clone();
    let mut python_rss = (f64::NAN, f64::NAN);
    let (mut edgewise_rates, mut python_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for system in [
            "python paho-mqtt + onnxruntime",
            "edgewise + vibration-fault",
        ] {
            let run = next_run();
            let input = |i: usize| format!("plant/{run}-{i}/vibration");
            let machine = format!("plant/{run}-");
            let sequence = |t: &str| {
                t.strip_prefix(&machine)
                    .and_then(|s| s.strip_suffix("/vibration/diagnosis"))
                    .and_then(|s| s.parse().ok())
            };
            let load = Load {
                input_topic: &input,
                payload: &window,
                output_filter: "plant/+/vibration/diagnosis".into(),
                sequence_of: &sequence,
            };
            let (python, gateway) = if system.starts_with("python") {
                (Some(python_baseline(port)), None)
            } else {
                let id = format!("bench-{}", next_run());
                let gateway = tokio::task::block_in_place(|| {
                    Gateway::start(&broker, &id, &["vibration-fault"], "")
                });
                (None, Some(gateway))
            };
            let flood = drive(port, &next_run(), &load, INFERENCE_FLOOD, None).await;
            row(&format!("{system} (round {})", round + 1), &flood);
            if let Some(mut python) = python {
                python_rss = memory_mib(python.id());
                let _ = python.kill();
                let _ = python.wait();
                python_rates.push(flood.per_second());
            } else {
                edgewise_rates.push(flood.per_second());
            }
            if let Some(gateway) = gateway {
                forget(gateway, port).await;
            }
        }
    }
    let (python, edgewise) = (median(python_rates), median(edgewise_rates));
    println!(
        "  median: python {python:.0} msg/s, edgewise {edgewise:.0} msg/s: edgewise {:.2}x python (target >= 3x)",
        edgewise / python
    );

    println!("\nmemory, gateway with threshold, vibration-fault and voice-activity, each fed:");
    let metrics_port = free_port();
    let extra =
        format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\npublish-interval-s = 0\n");
    let gateway = tokio::task::block_in_place(|| {
        Gateway::start(
            &broker,
            "bench-memory",
            &["threshold", "vibration-fault", "voice-activity"],
            &extra,
        )
    });
    let (_, pcm) = wav_pcm(&repo().join("plugins/voice-activity/testdata/speech.wav"));
    let frames: Vec<Vec<u8>> = pcm.chunks(1024).map(<[u8]>::to_vec).collect();
    let feed = [
        (
            "sensors/oven/reading",
            vec![br#"{"value": 95}"#.to_vec(); 50],
        ),
        ("plant/pump-0/vibration", windows[..50].to_vec()),
        ("audio/kitchen/pcm", frames),
    ];
    let (client, mut eventloop) = self::client(options("feeder", port), 100);
    let feeder = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let fed: usize = feed.iter().map(|(_, p)| p.len()).sum();
    for (topic, payloads) in feed {
        for payload in payloads {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("feed");
        }
    }
    // Settled when the gateway's metrics count every fed message as handled.
    let handled = || {
        http_get(metrics_port, "/metrics")
            .lines()
            .filter(|l| l.starts_with("edgewise_messages_in_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as usize
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::task::block_in_place(handled) < fed {
        assert!(
            Instant::now() < deadline,
            "the gateway never handled all {fed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    feeder.abort();
    let pid = gateway.pid().expect("gateway pid");
    let (rss, peak) = memory_mib(pid);
    println!("  edgewise: resident {rss:.1} MiB, peak {peak:.1} MiB (target <= 64 MiB)");
    println!(
        "  python baseline (one model, for scale): resident {:.1} MiB, peak {:.1} MiB",
        python_rss.0, python_rss.1
    );
    drop(gateway);
    containment(&broker, rounds).await;
}

/// Each containment run: its name, what the hostile plugin is sent every [`OFFENCE_PERIOD`]
/// (nothing for the quiet run) and the gateway.toml lines it runs with.
const OFFENDERS: [(&str, &str, &str); 8] = [
    ("quiet (hostile loaded, idle)", "", ""),
    ("panic", "panic", ""),
    ("sleep (blocking WASI)", "sleep", ""),
    ("compute-loop", "compute-loop", ""),
    ("keep-tensors", "keep-tensors", ""),
    ("log-flood", "log-flood", ""),
    ("refused-flood", "refused-flood", ""),
    (
        "trap every other message",
        "noop",
        "[settings.hostile]\ntrap-every = 2\n",
    ),
];
const OFFENCE_PERIOD: Duration = Duration::from_millis(20);

/// The healthy `template` plugin's latency and throughput with each offender beside it.
async fn containment(broker: &Broker, rounds: usize) {
    let port = broker.port;
    println!(
        "\ncontainment: template (healthy) beside hostile, {PACED} messages paced at {PACED_RATE_HZ} msg/s \
         and a flood of {}; one offending message every {} ms:",
        flood_size(),
        OFFENCE_PERIOD.as_millis()
    );
    let payload = |_: usize| vec![b'x'; 64];
    /// One offender's figures over the rounds.
    struct Beside {
        offence: &'static str,
        p50s: Vec<f64>,
        p99s: Vec<f64>,
        rates: Vec<f64>,
        peak_rss: f64,
    }
    let mut quiet_p99 = Vec::new();
    let mut results: Vec<Beside> = Vec::new();
    for (offence, command, settings) in OFFENDERS {
        let (mut p50s, mut p99s, mut rates, mut peak_rss) =
            (Vec::new(), Vec::new(), Vec::new(), 0.0f64);
        for round in 0..rounds {
            let run = format!("c{}-{round}", results.len());
            let gateway = tokio::task::block_in_place(|| {
                Gateway::start(
                    broker,
                    &format!("bench-{run}"),
                    &["hostile", "template"],
                    settings,
                )
            });
            let offending = (!command.is_empty()).then(|| {
                let (client, mut eventloop) =
                    client(options(&format!("offender-{run}"), port), 100);
                let command = command.to_owned();
                tokio::spawn(async move {
                    let poller =
                        tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
                    let mut tick = tokio::time::interval(OFFENCE_PERIOD);
                    loop {
                        tick.tick().await;
                        if client
                            .publish("hostile/in/x", QoS::AtLeastOnce, false, command.clone())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    poller.abort();
                })
            });
            let prefix = format!("sensors/{run}/");
            let echo = format!("echo/sensors/{run}/");
            let input = |i: usize| format!("{prefix}{i}");
            let sequence = |t: &str| t.strip_prefix(&echo).and_then(|s| s.parse().ok());
            let load = Load {
                input_topic: &input,
                payload: &payload,
                output_filter: format!("{echo}#"),
                sequence_of: &sequence,
            };
            let paced = drive(
                port,
                &format!("{run}-paced"),
                &load,
                PACED,
                Some(PACED_RATE_HZ),
            )
            .await;
            let prefix = format!("sensors/{run}f/");
            let echo = format!("echo/sensors/{run}f/");
            let input = |i: usize| format!("{prefix}{i}");
            let sequence = |t: &str| t.strip_prefix(&echo).and_then(|s| s.parse().ok());
            let load = Load {
                input_topic: &input,
                payload: &payload,
                output_filter: format!("{echo}#"),
                sequence_of: &sequence,
            };
            let flood = drive(port, &format!("{run}-flood"), &load, flood_size(), None).await;
            if let Some(pid) = gateway.pid() {
                peak_rss = peak_rss.max(memory_mib(pid).1);
            }
            if let Some(task) = offending {
                task.abort();
            }
            assert_eq!(
                paced.received, PACED,
                "{offence}: the healthy plugin lost messages"
            );
            assert_eq!(
                flood.received,
                flood_size(),
                "{offence}: the healthy plugin lost messages"
            );
            p50s.push(paced.percentile(0.5).as_secs_f64() * 1e3);
            p99s.push(paced.percentile(0.99).as_secs_f64() * 1e3);
            rates.push(flood.per_second());
            forget(gateway, port).await;
        }
        if command.is_empty() {
            quiet_p99 = p99s.clone();
        }
        results.push(Beside {
            offence,
            p50s,
            p99s,
            rates,
            peak_rss,
        });
    }
    let quiet = median(quiet_p99);
    for Beside {
        offence,
        p50s,
        p99s,
        rates,
        peak_rss,
    } in results
    {
        let p99 = median(p99s);
        println!(
            "  {offence:<30} p50 {:>6.2} ms   p99 {p99:>6.2} ms ({:.2}x quiet)   {:>6.0} msg/s   peak RSS {peak_rss:.0} MiB",
            median(p50s),
            p99 / quiet,
            median(rates),
        );
    }
    println!("  (medians of {rounds} rounds; goal: p99 within 1.5x of quiet)");
}

/// The stream the broker must hold while the gateway is away.
const SIZING_RATE_HZ: f64 = 2000.0;
const SIZING_SECONDS: f64 = 4.0;
const SIZING_OUTAGE: Duration = Duration::from_millis(1500);

/// What a stock Mosquitto costs: loss over a gateway outage with `max_queued_messages` at its
/// default and sized, and latency with `set_tcp_nodelay` off and on.
async fn broker_sizing() {
    println!(
        "broker sizing: template plugin, QoS 1 in and out, Mosquitto configured as each row says"
    );
    println!(
        "\ngateway away {:.1} s (SIGKILL, then started again) during {SIZING_SECONDS} s at {SIZING_RATE_HZ} msg/s:",
        SIZING_OUTAGE.as_secs_f64()
    );
    for (label, tuning) in [
        (
            "max_queued_messages 1000 (default)",
            "set_tcp_nodelay true\n",
        ),
        (
            "max_queued_messages 100000",
            "set_tcp_nodelay true\nmax_queued_messages 100000\n",
        ),
    ] {
        let broker = Broker::start_tuned(tuning);
        let port = broker.port;
        let mut gateway =
            tokio::task::block_in_place(|| Gateway::start(&broker, "sizing", &["template"], ""));
        let count = (SIZING_RATE_HZ * SIZING_SECONDS) as usize;
        let input = |i: usize| format!("sensors/sizing/{i}");
        let payload = |_: usize| vec![b'x'; 64];
        let sequence = |t: &str| {
            t.strip_prefix("echo/sensors/sizing/")
                .and_then(|s| s.parse().ok())
        };
        let load = Load {
            input_topic: &input,
            payload: &payload,
            output_filter: "echo/sensors/sizing/#".into(),
            sequence_of: &sequence,
        };
        // The outage, one second into the stream, beside it.
        let outage = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_secs(1));
            gateway.kill();
            std::thread::sleep(SIZING_OUTAGE);
            gateway.launch_in_background();
            gateway
        });
        let figures = drive(port, "sizing", &load, count, Some(SIZING_RATE_HZ)).await;
        let gateway = outage.await.expect("the outage ran");
        println!(
            "  {label:<38} {:>5} of {count} lost ({:.1} %)",
            count - figures.received,
            (count - figures.received) as f64 * 100.0 / count as f64
        );
        drop(gateway);
    }

    println!(
        "\npaced {PACED} messages at {PACED_RATE_HZ} msg/s, latency publisher -> gateway -> subscriber:"
    );
    for (label, tuning) in [
        (
            "set_tcp_nodelay false (default)",
            "max_queued_messages 100000\n",
        ),
        (
            "set_tcp_nodelay true",
            "set_tcp_nodelay true\nmax_queued_messages 100000\n",
        ),
    ] {
        let broker = Broker::start_tuned(tuning);
        let gateway =
            tokio::task::block_in_place(|| Gateway::start(&broker, "nodelay", &["template"], ""));
        let input = |i: usize| format!("sensors/nodelay/{i}");
        let payload = |_: usize| vec![b'x'; 64];
        let sequence = |t: &str| {
            t.strip_prefix("echo/sensors/nodelay/")
                .and_then(|s| s.parse().ok())
        };
        let load = Load {
            input_topic: &input,
            payload: &payload,
            output_filter: "echo/sensors/nodelay/#".into(),
            sequence_of: &sequence,
        };
        let figures = drive(broker.port, "nodelay", &load, PACED, Some(PACED_RATE_HZ)).await;
        row(label, &figures);
        drop(gateway);
    }
}

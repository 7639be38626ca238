//! Containment under `edgewise run`: whatever the hostile plugin does, at the same time a
//! healthy neighbour answers every message of a steady QoS 1 stream, the gateway lives, its
//! memory stays bounded, and the offender's status says what happened.
//!
//! Each test is one row of `docs/runtime.md`'s "What a plugin cannot do to the gateway".

use std::collections::BTreeSet;
use std::time::Duration;

use edgewise_tests::mqtt::{Broker, Gateway, Subscriber};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// Messages in the healthy neighbour's stream.
const STREAM: usize = 200;
/// The gateway's resident memory must stay under this, whatever the offender does: the
/// plugins' pools, two plugins' host-memory budgets (32 MiB each) and the log buffers, with
/// room to spare, and far below what the unbounded host reached (gigabytes).
const RSS_BOUND_MIB: u64 = 300;

/// A gateway running `hostile` (with `config` appended to gateway.toml) beside `template`, the
/// healthy neighbour, which echoes every message on `sensors/#` to `echo/...`.
struct Scene {
    broker: Broker,
    gateway: Gateway,
    status: Subscriber,
    echoes: Subscriber,
}

impl Scene {
    fn start(id: &str, config: &str) -> Scene {
        Self::start_with(id, config, |_| {})
    }

    /// Like [`Scene::start`], with `prepare` changing the gateway's files before it starts.
    fn start_with(id: &str, config: &str, prepare: impl FnOnce(&Gateway)) -> Scene {
        let broker = Broker::start();
        let mut gateway = Gateway::prepare(&broker, id, &["hostile", "template"], config);
        prepare(&gateway);
        let status = broker.subscribe(&[&format!("edgewise/{id}/status")]);
        gateway.launch(&broker);
        let echoes = broker.subscribe(&["echo/#"]);
        Scene {
            broker,
            gateway,
            status,
            echoes,
        }
    }

    /// Sends the healthy stream while `provoke` runs, then checks that every message of the
    /// stream was answered, the gateway lives, and its memory stayed under the bound.
    fn beside_a_healthy_stream(&mut self, provoke: impl FnOnce(&Broker)) {
        let sent: Vec<String> = (0..STREAM).map(|i| format!("seq-{i:04}")).collect();
        let (publisher, lines) = (self.broker.publisher(), sent.clone());
        let stream = std::thread::spawn(move || {
            for batch in lines.chunks(10) {
                publisher.publish_lines("sensors/line", batch);
            }
        });
        provoke(&self.broker);
        let got = self.echoes.collect_until(WAIT * 2, |got| {
            let seen: BTreeSet<&str> = got.iter().map(|(_, p)| p.as_str()).collect();
            sent.iter().all(|s| seen.contains(s.as_str()))
        });
        stream.join().expect("the stream was published");
        let seen: BTreeSet<&str> = got.iter().map(|(_, p)| p.as_str()).collect();
        let missing: Vec<&String> = sent.iter().filter(|s| !seen.contains(s.as_str())).collect();
        assert!(
            missing.is_empty(),
            "the healthy plugin missed {} of {STREAM} messages: {missing:?}\n{}",
            missing.len(),
            self.gateway.log()
        );
        assert!(
            self.gateway.is_running(),
            "gateway died:\n{}",
            self.gateway.log()
        );
        let rss = self.gateway.resident_mib();
        assert!(rss < RSS_BOUND_MIB, "gateway holds {rss} MiB");
    }

    /// Waits until the status's `hostile` entry satisfies `want`; returns it.
    fn hostile_status(&self, want: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = self.status.collect_until(WAIT, |got| {
            got.last().is_some_and(|(_, text)| {
                last = entry(text, "hostile");
                want(&last)
            })
        });
        assert!(
            !found.is_empty() && want(&last),
            "hostile never got the expected status; last: {last}\n{}",
            self.gateway.log()
        );
        last
    }

    fn send(&self, payload: &str) {
        self.broker.publish("hostile/in/x", payload.as_bytes(), 1);
    }
}

/// The entry of `plugin` in a status document.
fn entry(status: &str, plugin: &str) -> Value {
    let status: Value = serde_json::from_str(status).unwrap_or_default();
    status["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == plugin))
        .cloned()
        .unwrap_or_default()
}

fn state_is(state: &'static str, reason: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["state"] == state && e["reason"].as_str().is_some_and(|r| r.contains(reason))
}

fn one_of(states: &'static [&'static str], reason: &'static str) -> impl Fn(&Value) -> bool {
    move |e| {
        states.iter().any(|s| e["state"] == *s)
            && e["reason"].as_str().is_some_and(|r| r.contains(reason))
    }
}

#[test]
fn a_panic_in_init_fails_that_plugin_only() {
    let mut scene = Scene::start("init-panic", "[settings.hostile]\ninit = \"panic\"");
    scene.beside_a_healthy_stream(|_| {});
    scene.hostile_status(one_of(&["failing", "resting"], "init trapped"));
}

#[test]
fn printing_in_init_is_logged_and_does_not_stop_the_gateway() {
    let mut scene = Scene::start("init-print", "[settings.hostile]\ninit = \"print\"");
    scene.beside_a_healthy_stream(|_| {});
    scene.hostile_status(one_of(&["failing", "resting"], "printed, then refusing"));
    let log = scene.gateway.log();
    assert!(log.contains("printing in init, as asked"), "{log}");
}

#[test]
fn sleeping_in_init_ends_at_the_init_deadline() {
    let mut scene = Scene::start("init-sleep", "[settings.hostile]\ninit = \"sleep\"");
    scene.beside_a_healthy_stream(|_| {});
    scene.hostile_status(one_of(
        &["failing", "resting"],
        "init trapped: ran past its deadline of 200 ms",
    ));
}

#[test]
fn a_blocking_sleep_in_on_message_is_stopped_at_the_deadline_and_dead_lettered() {
    let mut scene = Scene::start("sleeper", "");
    let letters = scene
        .broker
        .subscribe(&["edgewise/sleeper/dead-letter/hostile"]);
    scene.beside_a_healthy_stream(|broker| {
        broker.publish("hostile/in/x", b"sleep", 1);
    });
    let (_, letter) = letters.next(WAIT).expect("a dead letter for the sleeper");
    let letter: Value = serde_json::from_str(&letter).expect("JSON dead letter");
    assert_eq!(letter["attempts"], 3, "{letter}");
    assert!(
        letter["error"]
            .as_str()
            .is_some_and(|e| e.contains("ran past its deadline of 200 ms")),
        "{letter}"
    );
    scene.hostile_status(state_is("failing", "ran past its deadline of 200 ms"));
}

#[test]
fn tensors_kept_alive_are_charged_to_the_plugin_and_stop_at_its_budget() {
    let mut scene = Scene::start("tensors", "");
    scene.beside_a_healthy_stream(|broker| {
        for _ in 0..5 {
            broker.publish("hostile/in/x", b"keep-tensors", 1);
        }
    });
    scene.hostile_status(one_of(
        &["failing", "resting"],
        "host memory budget of 8 MiB exhausted: a tensor",
    ));
}

#[test]
fn model_outputs_kept_alive_are_charged_to_the_plugin_and_stop_at_its_budget() {
    let mut scene = Scene::start("outputs", "");
    scene.beside_a_healthy_stream(|broker| {
        for _ in 0..5 {
            broker.publish("hostile/in/x", b"keep-outputs", 1);
        }
    });
    scene.hostile_status(one_of(
        &["failing", "resting"],
        "host memory budget of 8 MiB exhausted",
    ));
}

#[test]
fn computing_without_end_is_stopped_at_the_deadline() {
    let mut scene = Scene::start("computer", "");
    scene.beside_a_healthy_stream(|broker| {
        broker.publish("hostile/in/x", b"compute-loop", 1);
    });
    scene.hostile_status(state_is("failing", "ran past its deadline of 200 ms"));
}

#[test]
fn a_shape_that_claims_terabytes_is_refused_before_the_backend_sees_it() {
    let mut scene = Scene::start("shapes", "");
    let letters = scene
        .broker
        .subscribe(&["edgewise/shapes/dead-letter/hostile"]);
    scene.beside_a_healthy_stream(|broker| {
        broker.publish("hostile/in/x", b"huge-shape", 1);
    });
    let (_, letter) = letters.next(WAIT).expect("a dead letter");
    assert!(letter.contains("must have shape [512, 512]"), "{letter}");
    let log = scene.gateway.log();
    assert!(log.contains("must have shape [512, 512]"), "{log}");
}

#[test]
fn a_model_whose_one_compute_cannot_fit_the_deadline_is_refused_at_load() {
    let mut scene = Scene::start_with("slow-model", "", |gw| {
        let dir = gw.dir().join("plugins/hostile");
        std::fs::copy(
            edgewise_tests::repo().join("tests/models/matmul_chain.onnx"),
            dir.join("model/square_512.onnx"),
        )
        .expect("model copied");
        edgewise_tests::edit(
            &dir,
            "plugin.toml",
            "time-per-message-ms = 200",
            "time-per-message-ms = 20",
        );
    });
    scene.beside_a_healthy_stream(|_| {});
    let hostile = entry(
        &scene
            .broker
            .retained("edgewise/slow-model/status", WAIT)
            .unwrap_or_default(),
        "hostile",
    );
    assert_eq!(hostile["state"], "failed", "{hostile}");
    assert!(
        hostile["error"]
            .as_str()
            .is_some_and(|e| e.contains("model `square`: one compute takes")
                && e.contains("more than the plugin's time-per-message-ms of 20")),
        "{hostile}"
    );
}

#[test]
fn a_log_flood_is_rate_limited_and_counted() {
    let mut scene = Scene::start("flood", "");
    scene.beside_a_healthy_stream(|broker| {
        broker.publish("hostile/in/x", b"log-flood", 1);
        broker.publish("hostile/in/x", b"noop", 1);
    });
    // The next line after the flood says how many were dropped.
    scene.send("log-forge");
    let log = scene.gateway.wait_for_log("lines dropped");
    let flood_lines = log.lines().filter(|l| l.contains("flood line")).count();
    assert!(
        (1..=1_000).contains(&flood_lines),
        "{flood_lines} of 20000 flood lines logged"
    );
}

#[test]
fn a_giant_log_line_is_cut_and_a_newline_cannot_forge_a_gateway_line() {
    let mut scene = Scene::start("forger", "");
    scene.beside_a_healthy_stream(|broker| {
        broker.publish("hostile/in/x", b"log-giant", 1);
        broker.publish("hostile/in/x", b"log-forge", 1);
    });
    let log = scene.gateway.wait_for_log("forged");
    assert!(log.contains("bytes in all]"), "the giant line is cut");
    assert!(log.len() < 1 << 20, "log is {} bytes", log.len());
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a plugin forged a log line:\n{log}"
    );
    assert!(log.contains(r"innocent\n2026-01-01T00:00:00Z ERROR edgewise: forged \u{1b}[31mred"));
}

#[test]
fn a_plugin_that_keeps_publishing_after_refusals_is_trapped_and_logged_once() {
    let mut scene = Scene::start("refused", "");
    scene.beside_a_healthy_stream(|broker| {
        for _ in 0..3 {
            broker.publish("hostile/in/x", b"refused-flood", 1);
        }
    });
    scene.hostile_status(one_of(
        &["failing", "resting"],
        "kept publishing after 100 refused publishes",
    ));
    let log = scene.gateway.log();
    let refusal_lines = log
        .lines()
        .filter(|l| l.contains("publish refused"))
        .count();
    assert!(
        (1..=3).contains(&refusal_lines),
        "{refusal_lines} lines about refused publishes"
    );
}

#[test]
fn trapping_on_every_other_message_still_rests() {
    // A long first rest, so that the state is still `resting` when the test reads it.
    let config = "[settings.hostile]\ntrap-every = 2\n\n[restart]\nfirst-backoff-ms = 600000";
    let mut scene = Scene::start("alternating", config);
    scene.beside_a_healthy_stream(|broker| {
        let lines: Vec<String> = (0..40).map(|_| "noop".to_owned()).collect();
        broker.publish_lines("hostile/in/x", &lines);
    });
    let hostile = scene.hostile_status(state_is("resting", "instance trapped"));
    assert!(
        hostile["resting_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{hostile}"
    );
}

#[test]
fn a_plugin_that_keeps_failing_is_failed_for_good_and_dead_letters_every_message() {
    let config = "[settings.hostile]\ntrap-every = 1\n\n[restart]\nattempts = 1\nfirst-backoff-ms = 1\nmax-backoff-ms = 1\nmax-rests = 2";
    let mut scene = Scene::start("given-up", config);
    scene.beside_a_healthy_stream(|broker| {
        // One publish at a time (a process each), so that most land after a 1 ms rest.
        for _ in 0..20 {
            broker.publish("hostile/in/x", b"noop", 1);
        }
    });
    scene.hostile_status(state_is("failed", "instance trapped"));
    let letters = scene
        .broker
        .subscribe(&["edgewise/given-up/dead-letter/hostile"]);
    scene.send("count");
    let (_, letter) = letters.next(WAIT).expect("a dead letter");
    assert!(letter.contains("failed for good"), "{letter}");
}

#[test]
fn a_plugin_does_not_receive_its_own_outputs() {
    let mut scene = Scene::start("self-loop", "");
    let looped = scene.broker.subscribe(&["hostile/in/loop"]);
    let counts = scene.broker.subscribe(&["hostile/count"]);
    scene.beside_a_healthy_stream(|broker| {
        broker.publish("hostile/in/x", b"forward", 1);
    });
    // The broker has delivered the output to its subscribers, the gateway included, before
    // the next message is even sent: were it routed back, hostile would count it.
    assert!(looped.next(WAIT).is_some(), "hostile forwarded its message");
    scene.send("count");
    let (_, seen) = counts.next(WAIT).expect("a count");
    assert_eq!(seen, "2", "hostile saw `forward` and `count` only");
    assert_eq!(looped.next(Duration::from_millis(300)), None);
}

#[test]
fn a_routing_cycle_between_two_plugins_is_broken_with_a_dead_letter() {
    // hostile forwards to `sensors/cycle`; template echoes `sensors/#` to `hostile/in/...`.
    let config = "[settings.hostile]\nforward-to = \"sensors/cycle\"\n\n[settings.template]\nprefix = \"hostile/in\"";
    let mut scene = Scene::start_with("cycle", config, |gw| {
        edgewise_tests::edit(
            &gw.dir().join("plugins/hostile"),
            "plugin.toml",
            "\"hostile/in/loop\"]",
            "\"hostile/in/loop\", \"sensors/cycle\"]",
        );
        edgewise_tests::edit(
            &gw.dir().join("plugins/template"),
            "plugin.toml",
            "publish = [\"echo/#\"]",
            "publish = [\"echo/#\", \"hostile/in/#\"]",
        );
    });
    let letters = scene.broker.subscribe(&["edgewise/cycle/dead-letter/#"]);
    scene.echoes = scene.broker.subscribe(&["hostile/in/sensors/line"]);
    scene.beside_a_healthy_stream(|broker| {
        broker.publish("hostile/in/x", b"forward", 1);
    });
    // hostile also dead-letters the echoed stream (not a command it knows): look past those.
    let got = letters.collect_until(WAIT, |got| {
        got.iter()
            .any(|(_, letter)| letter.contains("routing cycle"))
    });
    assert!(
        got.iter()
            .any(|(_, letter)| letter.contains("routing cycle")),
        "{got:?}"
    );
    assert!(scene.gateway.log().contains("routing cycle"));
}

#[test]
fn sigterm_ends_the_gateway_within_its_bound_with_a_plugin_in_a_long_call() {
    let mut scene = Scene::start_with("sigterm", "", |gw| {
        shutdown_within_two_seconds(gw);
        // The longest call the host allows: ten seconds, tried three times.
        edgewise_tests::edit(
            &gw.dir().join("plugins/hostile"),
            "plugin.toml",
            "time-per-message-ms = 200",
            "time-per-message-ms = 10000",
        );
    });
    scene.beside_a_healthy_stream(|broker| {
        broker.publish("hostile/in/x", b"sleep", 1);
    });
    scene.hostile_status(|e| e["state"] == "running" || e["state"] == "stuck");
    // Were the gateway to wait for the sleeper, it would take thirty seconds.
    let exit = scene.gateway.terminate_within(Duration::from_secs(15));
    assert_eq!(exit, Some(true), "{}", scene.gateway.log());
    let log = scene.gateway.log();
    assert!(log.contains("left in the journal"), "{log}");
}

#[test]
fn sigterm_with_the_broker_gone_ends_within_its_bound() {
    let mut scene = Scene::start_with("lonely", "", shutdown_within_two_seconds);
    drop(scene.echoes);
    drop(scene.status);
    drop(scene.broker);
    let exit = scene.gateway.terminate_within(Duration::from_secs(15));
    assert_eq!(exit, Some(true), "{}", scene.gateway.log());
}

/// Sets the gateway's `shutdown-timeout-s` to 2 (a top-level key: before the `[broker]` table).
fn shutdown_within_two_seconds(gateway: &Gateway) {
    edgewise_tests::edit(
        gateway.dir(),
        "gateway.toml",
        "plugins = \"plugins\"\n",
        "plugins = \"plugins\"\nshutdown-timeout-s = 2\n",
    );
}

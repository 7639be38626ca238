//! A hostile plugin (`plugins/hostile`) against the sandbox, in one runtime with others.

use std::time::Duration;

use edgewise_host::runtime::failure::{Failure, TrapKind};
use edgewise_host::worker::Worker;
use edgewise_host::worker::supervisor::RestartPolicy;
use edgewise_tests::{message, worker, worker_with};

fn hostile() -> Worker {
    worker("hostile", &[])
}

/// Sends `command` to the hostile plugin; returns the payloads it published, or the failure.
fn send(w: &mut Worker, command: &str) -> Result<Vec<String>, Failure> {
    w.handle(&message("hostile/in/test", command))
        .map(|published| {
            published
                .into_iter()
                .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
                .collect()
        })
        .map_err(|e| e.failure)
}

/// The reason of a message the plugin refused; panics on any other outcome.
fn refusal(result: Result<Vec<String>, Failure>) -> String {
    match result {
        Err(Failure::Rejected(reason)) => reason,
        other => panic!("expected the plugin to refuse, got {other:?}"),
    }
}

fn trap_kind(result: Result<Vec<String>, Failure>) -> TrapKind {
    match result {
        Err(Failure::Trap(kind)) => kind,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn a_plugin_keeps_its_state_between_messages() {
    let mut w = hostile();
    for expected in ["1", "2", "3"] {
        assert_eq!(send(&mut w, "count"), Ok(vec![expected.to_owned()]));
    }
    assert_eq!(w.stats().starts, 1, "one instance served every message");
}

#[test]
fn a_panic_kills_only_that_instance_and_a_fresh_one_takes_the_next_message() {
    let mut w = hostile();
    assert_eq!(send(&mut w, "count"), Ok(vec!["1".into()]));
    assert_eq!(send(&mut w, "count"), Ok(vec!["2".into()]));
    let kind = trap_kind(send(&mut w, "panic"));
    assert!(kind.to_string().contains("unreachable"), "{kind}");
    // A fresh instance: the count starts again.
    assert_eq!(send(&mut w, "count"), Ok(vec!["1".into()]));
    // The message that trapped was tried three times, each on a fresh instance.
    assert_eq!((w.stats().starts, w.stats().traps), (4, 3));
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline() {
    let mut w = hostile();
    assert_eq!(
        trap_kind(send(&mut w, "loop")),
        TrapKind::Deadline { ms: 200 }
    );
    assert_eq!(send(&mut w, "count"), Ok(vec!["1".into()]));
}

#[test]
fn a_plugin_keeps_its_deadline_after_the_runtime_that_compiled_it_is_gone() {
    // Regression: the epoch ticker belonged to the runtime alone; a gateway that let its
    // runtime go while its plugins ran had no deadlines left, and a `loop` held its plugin
    // for good.
    use edgewise_host::runtime::{Runtime, default_caps};
    let runtime = Runtime::new(default_caps(), 4).expect("runtime starts");
    let plugin = edgewise_host::runtime::plugin::CompiledPlugin::load(
        &runtime,
        &edgewise_tests::plugin_dir("hostile"),
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    drop(runtime);
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut w = Worker::new(std::sync::Arc::new(plugin), RestartPolicy::default());
        let _ = done.send(send(&mut w, "loop"));
    });
    // Without a ticker the call would never end: the wait is bounded here instead.
    let outcome = outcome
        .recv_timeout(Duration::from_secs(30))
        .expect("the loop ends at its deadline, not never");
    assert_eq!(trap_kind(outcome), TrapKind::Deadline { ms: 200 });
}

#[test]
fn allocating_without_end_hits_the_memory_cap_not_the_host() {
    let mut w = hostile();
    assert_eq!(
        trap_kind(send(&mut w, "alloc")),
        TrapKind::MemoryLimit { mib: 16 }
    );
    assert_eq!(send(&mut w, "count"), Ok(vec!["1".into()]));
}

#[test]
fn recursing_without_end_traps_without_harming_the_host() {
    let mut w = hostile();
    let kind = trap_kind(send(&mut w, "recurse"));
    // Rust's stack lives in linear memory: overflowing it is an out-of-bounds access, or a
    // wasm stack overflow if the engine's stack runs out first.
    assert!(
        kind == TrapKind::StackOverflow || kind.to_string().contains("out of bounds"),
        "{kind}"
    );
    assert_eq!(send(&mut w, "count"), Ok(vec!["1".into()]));
}

#[test]
fn publishing_to_an_ungranted_topic_is_refused_and_nothing_leaves() {
    let mut w = hostile();
    let reason = refusal(send(&mut w, "publish-ungranted"));
    assert!(reason.contains("not granted"), "{reason}");
    assert_eq!(
        send(&mut w, "count"),
        Ok(vec!["2".into()]),
        "the instance lives on"
    );
}

#[test]
fn publishing_a_payload_over_the_cap_is_refused() {
    let mut w = hostile();
    let reason = refusal(send(&mut w, "publish-huge"));
    assert!(reason.contains("max-payload-bytes"), "{reason}");
}

#[test]
fn publishes_of_a_failed_call_are_discarded() {
    let mut w = hostile();
    // 100 publishes are allowed, the 101st fails, the plugin returns that error: none leave.
    let reason = refusal(send(&mut w, "publish-many"));
    assert!(reason.contains("max-publishes-per-message"), "{reason}");
    assert_eq!(send(&mut w, "echo"), Ok(vec!["echo".into()]));
}

#[test]
fn an_incoming_payload_over_the_cap_never_reaches_the_plugin() {
    let mut w = hostile();
    let big = "count".to_owned() + &" ".repeat(2000);
    assert_eq!(
        send(&mut w, &big),
        Err(Failure::PayloadTooLarge {
            size: 2005,
            limit: 1024
        })
    );
    assert_eq!(
        send(&mut w, "count"),
        Ok(vec!["1".into()]),
        "the plugin never saw the big one"
    );
}

#[test]
fn an_unknown_model_is_a_wasi_nn_error_the_plugin_can_handle() {
    let mut w = hostile();
    let reason = refusal(send(&mut w, "load-unknown-model"));
    assert!(
        reason.contains("NotFound") && reason.contains("no-such-model"),
        "{reason}"
    );
    assert_eq!(send(&mut w, "count"), Ok(vec!["2".into()]));
}

#[test]
fn models_cannot_be_loaded_from_plugin_memory() {
    let mut w = hostile();
    for command in ["load-bytes-onnx", "load-bytes-tensorflow"] {
        let reason = refusal(send(&mut w, command));
        assert!(
            reason.contains("UnsupportedOperation") && reason.contains("use load-by-name"),
            "{reason}"
        );
    }
    assert_eq!(w.stats().traps, 0);
}

#[test]
fn init_failures_are_reported_with_their_cause() {
    let cases = [
        ("error", "init returned an error: refusing to start"),
        ("panic", "init trapped"),
        ("loop", "init trapped: ran past its deadline of 200 ms"),
    ];
    for (mode, expected) in cases {
        let mut w = worker("hostile", &[("init", mode)]);
        match w.start() {
            Err(Failure::Start(reason)) => {
                assert!(reason.contains(expected), "init={mode}: {reason}")
            }
            other => panic!("init={mode}: expected a start failure, got {other:?}"),
        }
    }
}

#[test]
fn a_plugin_that_keeps_trapping_is_backed_off_not_restarted_in_a_hot_loop() {
    // A long rest, so that no message can arrive after it ends, however slow the machine.
    let policy = RestartPolicy {
        free_restarts: 3,
        first_backoff: Duration::from_secs(600),
        ..RestartPolicy::default()
    };
    let mut w = worker_with("hostile", &[("init", "panic")], policy);
    let failures: Vec<Failure> = (0..10)
        .map(|_| send(&mut w, "count").expect_err("cannot start"))
        .collect();
    // Three restarts at once, then a rest: the remaining messages fail fast without a start.
    assert!(
        failures[..4].iter().all(|f| matches!(f, Failure::Start(_))),
        "{failures:?}"
    );
    assert!(
        failures[4..].iter().all(|f| matches!(f, Failure::BackingOff { failures: 4, retry_in } if *retry_in <= Duration::from_secs(600))),
        "{failures:?}"
    );
    assert_eq!(w.stats().starts, 4);
}

#[test]
fn a_hostile_plugin_never_disturbs_a_healthy_neighbour() {
    let mut bad = hostile();
    let mut good = worker("threshold", &[]);
    let mut alerts = Vec::new();
    for (i, command) in [
        "panic",
        "loop",
        "alloc",
        "recurse",
        "publish-ungranted",
        "error",
    ]
    .iter()
    .enumerate()
    {
        assert!(send(&mut bad, command).is_err());
        let value = if i % 2 == 0 { 90.0 } else { 10.0 };
        let published = good
            .handle(&message(
                "sensors/s/reading",
                format!("{{\"value\": {value}}}"),
            ))
            .unwrap_or_else(|e| panic!("healthy plugin failed: {e}"));
        alerts.extend(
            published
                .into_iter()
                .map(|p| String::from_utf8_lossy(&p.payload).into_owned()),
        );
    }
    assert_eq!(alerts.len(), 6, "an alert for every crossing: {alerts:?}");
    assert_eq!(good.stats().traps, 0);
    assert_eq!(good.stats().starts, 1);
}

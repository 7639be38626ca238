//! Plugins written in Python (componentize-py and guest-sdk/python) and JavaScript
//! (componentize-qjs and guest-sdk/js) against the same WIT world: the same behaviour as the
//! Rust examples, their errors as dead letters, and the same sandbox.

use std::time::Duration;

use edgewise_tests::mqtt::{Broker, Gateway};
use edgewise_tests::{plugin_dir, replay};
use serde_json::json;

/// Readings of a few sensors crossing the limit (80, hysteresis 2) back and forth, with a
/// payload that is no JSON among them.
fn stream() -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..200u32 {
        let sensor = ["oven", "boiler", "freezer"][(i % 3) as usize];
        let value = 70.0 + f64::from((i * 37) % 23);
        lines.push(
            json!({"topic": format!("sensors/{sensor}/reading"), "payload": {"value": value}})
                .to_string(),
        );
        if i == 50 {
            lines.push(json!({"topic": "sensors/oven/reading", "payload": "not json"}).to_string());
        }
    }
    lines
}

#[test]
fn threshold_in_python_publishes_what_threshold_in_rust_publishes_on_the_same_stream() {
    let input = stream().join("\n");
    let rust = replay(&plugin_dir("threshold"), &input, &[]);
    let python = replay(&plugin_dir("threshold-py"), &input, &[]);
    let outputs = |run: &edgewise_tests::ReplayRun| -> Vec<(String, String)> {
        run.published
            .iter()
            .map(|p| {
                (
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                )
            })
            .collect()
    };
    assert!(
        outputs(&rust).len() > 20,
        "the stream crosses the limit often: {}",
        rust.log
    );
    assert_eq!(outputs(&python), outputs(&rust), "{}", python.log);
    // Both refuse the one bad payload, and only it.
    for run in [&rust, &python] {
        assert!(!run.success);
        assert!(run.log.contains("1 of 201 messages failed"), "{}", run.log);
    }
    assert!(
        python.log.contains("JSONDecodeError"),
        "the Python error's own text: {}",
        python.log
    );
}

/// An alert as JSON with its numbers as f64: JavaScript writes the reading 91.0 as `91`, the same
/// JSON number Rust writes as `91.0`.
fn alert_values(run: &edgewise_tests::ReplayRun) -> Vec<(String, serde_json::Value)> {
    fn numbers_as_f64(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Number(n) => json!(n.as_f64()),
            serde_json::Value::Object(fields) => fields
                .into_iter()
                .map(|(k, v)| (k, numbers_as_f64(v)))
                .collect(),
            other => other,
        }
    }
    run.published
        .iter()
        .map(|p| (p.topic.clone(), numbers_as_f64(p.json())))
        .collect()
}

#[test]
fn threshold_in_javascript_publishes_what_threshold_in_rust_publishes_on_the_same_stream() {
    let input = stream().join("\n");
    let rust = replay(&plugin_dir("threshold"), &input, &[]);
    let js = replay(&plugin_dir("threshold-js"), &input, &[]);
    assert!(alert_values(&rust).len() > 20, "{}", rust.log);
    assert_eq!(alert_values(&js), alert_values(&rust), "{}", js.log);
    // Byte for byte but for that: the same fields in the same order.
    for (r, j) in rust.published.iter().zip(&js.published) {
        let rust_text = String::from_utf8_lossy(&r.payload)
            .replace(".0,", ",")
            .replace(".0}", "}");
        assert_eq!(String::from_utf8_lossy(&j.payload), rust_text);
    }
    for run in [&rust, &js] {
        assert!(!run.success);
        assert!(run.log.contains("1 of 201 messages failed"), "{}", run.log);
    }
    assert!(
        js.log.contains("SyntaxError"),
        "the JavaScript error's own text: {}",
        js.log
    );
}

#[test]
fn an_exception_in_javascript_is_a_dead_letter_with_its_text_and_the_plugin_keeps_its_state() {
    let broker = Broker::start();
    let gw = Gateway::start(&broker, "js", &["threshold-js"], "");
    let sub = broker.subscribe(&["alerts/#", "edgewise/js/dead-letter/#"]);
    broker.publish("sensors/oven/reading", br#"{"value": 91}"#, 1);
    broker.publish("sensors/oven/reading", b"\xff not json", 1);
    broker.publish("sensors/oven/reading", br#"{"reading": 3}"#, 1);
    // Back to normal only below 78: the instance that alerted `high` is the one still running.
    broker.publish("sensors/oven/reading", br#"{"value": 77.5}"#, 1);
    let got = sub.collect_until(Duration::from_secs(60), |got| got.len() >= 4);
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "alerts/oven",
            "edgewise/js/dead-letter/threshold-js",
            "edgewise/js/dead-letter/threshold-js",
            "alerts/oven"
        ],
        "{got:?}\n{}",
        gw.log()
    );
    assert!(got[0].1.contains("\"state\":\"high\""), "{got:?}");
    assert!(got[1].1.contains("TypeError: not UTF-8: byte 0"), "{got:?}");
    assert!(
        got[2].1.contains("TypeError: no \\\"value\\\" in"),
        "{got:?}"
    );
    assert!(got[3].1.contains("\"state\":\"normal\""), "{got:?}");
    assert!(
        !gw.log().contains("trapped"),
        "no instance was lost: {}",
        gw.log()
    );
}

#[test]
fn javascript_gets_no_fetch_no_sockets_no_files_and_no_environment() {
    let attempts = ["fetch", "websocket", "xhr", "files", "environ"];
    let input: Vec<String> = attempts
        .iter()
        .map(|what| json!({"topic": format!("sandbox-js/try/{what}"), "payload": ""}).to_string())
        .collect();
    let run = edgewise_tests::replay_with_env(
        &plugin_dir("sandbox-js"),
        &input.join("\n"),
        &[],
        &[("EDGEWISE_TEST_SECRET", "hunter2")],
    );
    assert!(run.success, "{}", run.log);
    assert_eq!(run.published.len(), attempts.len(), "{}", run.log);
    for published in &run.published {
        let result = published.json();
        assert_eq!(
            result["allowed"],
            json!(false),
            "{}: {result}",
            published.topic
        );
        assert!(
            result["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("ReferenceError")),
            "{}: {result}",
            published.topic
        );
    }
    assert!(!run.log.contains("hunter2"));
}

#[test]
fn an_exception_in_python_is_a_dead_letter_with_its_text_and_the_plugin_keeps_its_state() {
    let broker = Broker::start();
    let gw = Gateway::start(&broker, "py", &["threshold-py"], "");
    let sub = broker.subscribe(&["alerts/#", "edgewise/py/dead-letter/#"]);
    broker.publish("sensors/oven/reading", br#"{"value": 91}"#, 1);
    broker.publish("sensors/oven/reading", b"\xff not json", 1);
    broker.publish("sensors/oven/reading", br#"{"reading": 3}"#, 1);
    // Back to normal only below 78: the instance that alerted `high` is the one still running.
    broker.publish("sensors/oven/reading", br#"{"value": 77.5}"#, 1);
    let got = sub.collect_until(Duration::from_secs(60), |got| got.len() >= 4);
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "alerts/oven",
            "edgewise/py/dead-letter/threshold-py",
            "edgewise/py/dead-letter/threshold-py",
            "alerts/oven"
        ],
        "{got:?}\n{}",
        gw.log()
    );
    assert!(got[0].1.contains("\"state\":\"high\""), "{got:?}");
    assert!(
        got[1].1.contains("UnicodeDecodeError") || got[1].1.contains("JSONDecodeError"),
        "{got:?}"
    );
    assert!(got[2].1.contains("KeyError: 'value'"), "{got:?}");
    assert!(got[3].1.contains("\"state\":\"normal\""), "{got:?}");
    assert!(
        !gw.log().contains("trapped"),
        "no instance was lost: {}",
        gw.log()
    );
}

#[test]
fn python_gets_no_files_no_sockets_no_environment_and_no_processes() {
    let input: Vec<String> = ["open", "socket", "environ", "subprocess"]
        .iter()
        .map(|what| json!({"topic": format!("sandbox-py/try/{what}"), "payload": ""}).to_string())
        .collect();
    let dir = edgewise_tests::copy_plugin("sandbox-py");
    // A secret in the host's environment: the plugin must not see it.
    let run = edgewise_tests::replay_with_env(
        dir.path(),
        &input.join("\n"),
        &[],
        &[("EDGEWISE_TEST_SECRET", "hunter2")],
    );
    assert!(run.success, "{}", run.log);
    let results: std::collections::BTreeMap<String, serde_json::Value> = run
        .published
        .iter()
        .map(|p| {
            (
                p.topic.rsplit('/').next().unwrap_or_default().to_owned(),
                p.json(),
            )
        })
        .collect();
    for what in ["open", "socket", "subprocess"] {
        assert_eq!(
            results[what]["allowed"],
            json!(false),
            "{what}: {}",
            results[what]
        );
    }
    assert_eq!(
        results["environ"]["detail"],
        json!([]),
        "no variable at all: {}",
        results["environ"]
    );
    assert!(!dir.path().join("planted.txt").exists());
    println!("{results:#?}");
}

#[test]
fn vibration_fault_in_python_publishes_the_rust_plugins_diagnoses_bit_for_bit() {
    let windows =
        std::fs::read_to_string(edgewise_tests::eval_set("vibration-fault")).expect("windows");
    let rust = replay(&plugin_dir("vibration-fault"), &windows, &[]);
    let python = replay(&plugin_dir("vibration-fault-py"), &windows, &[]);
    assert!(
        rust.success && python.success,
        "{}\n{}",
        rust.log,
        python.log
    );
    assert_eq!(rust.published.len(), 400);
    let differ: Vec<(String, String)> = rust
        .published
        .iter()
        .zip(&python.published)
        .filter(|(r, p)| r.payload != p.payload || r.topic != p.topic)
        .map(|(r, p)| {
            (
                String::from_utf8_lossy(&r.payload).into_owned(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            )
        })
        .collect();
    assert_eq!(python.published.len(), 400);
    assert!(
        differ.is_empty(),
        "{} of 400 differ, first: {:?}",
        differ.len(),
        differ.first()
    );
}

#[test]
fn vibration_fault_in_javascript_publishes_the_rust_plugins_diagnoses_number_for_number() {
    let windows =
        std::fs::read_to_string(edgewise_tests::eval_set("vibration-fault")).expect("windows");
    let rust = replay(&plugin_dir("vibration-fault"), &windows, &[]);
    let js = replay(&plugin_dir("vibration-fault-js"), &windows, &[]);
    assert!(rust.success && js.success, "{}\n{}", rust.log, js.log);
    assert_eq!(rust.published.len(), 400);
    assert_eq!(js.published.len(), 400);
    // JavaScript writes 1.0 as `1`: the same JSON number, so compare with Rust's `.0` dropped.
    let differ: Vec<(String, String)> = rust
        .published
        .iter()
        .zip(&js.published)
        .map(|(r, j)| {
            (
                String::from_utf8_lossy(&r.payload)
                    .replace(".0,", ",")
                    .replace(".0}", "}"),
                String::from_utf8_lossy(&j.payload).into_owned(),
            )
        })
        .filter(|(r, j)| r != j)
        .collect();
    assert!(
        differ.is_empty(),
        "{} of 400 differ, first: {:?}",
        differ.len(),
        differ.first()
    );
    assert_eq!(alert_values(&js), alert_values(&rust));
}

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

/// The stream replayed through Rust's `threshold` and `port`: both refuse the one bad payload,
/// and only it.
fn threshold_alerts(port: &str) -> (edgewise_tests::ReplayRun, edgewise_tests::ReplayRun) {
    let input = stream().join("\n");
    let rust = replay(&plugin_dir("threshold"), &input, &[]);
    let ported = replay(&plugin_dir(port), &input, &[]);
    assert!(
        rust.published.len() > 20,
        "the stream crosses the limit often: {}",
        rust.log
    );
    for run in [&rust, &ported] {
        assert!(!run.success);
        assert!(run.log.contains("1 of 201 messages failed"), "{}", run.log);
    }
    (rust, ported)
}

#[test]
fn threshold_in_python_publishes_what_threshold_in_rust_publishes_on_the_same_stream() {
    let (rust, python) = threshold_alerts("threshold-py");
    let differ = differences(&rust, &python, str::to_owned);
    assert!(differ.is_empty(), "{differ:?}\n{}", python.log);
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
    let (rust, js) = threshold_alerts("threshold-js");
    assert_eq!(alert_values(&js), alert_values(&rust), "{}", js.log);
    // Byte for byte but for that: the same fields in the same order.
    let differ = differences(&rust, &js, as_javascript_writes);
    assert!(differ.is_empty(), "{differ:?}\n{}", js.log);
    assert!(
        js.log.contains("SyntaxError"),
        "the JavaScript error's own text: {}",
        js.log
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

/// `text` as JavaScript writes its numbers: whole ones without `.0`.
fn as_javascript_writes(text: &str) -> String {
    text.replace(".0,", ",").replace(".0}", "}")
}

/// Where `port` published other than `rust` did, `rust`'s payloads seen through `as_written`:
/// (Rust's, the port's), for the messages whose outputs differ.
fn differences(
    rust: &edgewise_tests::ReplayRun,
    port: &edgewise_tests::ReplayRun,
    as_written: fn(&str) -> String,
) -> Vec<(String, String)> {
    assert_eq!(port.published.len(), rust.published.len(), "{}", port.log);
    rust.published
        .iter()
        .zip(&port.published)
        .map(|(r, p)| {
            (
                format!(
                    "{} {}",
                    r.topic,
                    as_written(&String::from_utf8_lossy(&r.payload))
                ),
                format!("{} {}", p.topic, String::from_utf8_lossy(&p.payload)),
            )
        })
        .filter(|(r, p)| r != p)
        .collect()
}

/// The vibration classifier's 400 evaluation windows replayed through Rust's and `port`'s.
fn vibration_diagnoses(port: &str) -> (edgewise_tests::ReplayRun, edgewise_tests::ReplayRun) {
    let windows =
        std::fs::read_to_string(edgewise_tests::eval_set("vibration-fault")).expect("windows");
    let rust = replay(&plugin_dir("vibration-fault"), &windows, &[]);
    let ported = replay(&plugin_dir(port), &windows, &[]);
    assert!(
        rust.success && ported.success,
        "{}\n{}",
        rust.log,
        ported.log
    );
    assert_eq!(rust.published.len(), 400);
    (rust, ported)
}

#[test]
fn vibration_fault_in_python_publishes_the_rust_plugins_diagnoses_bit_for_bit() {
    let (rust, python) = vibration_diagnoses("vibration-fault-py");
    let differ = differences(&rust, &python, str::to_owned);
    assert!(
        differ.is_empty(),
        "{} of 400 differ, first: {:?}",
        differ.len(),
        differ.first()
    );
}

#[test]
fn vibration_fault_in_javascript_publishes_the_rust_plugins_diagnoses_number_for_number() {
    let (rust, js) = vibration_diagnoses("vibration-fault-js");
    // JavaScript writes 1.0 as `1`, the same JSON number.
    let differ = differences(&rust, &js, as_javascript_writes);
    assert!(
        differ.is_empty(),
        "{} of 400 differ, first: {:?}",
        differ.len(),
        differ.first()
    );
    assert_eq!(alert_values(&js), alert_values(&rust));
}

/// Through a gateway and Mosquitto, `plugin` (a port of `threshold`) gets a reading above the
/// limit, a payload that is no UTF-8, one without a value, and a reading back to normal: the
/// two bad ones are dead letters, and the instance that alerted `high` is the one that says
/// `normal` (below 78 only, after two failures). Returns the dead letters' texts.
fn failures_between_two_alerts(plugin: &str, id: &str) -> [String; 2] {
    let broker = Broker::start();
    let gw = Gateway::start(&broker, id, &[plugin], "");
    let dead_letters = format!("edgewise/{id}/dead-letter/{plugin}");
    let sub = broker.subscribe(&["alerts/#", &format!("edgewise/{id}/dead-letter/#")]);
    broker.publish("sensors/oven/reading", br#"{"value": 91}"#, 1);
    broker.publish("sensors/oven/reading", b"\xff not json", 1);
    broker.publish("sensors/oven/reading", br#"{"reading": 3}"#, 1);
    broker.publish("sensors/oven/reading", br#"{"value": 77.5}"#, 1);
    let got = sub.collect_until(Duration::from_secs(60), |got| got.len() >= 4);
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        ["alerts/oven", &dead_letters, &dead_letters, "alerts/oven"],
        "{got:?}\n{}",
        gw.log()
    );
    assert!(got[0].1.contains("\"state\":\"high\""), "{got:?}");
    assert!(got[3].1.contains("\"state\":\"normal\""), "{got:?}");
    assert!(
        !gw.log().contains("trapped"),
        "no instance was lost: {}",
        gw.log()
    );
    [got[1].1.clone(), got[2].1.clone()]
}

#[test]
fn an_exception_in_python_is_a_dead_letter_with_its_text_and_the_plugin_keeps_its_state() {
    let [not_utf8, no_value] = failures_between_two_alerts("threshold-py", "py");
    assert!(
        not_utf8.contains("UnicodeDecodeError") || not_utf8.contains("JSONDecodeError"),
        "{not_utf8}"
    );
    assert!(no_value.contains("KeyError: 'value'"), "{no_value}");
}

#[test]
fn an_exception_in_javascript_is_a_dead_letter_with_its_text_and_the_plugin_keeps_its_state() {
    let [not_utf8, no_value] = failures_between_two_alerts("threshold-js", "js");
    assert!(
        not_utf8.contains("TypeError: not UTF-8: byte 0"),
        "{not_utf8}"
    );
    // The error's own text and the plugin's line.
    assert!(
        no_value.contains("TypeError: no \\\"value\\\" in") && no_value.contains("app.js:"),
        "{no_value}"
    );
}

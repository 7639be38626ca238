//! The inbound path under hostile input, against a real Mosquitto: messages larger than any
//! limit, plugins reaching for the gateway's own topics, two gateways with one id.
//!
//! Every test also checks that the gateway kept its one connection: a reconnect the test did
//! not cause is a failure.

use std::time::Duration;

use base64::Engine as _;
use edgewise_tests::mqtt::{Broker, Gateway};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// How many times the gateway connected to its broker.
fn connections(gateway: &Gateway) -> usize {
    gateway.log().matches("connected to the broker").count()
}

#[test]
fn a_message_over_every_limit_is_acknowledged_dead_lettered_cut_and_never_redelivered() {
    // Regression: a 2 MB QoS 1 message over the gateway's packet limit made rumqttc drop the
    // connection, and the broker sent it again at every reconnect, forever.
    let broker = Broker::start();
    let mut gateway = Gateway::start(&broker, "poison", &["template"], "");
    let letters = broker.subscribe(&["edgewise/poison/dead-letter/#"]);
    let echoes = broker.subscribe(&["echo/#"]);
    let big = vec![b'x'; 2 << 20];
    broker.publish("sensors/camera", &big, 1);
    broker.publish("sensors/after", b"still here", 1);

    let (_, letter) = letters
        .next(WAIT)
        .expect("a dead letter for the big message");
    let letter: Value = serde_json::from_str(&letter).expect("JSON dead letter");
    assert_eq!(letter["topic"], "sensors/camera", "{letter}");
    assert_eq!(letter["payload_bytes"], 2 << 20, "{letter}");
    assert_eq!(letter["truncated"], true, "{letter}");
    let kept = base64::engine::general_purpose::STANDARD
        .decode(letter["payload_base64"].as_str().unwrap_or_default())
        .expect("base64");
    assert_eq!(kept.len(), 1024, "a kilobyte of the input is kept");
    assert!(
        letter["error"]
            .as_str()
            .is_some_and(|e| e.contains("over the plugin's limit")),
        "{letter}"
    );
    assert_eq!(
        echoes.next(WAIT),
        Some(("echo/sensors/after".into(), "still here".into()))
    );
    assert_eq!(connections(&gateway), 1, "{}", gateway.log());

    // It was acknowledged: a restarted gateway is not handed it again. Anything redelivered
    // from the session would arrive before the marker.
    assert!(gateway.terminate(), "{}", gateway.log());
    gateway.launch(&broker);
    broker.publish("sensors/marker", b"marker", 1);
    assert_eq!(
        echoes.next(WAIT),
        Some(("echo/sensors/marker".into(), "marker".into()))
    );
    assert_eq!(letters.next(Duration::from_millis(300)), None);
}

#[test]
fn over_mqtt_5_the_broker_is_told_the_limit_and_drops_larger_messages_itself() {
    let broker = Broker::start();
    let gateway = Gateway::start(&broker, "poison-five", &["template"], "protocol = \"5\"\n");
    let echoes = broker.subscribe(&["echo/#"]);
    broker.publish("sensors/camera", &vec![b'x'; 2 << 20], 1);
    broker.publish("sensors/after", b"still here", 1);
    assert_eq!(
        echoes.next(WAIT),
        Some(("echo/sensors/after".into(), "still here".into())),
        "{}",
        gateway.log()
    );
    assert_eq!(connections(&gateway), 1, "{}", gateway.log());
}

#[test]
fn two_gateways_with_one_id_are_named_as_such_in_the_log() {
    // Regression: they took the session from each other every 250 ms, and the log said only
    // "Connection closed by peer abruptly".
    let broker = Broker::start();
    let first = Gateway::start(&broker, "twin", &["template"], "");
    let mut second = Gateway::prepare(&broker, "twin", &["template"], "");
    second.launch_in_background();
    let hint = "another edgewise process says it is online as this gateway";
    let deadline = std::time::Instant::now() + WAIT;
    let named = loop {
        let logs = [first.log(), second.log()];
        if let Some(log) = logs.iter().find(|l| l.contains(hint)) {
            break log.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "neither gateway said so:\n{}\n---\n{}",
            logs[0],
            logs[1]
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        named.contains("give every gateway its own `gateway-id`"),
        "{named}"
    );
}

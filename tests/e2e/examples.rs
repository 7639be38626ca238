//! The example plugins, each checked on real data through `edgewise replay`.

use edgewise_tests::{eval_set, model_file, plugin_dir, replay, replay_line, repo, wav_pcm};
use serde_json::{Value, json};

fn reading(sensor: &str, value: f64) -> String {
    json!({ "topic": format!("sensors/{sensor}/reading"), "payload": { "value": value } })
        .to_string()
}

#[test]
fn threshold_alerts_once_per_crossing_with_hysteresis() {
    let input = [
        reading("boiler", 70.0),
        reading("boiler", 80.5), // over 80: high
        reading("boiler", 85.0), // still high: no new alert
        reading("fridge", 3.0),
        reading("boiler", 79.0), // under the limit but within the 2.0 hysteresis: still high
        reading("boiler", 77.5), // below 78: normal
    ]
    .join("\n");
    let run = replay(&plugin_dir("threshold"), &input, &[]);
    assert!(run.success, "{}", run.log);
    let alerts: Vec<(String, Value)> = run
        .published
        .iter()
        .map(|p| (p.topic.clone(), p.json()))
        .collect();
    assert_eq!(
        alerts,
        vec![
            (
                "alerts/boiler".into(),
                json!({"sensor": "boiler", "state": "high", "value": 80.5, "limit": 80.0})
            ),
            (
                "alerts/boiler".into(),
                json!({"sensor": "boiler", "state": "normal", "value": 77.5, "limit": 80.0})
            ),
        ]
    );
}

#[test]
fn threshold_limit_comes_from_settings_and_can_be_overridden() {
    let run = replay(
        &plugin_dir("threshold"),
        &reading("fridge", 9.0),
        &["--set", "limit=8"],
    );
    assert!(run.success, "{}", run.log);
    assert_eq!(run.published.len(), 1);
    assert_eq!(run.published[0].json()["limit"], json!(8.0));
}

#[test]
fn template_republishes_under_its_prefix() {
    let input = json!({ "topic": "sensors/door", "payload": "open" }).to_string();
    let run = replay(&plugin_dir("template"), &input, &[]);
    assert!(run.success, "{}", run.log);
    assert_eq!(run.published.len(), 1);
    assert_eq!(
        (
            run.published[0].topic.as_str(),
            run.published[0].payload.as_slice()
        ),
        ("echo/sensors/door", &b"open"[..])
    );
}

#[test]
fn vibration_fault_accuracy_through_the_plugin_matches_the_training_script() {
    let heldout = std::fs::read_to_string(eval_set("vibration-fault")).expect("held-out data");
    let report: Value = serde_json::from_slice(
        &std::fs::read(model_file("vibration-fault", "report.json")).expect("report"),
    )
    .expect("report is JSON");
    let run = replay(&plugin_dir("vibration-fault"), &heldout, &[]);
    assert!(run.success, "{}", run.log);

    let labels = report["labels"].as_array().expect("labels");
    let script_predictions = report["predictions"].as_array().expect("predictions");
    assert_eq!(
        run.published.len(),
        labels.len(),
        "one diagnosis per window"
    );
    let classes: Vec<Value> = run
        .published
        .iter()
        .map(|p| p.json()["class"].clone())
        .collect();
    let agree = classes
        .iter()
        .zip(script_predictions)
        .filter(|(a, b)| a == b)
        .count();
    let correct = classes.iter().zip(labels).filter(|(a, b)| a == b).count();
    let accuracy = correct as f64 / labels.len() as f64;
    let script_accuracy = report["accuracy"].as_f64().expect("accuracy");
    println!(
        "plugin accuracy {accuracy:.4}, script {script_accuracy:.4}, {agree}/{} predictions agree",
        labels.len()
    );
    // Features are computed in f64 in both, summed in a different order: allow one flip in 200.
    assert!(
        agree * 200 >= labels.len() * 199,
        "only {agree} of {} predictions agree",
        labels.len()
    );
    assert!(
        (accuracy - script_accuracy).abs() <= 0.005,
        "plugin {accuracy} vs script {script_accuracy}"
    );
    assert!(
        accuracy > 0.9,
        "the model itself should be useful: {accuracy}"
    );
}

/// The spoken segments as (start, end) in ms, from speech.json.
fn spoken_segments() -> Vec<(f64, f64)> {
    let truth: Value = serde_json::from_slice(
        &std::fs::read(repo().join("plugins/voice-activity/testdata/speech.json"))
            .expect("speech.json"),
    )
    .expect("speech.json is JSON");
    truth["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| {
            (
                s["start_ms"].as_f64().expect("start"),
                s["end_ms"].as_f64().expect("end"),
            )
        })
        .collect()
}

/// Speech segments detected in the published events of one device, as (start, end) in ms.
fn detected_segments(events: &[Value]) -> Vec<(f64, f64)> {
    let mut segments = Vec::new();
    let mut open = None;
    for e in events {
        match e["event"].as_str() {
            Some("speech-start") => open = e["at_ms"].as_f64(),
            Some("speech-end") => {
                assert_eq!(e["start_ms"].as_f64(), open, "end matches its start");
                segments.push((
                    open.take().expect("end after a start"),
                    e["at_ms"].as_f64().expect("at_ms"),
                ));
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    segments
}

fn assert_segments_match(detected: &[(f64, f64)], spoken: &[(f64, f64)]) {
    assert_eq!(
        detected.len(),
        spoken.len(),
        "detected {detected:?}, spoken {spoken:?}"
    );
    for (d, s) in detected.iter().zip(spoken) {
        // A 32 ms frame, the model's onset, and the 300 ms silence rule set the tolerances.
        assert!(
            (d.0 - s.0).abs() <= 150.0,
            "speech starting at {} ms detected at {} ms",
            s.0,
            d.0
        );
        assert!(
            (d.1 - s.1).abs() <= 250.0,
            "speech ending at {} ms detected ending at {} ms",
            s.1,
            d.1
        );
    }
}

#[test]
fn voice_activity_finds_each_spoken_command_in_a_real_recording() {
    let (rate, pcm) = wav_pcm(&repo().join("plugins/voice-activity/testdata/speech.wav"));
    assert_eq!(rate, 16_000);
    // 512-sample frames, as a microphone driver would publish them.
    let input: Vec<String> = pcm
        .chunks(1024)
        .map(|frame| replay_line("audio/kitchen/pcm", frame))
        .collect();
    let run = replay(&plugin_dir("voice-activity"), &input.join("\n"), &[]);
    assert!(run.success, "{}", run.log);
    assert!(run.published.iter().all(|p| p.topic == "audio/kitchen/vad"));
    let events: Vec<Value> = run.published.iter().map(|p| p.json()).collect();
    assert_segments_match(&detected_segments(&events), &spoken_segments());
}

#[test]
fn voice_activity_keeps_each_device_stream_apart() {
    let (_, pcm) = wav_pcm(&repo().join("plugins/voice-activity/testdata/speech.wav"));
    // Two devices interleaved, one in odd-sized chunks: each must see the clip on its own.
    let hall: Vec<&[u8]> = pcm.chunks(1024).collect();
    let porch: Vec<&[u8]> = pcm.chunks(700).collect();
    let mut input = Vec::new();
    for i in 0..hall.len().max(porch.len()) {
        if let Some(frame) = hall.get(i) {
            input.push(replay_line("audio/hall/pcm", frame));
        }
        if let Some(frame) = porch.get(i) {
            input.push(replay_line("audio/porch/pcm", frame));
        }
    }
    let run = replay(&plugin_dir("voice-activity"), &input.join("\n"), &[]);
    assert!(run.success, "{}", run.log);
    for device in ["hall", "porch"] {
        let topic = format!("audio/{device}/vad");
        let events: Vec<Value> = run
            .published
            .iter()
            .filter(|p| p.topic == topic)
            .map(|p| p.json())
            .collect();
        assert_segments_match(&detected_segments(&events), &spoken_segments());
    }
}

/// speech.wav in chunks of `bytes`, as replay lines on `audio/<device>/pcm`.
fn speech_chunks(device: &str, bytes: usize) -> Vec<String> {
    let (_, pcm) = wav_pcm(&repo().join("plugins/voice-activity/testdata/speech.wav"));
    pcm.chunks(bytes)
        .map(|chunk| replay_line(&format!("audio/{device}/pcm"), chunk))
        .collect()
}

fn vad_events(run: &edgewise_tests::ReplayRun) -> Vec<Value> {
    run.published.iter().map(|p| p.json()).collect()
}

#[test]
fn voice_activity_events_carry_the_wall_clock_time_of_their_samples() {
    let (_, pcm) = wav_pcm(&repo().join("plugins/voice-activity/testdata/speech.wav"));
    // Each 1024-byte chunk (32 ms) arrives as its last sample is captured.
    let base = 1_796_000_000_000u64;
    let input: Vec<String> = pcm
        .chunks(1024)
        .enumerate()
        .map(|(i, chunk)| {
            json!({
                "topic": "audio/kitchen/pcm",
                "payload_base64": base64_of(chunk),
                "received_at_ms": base + (i as u64 + 1) * 32,
            })
            .to_string()
        })
        .collect();
    let run = replay(&plugin_dir("voice-activity"), &input.join("\n"), &[]);
    assert!(run.success, "{}", run.log);
    let events = vad_events(&run);
    assert_eq!(events.len(), 6, "{events:?}");
    for e in &events {
        let at = e["at_ms"].as_u64().expect("at_ms");
        assert_eq!(e["time_ms"].as_u64(), Some(base + at), "{e}");
        if let Some(start) = e["start_ms"].as_u64() {
            assert_eq!(e["start_time_ms"].as_u64(), Some(base + start), "{e}");
            assert_eq!(e["cut"], false);
        }
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn voice_activity_carries_an_odd_byte_to_the_next_chunk() {
    // Odd-sized chunks split samples between messages: every sample must still pair up.
    let run = replay(
        &plugin_dir("voice-activity"),
        &speech_chunks("porch", 1001).join("\n"),
        &[],
    );
    assert!(run.success, "{}", run.log);
    assert_segments_match(&detected_segments(&vad_events(&run)), &spoken_segments());
}

#[test]
fn voice_activity_refuses_a_chunk_that_is_not_raw_pcm_and_the_stream_goes_on() {
    let wav = std::fs::read(repo().join("plugins/voice-activity/testdata/speech.wav"))
        .expect("speech.wav");
    let mut input = vec![replay_line("audio/kitchen/pcm", &wav[..4096])];
    input.push(replay_line("audio/kitchen/pcm", br#"{"level": 0.3}"#));
    input.extend(speech_chunks("kitchen", 1024));
    let run = replay(&plugin_dir("voice-activity"), &input.join("\n"), &[]);
    assert!(!run.success, "two messages failed");
    assert!(
        run.log.contains(
            "is a WAV file, not audio/pcm; rate=16000; channels=1; format=s16le: send the samples alone"
        ),
        "{}",
        run.log
    );
    assert!(
        run.log.contains("is JSON text, not audio/pcm"),
        "{}",
        run.log
    );
    assert!(run.log.contains("2 of "), "{}", run.log);
    assert_segments_match(&detected_segments(&vad_events(&run)), &spoken_segments());
}

#[test]
fn voice_activity_refuses_a_threshold_under_its_hysteresis_at_start() {
    let run = replay(
        &plugin_dir("voice-activity"),
        &speech_chunks("kitchen", 1024)[..2].join("\n"),
        &["--set", "threshold=0.1"],
    );
    assert!(!run.success);
    assert!(
        run.log
            .contains("threshold 0.1 with hysteresis 0.15: speech would never end"),
        "{}",
        run.log
    );
}

#[test]
fn voice_activity_drops_speech_under_the_minimum_and_cuts_speech_over_the_maximum() {
    let input = speech_chunks("kitchen", 1024).join("\n");
    // Only the second command lasts over two seconds.
    let run = replay(
        &plugin_dir("voice-activity"),
        &input,
        &["--set", "min-speech-ms=2000"],
    );
    assert!(run.success, "{}", run.log);
    let spoken = spoken_segments();
    assert_segments_match(&detected_segments(&vad_events(&run)), &spoken[1..2]);

    // At most a second each (cut at the first 32 ms frame that reaches it): the 3.4 s command
    // comes in back-to-back pieces.
    let run = replay(
        &plugin_dir("voice-activity"),
        &input,
        &["--set", "max-speech-ms=1000"],
    );
    assert!(run.success, "{}", run.log);
    let events = vad_events(&run);
    let segments = detected_segments(&events);
    assert!(
        segments.iter().all(|(s, e)| e - s <= 1000.0 + 32.0),
        "{segments:?}"
    );
    let cut: Vec<&Value> = events.iter().filter(|e| e["cut"] == true).collect();
    assert!(cut.len() >= 3, "{events:?}");
    for end in cut {
        let at = end["at_ms"].as_u64();
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "speech-start" && e["at_ms"].as_u64() == at),
            "a cut segment goes on at once: {events:?}"
        );
    }
    assert_eq!(
        segments.first().map(|s| s.0),
        detected_segments(&vad_events(&replay(
            &plugin_dir("voice-activity"),
            &input,
            &[]
        )))
        .first()
        .map(|s| s.0)
    );
}

#[test]
fn voice_activity_keeps_its_memory_bounded_whatever_device_names_arrive() {
    // Each new name was a new stream, kept forever: about 2 770 names filled 16 MiB and every
    // stream was lost with the instance. Now the stalest stream makes room.
    let (_, pcm) = wav_pcm(&repo().join("plugins/voice-activity/testdata/speech.wav"));
    let chunk = &pcm[..1024];
    let mut input: Vec<String> = (0..5000)
        .map(|i| replay_line(&format!("audio/dev-{i}/pcm"), chunk))
        .collect();
    input.extend(speech_chunks("kitchen", 1024));
    let run = replay(&plugin_dir("voice-activity"), &input.join("\n"), &[]);
    assert!(run.success, "{}", run.log);
    assert!(
        run.log
            .contains("32 devices at once (max-devices): dropped the stream of"),
        "{}",
        run.log
    );
    let kitchen: Vec<Value> = run
        .published
        .iter()
        .filter(|p| p.topic == "audio/kitchen/vad")
        .map(|p| p.json())
        .collect();
    assert_segments_match(&detected_segments(&kitchen), &spoken_segments());
}

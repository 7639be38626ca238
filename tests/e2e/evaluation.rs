//! Evaluation: `edgewise eval` on the example plugins' evaluation sets, and the gateway's gate
//! before an update goes live, against a real Mosquitto with a stream running.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgewise_host::management::store::Store;
use edgewise_signing::SecretKey;
use edgewise_signing::bundle::DEFAULT_MAX_BYTES;
use edgewise_tests::mqtt::{Broker, Gateway};
use edgewise_tests::{
    copy_plugin, edgewise, edit, eval_set, model_file, pack_example, plugin_dir, repo, text,
};
use serde_json::Value;

use crate::management::{Managed, group_member};

const WAIT: Duration = Duration::from_secs(30);

/// vibration-fault v2: the same plugin, a new release.
const V2: &[(&str, &str)] = &[
    ("release = 1", "release = 2"),
    ("version = \"0.1.0\"", "version = \"0.2.0\""),
];

/// vibration-fault v2 with a default that reports almost every window `uncertain`: it fails
/// its gate.
const GATE_FAILING_V2: &[(&str, &str)] = &[
    ("release = 1", "release = 2"),
    ("version = \"0.1.0\"", "version = \"0.2.0\""),
    ("default = 0.0", "default = 0.999"),
];

fn eval(args: &[&str]) -> Output {
    Command::new(edgewise())
        .arg("eval")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("edgewise runs")
}

fn eval_json(args: &[&str]) -> (bool, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = eval(&all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.success(), json)
}

#[test]
fn vibration_fault_evaluates_to_the_training_scripts_accuracy_and_passes_its_gates() {
    let dir = plugin_dir("vibration-fault");
    let (passed, e) = eval_json(&[&dir.to_string_lossy()]);
    assert!(passed, "{e:#}");
    let script: Value = serde_json::from_slice(
        &std::fs::read(model_file("vibration-fault", "report.json")).expect("report"),
    )
    .expect("report is JSON");
    let metrics = &e["report"]["metrics"];
    // The plugin's predictions are the script's (examples.rs checks it window by window), so
    // its accuracy is the script's to the last sample.
    assert_eq!(metrics["accuracy"], script["accuracy"], "{e:#}");
    assert_eq!(metrics["samples"], 400.0);
    assert_eq!(metrics["failed"], 0.0);
    let counts = e["report"]["confusion"]["counts"]
        .as_array()
        .expect("a confusion matrix");
    let total: u64 = counts
        .iter()
        .flat_map(|row| row.as_array().expect("row"))
        .map(|c| c.as_u64().expect("count"))
        .sum();
    assert_eq!(total, 400);
    for class in ["healthy", "imbalance", "misalignment", "bearing"] {
        let auc = metrics[format!("auc[{class}]")].as_f64().expect("an AUC");
        assert!(auc > 0.9, "auc[{class}] = {auc}");
    }
    assert!(e["gates"].as_array().is_some_and(|g| g.len() == 7), "{e:#}");
}

#[test]
fn voice_activity_finds_the_labelled_speech_and_none_in_the_noise() {
    let (passed, e) = eval_json(&[&plugin_dir("voice-activity").to_string_lossy()]);
    assert!(passed, "{e:#}");
    let m = &e["report"]["metrics"];
    assert_eq!(m["samples"], 3.0, "three labelled segments: {e:#}");
    assert_eq!(m["segment_recall"], 1.0, "{e:#}");
    assert!(m["coverage"].as_f64().is_some_and(|c| c > 0.95), "{e:#}");
    assert!(m["false_ms"].as_f64().is_some_and(|f| f < 500.0), "{e:#}");
}

#[test]
fn a_failing_gate_exits_non_zero_and_names_the_gate_and_its_numbers() {
    // Reporting only near-certain diagnoses leaves most windows `uncertain`.
    let out = eval(&[
        &plugin_dir("vibration-fault").to_string_lossy(),
        "--set",
        "min-confidence=0.999",
    ]);
    assert!(!out.status.success());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains("uncertain"),
        "the matrix shows it: {stdout}"
    );
    assert!(stdout.contains("FAIL  accuracy >= 0.9"), "{stdout}");
    assert!(
        stderr.contains("evaluation gate failed: accuracy >= 0.9 (got "),
        "{stderr}"
    );
}

#[test]
fn against_a_second_version_shows_both_and_judges_relative_gates_on_it() {
    let worse = copy_plugin("vibration-fault");
    edit(
        worse.path(),
        "plugin.toml",
        "default = 0.0",
        "default = 0.9",
    );
    // The relative gate alone decides: the absolute ones are loosened for the worse copy.
    edit(
        worse.path(),
        "plugin.toml",
        "\"accuracy >= 0.9\"",
        "\"accuracy >= 0.1\"",
    );
    for class in ["healthy", "imbalance", "misalignment", "bearing"] {
        edit(
            worse.path(),
            "plugin.toml",
            &format!("\"f1[{class}] >= 0.85\""),
            &format!("\"f1[{class}] >= 0.1\""),
        );
    }
    let good = plugin_dir("vibration-fault");
    let (worse, good) = (worse.path().to_string_lossy(), good.to_string_lossy());

    let (passed, e) = eval_json(&[&good, "--against", &worse]);
    assert!(passed, "better than the baseline: {e:#}");
    assert!(
        e["baseline"]["metrics"]["accuracy"].as_f64() < e["report"]["metrics"]["accuracy"].as_f64()
    );

    let (passed, e) = eval_json(&[&worse, "--against", &good]);
    assert!(!passed, "worse than the baseline: {e:#}");
    let relative = e["gates"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["gate"] == "macro_f1 >= running - 0.02"))
        .expect("the relative gate");
    assert_eq!(relative["passed"], false, "{e:#}");

    let out = eval(&[&worse, "--against", &good]);
    let table = text(&out.stdout);
    assert!(
        table.contains("metric") && table.contains("against") && table.contains("change"),
        "{table}"
    );
}

#[test]
fn a_gate_on_an_unknown_metric_is_refused_at_pack_and_a_bundle_needs_a_keyring() {
    let dir = copy_plugin("vibration-fault");
    edit(
        dir.path(),
        "plugin.toml",
        "\"accuracy >= 0.9\"",
        "\"acuracy >= 0.9\"",
    );
    let key = dir.path().join("release.key");
    let secret = edgewise_signing::SecretKey::generate().expect("random key");
    std::fs::write(&key, secret.to_pem().expect("PEM")).expect("key");
    let pack = Command::new(edgewise())
        .arg("pack")
        .arg(dir.path())
        .arg("--key")
        .arg(&key)
        .arg("-o")
        .arg(dir.path().join("b.ewb"))
        .output()
        .expect("pack");
    assert!(!pack.status.success());
    let err = text(&pack.stderr);
    assert!(
        err.contains("evaluate.gates[0]") && err.contains("`acuracy` is not a metric"),
        "{err}"
    );
    assert!(!dir.path().join("b.ewb").exists());

    let bundle = dir.path().join("plain.ewb");
    std::fs::write(&bundle, b"not even a bundle").expect("write");
    let out = eval(&[&bundle.to_string_lossy()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("give --keyring"),
        "{}",
        text(&out.stderr)
    );
}

/// The diagnoses on `sub` until `count` arrived, as their classes.
fn classes(sub: &edgewise_tests::mqtt::Subscriber, count: usize) -> Vec<String> {
    sub.collect_until(WAIT, |got| got.len() >= count)
        .iter()
        .map(|(_, payload)| {
            let v: Value = serde_json::from_str(payload).expect("a diagnosis");
            v["class"].as_str().expect("class").to_owned()
        })
        .collect()
}

/// `count` windows of the evaluation set, as payloads.
fn windows(count: usize) -> Vec<String> {
    std::fs::read_to_string(eval_set("vibration-fault"))
        .expect("evaluation set")
        .lines()
        .take(count)
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            v["payload"].to_string()
        })
        .collect()
}

fn store_of(m: &Managed) -> Store {
    Store::open(
        &m.gateway.dir().join("store"),
        edgewise_signing::Keyring::from_file(&m.gateway.dir().join("keyring.toml"))
            .expect("keyring"),
        DEFAULT_MAX_BYTES,
    )
    .expect("store")
}

#[test]
fn an_update_that_fails_its_gate_is_refused_the_store_unchanged_and_the_stream_served_by_the_old() {
    let m = Managed::start("gate-refuses", "vibration-fault", &[], "");
    // v2 ships a default that makes it report almost everything as `uncertain`.
    let v2 = m.bundle("vibration-v2.ewb", "vibration-fault", GATE_FAILING_V2);
    let sub = m.broker.subscribe(&["plant/+/vibration/diagnosis"]);
    let before = store_of(&m).inventory().expect("inventory");
    let publisher = m.broker.publisher();
    let lines = windows(120);
    let stream = std::thread::spawn(move || {
        for batch in lines.chunks(10) {
            publisher.publish_lines("plant/pump-0/vibration", batch);
        }
    });
    let pushed = m.push(&v2);
    stream.join().expect("stream");
    let out = text(&pushed.stdout);
    assert!(!pushed.status.success(), "{out}");
    assert!(out.contains("\"state\":\"evaluating\""), "{out}");
    assert!(
        out.contains("\"state\":\"refused\"")
            && out.contains("evaluation gate failed: accuracy >= 0.9"),
        "{out}"
    );
    assert!(
        out.contains("\"metrics\""),
        "the metrics are in the reply: {out}"
    );

    // Every window was diagnosed, by v1 (which never says `uncertain` at its default).
    let got = classes(&sub, 120);
    assert_eq!(got.len(), 120);
    assert!(got.iter().all(|c| c != "uncertain"), "{got:?}");

    let after = store_of(&m).inventory().expect("inventory");
    assert_eq!(
        serde_json::to_value(&before).expect("json"),
        serde_json::to_value(&after).expect("json"),
        "the store is as before"
    );
    let status = text(&m.ctl(&["status"]).stdout);
    assert!(status.contains("\"release\":1"), "{status}");
    assert!(
        status.contains("\"refused-update\"") && status.contains("evaluation gate failed"),
        "the status says what was refused and why: {status}"
    );
}

#[test]
fn an_update_that_passes_its_gate_goes_live_with_its_metrics_kept_with_the_release() {
    let mut m = Managed::start("gate-passes", "vibration-fault", &[], "");
    let v2 = m.bundle("vibration-v2.ewb", "vibration-fault", V2);
    let pushed = m.push(&v2);
    let out = text(&pushed.stdout);
    assert!(pushed.status.success(), "{out}\n{}", text(&pushed.stderr));
    assert!(out.contains("\"state\":\"evaluated\""), "{out}");
    assert!(out.contains("\"state\":\"live\""), "{out}");

    let has_evaluation = |status: &str| {
        status.contains("\"release\":2")
            && status.contains("\"evaluation\"")
            && status.contains("\"accuracy\":0.975")
            // v1 ran the same set as the baseline of the relative gate.
            && status.contains("\"running\"")
    };
    let status = text(&m.ctl(&["status"]).stdout);
    assert!(has_evaluation(&status), "{status}");

    // Kept with the release: a restarted gateway still shows it.
    m.gateway.restart(&m.broker);
    let status = text(&m.ctl(&["status"]).stdout);
    assert!(has_evaluation(&status), "after a restart: {status}");
    let digest = store_of(&m)
        .inventory()
        .expect("inventory")
        .into_iter()
        .find(|i| i.name == "vibration-fault")
        .expect("installed")
        .digest;
    assert!(store_of(&m).evaluation(&digest).is_some());
}

/// Streams windows of the evaluation set on `plant/pump-0/vibration`, ten at a time, until
/// `stop` is set; returns how many it published.
fn stream_until(m: &Managed, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let publisher = m.broker.publisher();
    let windows = windows(400);
    std::thread::spawn(move || {
        let mut sent = 0;
        for batch in windows.chunks(10).cycle() {
            publisher.publish_lines("plant/pump-0/vibration", batch);
            sent += batch.len();
            if stop.load(Ordering::Relaxed) {
                return sent;
            }
        }
        sent
    })
}

/// A v2 of vibration-fault whose default leaves unsure windows `uncertain`: it passes gates
/// loosened to let it through, and disagrees with v1 on some live windows.
const UNSURE_V2: &[(&str, &str)] = &[
    ("release = 1", "release = 2"),
    ("version = \"0.1.0\"", "version = \"0.2.0\""),
    ("default = 0.0", "default = 0.9"),
    ("\"accuracy >= 0.9\",", ""),
    ("\"f1[healthy] >= 0.85\",", ""),
    ("\"f1[imbalance] >= 0.85\",", ""),
    ("\"f1[misalignment] >= 0.85\",", ""),
    ("\"f1[bearing] >= 0.85\",", ""),
    ("\"macro_f1 >= running - 0.02\",", ""),
];

#[test]
fn a_shadow_that_agrees_publishes_nothing_of_its_own_reports_agreement_and_is_promoted() {
    let m = Managed::start("shadow-promotes", "vibration-fault", &[], "");
    let v2 = m.bundle("vibration-v2.ewb", "vibration-fault", V2);
    let diagnoses = m.broker.subscribe(&["plant/+/vibration/diagnosis"]);
    let shadowed = m.broker.subscribe(&["edgewise/shadow-promotes/shadow/#"]);
    let stop = Arc::new(AtomicBool::new(false));
    let stream = stream_until(&m, stop.clone());
    let pushed = m.cli(&[
        "push",
        &v2.to_string_lossy(),
        "--gateway",
        "shadow-promotes",
        "--shadow",
        "--shadow-messages",
        "60",
        "--shadow-publish",
    ]);
    stop.store(true, Ordering::Relaxed);
    let sent = stream.join().expect("stream");
    let out = text(&pushed.stdout);
    assert!(pushed.status.success(), "{out}\n{}", text(&pushed.stderr));
    for state in ["evaluated", "shadowing", "promoted", "live"] {
        assert!(
            out.contains(&format!("\"state\":\"{state}\"")),
            "{state}: {out}"
        );
    }
    let promoted: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["state"] == "promoted")
        .expect("a promoted reply");
    let shadow = &promoted["shadow"];
    assert!(
        shadow["compared"].as_u64().is_some_and(|c| c >= 60),
        "{promoted}"
    );
    assert_eq!(
        shadow["agreement"], 1.0,
        "the same model agrees: {promoted}"
    );
    assert!(shadow["live-p99-ms"].as_f64().is_some() && shadow["shadow-p99-ms"].as_f64().is_some());

    // Every window was diagnosed exactly once on the plugin's topic: the shadow's outputs went
    // only under edgewise/<gateway>/shadow/.
    let got = diagnoses.collect_until(WAIT, |got| got.len() >= sent);
    assert_eq!(got.len(), sent);
    assert!(
        diagnoses.next(Duration::from_millis(500)).is_none(),
        "no more than one each"
    );
    let copies = shadowed.collect_until(WAIT, |got| !got.is_empty());
    assert!(
        copies[0].0.starts_with(
            "edgewise/shadow-promotes/shadow/vibration-fault/plant/pump-0/vibration/diagnosis"
        ),
        "{copies:?}"
    );
    let status = text(&m.ctl(&["status"]).stdout);
    assert!(status.contains("\"release\":2"), "{status}");
}

#[test]
fn a_shadow_that_disagrees_is_abandoned_with_its_disagreements_and_nothing_changes() {
    let m = Managed::start("shadow-abandons", "vibration-fault", &[], "");
    let v2 = m.bundle("vibration-v2.ewb", "vibration-fault", UNSURE_V2);
    let diagnoses = m.broker.subscribe(&["plant/+/vibration/diagnosis"]);
    let before = store_of(&m).inventory().expect("inventory");
    let stop = Arc::new(AtomicBool::new(false));
    let stream = stream_until(&m, stop.clone());
    let pushed = m.cli(&[
        "push",
        &v2.to_string_lossy(),
        "--gateway",
        "shadow-abandons",
        "--shadow",
        "--shadow-messages",
        "100",
        "--min-agreement",
        "0.999",
    ]);
    stop.store(true, Ordering::Relaxed);
    let sent = stream.join().expect("stream");
    let out = text(&pushed.stdout);
    assert!(!pushed.status.success(), "{out}");
    let abandoned: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["state"] == "abandoned")
        .unwrap_or_else(|| panic!("an abandoned reply: {out}"));
    assert!(
        abandoned["reason"]
            .as_str()
            .is_some_and(|r| r.contains("is below 0.999")),
        "{abandoned}"
    );
    let disagreements = abandoned["shadow"]["disagreements"]
        .as_object()
        .expect("disagreements by label");
    assert!(
        disagreements.keys().all(|k| k.ends_with("→uncertain")),
        "only windows v2 is unsure of differ: {abandoned}"
    );
    assert!(
        !abandoned["shadow"]["samples"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );

    // The live version answered everything, and never as v2 would.
    let got = classes(&diagnoses, sent);
    assert_eq!(got.len(), sent);
    assert!(got.iter().all(|c| c != "uncertain"));
    let after = store_of(&m).inventory().expect("inventory");
    assert_eq!(
        serde_json::to_value(&before).expect("json"),
        serde_json::to_value(&after).expect("json")
    );
    let status = text(&m.ctl(&["status"]).stdout);
    assert!(
        status.contains("\"release\":1") && status.contains("\"state\":\"abandoned\""),
        "{status}"
    );
}

#[test]
fn a_shadow_that_waits_for_the_operator_is_promoted_by_command() {
    let m = Managed::start("shadow-by-hand", "vibration-fault", &[], "");
    let v2 = m.bundle("vibration-v2.ewb", "vibration-fault", V2);
    let stop = Arc::new(AtomicBool::new(false));
    let stream = stream_until(&m, stop.clone());
    let pushed = m.cli(&[
        "push",
        &v2.to_string_lossy(),
        "--gateway",
        "shadow-by-hand",
        "--shadow",
        "--shadow-messages",
        "30",
        "--no-promote",
    ]);
    let out = text(&pushed.stdout);
    assert!(pushed.status.success(), "{out}");
    assert!(out.contains("\"state\":\"ready\""), "{out}");
    let status = text(&m.ctl(&["status"]).stdout);
    assert!(
        status.contains("\"release\":1") && status.contains("\"state\":\"ready\""),
        "still v1, with its shadow ready: {status}"
    );
    let promoted = m.ctl(&["promote", "vibration-fault"]);
    stop.store(true, Ordering::Relaxed);
    stream.join().expect("stream");
    let out = text(&promoted.stdout);
    assert!(promoted.status.success(), "{out}");
    assert!(out.contains("\"state\":\"live\""), "{out}");
    let status = text(&m.ctl(&["status"]).stdout);
    assert!(status.contains("\"release\":2"), "{status}");
    let again = m.ctl(&["abandon", "vibration-fault"]);
    assert!(!again.status.success());
    assert!(text(&again.stdout).contains("no shadow of `vibration-fault` runs"));
}

/// Three gateways of group `line`, each running vibration-fault v1 from its store.
struct Group {
    broker: Broker,
    gateways: Vec<Gateway>,
    release: SecretKey,
    work: tempfile::TempDir,
}

impl Group {
    fn start(ids: &[&str]) -> Group {
        let broker = Broker::start();
        let key = || SecretKey::generate().expect("random key");
        let (release, operator) = (key(), key());
        let work = tempfile::tempdir().expect("temporary directory");
        let keyring = work.path().join("keyring.toml");
        edgewise_tests::write_keyring(&keyring, &release, &operator);
        std::fs::write(work.path().join("ops.key"), operator.to_pem().expect("PEM")).expect("key");
        let v1 = pack_example("vibration-fault", &release, &[], false);
        let gateways = ids
            .iter()
            .map(|id| group_member(&broker, id, "line", &keyring, &v1))
            .collect();
        Group {
            broker,
            gateways,
            release,
            work,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(edgewise())
            .args(args)
            .args([
                "--broker",
                &format!("mqtt://127.0.0.1:{}", self.broker.port),
            ])
            .arg("--key")
            .arg(self.work.path().join("ops.key"))
            .output()
            .expect("edgewise runs")
    }

    /// `edgewise push` of vibration-fault with `changes` to the group with one canary;
    /// returns the canary's id.
    fn push_with_canary(&self, name: &str, changes: &[(&str, &str)], bake_s: &str) -> String {
        let bundle = self.work.path().join(name);
        std::fs::write(
            &bundle,
            pack_example("vibration-fault", &self.release, changes, false),
        )
        .expect("bundle");
        let pushed = self.cli(&[
            "push",
            &bundle.to_string_lossy(),
            "--group",
            "line",
            "--canary",
            "1",
            "--bake",
            bake_s,
        ]);
        let out = text(&pushed.stdout);
        assert!(pushed.status.success(), "{out}\n{}", text(&pushed.stderr));
        let canary = out
            .split("canaries ")
            .nth(1)
            .and_then(|rest| rest.split(" of 3 gateways").next())
            .unwrap_or_else(|| panic!("the canary is named: {out}"));
        assert!(!canary.contains(','), "one canary: {out}");
        canary.to_owned()
    }

    /// Waits until gateway `id`'s retained status satisfies `ready`; returns it.
    fn status_until(&self, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let status: Value = self
                .broker
                .retained(&format!("edgewise/{id}/status"), Duration::from_secs(1))
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null);
            if ready(&status) {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id}: {status:#}\n{}",
                self.gateways
                    .iter()
                    .find(|g| g.id == id)
                    .map(Gateway::log)
                    .unwrap_or_default()
            );
        }
    }
}

fn versions(status: &Value) -> Vec<String> {
    status["plugins"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["version"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_canary_that_fails_its_gate_halts_the_group_and_one_that_passes_leads_it() {
    let ids = ["line-a", "line-b", "line-c"];
    let group = Group::start(&ids);
    for id in ids {
        group.status_until(id, |s| s["state"] == "online" && s["plugins"].is_array());
    }

    // A release whose gate fails: the canary refuses it, the others never try it.
    let canary = group.push_with_canary("vibration-v2.ewb", GATE_FAILING_V2, "1");
    let failed = group.status_until(&canary, |s| s["fleet"]["state"] == "failed");
    assert!(
        failed["fleet"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("evaluation gate failed")),
        "{failed:#}"
    );
    assert_eq!(failed["fleet"]["canary"], true);
    for other in ids.iter().filter(|id| **id != canary) {
        let halted = group.status_until(other, |s| s["fleet"]["state"] == "halted");
        let error = halted["fleet"]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("canary {canary} failed"))
                && error.contains("evaluation gate failed"),
            "{halted:#}"
        );
        assert_eq!(versions(&halted), ["0.1.0"], "{halted:#}");
    }
    assert_eq!(versions(&failed), ["0.1.0"]);
    let table = text(&group.cli(&["fleet", "status", "--group", "line"]).stdout);
    assert_eq!(
        table
            .matches(&format!(" halted (canary {canary} failed"))
            .count(),
        2,
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains(&canary) && l.contains("[canary]") && l.contains("failed (")),
        "{table}"
    );

    // A release that passes: the canary leads, the others follow after the bake time.
    let canary = group.push_with_canary(
        "vibration-v3.ewb",
        &[
            ("release = 1", "release = 3"),
            ("version = \"0.1.0\"", "version = \"0.3.0\""),
        ],
        "2",
    );
    for id in ids {
        let converged = group.status_until(id, |s| {
            s["fleet"]["state"] == "converged" && versions(s) == ["0.3.0"]
        });
        assert_eq!(converged["fleet"]["canary"], id == canary, "{converged:#}");
    }
    for gw in &group.gateways {
        let followed = gw
            .log()
            .contains("every canary healthy for the bake time; applying the roll-out");
        assert_eq!(followed, gw.id != canary, "{}: {}", gw.id, gw.log());
    }
}

#[test]
fn a_canary_whose_shadow_disagrees_halts_the_group_with_the_shadows_numbers() {
    let ids = ["wing-a", "wing-b", "wing-c"];
    let group = Group::start(&ids);
    for id in ids {
        group.status_until(id, |s| s["state"] == "online" && s["plugins"].is_array());
    }
    let bundle = group.work.path().join("vibration-v2.ewb");
    std::fs::write(
        &bundle,
        pack_example("vibration-fault", &group.release, UNSURE_V2, false),
    )
    .expect("bundle");
    // A live stream for the shadows to compare on, until the roll-out has its outcome.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = group.broker.publisher();
    let lines = windows(400);
    let stream = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for batch in lines.chunks(10).cycle() {
                publisher.publish_lines("plant/pump-0/vibration", batch);
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        })
    };
    let pushed = group.cli(&[
        "push",
        &bundle.to_string_lossy(),
        "--group",
        "line",
        "--canary",
        "1",
        "--bake",
        "1",
        "--shadow",
        "--shadow-messages",
        "40",
        "--min-agreement",
        "0.999",
    ]);
    let out = text(&pushed.stdout);
    assert!(pushed.status.success(), "{out}\n{}", text(&pushed.stderr));
    let canary = out
        .split("canaries ")
        .nth(1)
        .and_then(|rest| rest.split(" of 3 gateways").next())
        .expect("the canary is named")
        .to_owned();
    let failed = group.status_until(&canary, |s| s["fleet"]["state"] == "failed");
    stop.store(true, Ordering::Relaxed);
    stream.join().expect("stream");
    let error = failed["fleet"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the shadow of `vibration-fault` was abandoned: agreement")
            && error.contains("is below 0.999"),
        "{failed:#}"
    );
    let entry = &failed["plugins"][0];
    assert_eq!(entry["shadow"]["state"], "abandoned", "{failed:#}");
    assert_eq!(versions(&failed), ["0.1.0"]);
    for other in ids.iter().filter(|id| **id != canary.as_str()) {
        let halted = group.status_until(other, |s| s["fleet"]["state"] == "halted");
        assert!(
            halted["fleet"]["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("canary {canary} failed: the shadow"))),
            "{halted:#}"
        );
        assert_eq!(versions(&halted), ["0.1.0"]);
    }
}

#[test]
fn detection_boxes_are_matched_by_overlap_and_label() {
    // `template` republishes what it gets: its outputs are the boxes the input names.
    let dir = copy_plugin("template");
    let manifest = dir.path().join("plugin.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("manifest");
    text.push_str(
        "\n[evaluate]\ndata = [\"eval/boxes.jsonl\"]\nkind = \"detection\"\nbox = \"/box\"\nlabel = \"/plate\"\ngates = [\"recall >= 0.5\", \"precision >= 0.9\"]\n",
    );
    std::fs::write(&manifest, text).expect("manifest");
    std::fs::create_dir_all(dir.path().join("eval")).expect("eval dir");
    let line = |found: Value, expect: Value| {
        serde_json::json!({ "topic": "sensors/gate/frame", "payload": found, "expect": expect })
            .to_string()
    };
    let lines = [
        // Found exactly.
        line(
            serde_json::json!({ "box": [0, 0, 10, 10], "plate": "AB123" }),
            serde_json::json!([{ "box": [0, 0, 10, 10], "label": "AB123" }]),
        ),
        // Found half off: overlap over union 1/3, under the default 0.5.
        line(
            serde_json::json!({ "box": [5, 0, 15, 10], "plate": "CD456" }),
            serde_json::json!([[0, 0, 10, 10]]),
        ),
        // Two plates, one found.
        line(
            serde_json::json!({ "box": [20, 0, 30, 10], "plate": "EF789" }),
            serde_json::json!([
                { "box": [0, 0, 10, 10], "label": "GH000" },
                { "box": [20, 0, 30, 10], "label": "EF789" }
            ]),
        ),
    ];
    std::fs::write(dir.path().join("eval/boxes.jsonl"), lines.join("\n")).expect("eval set");
    let (passed, e) = eval_json(&[&dir.path().to_string_lossy()]);
    let m = &e["report"]["metrics"];
    // 4 labelled, 3 found, 2 matched (both exactly).
    assert_eq!(m["samples"], 3.0, "{e:#}");
    assert_eq!(m["recall"], 0.5, "{e:#}");
    assert!(
        (m["precision"].as_f64().unwrap_or_default() - 2.0 / 3.0).abs() < 1e-9,
        "{e:#}"
    );
    assert_eq!(m["mean_iou"], 1.0, "{e:#}");
    assert!(!passed, "precision 2/3 fails its gate: {e:#}");
}

#[test]
fn an_evaluation_that_outruns_the_gate_timeout_is_refused_while_the_old_version_serves_on() {
    let m = Managed::start(
        "gate-too-slow",
        "hostile",
        &[],
        "[update]\ngate-timeout-s = 1\n",
    );
    // v2 ships a thousand messages of a few ms each: seconds of evaluation, over the limit.
    let dir = copy_plugin("hostile");
    edit(dir.path(), "plugin.toml", "release = 1", "release = 2");
    let manifest = dir.path().join("plugin.toml");
    let mut toml = std::fs::read_to_string(&manifest).expect("manifest");
    toml.push_str(
        "\n[evaluate]\ndata = [\"eval/slow.jsonl\"]\nkind = \"classification\"\nlabel = \"/x\"\n",
    );
    std::fs::write(&manifest, toml).expect("manifest");
    std::fs::create_dir_all(dir.path().join("eval")).expect("eval dir");
    let line = r#"{"topic": "hostile/in/x", "payload": "log-flood", "expect": "x"}"#;
    std::fs::write(
        dir.path().join("eval/slow.jsonl"),
        vec![line; 1000].join("\n"),
    )
    .expect("eval set");
    let v2 = m.pack_dir("hostile-v2.ewb", dir.path());
    let before = store_of(&m).inventory().expect("inventory");

    let counts = m.broker.subscribe(&["hostile/count"]);
    let publisher = m.broker.publisher();
    let stream = std::thread::spawn(move || {
        for batch in vec!["count".to_owned(); 200].chunks(10) {
            publisher.publish_lines("hostile/in/x", batch);
        }
    });
    let pushed = m.push(&v2);
    stream.join().expect("stream");
    let out = text(&pushed.stdout);
    assert!(!pushed.status.success(), "{out}");
    assert!(
        out.contains("\"state\":\"refused\"")
            && out.contains("the evaluation could not run: the evaluation took longer than 1 s"),
        "{out}"
    );
    let got: Vec<u64> = counts
        .collect_until(WAIT, |got| got.len() >= 200)
        .iter()
        .map(|(_, c)| c.parse().expect("count"))
        .collect();
    assert_eq!(got, (1..=200).collect::<Vec<u64>>(), "v1 counted every one");
    let after = store_of(&m).inventory().expect("inventory");
    assert_eq!(
        serde_json::to_value(&before).expect("json"),
        serde_json::to_value(&after).expect("json")
    );
}

#[test]
fn the_int8_vibration_model_runs_in_tract_and_the_gateway_judges_it_as_eval_does() {
    // tests/models/vibration.int8.onnx: `scripts/quantize vibration-fault`, committed.
    let int8 = copy_plugin("vibration-fault");
    std::fs::copy(
        repo().join("tests/models/vibration.int8.onnx"),
        int8.path().join("model/vibration.int8.onnx"),
    )
    .expect("int8 model");
    edit(
        int8.path(),
        "plugin.toml",
        "model/vibration.onnx",
        "model/vibration.int8.onnx",
    );
    edit(int8.path(), "plugin.toml", "release = 1", "release = 2");
    let f32 = plugin_dir("vibration-fault");
    let (passed, e) = eval_json(&[
        &int8.path().to_string_lossy(),
        "--against",
        &f32.to_string_lossy(),
    ]);
    let accuracy = |side: &str| e[side]["metrics"]["accuracy"].as_f64().expect("accuracy");
    // QLinearMatMul runs in tract: the int8 model is close to the f32 one (0.955 vs 0.975 here).
    assert!(
        (accuracy("report") - accuracy("baseline")).abs() <= 0.05,
        "{e:#}"
    );

    let m = Managed::start("int8", "vibration-fault", &[], "");
    let bundle = m.pack_dir("vibration-int8.ewb", int8.path());
    let pushed = m.push(&bundle);
    let out = text(&pushed.stdout);
    assert_eq!(
        pushed.status.success(),
        passed,
        "the gateway agrees with eval: {out}"
    );
    let failed: Vec<&str> = e["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .filter(|g| g["passed"] == false)
        .filter_map(|g| g["gate"].as_str())
        .collect();
    for gate in &failed {
        assert!(out.contains(gate), "the refusal names {gate}: {out}");
    }
    let status = text(&m.ctl(&["status"]).stdout);
    let release = if passed {
        "\"release\":2"
    } else {
        "\"release\":1"
    };
    assert!(status.contains(release), "{status}");
}

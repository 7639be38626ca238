//! The trust model under attack, end to end: keyring changes that lack a root threshold,
//! counters pushed out of their bounds, documents out of their time, rollback bundles pushed
//! as updates, compiled code that is not this bundle's. Every refusal is also checked to have
//! changed nothing on the gateway: its keyring file, its counters (`trust.json`), its store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use edgewise_host::clock::now_ms;
use edgewise_host::management::store::{Admit, Store};
use edgewise_signing::bundle::DEFAULT_MAX_BYTES;
use edgewise_signing::command::{Action, Command as Cmd, DesiredState};
use edgewise_signing::envelope::Envelope;
use edgewise_signing::{Bundle, Keyring, PayloadType, SecretKey};
use edgewise_tests::mqtt::{Broker, Gateway, Subscriber, free_port, http_get, sample};
use edgewise_tests::{edgewise, eventually, pack_example, text};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const YEAR_MS: u64 = 365 * 86_400_000;

/// A gateway whose keyring has two root keys (threshold 2), a release key and an operator key,
/// with `threshold` installed from its store.
struct Trusted {
    broker: Broker,
    gateway: Gateway,
    root_a: SecretKey,
    root_b: SecretKey,
    release: SecretKey,
    operator: SecretKey,
    keyring: PathBuf,
    work: tempfile::TempDir,
}

fn key() -> SecretKey {
    SecretKey::generate().expect("random key")
}

/// A keyring entry.
fn entry(name: &str, role: &str, key: &SecretKey) -> String {
    format!(
        "\n[[keys]]\nname = \"{name}\"\nrole = \"{role}\"\npublic-key = \"{}\"\n",
        key.public()
    )
}

impl Trusted {
    fn prepare(id: &str, extra: &str) -> Trusted {
        let broker = Broker::start();
        let gateway = Gateway::prepare(&broker, id, &[], extra);
        let (root_a, root_b, release, operator) = (key(), key(), key(), key());
        let keyring = gateway.dir().join("keyring.toml");
        let mut t = Trusted {
            broker,
            gateway,
            root_a,
            root_b,
            release,
            operator,
            keyring: keyring.clone(),
            work: tempfile::tempdir().expect("temporary directory"),
        };
        std::fs::write(&keyring, t.keyring_text(1, "2099-01-01T00:00:00Z", "")).expect("keyring");
        t.gateway.signed_only(&keyring);
        t.install("threshold");
        std::fs::write(
            t.work.path().join("ops.key"),
            t.operator.to_pem().expect("PEM"),
        )
        .expect("key file");
        t
    }

    fn start(id: &str, extra: &str) -> Trusted {
        let mut t = Self::prepare(id, extra);
        t.gateway.launch(&t.broker);
        t
    }

    /// Installs example `plugin`, signed by the release key, in the gateway's store.
    fn install(&self, plugin: &str) {
        let store = Store::open(
            &self.gateway.dir().join("store"),
            Keyring::from_file(&self.keyring).expect("keyring parses"),
            DEFAULT_MAX_BYTES,
        )
        .expect("store");
        store
            .install(
                &pack_example(plugin, &self.release, &[], false),
                Path::new("installed.ewb"),
                Admit::Update,
            )
            .unwrap_or_else(|e| panic!("{plugin} installs: {e}"));
    }

    /// The digest of `plugin`'s active bundle, from the store's state.
    fn active_digest(&self, plugin: &str) -> String {
        let state = self.gateway.dir().join("store/state.json");
        let state = std::fs::read_to_string(state).expect("the store's state");
        let state: Value = serde_json::from_str(&state).expect("JSON");
        state["plugins"][plugin]["active"]
            .as_str()
            .expect("active")
            .to_owned()
    }

    /// This gateway's keyring at `version`, expiring at `expires`, with `more` keys.
    fn keyring_text(&self, version: u64, expires: &str, more: &str) -> String {
        format!(
            "version = {version}\nexpires = {expires}\n\n[thresholds]\nroot = 2\n{}{}{}{}{more}",
            entry("root-a", "root", &self.root_a),
            entry("root-b", "root", &self.root_b),
            entry("release", "release", &self.release),
            entry("ops", "operator", &self.operator),
        )
    }

    /// The retained status, parsed.
    fn status(&self) -> Value {
        let topic = format!("edgewise/{}/status", self.gateway.id);
        let text = self
            .broker
            .retained(&topic, Duration::from_secs(1))
            .unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_default()
    }

    /// The status once `check` holds for it.
    fn status_when(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(WAIT, what, || {
            let status = self.status();
            match check(&status) {
                true => Ok(status),
                false => Err(format!("{status}\n{}", self.gateway.log())),
            }
        })
    }

    /// What a refusal may not change: the keyring file, the counters, the store's state.
    fn state(&self) -> (String, String, String) {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let store = self.gateway.dir().join("store");
        (
            read(self.keyring.clone()),
            read(store.join("trust.json")),
            read(store.join("state.json")),
        )
    }

    fn publish_keyring(&self, text: &str, signers: &[&SecretKey]) {
        let envelope = Envelope::sign(PayloadType::Keyring, text.as_bytes().to_vec(), signers);
        let topic = format!("edgewise/{}/keyring", self.gateway.id);
        self.broker
            .publish_retained(&topic, envelope.to_json(PayloadType::Keyring).as_bytes());
    }

    fn command(&self, id: &str, seq: u64, issued_at_ms: u64, expires_at_ms: u64) -> String {
        self.command_to(id, seq, issued_at_ms, expires_at_ms, Action::List)
    }

    fn command_to(
        &self,
        id: &str,
        seq: u64,
        issued_at_ms: u64,
        expires_at_ms: u64,
        action: Action,
    ) -> String {
        Cmd {
            id: id.into(),
            gateway: self.gateway.id.clone(),
            seq,
            issued_at_ms,
            expires_at_ms,
            action,
        }
        .sign(&self.operator)
    }

    fn send(&self, signed: &str) {
        let topic = format!("edgewise/{}/cmd", self.gateway.id);
        self.broker.publish(&topic, signed.as_bytes(), 1);
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
            .args(["--timeout", "30"])
            .output()
            .expect("edgewise runs")
    }
}

/// The replies on `replies` to command `id` once it has an outcome (refused, failed or done;
/// not `received` or `waiting`), one per line.
fn outcome(replies: &Subscriber, id: &str) -> String {
    let mine = |topic: &str| topic.ends_with(&format!("/{id}"));
    let got = replies.collect_until(WAIT, |r| {
        r.iter().any(|(topic, p)| {
            mine(topic)
                && ["refused", "failed", "done"]
                    .iter()
                    .any(|state| p.contains(&format!("\"state\":\"{state}\"")))
        })
    });
    got.into_iter()
        .filter(|(topic, _)| mine(topic))
        .map(|(_, p)| p)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_keyring_changes_only_with_a_root_threshold_of_the_current_keyring_and_the_new_one() {
    // Regression: any one trusted key, of any role, could rewrite the keyring: an operator key
    // re-enabled a revoked release key and added an attacker's, and version 2^64-1 passed.
    let t = Trusted::start("rooted", "");
    let before = t.state();
    let attacker = key();
    let with_attacker = entry("attacker", "release", &attacker);
    let next = t.keyring_text(2, "2099-01-01T00:00:00Z", &with_attacker);
    let (new_a, new_b) = (key(), key());
    let rotated = format!(
        "version = 2\nexpires = 2099-01-01T00:00:00Z\n\n[thresholds]\nroot = 2\n{}{}{}{}",
        entry("new-a", "root", &new_a),
        entry("new-b", "root", &new_b),
        entry("release", "release", &t.release),
        entry("ops", "operator", &t.operator),
    );
    let jump = t.keyring_text(u64::MAX, "2099-01-01T00:00:00Z", &with_attacker);
    let expired = t.keyring_text(2, "2020-01-01T00:00:00Z", &with_attacker);
    for (why, update, signers, reason) in [
        (
            "an operator key",
            &next,
            vec![&t.operator],
            "signed by 0 of the current keyring's root keys",
        ),
        (
            "release and operator keys",
            &next,
            vec![&t.release, &t.operator, &attacker],
            "signed by 0 of the current",
        ),
        (
            "one of two root keys",
            &next,
            vec![&t.root_a],
            "signed by 1 of the current keyring's root keys, 2 needed",
        ),
        (
            "one root key twice",
            &next,
            vec![&t.root_a, &t.root_a],
            "signed by 1 of the current keyring's root keys, 2 needed",
        ),
        (
            "a version jump",
            &jump,
            vec![&t.root_a, &t.root_b],
            "the next one is 2",
        ),
        (
            "an expired keyring",
            &expired,
            vec![&t.root_a, &t.root_b],
            "expired at 2020-01-01",
        ),
        (
            "a rotation signed by the new root only",
            &rotated,
            vec![&new_a, &new_b],
            "signed by 0 of the current keyring's root keys",
        ),
        (
            "a rotation without the new root",
            &rotated,
            vec![&t.root_a, &t.root_b],
            "signed by 0 of the new keyring's root keys",
        ),
    ] {
        t.publish_keyring(update, &signers);
        t.status_when(why, |s| {
            s["trust"]["keyring"]["refused"]
                .as_str()
                .is_some_and(|r| r.contains(reason))
        });
        assert_eq!(t.state(), before, "{why} changed something");
    }

    // Both roots: applied at once, and the key it adds signs bundles from then on.
    t.publish_keyring(&next, &[&t.root_a, &t.root_b]);
    let status = t.status_when("version 2 in force", |s| {
        s["trust"]["keyring"]["version"] == 2
    });
    assert!(status["trust"]["keyring"]["refused"].is_null(), "{status}");
    assert_eq!(std::fs::read_to_string(&t.keyring).expect("keyring"), next);
    let bundle = t.work.path().join("by-attacker-key.ewb");
    let changes = [
        ("release = 1", "release = 2"),
        ("version = \"0.1.0\"", "version = \"0.2.0\""),
    ];
    std::fs::write(
        &bundle,
        pack_example("threshold", &attacker, &changes, false),
    )
    .expect("bundle");
    let pushed = t.cli(&["push", &bundle.to_string_lossy(), "--gateway", "rooted"]);
    assert!(pushed.status.success(), "{}", text(&pushed.stdout));

    // A rotation signed by the current root and the new one.
    let rotated = rotated.replace("version = 2", "version = 3");
    t.publish_keyring(&rotated, &[&t.root_a, &t.root_b, &new_a, &new_b]);
    t.status_when("version 3 in force", |s| {
        s["trust"]["keyring"]["version"] == 3
    });
}

#[test]
fn commands_out_of_their_time_and_sequence_bounds_are_refused_and_jam_nothing() {
    // Regression: a command with `seq` ten years ahead was accepted, and every later command
    // was refused as a replay; commands issued in the future or valid for ten years passed.
    let t = Trusted::start("bounded", "");
    let replies = t
        .broker
        .subscribe(&[&format!("edgewise/{}/reply/#", t.gateway.id)]);
    let now = now_ms();
    let before = t.state();
    for (id, seq, issued, expires, reason) in [
        (
            "jam",
            now + 10 * YEAR_MS,
            now,
            now + 60_000,
            "beyond its own issued-at-ms",
        ),
        (
            "future",
            now + 10 * YEAR_MS,
            now + 10 * YEAR_MS,
            now + 10 * YEAR_MS + 60_000,
            "after this gateway's clock",
        ),
        (
            "forever",
            now,
            now,
            now + 10 * YEAR_MS,
            "longer than the 3600 s a command may be",
        ),
        (
            "stale",
            now - 120_000,
            now - 120_000,
            now - 60_000,
            "expired at",
        ),
    ] {
        t.send(&t.command(id, seq, issued, expires));
        let why = outcome(&replies, id);
        assert!(why.contains(reason), "{id}: {why}");
        assert_eq!(t.state(), before, "{id} changed something");
    }
    // Nothing was jammed: an ordinary command goes through.
    let now = now_ms();
    t.send(&t.command("ordinary", now, now, now + 60_000));
    let done = outcome(&replies, "ordinary");
    assert!(done.contains("\"state\":\"done\""), "{done}");

    // A digest is a topic level: `#` would subscribe the gateway to every retained bundle.
    for (id, digest) in [
        ("hash", "#"),
        ("plus", "+"),
        ("upper", &"AB".repeat(32)[..]),
    ] {
        for (form, action) in [
            (
                "update",
                Action::Update {
                    digest: digest.to_owned(),
                    shadow: None,
                },
            ),
            (
                "rollback",
                Action::Rollback {
                    plugin: "threshold".into(),
                    digest: Some(digest.to_owned()),
                },
            ),
        ] {
            let id = format!("{id}-{form}");
            let now = now_ms();
            t.send(&t.command_to(&id, now, now, now + 60_000, action));
            let why = outcome(&replies, &id);
            assert!(
                why.contains("\"state\":\"failed\"") && why.contains("is not a bundle digest"),
                "{id}: {why}"
            );
        }
    }
}

/// A desired state for group `line` of `plugins`, signed by the operator.
fn desired(t: &Trusted, version: u64, issued: u64, expires: u64) -> String {
    DesiredState {
        group: "line".into(),
        version,
        issued_at_ms: issued,
        expires_at_ms: expires,
        plugins: [("threshold".to_owned(), t.active_digest("threshold"))].into(),
        canary: None,
        shadow: Default::default(),
    }
    .sign(&t.operator)
}

#[test]
fn desired_states_out_of_bounds_are_refused_and_an_old_one_shows_as_stale() {
    // Regression: a desired state with version 2^64-1 jammed the fleet for good, and a gateway
    // shown a year-old desired state reported `converged`.
    let port = free_port();
    let extra = format!(
        "[trust]\ndesired-freshness-h = 1\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\npublish-interval-s = 0\n"
    );
    let mut t = Trusted::prepare("fleeted", &extra);
    edgewise_tests::edit(
        t.gateway.dir(),
        "gateway.toml",
        "plugins = \"plugins\"\n",
        "plugins = \"plugins\"\ngroup = \"line\"\n",
    );
    t.gateway.launch(&t.broker);
    let topic = "edgewise/fleet/line/desired";
    let now = now_ms();
    let before = t.state();
    for (why, version, issued, expires, reason) in [
        (
            "a jammed version",
            u64::MAX,
            now,
            now + 86_400_000,
            "beyond its own issued-at-ms",
        ),
        (
            "issued ten years ahead",
            now + 10 * YEAR_MS,
            now + 10 * YEAR_MS,
            now + 11 * YEAR_MS,
            "after this gateway's clock",
        ),
        (
            "expired",
            now - 86_400_000,
            now - 86_400_000,
            now - 3_600_000,
            "expired at",
        ),
    ] {
        t.broker
            .publish_retained(topic, desired(&t, version, issued, expires).as_bytes());
        t.status_when(why, |s| {
            s["fleet"]["state"] == "refused"
                && s["fleet"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(reason))
        });
        assert_eq!(t.state(), before, "{why} changed something");
    }

    // Two hours old and still valid: applied, and shown as stale (the window is an hour).
    let old = now - 2 * 3_600_000;
    t.broker
        .publish_retained(topic, desired(&t, old, old, now + 86_400_000).as_bytes());
    let status = t.status_when("an old desired state applied and stale", |s| {
        s["fleet"]["state"] == "converged"
            && s["trust"]["stale"].as_array().is_some_and(|r| {
                r.iter().any(|r| {
                    r.as_str()
                        .is_some_and(|r| r.contains("fleet updates may be withheld"))
                })
            })
    });
    let metrics = http_get(port, "/metrics");
    assert_eq!(
        sample(&metrics, "edgewise_trust_stale{document=\"desired-state\"}"),
        1.0,
        "{metrics}"
    );
    assert!(t.gateway.log().contains("stale trust"), "{status}");

    // A replay of something older than what was applied is refused.
    let older = old - 3_600_000;
    t.broker.publish_retained(
        topic,
        desired(&t, older, older, now + 86_400_000).as_bytes(),
    );
    t.status_when("an older one refused", |s| {
        s["fleet"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("older than version"))
    });

    // Re-signing the group's desired state as it is (the operator's heartbeat) clears it.
    let refreshed = t.cli(&["fleet", "refresh", "--group", "line"]);
    assert!(refreshed.status.success(), "{}", text(&refreshed.stderr));
    t.status_when("fresh again", |s| {
        s["fleet"]["state"] == "converged"
            && s["trust"]["stale"].as_array().is_some_and(Vec::is_empty)
    });
    let metrics = http_get(port, "/metrics");
    assert_eq!(
        sample(&metrics, "edgewise_trust_stale{document=\"desired-state\"}"),
        0.0,
        "{metrics}"
    );
}

#[test]
fn an_expired_keyring_takes_no_command_and_no_desired_state_and_says_so() {
    let mut t = Trusted::prepare("expired", "");
    edgewise_tests::edit(
        t.gateway.dir(),
        "gateway.toml",
        "plugins = \"plugins\"\n",
        "plugins = \"plugins\"\ngroup = \"line\"\n",
    );
    let expired = t.keyring_text(1, "2020-01-01T00:00:00Z", "");
    std::fs::write(&t.keyring, expired).expect("keyring");
    t.gateway.launch(&t.broker);
    // Stale, and the installed plugins keep running.
    t.status_when("stale keyring, plugins running", |s| {
        let stale = s["trust"]["stale"].as_array().is_some_and(|r| {
            r.iter().any(|r| {
                r.as_str()
                    .is_some_and(|r| r.contains("the keyring expired at 2020-01-01"))
            })
        });
        stale && s["plugins"][0]["state"] == "running"
    });
    let listed = t.cli(&["ctl", "expired", "list"]);
    assert!(!listed.status.success());
    assert!(
        text(&listed.stdout).contains("keyring expired"),
        "{}",
        text(&listed.stdout)
    );
    // Nor a desired state: this one would uninstall threshold.
    let before = t.state();
    let now = now_ms();
    let empty = DesiredState {
        group: "line".into(),
        version: now,
        issued_at_ms: now,
        expires_at_ms: now + 86_400_000,
        plugins: Default::default(),
        canary: None,
        shadow: Default::default(),
    };
    t.broker.publish_retained(
        "edgewise/fleet/line/desired",
        empty.sign(&t.operator).as_bytes(),
    );
    t.status_when("the desired state refused", |s| {
        s["fleet"]["state"] == "refused"
            && s["fleet"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("keyring expired"))
    });
    assert_eq!(t.state(), before, "threshold stays installed");
}

#[test]
fn a_rollback_bundle_goes_in_only_by_a_rollback_command_naming_it() {
    // Regression: an old release 1 packed as a rollback was accepted over release 3 when pushed
    // as an update, and became active: once signed, a rollback bundle was valid forever.
    let t = Trusted::start("rewind", "");
    let v2 = t.work.path().join("v2.ewb");
    let changes = [
        ("release = 1", "release = 2"),
        ("version = \"0.1.0\"", "version = \"0.2.0\""),
    ];
    std::fs::write(&v2, pack_example("threshold", &t.release, &changes, false)).expect("v2");
    let pushed = t.cli(&["push", &v2.to_string_lossy(), "--gateway", "rewind"]);
    assert!(pushed.status.success(), "{}", text(&pushed.stdout));

    let back = t.work.path().join("back.ewb");
    let back_bytes = pack_example(
        "threshold",
        &t.release,
        &[("default = 80.0", "default = 70.0")],
        true,
    );
    std::fs::write(&back, &back_bytes).expect("rollback bundle");
    let before = t.state();
    let pushed = t.cli(&["push", &back.to_string_lossy(), "--gateway", "rewind"]);
    assert!(!pushed.status.success());
    assert!(
        text(&pushed.stdout)
            .contains("installed only by an operator's rollback command naming its digest"),
        "{}",
        text(&pushed.stdout)
    );
    // The command was valid (its sequence number is used); the bundle it carried was not.
    let after = t.state();
    assert_eq!(
        (&after.0, &after.2),
        (&before.0, &before.2),
        "keyring and store unchanged"
    );

    let rolled = t.cli(&[
        "push",
        &back.to_string_lossy(),
        "--gateway",
        "rewind",
        "--rollback",
    ]);
    assert!(rolled.status.success(), "{}", text(&rolled.stdout));
    let digest = Bundle::parse(&back_bytes).expect("bundle").digest();
    let status = t.status_when("release 1 running", |s| {
        s["plugins"][0]["digest"] == digest.as_str()
    });
    assert_eq!(status["plugins"][0]["release"], 1, "{status}");
}

#[test]
fn a_swapped_or_flipped_compiled_artifact_is_compiled_again_logged_and_the_gateway_runs() {
    // Regression: another plugin's cached code in this plugin's slot ran as this plugin with
    // status `signed: true`, and bit flips in cached code loaded unnoticed or crashed the
    // gateway at start.
    let mut t = Trusted::prepare("cached", "");
    t.install("template");
    t.gateway.launch(&t.broker);
    assert!(t.gateway.terminate(), "{}", t.gateway.log());
    let cache = t.gateway.dir().join("store/cache");
    let entry_of = |digest: &str| edgewise_tests::cache_entry(&cache, digest);
    let (threshold, template) = (t.active_digest("threshold"), t.active_digest("template"));
    let (mine, theirs) = (entry_of(&threshold), entry_of(&template));
    let good = std::fs::read(&mine).expect("entry");
    let mut swapped = std::fs::read(&theirs).expect("entry");
    // With the header rewritten to name threshold's bundle: only the MAC can tell.
    swapped[8..72].copy_from_slice(threshold.as_bytes());
    let mut flipped = good.clone();
    let at = good.len() / 2;
    flipped[at] ^= 0x01;
    for (why, bytes) in [
        ("template's code in threshold's slot", swapped),
        ("a flipped bit", flipped),
    ] {
        std::fs::write(&mine, &bytes).expect("spoil the cache");
        t.gateway.launch(&t.broker);
        let alerts = t.broker.subscribe(&["alerts/#"]);
        t.broker
            .publish("sensors/oven/reading", br#"{"value": 95}"#, 1);
        assert_eq!(
            alerts.next(WAIT).map(|(topic, _)| topic),
            Some("alerts/oven".to_owned()),
            "{why}: threshold runs as threshold\n{}",
            t.gateway.log()
        );
        assert!(
            t.gateway.log().contains("its MAC does not match"),
            "{why}: logged\n{}",
            t.gateway.log()
        );
        assert!(t.gateway.terminate(), "{}", t.gateway.log());
        assert_ne!(
            std::fs::read(&mine).expect("entry"),
            bytes,
            "{why}: compiled again"
        );
    }
}

#[test]
fn a_gateway_whose_clock_was_wrong_is_reset_by_a_root_threshold_once() {
    use edgewise_signing::command::TrustReset;
    // The gateway once took documents while its clock was ten years ahead: its counters and
    // time floor now refuse everything issued today. Only a threshold of root keys, naming the
    // nonce in its status, can set them back, and only once.
    let t = Trusted::prepare("reset", "");
    let ahead = now_ms() + 10 * YEAR_MS;
    std::fs::write(
        t.gateway.dir().join("store/trust.json"),
        format!(
            r#"{{"command-seq": {ahead}, "desired-version": 0, "desired-issued-at-ms": 0, "time-floor-ms": {ahead}}}"#
        ),
    )
    .expect("trust.json");
    let mut t = t;
    t.gateway.launch(&t.broker);
    let replies = t
        .broker
        .subscribe(&[&format!("edgewise/{}/reply/#", t.gateway.id)]);
    let now = now_ms();
    t.send(&t.command("today", now, now, now + 60_000));
    let refused = outcome(&replies, "today");
    assert!(refused.contains("expired"), "{refused}");

    let nonce = t.status()["trust"]["reset-nonce"]
        .as_str()
        .expect("the status shows the reset nonce")
        .to_owned();
    let reset = |nonce: &str| TrustReset {
        gateway: t.gateway.id.clone(),
        nonce: nonce.to_owned(),
        command_seq: now,
        desired_version: 0,
        desired_issued_at_ms: 0,
        time_floor_ms: now,
    };
    let topic = format!("edgewise/{}/trust-reset", t.gateway.id);
    let before = t.state();
    for (why, signers, reason) in [
        (
            "one root key of two",
            vec![&t.root_a],
            "not signed by a threshold of root keys: 1 of the 2 root signatures needed",
        ),
        ("the operator key", vec![&t.operator], "root"),
        (
            "both root keys, another nonce",
            vec![&t.root_a, &t.root_b],
            "nonce",
        ),
    ] {
        let nonce = match why.ends_with("another nonce") {
            true => "0123",
            false => nonce.as_str(),
        };
        t.broker
            .publish(&topic, reset(nonce).sign(&signers).as_bytes(), 1);
        let answer = outcome(&replies, "trust-reset");
        assert!(
            answer.contains("\"refused\"") && answer.contains(reason),
            "{why}: {answer}"
        );
        assert_eq!(t.state(), before, "{why} changed nothing");
    }

    // The operator's tool: reads the nonce, signs with both root keys, waits for the answer.
    let keys: Vec<PathBuf> = [("root-a", &t.root_a), ("root-b", &t.root_b)]
        .into_iter()
        .map(|(name, key)| {
            let path = t.work.path().join(format!("{name}.pem"));
            std::fs::write(&path, key.to_pem().expect("PEM")).expect("key file");
            path
        })
        .collect();
    let out = t.cli(&[
        "keyring",
        "reset",
        "--gateway",
        "reset",
        "--root-key",
        &keys[0].to_string_lossy(),
        "--root-key",
        &keys[1].to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        t.gateway.log()
    );
    let later = now_ms();
    t.send(&t.command("after", later, later, later + 60_000));
    let done = outcome(&replies, "after");
    assert!(done.contains("\"state\":\"done\""), "{done}");

    // The same nonce again: used.
    t.broker.publish(
        &topic,
        reset(&nonce).sign(&[&t.root_a, &t.root_b]).as_bytes(),
        1,
    );
    let replayed = replies.collect_until(WAIT, |r| {
        r.iter()
            .filter(|(topic, _)| topic.ends_with("/trust-reset"))
            .any(|(_, p)| p.contains("\"refused\""))
    });
    assert!(
        replayed
            .iter()
            .any(|(_, p)| p.contains("\"refused\"") && p.contains("used already")),
        "{replayed:?}"
    );
    let fresh = t.status()["trust"]["reset-nonce"]
        .as_str()
        .map(str::to_owned);
    assert!(
        fresh.is_some_and(|n| n != nonce),
        "a new nonce after the reset"
    );
}

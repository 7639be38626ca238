//! Management over MQTT against a real Mosquitto and real `edgewise` processes: hot swaps under
//! a steady stream, automatic rollbacks, and every kind of refused command.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgewise_host::management::store::{Admit, Store};
use edgewise_signing::SecretKey;
use edgewise_signing::bundle::DEFAULT_MAX_BYTES;
use edgewise_signing::command::{Action, Command as Cmd};
use edgewise_tests::mqtt::{Broker, Gateway, Subscriber};
use edgewise_tests::{edgewise, pack_example, text};

const WAIT: Duration = Duration::from_secs(30);

/// A gateway run from its store, with `plugin` v1 installed, and the keys that manage it.
pub(crate) struct Managed {
    pub(crate) broker: Broker,
    pub(crate) gateway: Gateway,
    release: SecretKey,
    operator: SecretKey,
    work: tempfile::TempDir,
    /// How the command-line tools reach the broker.
    connection: Vec<String>,
}

impl Managed {
    pub(crate) fn start(id: &str, plugin: &str, changes: &[(&str, &str)], extra: &str) -> Managed {
        let mut m = Self::prepare(id, plugin, changes, extra);
        m.gateway.launch(&m.broker);
        m
    }

    /// Like `start`, without starting the gateway.
    fn prepare(id: &str, plugin: &str, changes: &[(&str, &str)], extra: &str) -> Managed {
        let broker = Broker::start();
        let connection = vec![
            "--broker".into(),
            format!("mqtt://127.0.0.1:{}", broker.port),
        ];
        Self::prepare_on(broker, connection, id, plugin, changes, extra)
    }

    /// Like `prepare`, on `broker`, which the tools reach with `connection` arguments.
    fn prepare_on(
        broker: Broker,
        connection: Vec<String>,
        id: &str,
        plugin: &str,
        changes: &[(&str, &str)],
        extra: &str,
    ) -> Managed {
        let key = || SecretKey::generate().expect("random key");
        let (release, operator) = (key(), key());
        let mut gateway = Gateway::prepare(&broker, id, &[], extra);
        let keyring = gateway.dir().join("keyring.toml");
        edgewise_tests::write_keyring(&keyring, &release, &operator);
        gateway.signed_only(&keyring);
        let store = Store::open(
            &gateway.dir().join("store"),
            edgewise_signing::Keyring::from_file(&keyring).expect("keyring parses"),
            DEFAULT_MAX_BYTES,
        )
        .expect("store");
        store
            .install(
                &pack_example(plugin, &release, changes, false),
                Path::new("v1.ewb"),
                Admit::Update,
            )
            .expect("v1 installs");
        let work = tempfile::tempdir().expect("temporary directory");
        std::fs::write(work.path().join("ops.key"), operator.to_pem().expect("PEM")).expect("key");
        Managed {
            broker,
            gateway,
            release,
            operator,
            work,
            connection,
        }
    }

    /// Writes a bundle of `plugin` with `changes` and returns its path.
    pub(crate) fn bundle(&self, name: &str, plugin: &str, changes: &[(&str, &str)]) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(&path, pack_example(plugin, &self.release, changes, false)).expect("bundle");
        path
    }

    /// Packs the plugin directory `dir` with the release key into `name`; returns its path.
    pub(crate) fn pack_dir(&self, name: &str, dir: &Path) -> PathBuf {
        let path = self.work.path().join(name);
        let bundle = edgewise_signing::bundle::pack(dir, &self.release, false, &mut |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, bundle.to_bytes()).expect("bundle");
        path
    }

    /// `edgewise push <bundle>` to this gateway.
    pub(crate) fn push(&self, bundle: &Path) -> Output {
        self.cli(&[
            "push",
            &bundle.to_string_lossy(),
            "--gateway",
            &self.gateway.id,
        ])
    }

    /// `edgewise ctl <gateway> <args>`.
    pub(crate) fn ctl(&self, args: &[&str]) -> Output {
        let mut all = vec!["ctl", self.gateway.id.as_str()];
        all.extend(args);
        self.cli(&all)
    }

    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        let key = self.work.path().join("ops.key");
        Command::new(edgewise())
            .args(args)
            .args(&self.connection)
            .arg("--key")
            .arg(key)
            .args(["--timeout", "30"])
            .output()
            .expect("edgewise runs")
    }

    /// A command for this gateway, valid for a minute, with sequence number `seq`.
    fn command(&self, id: &str, seq: u64, action: Action) -> Cmd {
        let now = now_ms();
        Cmd {
            id: id.into(),
            gateway: self.gateway.id.clone(),
            seq,
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
            action,
        }
    }

    fn send(&self, signed: &str) {
        self.broker.publish(
            &format!("edgewise/{}/cmd", self.gateway.id),
            signed.as_bytes(),
            1,
        );
    }

    fn replies(&self) -> Subscriber {
        self.broker
            .subscribe(&[&format!("edgewise/{}/reply/#", self.gateway.id)])
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Publishes `lines` on `topic` from a thread, in batches of 10, while the test goes on.
fn stream(broker: &Broker, topic: &'static str, lines: Vec<String>) -> std::thread::JoinHandle<()> {
    let publisher = broker.publisher();
    std::thread::spawn(move || {
        for batch in lines.chunks(10) {
            publisher.publish_lines(topic, batch);
        }
    })
}

#[test]
fn a_hot_swap_under_a_steady_stream_hands_every_message_to_exactly_one_version_in_order() {
    let m = Managed::start("swap", "template", &[], "");
    let v2 = m.bundle(
        "template-v2.ewb",
        "template",
        &[
            ("release = 1", "release = 2"),
            ("version = \"0.1.0\"", "version = \"0.2.0\""),
            ("prefix = \"echo\"", "prefix = \"echo/v2\""),
        ],
    );
    let sub = m.broker.subscribe(&["echo/#"]);
    let sent: Vec<String> = (0..600).map(|i| format!("{i:04}")).collect();
    let publisher = stream(&m.broker, "sensors/line", sent.clone());
    let mut got = sub.collect_until(WAIT, |got| got.len() >= 50);
    let pushed = m.push(&v2);
    assert!(
        pushed.status.success(),
        "{}\n{}",
        text(&pushed.stdout),
        text(&pushed.stderr)
    );
    assert!(
        text(&pushed.stdout).contains("\"state\":\"live\""),
        "{}",
        text(&pushed.stdout)
    );
    publisher.join().expect("publisher");
    let more = sub.collect_until(WAIT, |more| got.len() + more.len() >= sent.len());
    got.extend(more);
    assert_eq!(sub.next(Duration::from_millis(500)), None, "nothing twice");

    let seqs: Vec<(bool, u32)> = got
        .iter()
        .map(|(topic, payload)| {
            (
                topic.starts_with("echo/v2/"),
                payload.parse().expect("sequence"),
            )
        })
        .collect();
    let mut all: Vec<u32> = seqs.iter().map(|(_, s)| *s).collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "outputs in order: {all:?}"
    );
    all.sort_unstable();
    assert_eq!(
        all,
        (0..600).collect::<Vec<u32>>(),
        "every message exactly once"
    );
    let last_old = seqs.iter().filter(|(new, _)| !new).map(|(_, s)| *s).max();
    let first_new = seqs.iter().filter(|(new, _)| *new).map(|(_, s)| *s).min();
    match (last_old, first_new) {
        (Some(old), Some(new)) => assert_eq!(old + 1, new, "the switch falls between two messages"),
        other => panic!(
            "both versions should have handled some: {other:?}\n{}",
            m.gateway.log()
        ),
    }
    let again = m.push(&v2);
    assert!(
        again.status.success(),
        "the same bundle twice is not an error"
    );
    assert!(text(&again.stdout).contains("already the running bundle"));
    let listed = m.ctl(&["list"]);
    assert!(
        text(&listed.stdout).contains("\"version\":\"0.2.0\""),
        "{}",
        text(&listed.stdout)
    );
}

#[test]
fn a_new_version_that_fails_init_is_rolled_back_and_the_stream_never_notices() {
    let m = Managed::start("init-fail", "hostile", &[], "");
    let v2 = m.bundle(
        "hostile-v2.ewb",
        "hostile",
        &[
            ("release = 1", "release = 2"),
            ("default = \"ok\"", "default = \"panic\""),
        ],
    );
    let sub = m.broker.subscribe(&["hostile/count"]);
    let publisher = stream(&m.broker, "hostile/in/x", vec!["count".to_owned(); 200]);
    let mut got = sub.collect_until(WAIT, |got| got.len() >= 20);
    let pushed = m.push(&v2);
    assert!(!pushed.status.success());
    let out = text(&pushed.stdout);
    assert!(
        out.contains("\"state\":\"rolled-back\"") && out.contains("failed to start"),
        "{out}"
    );
    publisher.join().expect("publisher");
    got.extend(sub.collect_until(WAIT, |more| got.len() + more.len() >= 200));
    let counts: Vec<u64> = got.iter().map(|(_, c)| c.parse().expect("count")).collect();
    assert_eq!(
        counts,
        (1..=200).collect::<Vec<u64>>(),
        "one instance of v1 counted them all"
    );
    let status = m.ctl(&["status"]);
    assert!(
        text(&status.stdout).contains("\"release\":1"),
        "{}",
        text(&status.stdout)
    );
}

#[test]
fn a_new_version_that_traps_on_probation_is_rolled_back_and_its_message_handled_by_the_old() {
    let m = Managed::start(
        "probation",
        "hostile",
        &[],
        "\n[update]\nmax-trap-share = 0.0\n",
    );
    let v2 = m.bundle(
        "hostile-v2.ewb",
        "hostile",
        &[
            ("release = 1", "release = 2"),
            (
                "type = \"integer\"\ndefault = 0\nmin = 0\ndescription = \"trap on this message",
                "type = \"integer\"\ndefault = 5\nmin = 0\ndescription = \"trap on this message",
            ),
        ],
    );
    let replies = m.replies();
    let sub = m
        .broker
        .subscribe(&["hostile/count", "edgewise/probation/dead-letter/#"]);
    m.broker
        .publish_lines("hostile/in/x", &vec!["count".to_owned(); 30]);
    let mut got = sub.collect_until(WAIT, |got| got.len() >= 30);
    let pushed = m.push(&v2);
    assert!(pushed.status.success(), "{}", text(&pushed.stdout));
    m.broker
        .publish_lines("hostile/in/x", &vec!["count".to_owned(); 30]);
    got.extend(sub.collect_until(WAIT, |more| got.len() + more.len() >= 60));
    assert_eq!(got.len(), 60, "an output for every message: {got:?}");
    assert!(
        got.iter().all(|(topic, _)| topic == "hostile/count"),
        "no dead letters: {got:?}"
    );
    // v1 counted 30, v2 counted 4 and trapped on its 5th, which v1 then took as its 31st.
    let counts: Vec<u64> = got.iter().map(|(_, c)| c.parse().expect("count")).collect();
    let expected: Vec<u64> = (1..=30).chain(1..=4).chain(31..=56).collect();
    assert_eq!(counts, expected);
    let rolled = replies.collect_until(WAIT, |r| r.iter().any(|(_, p)| p.contains("rolled-back")));
    assert!(
        rolled
            .iter()
            .any(|(_, p)| p.contains("rolled-back") && p.contains("trapped on probation")),
        "{rolled:?}"
    );
    let listed = m.ctl(&["list"]);
    assert!(
        text(&listed.stdout).contains("\"release\":1"),
        "{}",
        text(&listed.stdout)
    );
}

#[test]
fn forged_replayed_expired_misdirected_retained_and_malformed_commands_are_refused() {
    let mut m = Managed::prepare("guarded", "threshold", &[], "");
    // Retained before the gateway subscribes: it arrives flagged retained, and is refused.
    let cmd_topic = format!("edgewise/{}/cmd", m.gateway.id);
    let sticky = m.command("sticky", 5, Action::List).sign(&m.operator);
    m.broker.publish_retained(&cmd_topic, sticky.as_bytes());
    let replies = m.replies();
    m.gateway.launch(&m.broker);
    let reason_for = |id: &str| {
        let got = replies.collect_until(WAIT, |r| {
            r.iter().any(|(t, p)| {
                t.ends_with(&format!("/{id}")) && (p.contains("refused") || p.contains("done"))
            })
        });
        got.into_iter()
            .filter(|(t, _)| t.ends_with(&format!("/{id}")))
            .map(|(_, p)| p)
            .collect::<Vec<_>>()
            .join("\n")
    };

    assert!(reason_for("sticky").contains("a retained message is not a command"));

    let accepted = m.command("first", 10, Action::List).sign(&m.operator);
    m.send(&accepted);
    assert!(reason_for("first").contains("\"state\":\"done\""));

    m.send(&m.command("again", 10, Action::List).sign(&m.operator));
    assert!(reason_for("again").contains("sequence number 10 already used"));

    let mut expired = m.command("late", 11, Action::List);
    expired.expires_at_ms = now_ms() - 1000;
    m.send(&expired.sign(&m.operator));
    assert!(reason_for("late").contains("expired"));

    let mut elsewhere = m.command("lost", 12, Action::List);
    elsewhere.gateway = "another".into();
    m.send(&elsewhere.sign(&m.operator));
    assert!(reason_for("lost").contains("for gateway `another`"));

    m.send(
        &m.command(
            "forged",
            13,
            Action::Stop {
                plugin: "threshold".into(),
            },
        )
        .sign(&m.release),
    );
    assert!(reason_for("forged").contains("is a release key, not an operator key"));

    let stranger = SecretKey::generate().expect("key");
    m.send(&m.command("stranger", 14, Action::List).sign(&stranger));
    assert!(reason_for("stranger").contains("not in the keyring"));

    // Clearing the retained command: an empty retained message (refused as malformed).
    m.broker.publish_retained(&cmd_topic, b"");

    m.send("{this is not json");
    assert!(reason_for("invalid").contains("malformed"));

    // A QoS 1 duplicate of an accepted command is answered again, not run again.
    m.send(&accepted);
    let first = replies.collect_until(Duration::from_secs(3), |r| {
        r.iter().filter(|(t, _)| t.ends_with("/first")).count() >= 1
    });
    assert!(
        first
            .iter()
            .all(|(_, p)| !p.contains("\"state\":\"received\"")),
        "answered with its last reply, not received again: {first:?}"
    );
    assert!(
        first.iter().any(|(_, p)| p.contains("\"state\":\"done\"")),
        "{first:?}"
    );

    // None of it changed anything.
    let listed = m.ctl(&["list"]);
    let out = text(&listed.stdout);
    assert!(
        out.contains("\"name\":\"threshold\"") && out.contains("\"state\":\"running\""),
        "{out}\n{}",
        m.gateway.log()
    );
}

#[test]
fn stop_start_config_and_rollback_by_command() {
    let m = Managed::start("knobs", "threshold", &[], "");
    let sub = m.broker.subscribe(&["alerts/#"]);
    let ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    ok(m.ctl(&["stop", "threshold"]));
    m.broker
        .publish("sensors/oven/reading", br#"{"value": 95}"#, 1);
    assert_eq!(
        sub.next(Duration::from_secs(1)),
        None,
        "a stopped plugin gets nothing"
    );
    ok(m.ctl(&["start", "threshold"]));
    m.broker
        .publish("sensors/oven/reading", br#"{"value": 95}"#, 1);
    assert!(sub.next(WAIT).is_some_and(|(t, _)| t == "alerts/oven"));

    // Raise the limit above the reading: no alert for 95 now.
    ok(m.ctl(&["config", "threshold", "--set", "limit=99"]));
    m.broker
        .publish("sensors/kiln/reading", br#"{"value": 95}"#, 1);
    m.broker
        .publish("sensors/kiln/reading", br#"{"value": 120}"#, 1);
    let (topic, payload) = sub.next(WAIT).expect("an alert");
    assert!(
        topic == "alerts/kiln" && payload.contains("120"),
        "{payload}"
    );

    let v2 = m.bundle(
        "threshold-v2.ewb",
        "threshold",
        &[
            ("release = 1", "release = 2"),
            ("version = \"0.1.0\"", "version = \"0.2.0\""),
        ],
    );
    ok(m.push(&v2));
    assert!(ok(m.ctl(&["list"])).contains("\"version\":\"0.2.0\""));
    ok(m.ctl(&["rollback", "threshold"]));
    assert!(ok(m.ctl(&["list"])).contains("\"version\":\"0.1.0\""));
}

#[test]
fn a_setting_the_plugin_refuses_or_does_not_declare_changes_nothing() {
    let mut m = Managed::start("settings", "threshold", &[], "");
    let refused = |out: Output, why: &str| {
        let stdout = text(&out.stdout);
        assert!(!out.status.success(), "refused: {stdout}");
        assert!(stdout.contains(why), "{why}: {stdout}");
    };
    // `limit` is a number: `hot` is refused by the manifest's declaration, nothing is saved.
    refused(
        m.ctl(&["config", "threshold", "--set", "limit=hot"]),
        "setting `limit`: `hot` is not accepted: expected number",
    );
    refused(
        m.ctl(&[
            "config",
            "threshold",
            "--set",
            "colour=red",
            "--unset",
            "shade",
        ]),
        "`threshold` has no setting `colour`, `shade`; its manifest declares `hysteresis`, `limit`",
    );
    // After a restart the plugin runs with what it had: nothing was saved.
    assert!(m.gateway.terminate(), "{}", m.gateway.log());
    m.gateway.launch(&m.broker);
    let listed = text(&m.ctl(&["list"]).stdout);
    assert!(
        listed.contains("\"state\":\"running\""),
        "{listed}\n{}",
        m.gateway.log()
    );

    let sub = m.broker.subscribe(&["alerts/#"]);
    let ok = |out: Output| assert!(out.status.success(), "{}", text(&out.stdout));
    ok(m.ctl(&["config", "threshold", "--set", "limit=99"]));
    m.broker
        .publish("sensors/kiln/reading", br#"{"value": 95}"#, 1);
    // Unset: back to the manifest's limit (80), under which 95 is an alert.
    ok(m.ctl(&["config", "threshold", "--unset", "limit"]));
    m.broker
        .publish("sensors/oven/reading", br#"{"value": 95}"#, 1);
    let (topic, _) = sub.next(WAIT).expect("an alert");
    assert_eq!(topic, "alerts/oven", "none for the kiln under limit 99");
}

#[test]
fn ctl_says_soon_when_no_such_gateway_is_on_the_broker_and_when_the_gateway_is_offline() {
    // Regression: a mistyped id waited the whole timeout (60 s) and said only "no outcome".
    let mut m = Managed::start("present", "threshold", &[], "");
    let out = m.cli(&["ctl", "absent", "list"]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("no gateway `absent`") && said.contains("edgewise/absent/status"),
        "{said}"
    );
    assert!(
        !said.contains("no outcome"),
        "it did not wait for the timeout: {said}"
    );

    // Killed, the gateway's last will says it is offline and why; a command says so and
    // waits for it, and is answered when it is back.
    m.gateway.kill();
    let mut ctl = Command::new(edgewise())
        .args(["ctl", "present", "list", "--timeout", "60", "--key"])
        .arg(m.work.path().join("ops.key"))
        .args(&m.connection)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("edgewise runs");
    let mut stderr = std::io::BufReader::new(ctl.stderr.take().expect("stderr"));
    let mut said = String::new();
    // The broker may still hold the online status for a moment: lines until the will's.
    while !said.contains("is offline") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) == 0 {
            break;
        }
        said.push_str(&line);
    }
    assert!(
        said.contains("present is offline (connection lost"),
        "{said}"
    );
    m.gateway.launch(&m.broker);
    let out = ctl.wait_with_output().expect("ctl ends");
    assert!(
        out.status.success(),
        "answered once back: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("threshold"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn two_gateways_of_a_group_converge_on_a_new_desired_state_one_of_them_after_being_offline() {
    let broker = Broker::start();
    let key = || SecretKey::generate().expect("random key");
    let (release, operator) = (key(), key());
    let work = tempfile::tempdir().expect("temporary directory");
    let keyring = work.path().join("keyring.toml");
    edgewise_tests::write_keyring(&keyring, &release, &operator);
    let v1 = pack_example("template", &release, &[], false);
    let mut gateways: Vec<Gateway> = ["line-a", "line-b"]
        .iter()
        .map(|id| group_member(&broker, id, "line", &keyring, &v1))
        .collect();
    let broker_url = format!("mqtt://127.0.0.1:{}", broker.port);
    let fleet_status = || {
        let out = Command::new(edgewise())
            .args([
                "fleet",
                "status",
                "--group",
                "line",
                "--broker",
                &broker_url,
            ])
            .output()
            .expect("edgewise runs");
        text(&out.stdout)
    };
    // Listed before any desired state reached them (regression: a gateway of a group was
    // missing from `fleet status` until the first `push --group`).
    let before = fleet_status();
    assert!(before.contains("group line: 2 gateways"), "{before}");
    assert_eq!(before.matches("waiting").count(), 2, "{before}");
    gateways[1].kill(); // line-b is away during the roll-out

    let v2 = work.path().join("template-v2.ewb");
    std::fs::write(
        &v2,
        pack_example(
            "template",
            &release,
            &[
                ("release = 1", "release = 2"),
                ("version = \"0.1.0\"", "version = \"0.2.0\""),
            ],
            false,
        ),
    )
    .expect("bundle");
    std::fs::write(work.path().join("ops.key"), operator.to_pem().expect("PEM")).expect("key");
    let pushed = Command::new(edgewise())
        .args([
            "push",
            &v2.to_string_lossy(),
            "--group",
            "line",
            "--broker",
            &broker_url,
            "--key",
        ])
        .arg(work.path().join("ops.key"))
        .output()
        .expect("edgewise runs");
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));

    let converged = |id: &str, gw: &Gateway| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let status = broker
                .retained(&format!("edgewise/{id}/status"), Duration::from_secs(1))
                .unwrap_or_default();
            if status.contains("\"state\":\"converged\"")
                && status.contains("\"version\":\"0.2.0\"")
            {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} never converged: {status}\n{}",
                gw.log()
            );
        }
    };
    converged("line-a", &gateways[0]);
    gateways[1].restart(&broker);
    converged("line-b", &gateways[1]);

    let out = fleet_status();
    assert!(out.contains("group line: 2 gateways"), "{out}");
    assert_eq!(out.matches("converged").count(), 2, "{out}");
    assert_eq!(out.matches("template 0.2.0 (running)").count(), 2, "{out}");
}

#[test]
fn fleet_status_watch_shows_a_gateway_that_comes_online() {
    use std::io::BufRead;
    let broker = Broker::start();
    let mut watch = Command::new(edgewise())
        .args([
            "fleet",
            "status",
            "--group",
            "line",
            "--watch",
            "--seconds",
            "1",
        ])
        .args(["--broker", &format!("mqtt://127.0.0.1:{}", broker.port)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("edgewise runs");
    let mut lines = std::io::BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(next(), "group line: 0 gateways");
    let mut gw = Gateway::prepare(&broker, "watched-1", &[], "");
    join_group(&gw, "line");
    gw.launch(&broker);
    // The table is printed again at the status: the gateway in it, online.
    loop {
        let line = next();
        assert!(
            !line.is_empty() || watch.try_wait().ok().flatten().is_none(),
            "watch ended"
        );
        if line.contains("watched-1") && line.contains("online") {
            break;
        }
    }
    let _ = Command::new("kill").arg(watch.id().to_string()).status();
    assert!(
        watch.wait().is_ok_and(|s| s.success()),
        "Ctrl-C or SIGTERM ends it cleanly"
    );
}

#[test]
fn fleet_prune_clears_a_decommissioned_gateway_and_never_an_online_one() {
    let broker = Broker::start();
    let mut gateways: Vec<Gateway> = ["old-1", "new-1"]
        .iter()
        .map(|id| {
            let mut gw = Gateway::prepare(&broker, id, &[], "");
            join_group(&gw, "line");
            gw.launch(&broker);
            gw
        })
        .collect();
    gateways[0].kill(); // decommissioned: its last will says offline
    edgewise_tests::eventually(WAIT, "the last will", || {
        match broker.retained("edgewise/old-1/status", Duration::from_secs(1)) {
            Some(status) if status.contains("offline") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let broker_url = format!("mqtt://127.0.0.1:{}", broker.port);
    let fleet = |args: &[&str]| {
        Command::new(edgewise())
            .arg("fleet")
            .args(args)
            .args(["--broker", &broker_url])
            .output()
            .expect("edgewise runs")
    };
    let refused = fleet(&["prune", "--gateway", "new-1"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("is online"),
        "{}",
        text(&refused.stderr)
    );

    let pruned = fleet(&["prune", "--group", "line", "--offline"]);
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    assert!(
        text(&pruned.stdout).contains("cleared gateway old-1"),
        "{}",
        text(&pruned.stdout)
    );
    assert_eq!(
        broker.retained("edgewise/old-1/status", Duration::from_secs(1)),
        None,
        "its status is gone"
    );
    assert!(
        broker
            .retained("edgewise/new-1/status", Duration::from_secs(5))
            .is_some_and(|s| s.contains("online")),
        "the online one's stays"
    );
    let listed = fleet(&["status", "--group", "line"]);
    assert!(
        text(&listed.stdout).contains("group line: 1 gateways"),
        "{}",
        text(&listed.stdout)
    );
}

#[test]
fn a_gateway_killed_during_an_update_runs_one_complete_version_after_restart_and_says_which() {
    // Killed as soon as each progress reply is seen: the update may have gone a little further
    // by then, but whatever it reached, the restarted gateway must run the old version or the
    // new one, whole.
    for step in ["received", "verified", "staged", "live"] {
        let id = format!("kill-{step}");
        let mut m = Managed::start(&id, "template", &[], "");
        let v2 = m.bundle(
            "v2.ewb",
            "template",
            &[
                ("release = 1", "release = 2"),
                ("version = \"0.1.0\"", "version = \"0.2.0\""),
                ("prefix = \"echo\"", "prefix = \"echo/v2\""),
            ],
        );
        let digest = m.broker.upload_bundle(&std::fs::read(&v2).expect("bundle"));
        let replies = m.replies();
        m.send(
            &m.command(
                "up",
                now_ms(),
                Action::Update {
                    digest,
                    shadow: None,
                },
            )
            .sign(&m.operator),
        );
        let state = format!("\"state\":\"{step}\"");
        replies.collect_until(WAIT, |r| r.iter().any(|(_, p)| p.contains(&state)));
        m.gateway.kill();
        m.gateway.restart(&m.broker);

        // The plugin starts on its own thread: its state reads `starting` until it has.
        let deadline = std::time::Instant::now() + WAIT;
        let status = loop {
            let status = m
                .broker
                .retained(&format!("edgewise/{id}/status"), Duration::from_secs(1))
                .unwrap_or_default();
            if status.contains("\"state\":\"running\"") || std::time::Instant::now() > deadline {
                break status;
            }
        };
        let new = status.contains("\"version\":\"0.2.0\"");
        assert!(
            new || status.contains("\"version\":\"0.1.0\""),
            "after a kill at `{step}`: {status}"
        );
        assert!(status.contains("\"state\":\"running\""), "{status}");
        let sub = m.broker.subscribe(&["echo/#"]);
        m.broker.publish("sensors/probe", b"ping", 1);
        let (topic, _) = sub.next(WAIT).expect("an output");
        assert_eq!(
            topic.starts_with("echo/v2/"),
            new,
            "after a kill at `{step}` the status says {} and {topic} answered",
            if new { "0.2.0" } else { "0.1.0" }
        );
    }
}

#[test]
fn push_uploads_the_bundle_in_chunks_and_the_update_takes_it_by_digest() {
    let m = Managed::start("by-digest", "template", &[], "");
    let v2 = m.bundle(
        "template-v2.ewb",
        "template",
        &[
            ("release = 1", "release = 2"),
            ("version = \"0.1.0\"", "version = \"0.2.0\""),
        ],
    );
    let pushed = m.cli(&["push", &v2.to_string_lossy(), "--gateway", "by-digest"]);
    let out = text(&pushed.stdout);
    assert!(pushed.status.success(), "{out}\n{}", text(&pushed.stderr));
    assert!(
        out.contains("\"state\":\"waiting\"") && out.contains("\"state\":\"live\""),
        "{out}"
    );
    assert!(text(&m.ctl(&["list"]).stdout).contains("\"version\":\"0.2.0\""));
}

#[test]
fn over_mqtt_5_a_command_is_also_answered_on_its_response_topic_with_its_correlation_data() {
    let mut m = Managed::prepare("five-cmd", "threshold", &[], "protocol = \"5\"\n");
    allow_responses_under(&m.gateway, "ops/replies/");
    m.gateway.launch(&m.broker);
    let responses = m
        .broker
        .subscribe_v5_showing_correlation(&["ops/replies/#"]);
    let command = m.command("asked", now_ms(), Action::List).sign(&m.operator);
    m.broker.request_v5(
        "edgewise/five-cmd/cmd",
        command.as_bytes(),
        "ops/replies/console-1",
        "req-42",
    );
    // Each line is `topic|correlation|payload`; the subscriber splits lines at a space.
    let line = |(t, p): &(String, String)| format!("{t} {p}").trim().to_owned();
    let got = responses.collect_until(WAIT, |r| r.iter().any(|m| line(m).contains("\"done\"")));
    let done = got
        .iter()
        .map(line)
        .find(|l| l.contains("\"done\""))
        .unwrap_or_default();
    assert!(
        done.starts_with("ops/replies/console-1|req-42|")
            && done.contains("\"name\":\"threshold\""),
        "{got:?}"
    );
}

#[test]
fn a_broker_restart_in_the_middle_of_an_update_loses_no_message_and_the_update_completes() {
    let mut m = Managed::start("weather", "template", &[], "");
    let v2 = m.bundle(
        "v2.ewb",
        "template",
        &[
            ("release = 1", "release = 2"),
            ("version = \"0.1.0\"", "version = \"0.2.0\""),
            ("prefix = \"echo\"", "prefix = \"echo/v2\""),
        ],
    );
    let digest = m.broker.upload_bundle(&std::fs::read(&v2).expect("bundle"));
    let sub = m.broker.subscribe_as("weather-watcher", &["echo/#"]);
    let replies = m.replies();
    let first: Vec<String> = (0..150).map(|i| format!("{i:04}")).collect();
    m.broker.publish_lines("sensors/line", &first);
    let mut got = sub.collect_until(WAIT, |got| got.len() >= 20);
    let update = Action::Update {
        digest,
        shadow: None,
    };
    m.send(&m.command("stormy", now_ms(), update).sign(&m.operator));
    replies.collect_until(WAIT, |r| {
        r.iter().any(|(_, p)| p.contains("\"state\":\"verified\""))
    });
    m.gateway.expect_reconnects();
    m.broker.restart();
    let second: Vec<String> = (150..300).map(|i| format!("{i:04}")).collect();
    m.broker.publish_lines("sensors/line", &second);
    let sent: Vec<String> = first.into_iter().chain(second).collect();
    let all_there = |got: &[(String, String)]| {
        let seen: std::collections::BTreeSet<&str> = got.iter().map(|(_, p)| p.as_str()).collect();
        sent.iter().all(|s| seen.contains(s.as_str()))
    };
    got.extend(sub.collect_until(WAIT * 2, |more| {
        let all: Vec<(String, String)> = got.iter().chain(more).cloned().collect();
        all_there(&all)
    }));
    assert!(
        all_there(&got),
        "an output for every message\n{}",
        m.gateway.log()
    );

    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = m
            .broker
            .retained("edgewise/weather/status", Duration::from_secs(1))
            .unwrap_or_default();
        if status.contains("\"version\":\"0.2.0\"") && status.contains("\"state\":\"running\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the update never completed: {status}\n{}",
            m.gateway.log()
        );
    }
    let probe = m.broker.subscribe(&["echo/v2/#"]);
    m.broker.publish("sensors/after", b"ping", 1);
    assert!(probe.next(WAIT).is_some(), "the new version answers");
}

#[test]
fn the_operator_tools_speak_tls_with_a_password_and_a_client_certificate() {
    use edgewise_tests::mqtt::{Certificates, Security};
    let certs = Certificates::make();
    let broker = Broker::start_with(Security::tls(&certs, true, Some(("ops", "s3cret"))));
    let d = certs.dir().display().to_string();
    let connection = vec![
        "--broker".to_owned(),
        format!("mqtts://127.0.0.1:{}", broker.port),
        "--ca-file".to_owned(),
        format!("{d}/ca.crt"),
        "--client-cert-file".to_owned(),
        format!("{d}/client.crt"),
        "--client-key-file".to_owned(),
        format!("{d}/client.key"),
        "--username".to_owned(),
        "ops".to_owned(),
        "--password".to_owned(),
        "s3cret".to_owned(),
    ];
    let mut m = Managed::prepare_on(
        broker,
        connection,
        "sealed",
        "threshold",
        &[],
        &Security::client_certificate(&certs),
    );
    m.gateway.launch(&m.broker);
    let listed = m.ctl(&["list"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).contains("\"name\":\"threshold\""));
    // `fleet status` too (it refused TLS before): it reads the retained statuses.
    let fleet = m.cli(&["fleet", "status", "--group", "nobody"]);
    assert!(fleet.status.success(), "{}", text(&fleet.stderr));
    assert!(
        text(&fleet.stdout).contains("group nobody: 0 gateways"),
        "{}",
        text(&fleet.stdout)
    );
}

/// A gateway of fleet group `group`, running bundle `first` from its store, checked against
/// `keyring`, started.
pub(crate) fn group_member(
    broker: &Broker,
    id: &str,
    group: &str,
    keyring: &Path,
    first: &[u8],
) -> Gateway {
    let mut gw = Gateway::prepare(broker, id, &[], "");
    gw.signed_only(keyring);
    join_group(&gw, group);
    Store::open(
        &gw.dir().join("store"),
        edgewise_signing::Keyring::from_file(keyring).expect("keyring"),
        DEFAULT_MAX_BYTES,
    )
    .expect("store")
    .install(first, Path::new("first.ewb"), Admit::Update)
    .expect("the first bundle installs");
    gw.launch(broker);
    gw
}

/// Puts the gateway in fleet group `group` (a top-level key: before the `[broker]` table).
pub(crate) fn join_group(gateway: &Gateway, group: &str) {
    edgewise_tests::edit(
        gateway.dir(),
        "gateway.toml",
        "plugins = \"plugins\"\n",
        &format!("plugins = \"plugins\"\ngroup = \"{group}\"\n"),
    );
}

/// Sets the gateway's `response-prefix` (a top-level key: before the `[broker]` table).
fn allow_responses_under(gateway: &Gateway, prefix: &str) {
    edgewise_tests::edit(
        gateway.dir(),
        "gateway.toml",
        "plugins = \"plugins\"\n",
        &format!("plugins = \"plugins\"\nresponse-prefix = \"{prefix}\"\n"),
    );
}

#[test]
fn a_response_topic_is_honoured_only_for_a_verified_command_and_only_under_the_prefix() {
    // Regression: an unsigned command naming `victim/actuator/valve/set` as its response topic
    // made the gateway publish its refusal there, under the gateway's own broker identity.
    let m = Managed::start("reflect", "threshold", &[], "protocol = \"5\"\n");
    let everything = m.broker.subscribe_v5_showing_topics(&["#"]);
    let replies = m.replies();
    let attacker = SecretKey::generate().expect("random key");
    let forged = m.command("forged", now_ms(), Action::List).sign(&attacker);
    m.broker.request_v5(
        "edgewise/reflect/cmd",
        forged.as_bytes(),
        "victim/actuator/valve/set",
        "x",
    );
    let signed = m
        .command("outside", now_ms(), Action::List)
        .sign(&m.operator);
    m.broker
        .request_v5("edgewise/reflect/cmd", signed.as_bytes(), "victim/x", "y");
    // A third command, answered under the default prefix: once its response is here, the
    // responses to the two before it (published earlier on the same connection) would be too.
    let last = m
        .command("inside", now_ms() + 1, Action::List)
        .sign(&m.operator);
    m.broker.request_v5(
        "edgewise/reflect/cmd",
        last.as_bytes(),
        "edgewise/console/answers",
        "z",
    );
    // Each line is `topic|correlation`. The commands are answered one after the other, so
    // once a response to the third is here, any to the first two would have come before it.
    let answered = |l: &String| l == "edgewise/console/answers|z";
    let got: Vec<String> = everything
        .collect_until(WAIT, |got| got.iter().any(|(l, _)| answered(l)))
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert!(
        got.iter().any(answered),
        "the verified command was answered under the prefix: {got:?}"
    );
    // Only the gateway's topics, and the test subscribers' readiness probes.
    let outside: Vec<&String> = got
        .iter()
        .filter(|l| !l.starts_with("edgewise/") && !l.starts_with("edgewise-test/probe/"))
        .collect();
    assert!(
        outside.is_empty(),
        "published outside the gateway's topics: {outside:?}"
    );
    let refusal = replies.collect_until(WAIT, |r| r.iter().any(|(t, _)| t.ends_with("/forged")));
    assert!(
        refusal
            .iter()
            .any(|(t, p)| t.ends_with("/reply/forged") && p.contains("refused")),
        "the forged command is refused on the gateway's own reply topic: {refusal:?}"
    );
    assert!(m.gateway.log().contains("response topic ignored"));
}

#[test]
fn a_command_larger_than_any_bundle_is_refused_unread_and_the_connection_stays() {
    // Regression: 3 MiB on the command topic with `max-bundle-mib = 1` was over the packet
    // limit; rumqttc dropped the connection and the broker sent it again at every reconnect.
    let mut m = Managed::prepare("big-cmd", "threshold", &[], "");
    edgewise_tests::edit(
        m.gateway.dir(),
        "gateway.toml",
        "plugins = \"plugins\"\n",
        "plugins = \"plugins\"\nmax-bundle-mib = 1\n",
    );
    m.gateway.launch(&m.broker);
    let replies = m.replies();
    m.broker
        .publish("edgewise/big-cmd/cmd", &vec![b'{'; 3 << 20], 1);
    let (topic, reply) = replies.next(WAIT).expect("a reply");
    assert_eq!(topic, "edgewise/big-cmd/reply/invalid");
    assert!(
        reply.contains("refused") && reply.contains("refused unread"),
        "{reply}"
    );
    let out = m.ctl(&["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = m.gateway.log();
    assert_eq!(log.matches("connected to the broker").count(), 1, "{log}");
}

#[test]
fn a_bundle_in_many_chunks_installs_and_a_chunk_of_the_wrong_size_fails_its_update() {
    use edgewise_signing::namespace::{BUNDLE_CHUNK_BYTES, bundle_chunk};
    // voice-activity carries Silero (1.3 MB): its bundle travels in six chunks.
    let m = Managed::start("chunks", "voice-activity", &[], "");
    let v2 = m.bundle(
        "v2.ewb",
        "voice-activity",
        &[
            ("release = 1", "release = 2"),
            ("version = \"0.1.0\"", "version = \"0.2.0\""),
        ],
    );
    let v2 = std::fs::read(v2).expect("bundle");
    let digest = edgewise_signing::Bundle::parse(&v2)
        .expect("bundle")
        .digest();
    let chunks: Vec<&[u8]> = v2.chunks(BUNDLE_CHUNK_BYTES).collect();
    let count = chunks.len() as u32;
    assert!(count >= 3, "{count} chunks");

    // A broken upload: the first chunk cut short. The update waiting for it fails, saying so.
    let replies = m.replies();
    let update = |id: &str| {
        let action = Action::Update {
            digest: digest.clone(),
            shadow: None,
        };
        m.send(&m.command(id, now_ms(), action).sign(&m.operator));
    };
    update("short");
    m.broker
        .publish_retained(&bundle_chunk(&digest, 0, count), &chunks[0][..1000]);
    let got = replies.collect_until(WAIT, |r| r.iter().any(|(_, p)| p.contains("\"failed\"")));
    let failed = got
        .iter()
        .map(|(_, p)| p)
        .find(|p| p.contains("\"failed\""))
        .cloned()
        .unwrap_or_default();
    assert!(
        failed.contains(&format!("chunk 0 of {count} has 1000 bytes")),
        "{got:?}"
    );

    // The same bundle signed by a key the gateway does not trust has the same digest (the
    // manifest's): assembled, refused at verification, and its file deleted.
    let changes = [
        ("release = 1", "release = 2"),
        ("version = \"0.1.0\"", "version = \"0.2.0\""),
    ];
    let stranger = SecretKey::generate().expect("random key");
    let forged = pack_example("voice-activity", &stranger, &changes, false);
    assert_eq!(m.broker.upload_bundle(&forged), digest);
    update("forged");
    let refused = |r: &[(String, String)]| {
        r.iter()
            .any(|(t, p)| t.ends_with("/forged") && p.contains("\"failed\""))
    };
    let got = replies.collect_until(WAIT, refused);
    assert!(
        refused(&got) && got.iter().any(|(_, p)| p.contains("trusted release key")),
        "{got:?}"
    );
    let incoming = m.gateway.dir().join("store/incoming");
    let left: Vec<_> = std::fs::read_dir(&incoming).expect("incoming").collect();
    assert!(
        left.is_empty(),
        "a refused bundle's file is deleted: {left:?}"
    );

    // The whole upload, last chunk first: the update takes it.
    for (index, chunk) in chunks.iter().enumerate().rev() {
        m.broker
            .publish_retained(&bundle_chunk(&digest, index as u32, count), chunk);
    }
    update("whole");
    let got = replies.collect_until(WAIT, |r| r.iter().any(|(_, p)| p.contains("\"live\"")));
    assert!(
        got.iter().any(|(_, p)| p.contains("\"live\"")),
        "{got:?}\n{}",
        m.gateway.log()
    );
    assert!(text(&m.ctl(&["list"]).stdout).contains("\"version\":\"0.2.0\""));
    let left: Vec<_> = std::fs::read_dir(&incoming).expect("incoming").collect();
    assert!(
        left.is_empty(),
        "an installed bundle's file is moved: {left:?}"
    );
    // Each time nobody awaits the bundle any more (two failed updates, one installed), its
    // chunks are unsubscribed, so a reconnection does not bring them again.
    let unsubscribed = format!("no longer awaited filters=[\"edgewise/bundles/{digest}/+/+\"]");
    edgewise_tests::eventually(WAIT, "three unsubscriptions", || {
        let log = m.gateway.log();
        match log.matches(&unsubscribed).count() {
            3 => Ok(()),
            _ => Err(log),
        }
    });
}

#[test]
fn a_sighup_applies_gateway_toml_settings_and_refuses_a_bad_table_whole() {
    let mut m = Managed::start("reload", "threshold", &[], "");
    let replies = m.broker.subscribe(&["edgewise/reload/reply/reload"]);
    let alerts = m.broker.subscribe(&["alerts/#"]);
    let reloaded = |edit: &dyn Fn(&str) -> String| {
        let path = m.gateway.dir().join("gateway.toml");
        let text = std::fs::read_to_string(&path).expect("gateway.toml");
        std::fs::write(&path, edit(&text)).expect("gateway.toml");
        m.gateway.reload();
        let (_, reply) = replies.next(WAIT).expect("a reply to the reload");
        reply
    };
    // The first alert over two readings says which limit is in force.
    let first_alert = |device: &str| {
        let topic = format!("sensors/{device}/reading");
        m.broker.publish(&topic, br#"{"value": 95}"#, 1);
        m.broker.publish(&topic, br#"{"value": 120}"#, 1);
        alerts.next(WAIT).expect("an alert").1
    };
    assert!(
        first_alert("oven").contains("95"),
        "the manifest's limit, 80"
    );

    let reply = reloaded(&|text| format!("{text}[settings.threshold]\nlimit = 99\n"));
    assert!(reply.contains("\"state\":\"live\""), "{reply}");
    assert!(
        first_alert("kiln").contains("120"),
        "limit 99 from gateway.toml"
    );

    // A table with a key the manifest does not declare is refused whole: the limit stays 99.
    let reply = reloaded(&|text| text.replace("limit = 99", "limit = 50\nlimt = 50"));
    assert!(
        reply.contains("\"state\":\"failed\"")
            && reply.contains(
                "`threshold` has no setting `limt`; its manifest declares `hysteresis`, `limit`"
            ),
        "{reply}"
    );
    assert!(first_alert("dryer").contains("120"), "still limit 99");

    // A file that no longer parses changes nothing, and says where it is broken.
    let broken = |text: &str| format!("{text}limit = = 1\n");
    let path = m.gateway.dir().join("gateway.toml");
    let text = std::fs::read_to_string(&path).expect("gateway.toml");
    std::fs::write(&path, broken(&text)).expect("gateway.toml");
    m.gateway.reload();
    let log = m.gateway.wait_for_log("reload refused, nothing changed");
    assert!(log.contains("gateway.toml"), "{log}");
    assert!(first_alert("mixer").contains("120"), "still limit 99");

    // Back to a good file: the typo is fixed, and a changed broker section is named as
    // needing a restart while the settings apply now.
    std::fs::write(
        &path,
        text.replace("limt = 50\n", "")
            .replace("reconnect-max-ms = 500", "reconnect-max-ms = 600"),
    )
    .expect("gateway.toml");
    m.gateway.reload();
    let (_, reply) = replies.next(WAIT).expect("a reply to the reload");
    assert!(reply.contains("\"state\":\"live\""), "{reply}");
    assert!(first_alert("press").contains("95"), "limit 50 now");
    let log = m.gateway.wait_for_log("apply at the next start only");
    assert!(log.contains("broker"), "{log}");
    assert!(m.gateway.is_running(), "{log}");
}

#[test]
fn the_store_size_is_measured_off_the_message_path_and_shown_in_metrics() {
    let port = edgewise_tests::mqtt::free_port();
    let m = Managed::start(
        "store-size",
        "template",
        &[],
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let bundle_bytes = std::fs::read_dir(m.gateway.dir().join("store/bundles"))
        .expect("bundles")
        .flatten()
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum::<u64>();
    let measured = edgewise_tests::eventually(WAIT, "edgewise_store_bytes", || {
        let text = edgewise_tests::mqtt::http_get(port, "/metrics");
        let bytes = edgewise_tests::mqtt::sample(&text, "edgewise_store_bytes");
        if bytes >= bundle_bytes as f64 {
            Ok(bytes)
        } else {
            Err(format!("{bytes}"))
        }
    });
    assert!(measured > 0.0, "{measured}");
}

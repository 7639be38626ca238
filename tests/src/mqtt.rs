//! A real Mosquitto broker and real MQTT clients for the gateway tests.
//!
//! `Broker::start()` runs `mosquitto` on a free local port with a config file written here;
//! clients are Mosquitto's own `mosquitto_pub` and `mosquitto_sub`, independent of the
//! gateway's client library. Every wait is for an event (a port that accepts, a message that
//! arrives) with a deadline, never a sleep.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is not installed: apt-get install -y mosquitto mosquitto-clients (scripts/test does this)"
    );
}

/// A local port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The body of an HTTP GET of `path` on 127.0.0.1:`port`, waiting up to 10 s for the port.
pub fn http_get(port: u16, path: &str) -> String {
    http_request(port, path).1
}

/// `GET path` from 127.0.0.1:`port`: the status code and the body.
pub fn http_request(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(e) => assert!(Instant::now() < deadline, "nothing listens on {port}: {e}"),
        }
        std::thread::yield_now();
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// How clients must connect to a broker: TLS files and credentials.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Extra lines for the listener in mosquitto.conf.
    listener: String,
    /// Extra arguments for mosquitto_pub and mosquitto_sub.
    client_args: Vec<String>,
    /// Extra keys for the gateway's `[broker]` table.
    gateway_keys: String,
    tls: bool,
}

impl Security {
    /// TLS with a server certificate from a CA made for the test; with `client_cert`, clients
    /// must present a certificate from that CA; with `login`, a user name and password.
    pub fn tls(certs: &Certificates, client_cert: bool, login: Option<(&str, &str)>) -> Security {
        let d = certs.dir.path().display();
        let mut s = Security {
            listener: format!(
                "cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
            ),
            client_args: vec!["--cafile".into(), format!("{d}/ca.crt")],
            gateway_keys: format!("ca-file = \"{d}/ca.crt\"\n"),
            tls: true,
        };
        if client_cert {
            s.listener += "require_certificate true\n";
        }
        // Test clients always present a certificate; whether the gateway does is up to the test.
        s.client_args.extend([
            "--cert".into(),
            format!("{d}/client.crt"),
            "--key".into(),
            format!("{d}/client.key"),
        ]);
        if let Some((user, password)) = login {
            let file = certs.dir.path().join("passwords");
            let ok = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg("-c")
                .arg(&file)
                .args([user, password])
                .status();
            assert!(ok.is_ok_and(|s| s.success()), "mosquitto_passwd failed");
            make_readable(&file);
            s.listener += &format!("password_file {}\n", file.display());
            s.client_args
                .extend(["-u".into(), user.into(), "-P".into(), password.into()]);
            s.gateway_keys += &format!("username = \"{user}\"\npassword = \"{password}\"\n");
        }
        s
    }

    /// The gateway keys that present the test's client certificate.
    pub fn client_certificate(certs: &Certificates) -> String {
        let d = certs.dir.path().display();
        format!("client-cert-file = \"{d}/client.crt\"\nclient-key-file = \"{d}/client.key\"\n")
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
pub struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    /// The directory holding `ca.crt`, `server.crt`, `client.crt` and their keys.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Makes them in a temporary directory.
    pub fn make() -> Certificates {
        require("openssl");
        let dir = tempfile::tempdir().expect("temporary directory");
        make_readable(dir.path());
        let run = |args: &str| {
            let ok = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(dir.path())
                .output();
            assert!(
                ok.as_ref().is_ok_and(|o| o.status.success()),
                "openssl {args}: {ok:?}"
            );
        };
        std::fs::write(
            dir.path().join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write san.ext");
        run(
            "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=edgewise-test-ca",
        );
        // Extensions make them X.509 v3 certificates, which rustls requires.
        std::fs::write(
            dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .expect("write client.ext");
        for (name, ext) in [
            ("server", "-extfile san.ext"),
            ("client", "-extfile client.ext"),
        ] {
            run(&format!(
                "req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN=edgewise-test-{name}"
            ));
            run(&format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {name}.crt -days 2 {ext}"
            ));
        }
        for entry in std::fs::read_dir(dir.path())
            .expect("certificate directory")
            .flatten()
        {
            make_readable(&entry.path());
        }
        Certificates { dir }
    }
}

/// Mosquitto drops root for its own user, which must read (and, for its data, write) here.
fn make_readable(path: &Path) {
    let mode = if path.is_dir() { 0o777 } else { 0o644 };
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .expect("chmod");
}

/// A Mosquitto broker of this test's own, stopped on drop.
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    security: Security,
    /// The mosquitto.conf lines that size it for the gateway (docs/configuration.md).
    tuning: String,
}

/// How the tests' brokers are sized: as docs/configuration.md tells an operator.
const SIZED: &str = "set_tcp_nodelay true\nmax_queued_messages 10000\n";

impl Broker {
    /// Starts a broker on a free port, with persistence in a temporary directory.
    pub fn start() -> Broker {
        Self::start_with(Security::default())
    }

    /// Starts rumqttd, the strict broker the demo embeds, in this process: MQTT 3.1.1 only,
    /// no restart, no log file.
    pub fn start_rumqttd() -> Broker {
        require("mosquitto_pub");
        let broker = Broker {
            port: free_port(),
            dir: tempfile::tempdir().expect("temporary directory"),
            child: None,
            security: Security::default(),
            tuning: String::new(),
        };
        edgewise_host::demo::start_embedded_broker(broker.port).expect("rumqttd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", broker.port)).is_err() {
            assert!(Instant::now() < deadline, "rumqttd did not listen");
            std::thread::yield_now();
        }
        broker
    }

    /// Starts a broker sized by `tuning` (mosquitto.conf lines) instead of as the docs say:
    /// for measuring what a stock broker costs.
    pub fn start_tuned(tuning: &str) -> Broker {
        Self::start_as(Security::default(), tuning)
    }

    /// Starts a broker that clients must reach as `security` says.
    pub fn start_with(security: Security) -> Broker {
        Self::start_as(security, SIZED)
    }

    fn start_as(security: Security, tuning: &str) -> Broker {
        require("mosquitto");
        require("mosquitto_pub");
        let dir = tempfile::tempdir().expect("temporary directory");
        // Run as root, Mosquitto drops to its own user, which must be able to write its
        // persistence file and log here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("open the broker directory");
        let mut broker = Broker {
            port: free_port(),
            dir,
            child: None,
            security,
            tuning: tuning.to_owned(),
        };
        broker.spawn();
        broker
    }

    /// `-h 127.0.0.1 -p <port>` and whatever the broker's security asks of clients.
    fn client_args(&self) -> Vec<String> {
        let mut args = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ];
        args.extend(self.security.client_args.iter().cloned());
        args
    }

    /// The gateway's `[broker]` keys for this broker.
    pub fn gateway_keys(&self) -> String {
        let scheme = if self.security.tls { "mqtts" } else { "mqtt" };
        format!(
            "url = \"{scheme}://127.0.0.1:{}\"\n{}",
            self.port, self.security.gateway_keys
        )
    }

    fn spawn(&mut self) {
        let config = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "per_listener_settings false\n{}listener {} 127.0.0.1\n{}allow_anonymous {}\npersistence true\npersistence_location {}/\nlog_dest file {}/mosquitto.log\nlog_type all\n",
                self.tuning,
                self.port,
                self.security.listener,
                !self.security.listener.contains("password_file"),
                self.dir.path().display(),
                self.dir.path().display()
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on port {}",
                self.port
            );
            std::thread::yield_now();
        }
    }

    /// What the broker logged so far (every kind of line).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker (its persisted state stays) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops the broker; its persisted sessions and queued messages stay for [`Broker::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets Mosquitto save its sessions and queued messages.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts the broker again after [`Broker::stop`], on the same port, with what it saved.
    pub fn resume(&mut self) {
        self.spawn();
    }

    /// A handle that only publishes, to use from another thread.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            args: self.client_args(),
        }
    }

    /// Publishes one message with `mosquitto_pub`.
    pub fn publish(&self, topic: &str, payload: &[u8], qos: u8) {
        self.publish_as(topic, payload, qos, &[]);
    }

    /// Publishes one MQTT 5 request: with a response topic and correlation data.
    pub fn request_v5(&self, topic: &str, payload: &[u8], response_topic: &str, correlation: &str) {
        self.publish_as(
            topic,
            payload,
            1,
            &[
                "-V",
                "5",
                "-D",
                "publish",
                "response-topic",
                response_topic,
                "-D",
                "publish",
                "correlation-data",
                correlation,
            ],
        );
    }

    /// Subscribes with MQTT 5; each line is `topic|correlation data|payload`.
    pub fn subscribe_v5_showing_correlation(&self, filters: &[&str]) -> Subscriber {
        self.subscriber(
            &format!("edgewise-test-{}", free_port()),
            filters,
            &["-V", "5", "-F", "%t|%D|%p"],
        )
    }

    /// Subscribes with MQTT 5, showing only where each message went: `topic|correlation data`
    /// (one line a message, whatever its payload).
    pub fn subscribe_v5_showing_topics(&self, filters: &[&str]) -> Subscriber {
        self.subscriber(
            &format!("edgewise-test-{}", free_port()),
            filters,
            &["-V", "5", "-F", "%t|%D"],
        )
    }

    /// Uploads the bundle `bytes` as `edgewise push` does: retained, in chunks under
    /// `edgewise/bundles/<digest>`; returns its digest.
    pub fn upload_bundle(&self, bytes: &[u8]) -> String {
        use edgewise_signing::namespace::{BUNDLE_CHUNK_BYTES, bundle_chunk};
        let digest = edgewise_signing::Bundle::parse(bytes)
            .expect("a bundle")
            .digest();
        let chunks: Vec<&[u8]> = bytes.chunks(BUNDLE_CHUNK_BYTES).collect();
        let count = chunks.len() as u32;
        for (index, chunk) in chunks.into_iter().enumerate() {
            self.publish_retained(&bundle_chunk(&digest, index as u32, count), chunk);
        }
        digest
    }

    /// Publishes one retained message.
    pub fn publish_retained(&self, topic: &str, payload: &[u8]) {
        self.publish_as(topic, payload, 1, &["-r"]);
    }

    fn publish_as(&self, topic: &str, payload: &[u8], qos: u8, extra: &[&str]) {
        // `-s` reads the payload from stdin and refuses an empty one; `-n` sends it.
        let source = if payload.is_empty() { "-n" } else { "-s" };
        let mut child = Command::new("mosquitto_pub")
            .args(self.client_args())
            .args(extra)
            .args(["-q", &qos.to_string(), "-t", topic, source])
            .stdin(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub starts");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), payload)
            .expect("payload written");
        assert!(
            child.wait().expect("mosquitto_pub runs").success(),
            "mosquitto_pub failed on {topic}"
        );
    }

    /// Publishes many text messages on one connection, in order, at QoS 1.
    pub fn publish_lines(&self, topic: &str, lines: &[String]) {
        self.publisher().publish_lines(topic, lines);
    }

    /// The retained message on `topic`, waiting up to `timeout` for one.
    pub fn retained(&self, topic: &str, timeout: Duration) -> Option<String> {
        let out = Command::new("mosquitto_sub")
            .args(self.client_args())
            .args(["-t", topic, "-C", "1", "-W"])
            .arg(timeout.as_secs().max(1).to_string())
            .output()
            .expect("mosquitto_sub runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A subscriber on `filters`, ready (subscribed) when this returns.
    pub fn subscribe(&self, filters: &[&str]) -> Subscriber {
        self.subscribe_as(&format!("edgewise-test-{}", free_port()), filters)
    }

    /// A subscriber with client id `id`, whose session persists (QoS 1, clean session off):
    /// after a broker restart, subscribing again with the same id gets what was kept for it.
    pub fn subscribe_as(&self, id: &str, filters: &[&str]) -> Subscriber {
        self.subscriber(id, filters, &["-v"])
    }

    /// A subscriber whose payloads start with the QoS each message arrived with: `"1 {...}"`.
    pub fn subscribe_showing_qos(&self, filters: &[&str]) -> Subscriber {
        self.subscriber(
            &format!("edgewise-test-{}", free_port()),
            filters,
            &["-F", "%t %q %p"],
        )
    }

    fn subscriber(&self, id: &str, filters: &[&str], output: &[&str]) -> Subscriber {
        let probe = format!("edgewise-test/probe/{id}");
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(self.client_args())
            .args(output)
            .args(["-q", "1", "-c", "-i", id]);
        for filter in filters.iter().copied().chain([probe.as_str()]) {
            cmd.args(["-t", filter]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let sub = Subscriber { child, lines: rx };
        // Readiness: publish to the probe topic until the subscriber hears it.
        let deadline = Instant::now() + Duration::from_secs(10);
        'ready: loop {
            assert!(Instant::now() < deadline, "subscriber never became ready");
            self.publish(&probe, b"ready", 0);
            while let Ok(line) = sub.lines.recv_timeout(Duration::from_millis(200)) {
                if line.starts_with(&probe) {
                    break 'ready;
                }
            }
        }
        sub
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Publishes to a broker, from any thread.
pub struct Publisher {
    args: Vec<String>,
}

impl Publisher {
    /// Publishes text messages on one connection, in order, at QoS 1.
    pub fn publish_lines(&self, topic: &str, lines: &[String]) {
        publish_lines(&self.args, topic, lines);
    }
}

fn publish_lines(args: &[String], topic: &str, lines: &[String]) {
    let mut child = Command::new("mosquitto_pub")
        .args(args)
        .args(["-q", "1", "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub starts");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        std::io::Write::write_all(&mut stdin, format!("{line}\n").as_bytes())
            .expect("line written");
    }
    drop(stdin);
    assert!(
        child.wait().expect("mosquitto_pub runs").success(),
        "mosquitto_pub failed on {topic}"
    );
}

/// A running `mosquitto_sub -v`: lines of `topic payload`.
pub struct Subscriber {
    child: Child,
    lines: Receiver<String>,
}

impl Subscriber {
    /// The next message as (topic, payload), waiting up to `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<(String, String)> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                let (topic, payload) = line.split_once(' ').unwrap_or((&line, ""));
                Some((topic.to_owned(), payload.to_owned()))
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Messages until `done` says enough or `timeout` passes.
    pub fn collect_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(m) => got.push(m),
                None => break,
            }
        }
        got
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `edgewise run` process with its own configuration and plugin directory.
///
/// A gateway keeps one connection to its broker for its whole life: when it is dropped, a log
/// that says it connected twice fails the test, unless the test caused the reconnect (it
/// killed or stopped the gateway, or called [`Gateway::expect_reconnects`]).
pub struct Gateway {
    /// The gateway id.
    pub id: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    log: PathBuf,
    allow_unsigned: bool,
    reconnects_expected: bool,
    /// Environment variables for the process.
    env: Vec<(String, String)>,
}

impl Gateway {
    /// Starts a gateway named `id` on `broker` running the example plugins `plugins`, with
    /// `extra` appended to its gateway.toml; returns once its status says online.
    pub fn start(broker: &Broker, id: &str, plugins: &[&str], extra: &str) -> Gateway {
        let mut gateway = Self::prepare(broker, id, plugins, extra);
        gateway.launch(broker);
        gateway
    }

    /// Like [`Gateway::start`] but does not start it: change its files, then [`Gateway::launch`].
    pub fn prepare(broker: &Broker, id: &str, plugins: &[&str], extra: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("temporary directory");
        for name in plugins {
            let copy = crate::copy_plugin(name);
            let target = dir.path().join("plugins").join(name);
            std::fs::create_dir_all(&target).expect("plugin directory");
            crate::copy_dir(copy.path(), &target);
        }
        std::fs::create_dir_all(dir.path().join("plugins")).expect("plugins directory");
        std::fs::write(
            dir.path().join("gateway.toml"),
            format!(
                "gateway-id = \"{id}\"\nplugins = \"plugins\"\n\n[broker]\n{}reconnect-min-ms = 50\nreconnect-max-ms = 500\n{extra}\n",
                broker.gateway_keys()
            ),
        )
        .expect("write gateway.toml");
        Gateway {
            id: id.to_owned(),
            log: dir.path().join("gateway.log"),
            dir,
            child: None,
            allow_unsigned: true,
            env: Vec::new(),
            reconnects_expected: false,
        }
    }

    /// The test takes the broker away or cuts the link: reconnects are its doing.
    pub fn expect_reconnects(&mut self) {
        self.reconnects_expected = true;
    }

    /// How many times it connected to its broker, over every process it ran as.
    pub fn connections(&self) -> usize {
        self.log().matches("connected to the broker").count()
    }

    /// Runs it as in production: signed bundles from its store only, no `--allow-unsigned`.
    /// The test plugins are plain directories, so gateways run with the flag unless this is
    /// called.
    pub fn signed_only(&mut self, keyring: &Path) {
        crate::edit(
            self.dir(),
            "gateway.toml",
            "plugins = \"plugins\"\n",
            &format!(
                "plugins = \"plugins\"\nkeyring = \"{}\"\n",
                keyring.display()
            ),
        );
        self.allow_unsigned = false;
    }

    /// The directory holding gateway.toml and plugins/.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the process and returns at once, whether it connects or not.
    pub fn launch_in_background(&mut self) {
        self.child = Some(self.spawn_process());
    }

    fn spawn_process(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = Command::new(crate::edgewise());
        command
            .args(["run", "--config"])
            .arg(self.dir.path().join("gateway.toml"));
        if self.allow_unsigned {
            command.arg("--allow-unsigned");
        }
        command
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("edgewise starts")
    }

    /// Sets an environment variable for the process from its next launch.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Starts the process; returns once its status says online.
    pub fn launch(&mut self, broker: &Broker) {
        let child = self.spawn_process();
        // Online means this process's status: it names its pid, and is published after the
        // subscriptions on the same connection, so they are in place.
        let pid = format!("\"pid\":{}", child.id());
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = broker.retained(
                &format!("edgewise/{}/status", self.id),
                Duration::from_secs(1),
            );
            if status.is_some_and(|s| s.contains("\"online\"") && s.contains(&pid)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway never came online; log:\n{}",
                self.log()
            );
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its log once it contains `text`, or as it is after 30 s (for the caller's assertion to
    /// show).
    pub fn wait_for_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.contains(text) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the gateway with SIGKILL: no goodbye, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A next process connects again.
            self.reconnects_expected = true;
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the gateway again after `kill`.
    pub fn restart(&mut self, broker: &Broker) {
        self.kill();
        self.launch(broker);
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process's resident memory in MiB, from /proc.
    pub fn resident_mib(&self) -> u64 {
        let pid = self.pid().expect("the gateway runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status");
        kib / 1024
    }

    /// Sends SIGTERM and waits up to `limit` for the exit: `Some(exited 0)`, or `None` if it was
    /// still running then (it is killed).
    pub fn terminate_within(&mut self, limit: Duration) -> Option<bool> {
        let mut child = self.child.take()?;
        self.reconnects_expected = true;
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status.success()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// Sends SIGHUP: the gateway reads its gateway.toml again.
    pub fn reload(&self) {
        let pid = self.pid().expect("the gateway runs");
        let sent = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -HUP {pid}");
    }

    /// Sends SIGTERM and waits for the exit; true if it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        self.reconnects_expected = true;
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        child.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let connections = self.connections();
        let unexpected = !self.reconnects_expected && connections > 1;
        self.kill();
        if unexpected && !std::thread::panicking() {
            panic!(
                "gateway {} connected {connections} times, and nothing in this test should have made it reconnect:\n{}",
                self.id,
                self.log()
            );
        }
    }
}

/// A metric's value for `plugin` in Prometheus text, 0 if absent.
pub fn metric(text: &str, metric: &str, plugin: &str) -> f64 {
    sample(text, &format!("{metric}{{plugin=\"{plugin}\"}}"))
}

/// The value of one series (a name with its labels, as printed) in Prometheus text, 0 if
/// absent.
pub fn sample(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A TCP proxy on a free local port in front of a broker, whose connections the test can cut:
/// the gateway's link dropping while the broker stays up.
pub struct Proxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Forwards every connection on a new port to `127.0.0.1:target`.
    pub fn start(target: u16) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>> = Default::default();
        let streams = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
                    continue;
                };
                if let (Ok(c3), Ok(u3)) = (client.try_clone(), upstream.try_clone()) {
                    let mut open = streams.lock().unwrap_or_else(|p| p.into_inner());
                    open.push(c3);
                    open.push(u3);
                }
                pipe(client, upstream);
                pipe(u2, c2);
            }
        });
        Proxy { port, open }
    }

    /// Cuts every connection through the proxy; new ones are accepted as before.
    pub fn cut(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for stream in open.drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

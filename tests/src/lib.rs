//! The end-to-end test harness: real plugins, real models, the real `edgewise` binary.
//!
//! Plugins must be built (`scripts/build-plugins`) and models prepared
//! (`scripts/prepare-models`) first; the README's test command does both. A missing piece
//! fails the test with the command that provides it, rather than skipping it.

pub mod load;
pub mod mqtt;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use edgewise_host::runtime::plugin::CompiledPlugin;
use edgewise_host::runtime::{Runtime, default_caps};
use edgewise_host::worker::supervisor::RestartPolicy;
use edgewise_host::worker::{Message, Worker};

/// A process's output as text (lossy), for assertions and messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `check` every 50 ms until it gives a value, for up to `within`; panics with `what` and
/// the last `Err` it gave if it never does. For conditions no event announces (a metric, a
/// file), never for a fixed wait.
pub fn eventually<T>(
    within: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if std::time::Instant::now() > deadline => {
                panic!("{what}: not within {within:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// The compiled-cache entry of bundle `digest` in the cache directory `dir`.
pub fn cache_entry(dir: &Path, digest: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("the cache directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(digest))
        })
        .unwrap_or_else(|| panic!("no cache entry for {digest} in {}", dir.display()))
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory of example plugin `name`, checked to hold a built component.
pub fn plugin_dir(name: &str) -> PathBuf {
    let dir = repo().join("plugins").join(name);
    assert!(
        dir.join("plugin.wasm").is_file(),
        "{}/plugin.wasm is missing: run scripts/build-plugins",
        dir.display()
    );
    dir
}

/// A model file of an example plugin, checked to exist.
pub fn model_file(plugin: &str, file: &str) -> PathBuf {
    let path = repo().join("plugins").join(plugin).join("model").join(file);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/prepare-models",
        path.display()
    );
    path
}

/// The labelled evaluation set an example plugin ships (`eval/` in its directory), checked
/// to exist: vibration-fault's is made with its model.
pub fn eval_set(plugin: &str) -> PathBuf {
    let path = match plugin {
        "vibration-fault" => "eval/heldout.jsonl",
        "plate-reader" => "eval/frames.jsonl",
        _ => "eval/speech.jsonl",
    };
    let path = plugin_dir(plugin).join(path);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/prepare-models",
        path.display()
    );
    path
}

/// Writes a keyring at `path` trusting `release` to sign bundles and `operator` to sign
/// commands and desired states.
pub fn write_keyring(
    path: &Path,
    release: &edgewise_signing::SecretKey,
    operator: &edgewise_signing::SecretKey,
) {
    std::fs::write(
        path,
        format!(
            "version = 1\n[[keys]]\nname = \"release\"\nrole = \"release\"\npublic-key = \"{}\"\n[[keys]]\nname = \"ops\"\nrole = \"operator\"\npublic-key = \"{}\"\n",
            release.public(),
            operator.public()
        ),
    )
    .expect("keyring");
}

/// A copy of example plugin `name` in a temporary directory, to be altered by a test.
pub fn copy_plugin(name: &str) -> tempfile::TempDir {
    let from = plugin_dir(name);
    let to = tempfile::tempdir().expect("temporary directory");
    copy_dir(&from, to.path());
    to
}

/// Copies the directory tree `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from)
        .expect("readable plugin directory")
        .flatten()
    {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("create directory");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Rewrites `file` in `dir` by replacing `from` with `to`, checking `from` was there.
pub fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("readable file");
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replace(from, to)).expect("writable file");
}

/// One runtime for the whole test binary, as in a gateway process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(default_caps(), 64).expect("runtime starts"))
}

/// Loads the plugin in `dir` with setting overrides.
pub fn load(
    dir: &Path,
    settings: &[(&str, &str)],
) -> Result<CompiledPlugin, edgewise_host::runtime::plugin::LoadError> {
    let settings = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    CompiledPlugin::load(runtime(), dir, &settings)
}

/// A worker for example plugin `name` with setting overrides.
pub fn worker(name: &str, settings: &[(&str, &str)]) -> Worker {
    worker_with(name, settings, RestartPolicy::default())
}

/// A worker for example plugin `name` with setting overrides and a restart policy.
pub fn worker_with(name: &str, settings: &[(&str, &str)], policy: RestartPolicy) -> Worker {
    let plugin = load(&plugin_dir(name), settings).unwrap_or_else(|e| panic!("{e}"));
    Worker::new(Arc::new(plugin), policy)
}

/// A message on `topic` carrying `payload`.
pub fn message(topic: &str, payload: impl AsRef<[u8]>) -> Message {
    Message {
        topic: topic.to_owned(),
        payload: payload.as_ref().to_vec(),
        received_at_ms: 0,
    }
}

/// A replay input line for `topic` with a binary payload.
pub fn replay_line(topic: &str, payload: &[u8]) -> String {
    serde_json::json!({ "topic": topic, "payload_base64": BASE64.encode(payload) }).to_string()
}

/// Runs the `edgewise` binary with `args` (no colour) and waits for it.
pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(edgewise())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("edgewise runs")
}

/// The path of the `edgewise` binary built beside this test.
pub fn edgewise() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("edgewise"))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} is missing: build it with cargo build --release -p edgewise-host",
        bin.display()
    );
    bin
}

/// One message published during a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Published {
    /// The payload parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("payload on {} is not JSON: {e}", self.topic))
    }
}

/// What one `edgewise replay` run did.
#[derive(Debug)]
pub struct ReplayRun {
    /// What the plugin published, in order.
    pub published: Vec<Published>,
    /// Everything the command logged.
    pub log: String,
    /// Whether it exited 0.
    pub success: bool,
}

/// Runs `edgewise replay <dir> -` with `input` on stdin and extra arguments.
pub fn replay(dir: &Path, input: &str, args: &[&str]) -> ReplayRun {
    replay_with_env(dir, input, args, &[])
}

/// Like [`replay`], with variables added to the command's environment.
pub fn replay_with_env(dir: &Path, input: &str, args: &[&str], env: &[(&str, &str)]) -> ReplayRun {
    let mut child = Command::new(edgewise())
        .arg("replay")
        .arg(dir)
        .arg("-")
        .args(args)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgewise starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        // The command may exit early (bad plugin): a broken pipe here is its answer, not ours.
        let _ = stdin.write_all(input.as_bytes());
    });
    let output = child.wait_with_output().expect("edgewise runs");
    let _ = writer.join();
    let published = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad output line {line}: {e}"));
            let payload = match (v["payload"].as_str(), v["payload_base64"].as_str()) {
                (Some(text), _) => text.as_bytes().to_vec(),
                (None, Some(b64)) => BASE64.decode(b64).expect("base64 payload"),
                _ => panic!("output line without payload: {line}"),
            };
            Published {
                topic: v["topic"].as_str().expect("topic").to_owned(),
                payload,
            }
        })
        .collect();
    ReplayRun {
        published,
        log: String::from_utf8_lossy(&output.stderr).into_owned(),
        success: output.status.success(),
    }
}

/// The samples of a 16-bit PCM WAV file, as little-endian bytes, and its sample rate.
pub fn wav_pcm(path: &Path) -> (u32, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    edgewise_host::demo::wav_pcm(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Example plugin `name`, after `changes` (from, to) to its plugin.toml, packed into a bundle
/// signed by `key` (as a rollback bundle if asked).
pub fn pack_example(
    name: &str,
    key: &edgewise_signing::SecretKey,
    changes: &[(&str, &str)],
    rollback: bool,
) -> Vec<u8> {
    let dir = copy_plugin(name);
    for (from, to) in changes {
        edit(dir.path(), "plugin.toml", from, to);
    }
    edgewise_signing::bundle::pack(dir.path(), key, rollback, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes()
}

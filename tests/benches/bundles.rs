//! The signed-bundle benchmark (issue 4): printed, not asserted. Run with `scripts/bench bundles`.
//!
//! - Verify time of a 1 MB and a 20 MB bundle (signature, parse, every file hashed), in memory
//!   and from its file as a gateway verifies it, against SHA-256 alone over the same bytes: the
//!   ratio shows what verification costs beyond hashing.
//! - Store load time for 20 installed bundles, as at a gateway start: verification only, then
//!   verification plus components from the compiled cache (a restart), then from cold (the
//!   first start after install, compiling every component).
//! - Memory of an update over MQTT, on a real gateway and Mosquitto: a 20 MiB and a 100 MiB
//!   bundle uploaded in chunks, then an `update` command. The gateway's peak resident memory is
//!   reset before the update (`/proc/<pid>/clear_refs`) and read when it replies `staged`
//!   (received, verified and moved into the store: the update path itself) and after the
//!   outcome (which includes loading the new version's model: its weights are in memory while
//!   it runs, whatever the update path). The bulk of these bundles is a valid ONNX model,
//!   `y = x · w` with `w` of the bundle's size, so the update goes live.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use edgewise_host::management::store::{Admit, Store};
use edgewise_host::runtime::cache::Cache;
use edgewise_host::runtime::plugin::CompiledPlugin;
use edgewise_signing::bundle::{self, DEFAULT_MAX_BYTES};
use edgewise_signing::command::{Action, Command};
use edgewise_signing::{Bundle, Keyring, SecretKey};
use edgewise_tests::mqtt::{Broker, Gateway};
use edgewise_tests::{copy_plugin, edit, runtime};
use sha2::{Digest, Sha256};

/// The median of `runs` timings of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[runs / 2]
}

fn keyring(key: &SecretKey) -> Keyring {
    Keyring::parse(
        &format!(
            "version = 1\n[[keys]]\nname = \"bench\"\nrole = \"release\"\npublic-key = \"{}\"\n",
            key.public()
        ),
        Path::new("keyring.toml"),
    )
    .expect("keyring")
}

/// The threshold plugin with an extra "model" file of `model_bytes` (verification does not
/// look inside files), packed.
fn bundle_of(key: &SecretKey, name: &str, model_bytes: usize) -> Vec<u8> {
    let dir = copy_plugin("threshold");

    edit(
        dir.path(),
        "plugin.toml",
        "name = \"threshold\"",
        &format!("name = \"{name}\""),
    );
    if model_bytes > 0 {
        // Pseudo-random so nothing compresses or short-circuits.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let bytes: Vec<u8> = (0..model_bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(dir.path().join("blob.onnx"), bytes).expect("model file");
        edit(
            dir.path(),
            "plugin.toml",
            "[limits]",
            "[[models]]\nname = \"blob\"\nencoding = \"onnx\"\nfile = \"blob.onnx\"\n\n[limits]",
        );
    }
    bundle::pack(dir.path(), key, false, &mut |_| {})
        .expect("pack")
        .to_bytes()
}

/// An ONNX model `y = x · w`, `x` of 1 × `k` floats and `w` a pseudo-random `k` × `k`
/// initializer: a valid model of `4 k²` bytes, mostly weights as real models are, that the
/// engine loads and runs.
fn onnx_matmul(k: usize) -> Vec<u8> {
    use prost::Message as _;
    use tract_onnx::pb::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
        TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
    };
    const FLOAT: i32 = 1;
    let value = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto {
                    dim: [1, k as i64]
                        .map(|d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .to_vec(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let weights: Vec<u8> = (0..k * k)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / 1e7).to_le_bytes()
        })
        .collect();
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            name: "matmul".into(),
            node: vec![NodeProto {
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                op_type: "MatMul".into(),
                ..Default::default()
            }],
            initializer: vec![TensorProto {
                name: "w".into(),
                dims: vec![k as i64, k as i64],
                data_type: FLOAT,
                raw_data: weights,
                ..Default::default()
            }],
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The threshold plugin as release `release` with a valid ONNX model of `model_bytes` (loaded
/// and run at every load: the time budget per message is raised to fit it), packed.
fn bundle_with_model(key: &SecretKey, model_bytes: usize, release: u32) -> Vec<u8> {
    let dir = copy_plugin("threshold");
    edit(
        dir.path(),
        "plugin.toml",
        "release = 1",
        &format!("release = {release}"),
    );
    edit(
        dir.path(),
        "plugin.toml",
        "time-per-message-ms = 20",
        "time-per-message-ms = 1000",
    );
    let k = ((model_bytes / 4) as f64).sqrt() as usize;
    std::fs::write(dir.path().join("matmul.onnx"), onnx_matmul(k)).expect("model file");
    edit(
        dir.path(),
        "plugin.toml",
        "[limits]",
        &format!(
            "[[models]]\nname = \"matmul\"\nencoding = \"onnx\"\nfile = \"matmul.onnx\"\ninputs = {{ x = [1, {k}] }}\n\n[limits]"
        ),
    );
    bundle::pack(dir.path(), key, false, &mut |_| {})
        .expect("pack")
        .to_bytes()
}

fn main() {
    let key = SecretKey::generate().expect("key");
    let keyring = keyring(&key);

    println!("bundle verification (median of 15):");
    for mib in [1usize, 20] {
        let bytes = bundle_of(&key, "blob", mib << 20);
        let verify = time(15, || {
            Bundle::verify(&bytes, &keyring, Path::new("b.ewb")).expect("verifies");
        });
        // As a gateway does: the file where it lies, read in blocks (from the page cache here).
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("b.ewb");
        std::fs::write(&path, &bytes).expect("bundle file");
        let verify_file = time(15, || {
            Bundle::verify_file(&path, DEFAULT_MAX_BYTES, &keyring).expect("verifies");
        });
        let hash = time(15, || {
            std::hint::black_box(Sha256::digest(&bytes));
        });
        let rate = bytes.len() as f64 / verify.as_secs_f64() / (1 << 20) as f64;
        println!(
            "  {:>5.1} MiB bundle: verify {:>8.2} ms ({rate:.0} MiB/s), from its file {:>8.2} ms; sha256 alone {:>8.2} ms; verify/sha256 {:.2}, from the file {:.2}",
            bytes.len() as f64 / (1 << 20) as f64,
            verify.as_secs_f64() * 1e3,
            verify_file.as_secs_f64() * 1e3,
            hash.as_secs_f64() * 1e3,
            verify.as_secs_f64() / hash.as_secs_f64(),
            verify_file.as_secs_f64() / hash.as_secs_f64()
        );
    }

    println!("\nstore load at gateway start, 20 installed bundles:");
    let root = tempfile::tempdir().expect("store directory");
    let store = Store::open(root.path(), keyring.clone(), DEFAULT_MAX_BYTES).expect("store");
    for i in 0..20 {
        let bytes = bundle_of(&key, &format!("plugin-{i:02}"), 0);
        store
            .install(&bytes, Path::new("b.ewb"), Admit::Update)
            .expect("install");
    }
    let settings = BTreeMap::new();
    let load = |cache: Option<&Cache>| {
        let loaded = store.load_all().expect("load");
        for l in &loaded {
            let bundle = l.bundle.as_ref().expect("verified");
            CompiledPlugin::from_bundle(runtime(), bundle, &settings, cache).expect("compiles");
        }
        loaded.len()
    };
    let verify_only = time(5, || {
        assert_eq!(store.load_all().expect("load").len(), 20);
    });
    let cold = time(3, || {
        assert_eq!(load(None), 20);
    });
    let cache = Cache::open(&store.cache_dir()).expect("cache");
    load(Some(&cache)); // fills the cache
    let warm = time(5, || {
        assert_eq!(load(Some(&cache)), 20);
    });
    println!(
        "  verify all: {:.1} ms; verify + compile (first start): {:.0} ms; verify + compiled cache (restart): {:.1} ms; cache saves {:.0}x",
        verify_only.as_secs_f64() * 1e3,
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        cold.as_secs_f64() / warm.as_secs_f64()
    );

    update_memory(&key);
}

/// A field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field in /proc status");
    kib / 1024.0
}

fn update_memory(release: &SecretKey) {
    println!(
        "\nmemory of an update over MQTT (real gateway, Mosquitto; peak reset before each update):"
    );
    let operator = SecretKey::generate().expect("key");
    let broker = Broker::start();
    let mut gateway = Gateway::prepare(&broker, "bench-update", &[], "");
    edit(
        gateway.dir(),
        "gateway.toml",
        "plugins = \"plugins\"\n",
        "plugins = \"plugins\"\nmax-bundle-mib = 128\n",
    );
    let keyring = gateway.dir().join("keyring.toml");
    std::fs::write(
        &keyring,
        format!(
            "version = 1\n[[keys]]\nname = \"release\"\nrole = \"release\"\npublic-key = \"{}\"\n[[keys]]\nname = \"ops\"\nrole = \"operator\"\npublic-key = \"{}\"\n",
            release.public(),
            operator.public()
        ),
    )
    .expect("keyring");
    gateway.signed_only(&keyring);
    let store = Store::open(
        &gateway.dir().join("store"),
        Keyring::from_file(&keyring).expect("keyring"),
        DEFAULT_MAX_BYTES,
    )
    .expect("store");
    store
        .install(
            &bundle_of(release, "threshold", 0),
            Path::new("v1.ewb"),
            Admit::Update,
        )
        .expect("v1 installs");
    gateway.launch(&broker);
    let pid = gateway.pid().expect("the gateway runs");
    let replies = broker.subscribe(&["edgewise/bench-update/reply/#"]);
    for (n, mib) in [20usize, 100].into_iter().enumerate() {
        let bytes = bundle_with_model(release, mib << 20, n as u32 + 2);
        let size = bytes.len() as f64 / (1 << 20) as f64;
        let uploaded = Instant::now();
        let digest = broker.upload_bundle(&bytes);
        let upload = uploaded.elapsed();
        drop(bytes);
        let before = status_mib(pid, "VmRSS:");
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("peak reset");
        let now = edgewise_host::clock::now_ms();
        let command = Command {
            id: format!("mem-{n}"),
            gateway: "bench-update".into(),
            seq: now,
            issued_at_ms: now,
            expires_at_ms: now + 600_000,
            action: Action::Update {
                digest,
                shadow: None,
            },
        };
        let sent = Instant::now();
        broker.publish(
            "edgewise/bench-update/cmd",
            command.sign(&operator).as_bytes(),
            1,
        );
        let (mut staged, mut staged_at, mut outcome) = (None, None, None);
        while outcome.is_none() {
            let Some((_, reply)) = replies.next(Duration::from_secs(120)) else {
                panic!("no reply to the update:\n{}", gateway.log());
            };
            if reply.contains("\"staged\"") {
                staged = Some(status_mib(pid, "VmHWM:"));
                staged_at = Some(sent.elapsed());
            }
            for end in ["live", "rolled-back", "failed", "done"] {
                if reply.contains(&format!("\"state\":\"{end}\"")) {
                    outcome = Some(end);
                }
            }
        }
        let ended_at = sent.elapsed();
        let staged = staged.unwrap_or_else(|| panic!("never staged:\n{}", gateway.log()));
        let peak = status_mib(pid, "VmHWM:");
        println!(
            "  {size:>6.1} MiB bundle: upload {:>6.2} s; command to staged {:>5.0} ms, to {} {:>5.0} ms; RSS before {before:>5.1} MiB; peak to staged +{:.1} MiB ({:.3} of the bundle); peak to the outcome +{:.1} MiB",
            upload.as_secs_f64(),
            staged_at.unwrap_or_default().as_secs_f64() * 1e3,
            outcome.unwrap_or_default(),
            ended_at.as_secs_f64() * 1e3,
            staged - before,
            (staged - before) / size,
            peak - before,
        );
    }
}

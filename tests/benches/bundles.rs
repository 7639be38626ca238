//! The signed-bundle benchmark (issue 4): printed, not asserted. Run with `scripts/bench bundles`.
//!
//! - Verify time of a 1 MB and a 20 MB bundle (signature, parse, every file hashed), against
//!   SHA-256 alone over the same bytes: the ratio shows what verification costs beyond hashing.
//! - Store load time for 20 installed bundles, as at a gateway start: verification only, then
//!   verification plus components from the compiled cache (a restart), then from cold (the
//!   first start after install, compiling every component).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use edgewise_host::management::store::{Admit, Store};
use edgewise_host::runtime::cache::Cache;
use edgewise_host::runtime::plugin::CompiledPlugin;
use edgewise_signing::bundle::{self, DEFAULT_MAX_BYTES};
use edgewise_signing::{Bundle, Keyring, SecretKey};
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

fn main() {
    let key = SecretKey::generate().expect("key");
    let keyring = keyring(&key);

    println!("bundle verification (median of 15):");
    for mib in [1usize, 20] {
        let bytes = bundle_of(&key, "blob", mib << 20);
        let verify = time(15, || {
            Bundle::verify(&bytes, &keyring, Path::new("b.ewb")).expect("verifies");
        });
        let hash = time(15, || {
            std::hint::black_box(Sha256::digest(&bytes));
        });
        let rate = bytes.len() as f64 / verify.as_secs_f64() / (1 << 20) as f64;
        println!(
            "  {:>5.1} MiB bundle: verify {:>8.2} ms ({rate:.0} MiB/s); sha256 alone {:>8.2} ms; verify/sha256 {:.2}",
            bytes.len() as f64 / (1 << 20) as f64,
            verify.as_secs_f64() * 1e3,
            hash.as_secs_f64() * 1e3,
            verify.as_secs_f64() / hash.as_secs_f64()
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
}

//! Signed bundles end to end: the commands an author and an operator use, the gateway's store,
//! and the ways a bundle is refused (each leaving the store as it was).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgewise_host::management::store::{Admit, Installed, Store, StoreError};
use edgewise_host::runtime::cache::Cache;
use edgewise_host::runtime::plugin::CompiledPlugin;
use edgewise_host::worker::Worker;
use edgewise_host::worker::supervisor::RestartPolicy;
use edgewise_signing::bundle::DEFAULT_MAX_BYTES;
use edgewise_signing::signature::signed_bytes;
use edgewise_signing::{Bundle, Keyring, PayloadType, SecretKey};
use edgewise_tests::mqtt::{Broker, Gateway};
use edgewise_tests::{cli, copy_plugin, edgewise, message, runtime, text};

/// Keys and a keyring trusting `release` for bundles and `operator` for commands.
struct Trust {
    dir: tempfile::TempDir,
    release: SecretKey,
    operator: SecretKey,
}

impl Trust {
    fn new() -> Trust {
        let key = || SecretKey::generate().expect("random key");
        Trust {
            dir: tempfile::tempdir().expect("temporary directory"),
            release: key(),
            operator: key(),
        }
    }

    /// Writes the keyring, with the release key revoked if asked, and returns its path.
    fn keyring(&self, release_revoked: bool) -> PathBuf {
        let path = self.dir.path().join("keyring.toml");
        std::fs::write(
            &path,
            format!(
                "version = 1\n\n[[keys]]\nname = \"release\"\nrole = \"release\"\npublic-key = \"{}\"\nrevoked = {release_revoked}\n\n[[keys]]\nname = \"ops\"\nrole = \"operator\"\npublic-key = \"{}\"\n",
                self.release.public(),
                self.operator.public()
            ),
        )
        .expect("write keyring");
        path
    }

    fn parsed(&self, release_revoked: bool) -> Keyring {
        Keyring::from_file(&self.keyring(release_revoked)).expect("keyring parses")
    }
}

/// The manifest edits that make an example plugin's release 2 (version 0.2.0).
const RELEASE_2: &[(&str, &str)] = &[
    ("release = 1", "release = 2"),
    ("version = \"0.1.0\"", "version = \"0.2.0\""),
];

fn packed(name: &str, key: &SecretKey, change: &[(&str, &str)], rollback: bool) -> Vec<u8> {
    edgewise_tests::pack_example(name, key, change, rollback)
}

/// What is in a store: its state file and the names of its bundles.
fn snapshot(root: &Path) -> (String, Vec<String>) {
    let state = std::fs::read_to_string(root.join("state.json")).unwrap_or_default();
    let mut bundles: Vec<String> = std::fs::read_dir(root.join("bundles"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    bundles.sort();
    (state, bundles)
}

fn refusal(store: &Store, bytes: &[u8]) -> String {
    match store.install(bytes, Path::new("candidate.ewb"), Admit::Update) {
        Ok(done) => panic!("installed: {done:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_author_packs_an_operator_verifies_and_installs_and_the_gateway_runs_it_signed() {
    let work = tempfile::tempdir().expect("temporary directory");
    let prefix = work.path().join("release-2026");
    let prefix = prefix.to_str().expect("UTF-8 path");
    let out = cli(&["keygen", prefix]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key_file = format!("{prefix}.key");
    let mode = std::fs::metadata(&key_file)
        .expect("key written")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let public = std::fs::read_to_string(format!("{prefix}.pub")).expect("public key");
    assert!(
        text(&out.stdout).contains(public.trim()),
        "prints a keyring entry"
    );
    let keyring = work.path().join("keyring.toml");
    std::fs::write(
        &keyring,
        format!(
            "version = 1\n[[keys]]\nname = \"release-2026\"\nrole = \"release\"\npublic-key = \"{}\"\n",
            public.trim()
        ),
    )
    .expect("keyring");

    let plugin = copy_plugin("threshold");
    let bundle_file = work.path().join("threshold.ewb");
    let bundle_path = bundle_file.to_str().expect("UTF-8 path");
    let out = cli(&[
        "pack",
        plugin.path().to_str().expect("UTF-8 path"),
        "--key",
        &key_file,
        "-o",
        bundle_path,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("packed threshold 0.1.0 (release 1)"));

    let keyring_arg = keyring.to_str().expect("UTF-8 path");
    let out = cli(&["verify", bundle_path, "--keyring", keyring_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("OK "),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&["inspect", bundle_path]);
    assert!(out.status.success());
    let shown = text(&out.stdout);
    assert!(
        shown.contains("NOT verified")
            && shown.contains("plugin.wasm")
            && shown.contains("[files]"),
        "{shown}"
    );
    // The settings the manifest declares, with what each accepts.
    let hysteresis = shown
        .lines()
        .find(|l| l.trim_start().starts_with("hysteresis"))
        .unwrap_or_else(|| panic!("no settings table:\n{shown}"));
    assert!(
        hysteresis.contains("number ≥ 0")
            && hysteresis.contains("default 2")
            && hysteresis.contains("back to normal only below limit - hysteresis"),
        "{hysteresis}"
    );

    let stranger = Trust::new();
    let out = cli(&[
        "verify",
        bundle_path,
        "--keyring",
        stranger.keyring(false).to_str().expect("UTF-8"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not in the keyring"),
        "{}",
        text(&out.stderr)
    );

    let broker = Broker::start();
    let mut gw = Gateway::prepare(&broker, "signed", &[], "");
    gw.signed_only(&keyring);
    let config = gw.dir().join("gateway.toml");
    let config = config.to_str().expect("UTF-8 path");
    let out = cli(&["install", bundle_path, "--config", config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("installed threshold 0.1.0 (release 1"));
    let out = cli(&["install", bundle_path, "--config", config]);
    assert!(
        out.status.success(),
        "installing the same bundle again is not an error"
    );
    assert!(text(&out.stdout).contains("already installed"));

    gw.launch(&broker);
    let status = broker
        .retained("edgewise/signed/status", Duration::from_secs(5))
        .unwrap_or_default();
    assert!(
        status.contains("\"signed\":true") && status.contains("\"release\":1"),
        "{status}"
    );
    let sub = broker.subscribe(&["alerts/#"]);
    broker.publish("sensors/oven/reading", br#"{"value": 91}"#, 1);
    let got = sub.collect_until(Duration::from_secs(20), |got| !got.is_empty());
    assert_eq!(got.len(), 1, "{got:?}\n{}", gw.log());
}

#[test]
fn an_unsigned_plugin_directory_is_refused_without_the_development_flag() {
    let broker = Broker::start();
    let trust = Trust::new();
    let mut strict = Gateway::prepare(&broker, "strict", &["threshold"], "");
    strict.signed_only(&trust.keyring(false));
    strict.launch(&broker);
    let status = broker
        .retained("edgewise/strict/status", Duration::from_secs(5))
        .unwrap_or_default();
    assert!(
        status.contains("\"state\":\"refused\"") && status.contains("--allow-unsigned"),
        "{status}"
    );
    let sub = broker.subscribe(&["alerts/#"]);
    broker.publish("sensors/oven/reading", br#"{"value": 91}"#, 1);
    assert_eq!(sub.next(Duration::from_secs(1)), None, "nothing ran it");

    let lenient = Gateway::start(&broker, "lenient", &["threshold"], "");
    assert!(
        lenient
            .log()
            .contains("DEVELOPMENT MODE (--allow-unsigned)")
    );
}

#[test]
fn signatures_interoperate_with_openssl_in_both_directions() {
    let trust = Trust::new();
    let work = tempfile::tempdir().expect("temporary directory");
    let key_file = work.path().join("release.key");
    std::fs::write(&key_file, trust.release.to_pem().expect("PEM")).expect("key file");
    let mut bundle =
        Bundle::parse(&packed("threshold", &trust.release, &[], false)).expect("bundle");
    let pae = work.path().join("signed-bytes");
    std::fs::write(&pae, signed_bytes(PayloadType::Manifest, &bundle.manifest)).expect("write");

    // openssl signs the same bytes with the same key file: the gateway accepts its signature.
    let sig_file = work.path().join("openssl.sig");
    let status = Command::new("openssl")
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(&key_file)
        .arg("-in")
        .arg(&pae)
        .arg("-out")
        .arg(&sig_file)
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let openssl_sig: [u8; 64] = std::fs::read(&sig_file)
        .expect("signature")
        .try_into()
        .expect("64 bytes");
    assert_eq!(
        openssl_sig, bundle.signatures[0].bytes,
        "ed25519 is deterministic: the same key over the same bytes gives the same signature"
    );
    bundle.signatures[0].bytes = openssl_sig;
    let keyring = trust.parsed(false);
    assert!(Bundle::verify(&bundle.to_bytes(), &keyring, Path::new("x.ewb")).is_ok());

    // And openssl verifies ours with the public key alone.
    let public_pem = work.path().join("release.pub.pem");
    let status = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key_file)
        .arg("-out")
        .arg(&public_pem)
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let ours = work.path().join("ours.sig");
    std::fs::write(
        &ours,
        trust
            .release
            .sign(PayloadType::Manifest, &bundle.manifest)
            .bytes,
    )
    .expect("write");
    let verified = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey"])
        .arg(&public_pem)
        .arg("-in")
        .arg(&pae)
        .arg("-sigfile")
        .arg(&ours)
        .output()
        .expect("openssl runs");
    assert!(verified.status.success(), "{}", text(&verified.stdout));
    assert!(text(&verified.stdout).contains("Signature Verified Successfully"));
}

#[test]
fn the_store_refuses_rollbacks_accepts_a_signed_rollback_and_ignores_a_repeat() {
    let trust = Trust::new();
    let root = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(root.path(), trust.parsed(false), DEFAULT_MAX_BYTES).expect("store");
    let r1 = packed("threshold", &trust.release, &[], false);
    let r2 = packed("threshold", &trust.release, RELEASE_2, false);
    let install = |bytes: &[u8]| store.install(bytes, Path::new("t.ewb"), Admit::Update);
    assert!(matches!(
        install(&r1),
        Ok(Installed::Activated { release: 1, .. })
    ));
    assert!(matches!(install(&r1), Ok(Installed::AlreadyActive { .. })));
    assert!(matches!(
        install(&r2),
        Ok(Installed::Activated { release: 2, .. })
    ));
    let before = snapshot(root.path());
    let why = refusal(&store, &r1);
    assert!(why.contains("release 1 is older than release 2"), "{why}");
    let r2_other = packed(
        "threshold",
        &trust.release,
        &[
            ("release = 1", "release = 2"),
            ("version = \"0.1.0\"", "version = \"0.2.1\""),
        ],
        false,
    );
    assert!(
        matches!(
            install(&r2_other),
            Err(StoreError::Conflict { release: 2, .. })
        ),
        "the same release with other content"
    );
    assert_eq!(snapshot(root.path()), before, "refusals change nothing");

    // A rollback bundle, validly signed: pushed as an update it is refused (a rollback signed
    // once would otherwise be valid forever); named by an operator's rollback, it goes in.
    let back = packed("threshold", &trust.release, &[], true);
    let back_digest = Bundle::parse(&back).expect("bundle").digest();
    assert!(
        matches!(
            install(&back),
            Err(StoreError::RollbackNotAsked {
                offered: 1,
                highest: 2,
                ..
            })
        ),
        "a rollback bundle offered as an update"
    );
    assert_eq!(
        snapshot(root.path()),
        before,
        "that refusal changes nothing"
    );
    let other = Bundle::parse(&r2).expect("bundle").digest();
    assert!(
        matches!(
            store.install(&back, Path::new("t.ewb"), Admit::Rollback(&other)),
            Err(StoreError::RollbackNotAsked { .. })
        ),
        "a rollback asked for another bundle"
    );
    assert!(matches!(
        store.install(&back, Path::new("t.ewb"), Admit::Rollback(&back_digest)),
        Ok(Installed::Activated { release: 1, .. })
    ));
    let listed = store.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].2, 2, "the highest release seen stays 2");

    // Release 2 offered again after the rollback (a fleet re-pushing it): the same content, so
    // not a conflict; release 2 with other content still is.
    assert!(matches!(
        install(&r2),
        Ok(Installed::Activated { release: 2, .. })
    ));
    store.rollback("threshold").expect("back to release 1");
    assert!(matches!(
        install(&r2_other),
        Err(StoreError::Conflict { release: 2, .. })
    ));
    assert!(matches!(
        install(&r2),
        Ok(Installed::Activated { release: 2, .. })
    ));
}

#[test]
fn install_by_root_into_a_service_users_store_leaves_files_that_user_owns() {
    // Regression: `sudo edgewise install` left a root-owned state.json, and the gateway,
    // running as its own user, failed at its next change of the store.
    use std::os::unix::fs::MetadataExt;
    let trust = Trust::new();
    let keyring = trust.keyring(false);
    let store = trust.dir.path().join("store");
    std::fs::create_dir(&store).expect("store folder");
    const SERVICE: u32 = 65534; // nobody
    if std::os::unix::fs::chown(&store, Some(SERVICE), Some(SERVICE)).is_err() {
        eprintln!("skipped: only root can make a store another user owns");
        return;
    }
    let config = trust.dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "gateway-id = \"x\"\nplugins = \"plugins\"\nstore = \"{}\"\nkeyring = \"{}\"\n\n[broker]\nurl = \"mqtt://127.0.0.1:1\"\n",
            store.display(),
            keyring.display()
        ),
    )
    .expect("gateway.toml");
    let bundle = trust.dir.path().join("threshold.ewb");
    std::fs::write(&bundle, packed("threshold", &trust.release, &[], false)).expect("bundle");
    let out = cli(&[
        "install",
        &bundle.to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for entry in walk(&store) {
        let owner = std::fs::metadata(&entry).expect("metadata").uid();
        assert_eq!(owner, SERVICE, "{} is owned by {owner}", entry.display());
    }
}

#[test]
fn a_corrupt_state_file_is_taken_from_its_copy_or_rebuilt_from_the_bundles() {
    // Regression: an empty or corrupt store/state.json stopped every plugin, with no way back.
    let trust = Trust::new();
    let root = tempfile::tempdir().expect("temporary directory");
    let open = || Store::open(root.path(), trust.parsed(false), DEFAULT_MAX_BYTES).expect("store");
    let r1 = packed("threshold", &trust.release, &[], false);
    let r2 = packed("threshold", &trust.release, RELEASE_2, false);
    let store = open();
    for bytes in [&r1, &r2] {
        store
            .install(bytes, Path::new("t.ewb"), Admit::Update)
            .expect("installs");
    }
    let state = root.path().join("state.json");
    let written = std::fs::read_to_string(&state).expect("state");

    // Emptied: its copy has the same content, and the state file is written again from it.
    std::fs::write(&state, "").expect("empty it");
    let listed = store.list().expect("listed from the copy");
    assert_eq!((listed.len(), listed[0].2), (1, 2), "{listed:?}");
    assert_eq!(std::fs::read_to_string(&state).expect("state"), written);

    // Both corrupt: rebuilt from the bundles, the newest release active, the other behind it.
    std::fs::write(&state, "{ not json").expect("corrupt it");
    std::fs::write(root.path().join("state.json.bak"), "\0\0\0").expect("corrupt the copy");
    let listed = store.list().expect("listed from the bundles");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].2, 2, "the highest release is the newest bundle's");
    let r2_digest = Bundle::parse(&r2).expect("bundle").digest();
    assert_eq!(listed[0].1, r2_digest, "release 2 is active");
    store
        .rollback("threshold")
        .expect("release 1 is its last-known-good");
    assert!(
        matches!(
            store.install(&r1, Path::new("t.ewb"), Admit::Update),
            Ok(Installed::AlreadyActive { .. })
        ),
        "release 1 active after the rollback"
    );
}

#[test]
fn list_and_status_read_the_store_with_no_gateway_running() {
    let trust = Trust::new();
    let keyring = trust.keyring(false);
    let config = trust.dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "gateway-id = \"offline-7\"\nplugins = \"plugins\"\nstore = \"store\"\nkeyring = \"{}\"\n\n[broker]\nurl = \"mqtt://127.0.0.1:1\"\n",
            keyring.display()
        ),
    )
    .expect("gateway.toml");
    let bundle = trust.dir.path().join("threshold.ewb");
    std::fs::write(&bundle, packed("threshold", &trust.release, &[], false)).expect("bundle");
    let config = config.to_string_lossy().into_owned();
    assert!(
        cli(&["install", &bundle.to_string_lossy(), "-c", &config])
            .status
            .success()
    );

    let listed = cli(&["list", "-c", &config, "--json"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let entry: serde_json::Value =
        serde_json::from_str(text(&listed.stdout).trim()).expect("one JSON line");
    assert_eq!(
        (
            &entry["name"],
            &entry["version"],
            &entry["release"],
            &entry["stopped"]
        ),
        (
            &"threshold".into(),
            &"0.1.0".into(),
            &1.into(),
            &false.into()
        ),
        "{entry}"
    );
    // Into a reader that hangs up at once (`| head -0`): it ends quietly.
    let mut hung_up = Command::new(edgewise())
        .args(["list", "-c", &config])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("edgewise runs");
    drop(hung_up.stdout.take());
    let out = hung_up.wait_with_output().expect("it ends");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = cli(&["status", "-c", &config]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["gateway"], "offline-7");
    assert_eq!(status["plugins"][0]["name"], "threshold");
    assert_eq!(status["keyring"]["version"], 1);
    assert_eq!(status["journal"]["outputs-waiting"], 0, "{status}");
}

/// Every file and folder under `root`.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).expect("read folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

#[test]
fn every_refused_bundle_leaves_the_store_and_its_plugins_as_they_were() {
    let trust = Trust::new();
    let root = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(root.path(), trust.parsed(false), 4 << 20).expect("store");
    let good = packed("vibration-fault", &trust.release, &[], false);
    store
        .install(&good, Path::new("good.ewb"), Admit::Update)
        .expect("installs");
    let before = snapshot(root.path());
    // A release 2 of the same plugin, to be spoilt in one way each.
    let next = || -> Bundle {
        Bundle::parse(&packed(
            "vibration-fault",
            &trust.release,
            &[("release = 1", "release = 2")],
            false,
        ))
        .expect("bundle")
    };
    let file_index = |b: &Bundle, path: &str| {
        b.files
            .iter()
            .position(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} in the bundle"))
    };
    let resign = |b: &mut Bundle, key: &SecretKey, ty: PayloadType| {
        b.signatures = vec![key.sign(ty, &b.manifest)];
    };
    let stranger = SecretKey::generate().expect("random key");

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut b = next();
    let ix = file_index(&b, "plugin.wasm");
    b.files[ix].1[100] ^= 0xff;
    cases.push(("tampered component", b.to_bytes(), "`plugin.wasm`: SHA-256"));
    let mut b = next();
    let ix = file_index(&b, "model/vibration.onnx");
    let last = b.files[ix].1.len() - 1;
    b.files[ix].1[last] ^= 1;
    cases.push((
        "tampered model",
        b.to_bytes(),
        "`model/vibration.onnx`: SHA-256",
    ));
    let mut b = next();
    b.manifest = text(&b.manifest)
        .replace("memory-mib = 16", "memory-mib = 160")
        .into_bytes();
    cases.push((
        "tampered manifest",
        b.to_bytes(),
        "does not match the signed bytes",
    ));
    let mut b = next();
    resign(&mut b, &stranger, PayloadType::Manifest);
    cases.push(("unknown key", b.to_bytes(), "not in the keyring"));
    let mut b = next();
    resign(&mut b, &trust.operator, PayloadType::Manifest);
    cases.push((
        "operator key",
        b.to_bytes(),
        "is an operator key, not a release key",
    ));
    let mut b = next();
    resign(&mut b, &trust.release, PayloadType::Command);
    cases.push((
        "command signature as a manifest's",
        b.to_bytes(),
        "does not match",
    ));
    let mut b = next();
    let ix = file_index(&b, "plugin.wasm");
    b.files[ix].1.push(0);
    cases.push(("size differs", b.to_bytes(), "bytes, the manifest pins"));
    let b = next().to_bytes();
    cases.push(("truncated", b[..b.len() / 2].to_vec(), "truncated"));
    let mut b = next();
    b.files[0].0 = "../../etc/passwd".into();
    cases.push(("path with ..", b.to_bytes(), "must be relative"));
    let mut b = next();
    b.files[0].0 = "/etc/passwd".into();
    cases.push(("absolute path", b.to_bytes(), "must be relative"));
    let mut b = next();
    b.manifest = text(&b.manifest)
        .replace("api = \"0.1\"", "api = \"2.0\"")
        .into_bytes();
    resign(&mut b, &trust.release, PayloadType::Manifest);
    cases.push((
        "unsupported host API",
        b.to_bytes(),
        "does not match this gateway's API",
    ));
    let mut huge = next();
    huge.files[0].1.extend(vec![0u8; 5 << 20]);
    cases.push((
        "over the size cap",
        huge.to_bytes(),
        "larger than the limit",
    ));

    for (what, bytes, expected) in cases {
        let why = refusal(&store, &bytes);
        assert!(why.contains(expected), "{what}: {why}");
        assert_eq!(snapshot(root.path()), before, "{what} changed the store");
    }
    let loaded = store.load_all().expect("load");
    assert!(loaded[0].bundle.is_ok(), "the installed plugin still loads");
}

#[test]
fn a_bundle_changed_on_disk_is_quarantined_and_the_last_known_good_one_runs() {
    let trust = Trust::new();
    let root = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(root.path(), trust.parsed(false), DEFAULT_MAX_BYTES).expect("store");
    let r1 = packed("threshold", &trust.release, &[], false);
    let r2 = packed(
        "threshold",
        &trust.release,
        &[("release = 1", "release = 2")],
        false,
    );
    store
        .install(&r1, Path::new("r1.ewb"), Admit::Update)
        .expect("r1");
    store
        .install(&r2, Path::new("r2.ewb"), Admit::Update)
        .expect("r2");
    let digest = |bytes: &[u8]| Bundle::parse(bytes).expect("bundle").digest();
    let r2_digest = digest(&r2);
    let on_disk = root.path().join("bundles").join(format!("{r2_digest}.ewb"));
    let mut bytes = std::fs::read(&on_disk).expect("installed bundle");
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    std::fs::write(&on_disk, bytes).expect("tamper");

    let loaded = store.load_all().expect("load");
    let bundle = loaded[0].bundle.as_ref().expect("falls back");
    assert_eq!(bundle.manifest.release, Some(1));
    assert_eq!(bundle.digest, digest(&r1));
    assert!(
        root.path()
            .join("quarantine")
            .join(format!("{r2_digest}.ewb"))
            .is_file()
    );
    assert!(!on_disk.exists());
    let listed = store.list().expect("list");
    assert_eq!(listed[0].1, digest(&r1), "r1 is active now");
    assert_eq!(listed[0].2, 2, "and release 2 stays the highest seen");
}

#[test]
fn a_revoked_keys_bundles_stop_loading() {
    let trust = Trust::new();
    let root = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(root.path(), trust.parsed(false), DEFAULT_MAX_BYTES).expect("store");
    store
        .install(
            &packed("threshold", &trust.release, &[], false),
            Path::new("t.ewb"),
            Admit::Update,
        )
        .expect("installs");
    let revoked = Store::open(root.path(), trust.parsed(true), DEFAULT_MAX_BYTES).expect("store");
    let loaded = revoked.load_all().expect("load");
    let why = loaded[0]
        .bundle
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(why.contains("revoked"), "{why}");
}

#[test]
fn compiled_components_are_cached_and_an_entry_not_bound_to_its_bundle_is_compiled_again() {
    // Regression: another plugin's cached code in this plugin's slot ran as this plugin, and
    // 11 of 12 bit flips in cached code loaded unnoticed. An entry is now bound to its bundle
    // and engine by its header and a MAC under a key only this host holds.
    let trust = Trust::new();
    let root = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(root.path(), trust.parsed(false), DEFAULT_MAX_BYTES).expect("store");
    for name in ["threshold", "template"] {
        let bytes = packed(name, &trust.release, &[], false);
        store
            .install(&bytes, Path::new("b.ewb"), Admit::Update)
            .expect("installs");
    }
    let loaded = store.load_all().expect("load");
    let bundle_of = |name: &str| {
        loaded
            .iter()
            .find(|l| l.plugin == name)
            .and_then(|l| l.bundle.as_ref().ok())
            .expect("verified")
    };
    let (threshold, template) = (bundle_of("threshold"), bundle_of("template"));
    let cache = Cache::open(&store.cache_dir()).expect("cache");
    let settings = BTreeMap::new();
    // Threshold's answer to a hot oven: an alert; template would echo it instead.
    let alerts = |plugin: CompiledPlugin| {
        let mut worker = Worker::new(std::sync::Arc::new(plugin), RestartPolicy::default());
        let out = worker
            .handle(&message("sensors/oven/reading", br#"{"value": 95}"#))
            .unwrap_or_else(|e| panic!("{e}"));
        out.iter().any(|p| p.topic == "alerts/oven")
    };
    let compile = |bundle| CompiledPlugin::from_bundle(runtime(), bundle, &settings, Some(&cache));
    assert!(alerts(compile(threshold).expect("compiles")));
    compile(template).expect("compiles");
    let entry_of = |digest: &str| edgewise_tests::cache_entry(&store.cache_dir(), digest);
    let (mine, theirs) = (entry_of(&threshold.digest), entry_of(&template.digest));
    let good = std::fs::read(&mine).expect("entry");
    assert!(alerts(compile(threshold).expect("from the cache")));

    let spoil = |bytes: Vec<u8>, why: &str| {
        std::fs::write(&mine, &bytes).expect("spoil the entry");
        let plugin = compile(threshold).unwrap_or_else(|e| panic!("{why}: {e}"));
        assert!(alerts(plugin), "{why}: threshold's code runs as threshold");
        let rewritten = std::fs::read(&mine).expect("entry");
        assert_ne!(rewritten, bytes, "{why}: compiled again and rewritten");
    };
    spoil(
        std::fs::read(&theirs).expect("entry"),
        "template's entry in threshold's slot",
    );
    // The same, with its header rewritten to name threshold's bundle: only the MAC tells.
    let mut forged = std::fs::read(&theirs).expect("entry");
    forged[8..72].copy_from_slice(threshold.digest.as_bytes());
    spoil(forged, "a forged header");
    for at in [good.len() / 3, good.len() / 2, good.len() - 1] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x10;
        spoil(flipped, &format!("a bit flipped at byte {at}"));
    }
    spoil(b"not a compiled component".to_vec(), "garbage");
}

#[test]
fn a_release_key_rotation_needs_a_threshold_of_root_keys_and_revokes_the_old_bundles() {
    let work = tempfile::tempdir().expect("temporary directory");
    let path = |name: &str| work.path().join(name).to_string_lossy().into_owned();
    for name in ["root-a", "root-b", "old", "new"] {
        assert!(cli(&["keygen", &path(name)]).status.success());
    }
    let public = |name: &str| {
        std::fs::read_to_string(work.path().join(format!("{name}.pub")))
            .expect("public key")
            .trim()
            .to_owned()
    };
    let entry = |name: &str, role: &str, revoked: bool| {
        format!(
            "\n[[keys]]\nname = \"{name}\"\nrole = \"{role}\"\npublic-key = \"{}\"\nrevoked = {revoked}\n",
            public(name)
        )
    };
    let head = |version: u64| {
        format!("version = {version}\nexpires = 2099-01-01T00:00:00Z\n\n[thresholds]\nroot = 2\n")
    };
    let roots = || entry("root-a", "root", false) + &entry("root-b", "root", false);
    let broker = Broker::start();
    let mut gw = Gateway::prepare(&broker, "rotating", &[], "");
    let keyring = gw.dir().join("keyring.toml");
    let first = head(1) + &roots() + &entry("old", "release", false);
    std::fs::write(&keyring, &first).expect("keyring");
    gw.signed_only(&keyring);
    // Relative, as an operator writes it: resolved against the configuration's folder.
    edgewise_tests::edit(
        gw.dir(),
        "gateway.toml",
        &format!("keyring = \"{}\"", keyring.display()),
        "keyring = \"keyring.toml\"",
    );
    let config = gw.dir().join("gateway.toml").to_string_lossy().into_owned();

    let plugin = copy_plugin("threshold");
    let bundle_file = path("threshold.ewb");
    let pack = cli(&[
        "pack",
        &plugin.path().to_string_lossy(),
        "--key",
        &path("old.key"),
        "-o",
        &bundle_file,
    ]);
    assert!(pack.status.success(), "{}", text(&pack.stderr));
    assert!(
        cli(&["install", &bundle_file, "--config", &config])
            .status
            .success()
    );

    let rotated = path("keyring-v2.toml");
    let second =
        head(2) + &roots() + &entry("old", "release", true) + &entry("new", "release", false);
    std::fs::write(&rotated, &second).expect("new keyring");
    let sign = |keys: &[&str], out: &str| {
        let mut args = vec!["keyring", "sign", rotated.as_str(), "-o", out];
        let keys: Vec<String> = keys.iter().map(|k| path(&format!("{k}.key"))).collect();
        for k in &keys {
            args.extend(["--key", k.as_str()]);
        }
        let out = cli(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    for (signers, why) in [
        (
            vec!["old", "new"],
            "signed by 0 of the current keyring's root keys, 2 needed",
        ),
        (
            vec!["root-a"],
            "signed by 1 of the current keyring's root keys, 2 needed",
        ),
        (
            vec!["root-a", "root-a"],
            "signed by 1 of the current keyring's root keys, 2 needed",
        ),
    ] {
        let update = path("update.json");
        sign(&signers, &update);
        let refused = cli(&["keyring", "apply", &update, "--config", &config]);
        assert!(!refused.status.success(), "{signers:?} changed the keyring");
        assert!(
            text(&refused.stderr).contains(why),
            "{signers:?}: {}",
            text(&refused.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(&keyring).expect("keyring"),
            first,
            "a refused update changes nothing"
        );
    }

    let both = path("both.json");
    sign(&["root-a", "root-b"], &both);
    // From the gateway's folder with the default `--config gateway.toml` (regression: the
    // keyring was replaced, then the command failed syncing the directory of `keyring.toml`).
    let applied = Command::new(edgewise())
        .args(["keyring", "apply", &both])
        .current_dir(gw.dir())
        .env("NO_COLOR", "1")
        .output()
        .expect("edgewise runs");
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    assert!(
        text(&applied.stdout).contains("version 2 (4 keys, 1 revoked)"),
        "{}",
        text(&applied.stdout)
    );

    // The bundle the old key signed no longer loads; the gateway says why.
    gw.launch(&broker);
    let status = broker
        .retained("edgewise/rotating/status", Duration::from_secs(5))
        .unwrap_or_default();
    assert!(status.contains("revoked"), "{status}");
}

#[test]
fn pack_refuses_a_plugin_that_reaches_for_the_gateways_own_topics_naming_the_grant() {
    // Regression: `subscribe = ["#"]` read every gateway's status, the fleet's desired state
    // and the dead letters; `publish = ["edgewise/+/cmd"]` reached every gateway's commands.
    let trust = Trust::new();
    let key_file = trust.dir.path().join("release.key");
    std::fs::write(&key_file, trust.release.to_pem().expect("PEM")).expect("key file");
    for (from, to, key_name) in [
        (
            "subscribe = [\"sensors/#\"]",
            "subscribe = [\"#\"]",
            "subscribe[0]",
        ),
        (
            "subscribe = [\"sensors/#\"]",
            "subscribe = [\"sensors/#\", \"+/+/cmd\"]",
            "subscribe[1]",
        ),
        (
            "publish = [\"echo/#\"]",
            "publish = [\"edgewise/+/cmd\"]",
            "publish[0]",
        ),
        (
            "subscribe = [\"sensors/#\"]",
            "subscribe = [\"$SYS/#\"]",
            "subscribe[0]",
        ),
    ] {
        let plugin = copy_plugin("template");
        edgewise_tests::edit(plugin.path(), "plugin.toml", from, to);
        let out = cli(&[
            "pack",
            plugin.path().to_str().expect("UTF-8 path"),
            "--key",
            key_file.to_str().expect("UTF-8 path"),
            "-o",
            plugin.path().join("out.ewb").to_str().expect("UTF-8 path"),
        ]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "packed with {to}");
        assert!(
            err.contains(key_name) && err.contains("plugins may not"),
            "{to}: {err}"
        );
        assert!(!plugin.path().join("out.ewb").exists());
    }
}

#[test]
fn install_refuses_a_validly_signed_bundle_whose_grants_reach_the_gateways_topics() {
    // A signer that is not `edgewise pack` can sign any manifest: the store checks it too.
    let trust = Trust::new();
    let good = packed("template", &trust.release, &[], false);
    let mut bundle = Bundle::parse(&good).expect("a bundle");
    let manifest = String::from_utf8(bundle.manifest.clone()).expect("UTF-8 manifest");
    let hostile = manifest.replace("subscribe = [\"sensors/#\"]", "subscribe = [\"#\"]");
    assert_ne!(manifest, hostile);
    bundle.manifest = hostile.into_bytes();
    bundle.signatures = vec![trust.release.sign(PayloadType::Manifest, &bundle.manifest)];
    let store_dir = tempfile::tempdir().expect("store directory");
    let store =
        Store::open(store_dir.path(), trust.parsed(false), DEFAULT_MAX_BYTES).expect("store opens");
    let before = snapshot(store_dir.path());
    let reason = refusal(&store, &bundle.to_bytes());
    assert!(
        reason.contains("subscribe[0]") && reason.contains("`edgewise/#`"),
        "{reason}"
    );
    assert_eq!(
        snapshot(store_dir.path()),
        before,
        "the store did not change"
    );
}

//! Models encrypted at rest for chosen gateways: `keygen --gateway`, `pack --encrypt-for`,
//! install and run where the key is, refusal everywhere else, and no plaintext weights in the
//! store or its cache after a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use edgewise_signing::bundle::{self, PackOptions};
use edgewise_signing::encryption::GatewayPublicKey;
use edgewise_signing::{PayloadType, SecretKey};
use edgewise_tests::mqtt::{Broker, Gateway};
use edgewise_tests::{cli, copy_plugin, eval_set, model_file, text, write_keyring};

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Every file under `dir` with its size: what "the store is unchanged" compares.
fn listing(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) => {
                    files.insert(path, m.len());
                }
                Err(_) => {}
            }
        }
    }
    files
}

/// A gateway prepared to run signed bundles only, with its own decryption key if asked.
fn gateway(
    broker: &Broker,
    id: &str,
    keyring: &Path,
    with_key: bool,
) -> (Gateway, Option<GatewayPublicKey>) {
    let mut gw = Gateway::prepare(broker, id, &[], "");
    gw.signed_only(keyring);
    if !with_key {
        return (gw, None);
    }
    let config = gw.dir().join("gateway.toml");
    let out = cli(&["keygen", "--gateway", "--config", path_arg(&config)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let store = gw.dir().join("store");
    let mode = std::fs::metadata(store.join("gateway.x25519"))
        .expect("key written")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let public = std::fs::read_to_string(store.join("gateway.x25519.pub")).expect("public key");
    assert!(
        text(&out.stdout).contains(public.trim()),
        "{}",
        text(&out.stdout)
    );
    (
        gw,
        Some(public.trim().parse().expect("a gateway public key")),
    )
}

fn install(gw: &Gateway, bundle: &Path) -> Output {
    let config = gw.dir().join("gateway.toml");
    cli(&["install", path_arg(bundle), "--config", path_arg(&config)])
}

#[test]
fn an_encrypted_bundle_installs_only_on_its_gateway_and_runs_with_no_plaintext_weights_at_rest() {
    let work = tempfile::tempdir().expect("temporary directory");
    let (release, operator) = (
        SecretKey::generate().expect("key"),
        SecretKey::generate().expect("key"),
    );
    let keyring = work.path().join("keyring.toml");
    write_keyring(&keyring, &release, &operator);
    let key_file = work.path().join("release.key");
    std::fs::write(&key_file, release.to_pem().expect("PEM")).expect("key file");

    let broker = Broker::start();
    let (mut ours, ours_key) = gateway(&broker, "ours", &keyring, true);
    let (keyless, _) = gateway(&broker, "keyless", &keyring, false);
    let (stranger, _) = gateway(&broker, "stranger", &keyring, true);
    let ours_key = ours_key.expect("key");

    // Packed for our gateway by its public key file.
    let bundle_file = work.path().join("vibration.ewb");
    let pub_file = ours.dir().join("store/gateway.x25519.pub");
    let plugin = copy_plugin("vibration-fault");
    let out = cli(&[
        "pack",
        path_arg(plugin.path()),
        "--key",
        path_arg(&key_file),
        "--encrypt-for",
        path_arg(&pub_file),
        "-o",
        path_arg(&bundle_file),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!(
            "models encrypted for 1 gateway(s) ({})",
            ours_key.id()
        )),
        "{}",
        text(&out.stdout)
    );
    // Anyone verifies it: the signature covers the ciphertext.
    let out = cli(&[
        "verify",
        path_arg(&bundle_file),
        "--keyring",
        path_arg(&keyring),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A gateway without a key, and one with another key: refused, nothing written.
    for (gw, expected) in [
        (
            &keyless,
            "this gateway has no key: make one with `edgewise keygen --gateway --store".to_owned(),
        ),
        (
            &stranger,
            format!("encrypted for 1 other gateway key(s) ({})", ours_key.id()),
        ),
    ] {
        let before = listing(&gw.dir().join("store"));
        let out = install(gw, &bundle_file);
        assert!(!out.status.success(), "{}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains(&expected),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            listing(&gw.dir().join("store")),
            before,
            "the store is unchanged"
        );
    }

    // A ciphertext changed and signed again by the trusted key: the signature holds, the
    // encryption does not.
    let options = PackOptions {
        encrypt_for: vec![ours_key],
        ..PackOptions::default()
    };
    let mut tampered =
        bundle::pack_with(plugin.path(), &release, &options, &mut |_| {}).expect("packs");
    let model = tampered
        .files
        .iter_mut()
        .find(|(p, _)| p.ends_with(".onnx"))
        .expect("model");
    let at = model.1.len() / 2;
    model.1[at] ^= 0x40;
    let manifest = String::from_utf8(tampered.manifest.clone()).expect("UTF-8");
    let pin = format!("\"{}\" = {{ size = {}, sha256 = \"", model.0, model.1.len());
    let start = manifest.find(&pin).expect("pinned") + pin.len();
    let manifest = format!(
        "{}{}{}",
        &manifest[..start],
        bundle::sha256_hex(&model.1),
        &manifest[start + 64..]
    );
    tampered.manifest = manifest.into_bytes();
    tampered.signatures = vec![release.sign(PayloadType::Manifest, &tampered.manifest)];
    let tampered_file = work.path().join("tampered.ewb");
    std::fs::write(&tampered_file, tampered.to_bytes()).expect("write");
    let before = listing(&ours.dir().join("store"));
    let out = install(&ours, &tampered_file);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("model/vibration.onnx does not decrypt"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        listing(&ours.dir().join("store")),
        before,
        "the store is unchanged"
    );

    // Our gateway installs it and runs it.
    let out = install(&ours, &bundle_file);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sub = broker.subscribe(&["plant/+/vibration/diagnosis"]);
    ours.launch(&broker);
    let status = broker
        .retained("edgewise/ours/status", Duration::from_secs(5))
        .expect("status");
    assert!(
        status.contains(&format!("\"decryption_key\":\"{ours_key}\"")),
        "{status}"
    );
    let window = std::fs::read_to_string(eval_set("vibration-fault")).expect("windows");
    let line: serde_json::Value =
        serde_json::from_str(window.lines().next().expect("a window")).expect("JSON");
    broker.publish(
        "plant/pump-1/vibration",
        line["payload"].to_string().as_bytes(),
        1,
    );
    let (topic, diagnosis) = sub
        .next(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no diagnosis\n{}", ours.log()));
    assert_eq!(topic, "plant/pump-1/vibration/diagnosis");
    assert!(diagnosis.contains("\"class\""), "{diagnosis}");

    // No stretch of the plaintext weights is anywhere in the gateway's directory: store,
    // compiled cache, journal, log.
    let weights = std::fs::read(model_file("vibration-fault", "vibration.onnx")).expect("model");
    let probes: Vec<&[u8]> = [weights.len() / 4, weights.len() / 3, weights.len() / 2]
        .into_iter()
        .map(|at| &weights[at..at + 48])
        .collect();
    for (file, _) in listing(ours.dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for probe in &probes {
            assert!(
                !bytes.windows(probe.len()).any(|w| w == *probe),
                "plaintext weights in {}",
                file.display()
            );
        }
    }
    // The probes do find the weights where they are in the clear (the test can fail).
    let plain_copy = copy_plugin("vibration-fault");
    let clear = std::fs::read(plain_copy.path().join("model/vibration.onnx")).expect("model");
    assert!(
        probes
            .iter()
            .all(|p| clear.windows(p.len()).any(|w| w == *p))
    );
}

//! Bundles from a real plugin directory layout, and every way a bundle can be bad.

use std::path::Path;

use edgewise_signing::bundle::{self, PackOptions, pack, pack_with};
use edgewise_signing::encryption::GatewaySecretKey;
use edgewise_signing::{Bundle, BundleError, Keyring, PayloadType, SecretKey};

const MANIFEST: &str = r#"name = "demo"
version = "1.2.0"
release = 7
api = "0.1"
component = "plugin.wasm"
subscribe = ["sensors/#"]

[[models]]
name = "m"
encoding = "onnx"
file = "model/m.onnx"
"#;

struct Fixture {
    dir: tempfile::TempDir,
    release: SecretKey,
    operator: SecretKey,
    revoked: SecretKey,
    keyring: Keyring,
}

fn key() -> SecretKey {
    SecretKey::generate().unwrap_or_else(|e| panic!("{e}"))
}

fn fixture(manifest: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("plugin.toml"), manifest).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("plugin.wasm"), b"\0asm component bytes")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(dir.path().join("model")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("model/m.onnx"), vec![7u8; 5000])
        .unwrap_or_else(|e| panic!("{e}"));
    let (release, operator, revoked) = (key(), key(), key());
    let keyring = Keyring::parse(
        &format!(
            "version = 1\n\
             [[keys]]\nname = \"rel\"\nrole = \"release\"\npublic-key = \"{}\"\n\
             [[keys]]\nname = \"ops\"\nrole = \"operator\"\npublic-key = \"{}\"\n\
             [[keys]]\nname = \"old\"\nrole = \"release\"\npublic-key = \"{}\"\nrevoked = true\n",
            release.public(),
            operator.public(),
            revoked.public()
        ),
        Path::new("keyring.toml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Fixture {
        dir,
        release,
        operator,
        revoked,
        keyring,
    }
}

impl Fixture {
    fn bundle(&self) -> Bundle {
        pack(self.dir.path(), &self.release, false, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
    }

    fn verify(&self, bundle: &Bundle) -> Result<edgewise_signing::VerifiedBundle, BundleError> {
        Bundle::verify(&bundle.to_bytes(), &self.keyring, Path::new("demo.ewb"))
    }

    fn refusal(&self, bundle: &Bundle) -> String {
        match self.verify(bundle) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }
}

#[test]
fn a_bundle_file_is_verified_where_it_lies_and_a_file_changed_afterwards_is_not_handed_out() {
    let f = fixture(MANIFEST);
    let b = f.bundle();
    let path = f.dir.path().join("demo.ewb");
    std::fs::write(&path, b.to_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let v = Bundle::verify_file(&path, bundle::DEFAULT_MAX_BYTES, &f.keyring)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.digest, b.digest());
    let names: Vec<&str> = v.file_names().collect();
    assert_eq!(names, ["model/m.onnx", "plugin.wasm"]);
    assert!(
        v.file(Path::new("plugin.wasm"))
            .is_ok_and(|c| c == b"\0asm component bytes")
    );

    // The verified bundle reads from the file it verified: a byte changed in place since is
    // caught as the file is handed out, not run.
    let mut bytes = b.to_bytes();
    let at = bytes.len() - 1;
    bytes[at] ^= 1;
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}")),
        &bytes[at..],
        at as u64,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let changed = v.file(Path::new("plugin.wasm"));
    assert!(
        changed.as_ref().is_err_and(|e| e
            .to_string()
            .contains("changed since the bundle was verified")),
        "{changed:?}"
    );
    let refused = Bundle::verify_file(&path, bundle::DEFAULT_MAX_BYTES, &f.keyring);
    assert!(refused.is_err_and(|e| e.to_string().contains("plugin.wasm")));
    let small = Bundle::verify_file(&path, 100, &f.keyring);
    assert!(matches!(small, Err(BundleError::TooLarge { max: 100 })));
}

#[test]
fn a_packed_bundle_verifies_and_round_trips() {
    let f = fixture(MANIFEST);
    let b = f.bundle();
    let bytes = b.to_bytes();
    assert_eq!(Bundle::parse(&bytes).ok().as_ref(), Some(&b));
    let v = f.verify(&b).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.manifest.release, Some(7));
    assert_eq!(v.manifest.files.len(), 2);
    let model = v
        .file(Path::new("./model/m.onnx"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model, vec![7u8; 5000]);
    assert_eq!(v.signers, vec![f.release.public()]);
    assert_eq!(v.digest, bundle::sha256_hex(&b.manifest));
    assert_eq!(v.digest, b.digest());
    assert!(v.manifest_text.starts_with(MANIFEST));
}

#[test]
fn tampering_with_any_part_is_caught() {
    let f = fixture(MANIFEST);
    let mut b = f.bundle();
    b.files[0].1[0] ^= 1; // model/m.onnx sorts first
    let why = f.refusal(&b);
    assert!(why.contains("`model/m.onnx`: SHA-256"), "{why}");

    let mut b = f.bundle();
    b.files[1].1.push(0); // plugin.wasm, one byte longer
    let why = f.refusal(&b);
    assert!(
        why.contains("plugin.wasm") && why.contains("bytes, the manifest pins"),
        "{why}"
    );

    let mut b = f.bundle();
    let text = String::from_utf8(b.manifest.clone()).unwrap_or_default();
    b.manifest = text.replace("sensors/#", "#").into_bytes();
    let why = f.refusal(&b);
    assert!(why.contains("does not match the signed bytes"), "{why}");

    let mut b = f.bundle();
    b.files.push(("extra.bin".into(), vec![1, 2, 3]));
    assert!(f.refusal(&b).contains("not pinned"));

    let mut b = f.bundle();
    b.files.remove(0);
    assert!(f.refusal(&b).contains("missing from the bundle"));
}

#[test]
fn only_a_trusted_release_key_vouches_and_each_key_counts_once() {
    let f = fixture(MANIFEST);
    let resign = |key: &SecretKey, ty: PayloadType| {
        let mut b = f.bundle();
        b.signatures = vec![key.sign(ty, &b.manifest)];
        b
    };
    let stranger = key();
    let why = f.refusal(&resign(&stranger, PayloadType::Manifest));
    assert!(why.contains("not in the keyring"), "{why}");
    let why = f.refusal(&resign(&f.revoked, PayloadType::Manifest));
    assert!(why.contains("revoked"), "{why}");
    let why = f.refusal(&resign(&f.operator, PayloadType::Manifest));
    assert!(
        why.contains("is an operator key, not a release key"),
        "{why}"
    );
    // A command signature by the right key over the same bytes is not a manifest signature.
    let why = f.refusal(&resign(&f.release, PayloadType::Command));
    assert!(why.contains("does not match"), "{why}");
    let mut unsigned = f.bundle();
    unsigned.signatures.clear();
    assert!(f.refusal(&unsigned).contains("not signed"));
    // The same signature twice is one signer.
    let mut twice = f.bundle();
    twice.signatures.push(twice.signatures[0].clone());
    let v = f.verify(&twice).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.signers.len(), 1);
}

#[test]
fn framing_errors_say_where() {
    let f = fixture(MANIFEST);
    let bytes = f.bundle().to_bytes();
    let parse = |b: &[u8]| match Bundle::parse(b) {
        Ok(_) => panic!("parsed"),
        Err(e) => e.to_string(),
    };
    let why = parse(&bytes[..bytes.len() - 10]);
    assert!(why.contains("truncated"), "{why}");
    assert!(parse(b"NOTABUNDLE").contains("bad magic"));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(parse(&trailing).contains("after the last file"));
    for evil in ["../escape", "/etc/passwd", "a/../../b", "a\\b", "./a"] {
        let mut b = f.bundle();
        b.files[0].0 = evil.into();
        let why = parse(&b.to_bytes());
        assert!(why.contains("must be relative"), "{evil}: {why}");
    }
}

#[test]
fn a_bundle_over_the_cap_is_refused_before_it_is_read() {
    let f = fixture(MANIFEST);
    let path = f.dir.path().join("demo.ewb");
    std::fs::write(&path, f.bundle().to_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        bundle::read_capped(&path, 1000),
        Err(BundleError::TooLarge { max: 1000 })
    ));
    assert!(bundle::read_capped(&path, 1 << 20).is_ok());
}

#[test]
fn manifest_policy_unsupported_api_and_missing_release() {
    let f = fixture(MANIFEST);
    // Pack refuses an API it does not know; sign such a manifest by hand to reach the check.
    let mut b = f.bundle();
    let text = String::from_utf8(b.manifest.clone()).unwrap_or_default();
    b.manifest = text.replace("api = \"0.1\"", "api = \"9.0\"").into_bytes();
    b.signatures = vec![f.release.sign(PayloadType::Manifest, &b.manifest)];
    let why = f.refusal(&b);
    assert!(
        why.contains("`api`") && why.contains("does not match"),
        "{why}"
    );

    let f = fixture(&MANIFEST.replace("release = 7\n", ""));
    let err = pack(f.dir.path(), &f.release, false, &mut |_| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("release"), "{err}");
}

#[test]
fn a_rollback_bundle_says_so_in_its_signed_manifest() {
    let f = fixture(MANIFEST);
    let b = pack(f.dir.path(), &f.release, true, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let v = f.verify(&b).unwrap_or_else(|e| panic!("{e}"));
    assert!(v.manifest.rollback);
    assert!(
        !f.verify(&f.bundle())
            .map(|v| v.manifest.rollback)
            .unwrap_or(true)
    );
}

fn encrypted_for(f: &Fixture, gateways: &[&GatewaySecretKey]) -> Bundle {
    let options = PackOptions {
        encrypt_for: gateways.iter().map(|g| g.public()).collect(),
        ..PackOptions::default()
    };
    pack_with(f.dir.path(), &f.release, &options, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn an_encrypted_bundle_verifies_without_a_key_and_only_its_gateways_read_the_models() {
    let f = fixture(MANIFEST);
    let (a, b, stranger) = (gateway_key(), gateway_key(), gateway_key());
    let bundle = encrypted_for(&f, &[&a, &b]);
    let bytes = bundle.to_bytes();
    assert!(
        !bytes.windows(64).any(|w| w == [7u8; 64]),
        "the weights are not in the clear"
    );
    assert!(
        bytes.windows(20).any(|w| w == b"\0asm component bytes"),
        "the component is"
    );

    // The signature and the pins need no key: they cover the ciphertext.
    let v = f.verify(&bundle).unwrap_or_else(|e| panic!("{e}"));
    let store = Path::new("/var/lib/edgewise/store");
    assert!(
        v.plain_file(Path::new("model/m.onnx")).is_err(),
        "locked until unlocked"
    );
    for gateway in [&a, &b] {
        let mut v = v.clone();
        v.unlock(Some(gateway), store)
            .unwrap_or_else(|e| panic!("{e}"));
        let model = v
            .plain_file(Path::new("model/m.onnx"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(model.as_slice(), vec![7u8; 5000].as_slice());
    }
    let refusal = v
        .clone()
        .unlock(Some(&stranger), store)
        .expect_err("refused")
        .to_string();
    assert!(
        refusal.contains("encrypted for 2 other gateway key(s)"),
        "{refusal}"
    );
    assert!(refusal.contains(&stranger.public().id()), "{refusal}");
    let refusal = v
        .clone()
        .unlock(None, store)
        .expect_err("refused")
        .to_string();
    assert!(
        refusal.contains("edgewise keygen --gateway --store /var/lib/edgewise/store"),
        "{refusal}"
    );
    // Without encryption there is nothing to unlock, and the model reads as it is.
    let mut plain = f.verify(&f.bundle()).unwrap_or_else(|e| panic!("{e}"));
    plain.unlock(None, store).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        plain
            .plain_file(Path::new("model/m.onnx"))
            .is_ok_and(|m| m.len() == 5000)
    );
}

#[test]
fn a_ciphertext_changed_and_signed_again_fails_authentication() {
    let f = fixture(MANIFEST);
    let a = gateway_key();
    let mut bundle = encrypted_for(&f, &[&a]);
    // Flip a byte of the ciphertext, then pin and sign the change with the trusted key: the
    // signature holds, the encryption does not.
    let model = bundle
        .files
        .iter_mut()
        .find(|(p, _)| p == "model/m.onnx")
        .expect("model");
    let at = model.1.len() / 2;
    model.1[at] ^= 1;
    let digest = bundle::sha256_hex(&model.1);
    let text = String::from_utf8(bundle.manifest.clone()).expect("UTF-8");
    let start = text.find("\"model/m.onnx\" = ").expect("pin");
    let old = &text[start..start + text[start..].find('\n').expect("line")];
    let new = format!(
        "\"model/m.onnx\" = {{ size = {}, sha256 = \"{digest}\" }}",
        model.1.len()
    );
    bundle.manifest = text.replace(old, &new).into_bytes();
    bundle.signatures = vec![f.release.sign(PayloadType::Manifest, &bundle.manifest)];
    let mut v = f.verify(&bundle).unwrap_or_else(|e| panic!("{e}"));
    let refusal = v
        .unlock(Some(&a), Path::new("store"))
        .expect_err("refused")
        .to_string();
    assert!(
        refusal.contains("model file model/m.onnx does not decrypt"),
        "{refusal}"
    );
}

#[test]
fn encryption_is_written_by_pack_only_and_needs_a_model() {
    let by_hand = format!(
        "{MANIFEST}\n[encryption]\nscheme = \"{}\"\nfiles = [\"model/m.onnx\"]\nrecipients = []\n",
        edgewise_signing::encryption::SCHEME
    );
    let f = fixture(&by_hand);
    let refusal = pack(f.dir.path(), &f.release, false, &mut |_| {})
        .expect_err("refused")
        .to_string();
    assert!(refusal.contains("`encryption`"), "{refusal}");
    let no_model = MANIFEST
        .split("[[models]]")
        .next()
        .expect("head")
        .to_owned();
    let f = fixture(&no_model);
    let options = PackOptions {
        encrypt_for: vec![gateway_key().public()],
        ..PackOptions::default()
    };
    let refusal = pack_with(f.dir.path(), &f.release, &options, &mut |_| {})
        .expect_err("refused")
        .to_string();
    assert!(refusal.contains("no model files to encrypt"), "{refusal}");
}

fn gateway_key() -> GatewaySecretKey {
    GatewaySecretKey::generate().unwrap_or_else(|e| panic!("{e}"))
}

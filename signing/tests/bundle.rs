//! Bundles from a real plugin directory layout, and every way a bundle can be bad.

use std::path::Path;

use edgewise_signing::bundle::{self, pack};
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

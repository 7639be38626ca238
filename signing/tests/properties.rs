//! Property tests for the parsers that read untrusted bytes: the bundle container, the
//! manifest, the keyring, the signed envelope, and a keyring update's acceptance. They stand in for `cargo fuzz`, which needs a nightly toolchain
//! this project's CI does not have. `PROPTEST_CASES` raises the number of cases.

use std::path::Path;
use std::sync::OnceLock;

use edgewise_signing::bundle::pack;
use edgewise_signing::envelope::Envelope;
use edgewise_signing::{Bundle, Keyring, Manifest, PayloadType, SecretKey};
use proptest::prelude::*;

/// One valid signed bundle and the keyring that trusts it.
fn valid() -> &'static (Vec<u8>, Keyring) {
    static VALID: OnceLock<(Vec<u8>, Keyring)> = OnceLock::new();
    VALID.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.path().join(name), bytes).unwrap_or_else(|e| panic!("{e}"))
        };
        write(
            "plugin.toml",
            b"name = \"p\"\nversion = \"1.0.0\"\nrelease = 1\napi = \"0.1\"\ncomponent = \"c.wasm\"\nsubscribe = [\"a/#\"]\n\n[[models]]\nname = \"m\"\nencoding = \"onnx\"\nfile = \"m.onnx\"\n",
        );
        write("c.wasm", &[1u8; 300]);
        write("m.onnx", &[2u8; 300]);
        let key = SecretKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let bundle = pack(dir.path(), &key, false, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
        let keyring = Keyring::parse(
            &format!(
                "version = 1\n[[keys]]\nname = \"k\"\nrole = \"release\"\npublic-key = \"{}\"\n",
                key.public()
            ),
            Path::new("k.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (bundle.to_bytes(), keyring)
    })
}

proptest! {
    #[test]
    fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Bundle::parse(&bytes);
    }

    #[test]
    fn any_bytes_after_the_magic_parse_or_fail_without_panicking(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"EWBUNDLE\0\x01".to_vec();
        bytes.extend(tail);
        let _ = Bundle::parse(&bytes);
    }

    #[test]
    fn every_single_byte_change_to_a_signed_bundle_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let (bytes, keyring) = valid();
        let mut changed = bytes.clone();
        let at = at.index(changed.len());
        changed[at] ^= flip;
        prop_assert!(Bundle::verify(&changed, keyring, Path::new("x.ewb")).is_err(), "byte {} changed and still verified", at);
    }

    #[test]
    fn a_truncated_bundle_is_refused(keep in any::<prop::sample::Index>()) {
        let (bytes, keyring) = valid();
        let keep = keep.index(bytes.len());
        prop_assert!(Bundle::verify(&bytes[..keep], keyring, Path::new("x.ewb")).is_err());
    }

    #[test]
    fn any_text_is_a_manifest_or_an_error(text in "\\PC{0,400}") {
        let _ = Manifest::parse(&text, Path::new("plugin.toml"));
        let _ = Keyring::parse(&text, Path::new("keyring.toml"));
    }

    #[test]
    fn manifest_like_text_is_a_manifest_or_an_error(
        name in "[a-z-]{0,10}",
        version in "[0-9.]{0,8}",
        topic in "[a-z/+#$]{0,12}",
        path in "[a-z./]{0,12}",
    ) {
        let text = format!("name = \"{name}\"\nversion = \"{version}\"\napi = \"0.1\"\ncomponent = \"{path}\"\nsubscribe = [\"{topic}\"]\n[files]\n\"{path}\" = {{ size = 1, sha256 = \"{name}\" }}\n");
        let _ = Manifest::parse(&text, Path::new("plugin.toml"));
    }
}

/// A root key, its keyring (version 1), and a signed update to version 2.
fn keyring_update() -> &'static (Keyring, String, Vec<u8>) {
    static UPDATE: OnceLock<(Keyring, String, Vec<u8>)> = OnceLock::new();
    UPDATE.get_or_init(|| {
        let root = SecretKey::generate().expect("key");
        let ring = |version: u64| {
            format!(
                "version = {version}\nexpires = 2099-01-01T00:00:00Z\n[[keys]]\nname = \"root\"\nrole = \"root\"\npublic-key = \"{}\"\n",
                root.public()
            )
        };
        let current = Keyring::parse(&ring(1), Path::new("k.toml")).expect("keyring");
        let next = ring(2);
        let json = Envelope::sign(PayloadType::Keyring, next.clone().into_bytes(), &[&root])
            .to_json(PayloadType::Keyring);
        (current, next, json.into_bytes())
    })
}

const NOW_MS: u64 = 1_800_000_000_000;

proptest! {
    #[test]
    fn any_text_is_an_envelope_or_an_error(text in "\\PC{0,400}") {
        for ty in [PayloadType::Command, PayloadType::DesiredState, PayloadType::Keyring, PayloadType::TrustReset] {
            let _ = Envelope::from_json(&text, ty);
        }
    }

    #[test]
    fn any_text_is_a_keyring_or_an_error(text in "\\PC{0,400}") {
        let _ = Keyring::parse(&text, Path::new("k.toml"));
    }

    #[test]
    fn keyring_like_text_is_a_keyring_or_an_error(
        version in any::<u64>(),
        root in 0usize..5,
        operator in 0usize..5,
        year in 1900u32..3000,
        role in prop::sample::select(vec!["root", "release", "operator", "king", ""]),
    ) {
        let text = format!(
            "version = {version}\nexpires = {year}-01-01T00:00:00Z\n[thresholds]\nroot = {root}\noperator = {operator}\n[[keys]]\nname = \"k\"\nrole = \"{role}\"\npublic-key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n"
        );
        let _ = Keyring::parse(&text, Path::new("k.toml"));
    }

    #[test]
    fn no_single_byte_change_to_a_keyring_update_gets_another_keyring_accepted(
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let (current, next, json) = keyring_update();
        let mut changed = json.clone();
        let i = at.index(changed.len());
        changed[i] ^= flip;
        let accepted = std::str::from_utf8(&changed)
            .ok()
            .and_then(|t| Envelope::from_json(t, PayloadType::Keyring).ok())
            .and_then(|e| current.accept_update(&e, Path::new("update"), NOW_MS).ok());
        // JSON whitespace may change harmlessly; what is accepted is never another keyring.
        if let Some((_, text)) = accepted {
            prop_assert_eq!(&text, next);
        }
    }
}

#[test]
fn the_valid_bundle_itself_verifies() {
    let (bytes, keyring) = valid();
    assert!(Bundle::verify(bytes, keyring, Path::new("x.ewb")).is_ok());
}

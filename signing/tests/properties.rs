//! Property tests for the parsers that read untrusted bytes: the bundle container, the
//! manifest and the keyring. They stand in for `cargo fuzz`, which needs a nightly toolchain
//! this project's CI does not have. `PROPTEST_CASES` raises the number of cases.

use std::path::Path;
use std::sync::OnceLock;

use edgewise_signing::bundle::pack;
use edgewise_signing::{Bundle, Keyring, Manifest, SecretKey};
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

#[test]
fn the_valid_bundle_itself_verifies() {
    let (bytes, keyring) = valid();
    assert!(Bundle::verify(bytes, keyring, Path::new("x.ewb")).is_ok());
}

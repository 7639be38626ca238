//! The test vectors of `docs/test-vectors.json`, for anyone implementing the formats of
//! `docs/bundle-format.md` and `docs/management.md` in another language.
//!
//! The file is built here from two fixed seeds and must equal what is committed (regenerate it
//! with `EDGEWISE_WRITE_VECTORS=1 cargo test -p edgewise-signing --test vectors` after a
//! deliberate format change). Every value in it is also recomputed by hand from its definition
//! (SHA-256, ed25519 over the PAE string, the container layout), without this crate's
//! helpers, so that the file pins the specification and does not merely echo the code.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use edgewise_signing::bundle::Bundle;
use edgewise_signing::command::{Action, Command, DesiredState, TrustReset};
use edgewise_signing::envelope::Envelope;
use edgewise_signing::{Keyring, PayloadType, SecretKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ROOT_SEED: [u8; 32] = [0x01; 32];
const OPERATOR_SEED: [u8; 32] = [0x02; 32];

const MANIFEST: &str = r#"name = "hello"
version = "1.0.0"
release = 1
api = "0.1"
component = "plugin.wasm"
subscribe = ["sensors/#"]
publish = ["hello/out"]

[files]
"plugin.wasm" = { size = 8, sha256 = "24eaf3439a60c96764c4f2c92a0a81b52bd4fe5d5b91f090184a0f6486b1bf29" }
"#;

fn key_entry(name: &str, key: &SecretKey) -> Value {
    json!({
        "name": name,
        "public-key-base64": key.public().to_string(),
        "keyid": key.public().keyid(),
    })
}

fn vectors() -> Value {
    let root = SecretKey::from_seed(ROOT_SEED);
    let operator = SecretKey::from_seed(OPERATOR_SEED);
    let manifest_signature = root.sign(PayloadType::Manifest, MANIFEST.as_bytes());
    let bundle = Bundle {
        manifest: MANIFEST.as_bytes().to_vec(),
        signatures: vec![manifest_signature.clone()],
        files: vec![("plugin.wasm".into(), b"\0asm\x0d\0\x01\0".to_vec())],
    };
    let command = Command {
        id: "c-1".into(),
        gateway: "line-7".into(),
        seq: 1_800_000_000_000,
        issued_at_ms: 1_800_000_000_000,
        expires_at_ms: 1_800_000_060_000,
        action: Action::Stop {
            plugin: "hello".into(),
        },
    };
    let desired = DesiredState {
        group: "line".into(),
        version: 1_800_000_000_000,
        issued_at_ms: 1_800_000_000_000,
        expires_at_ms: 1_802_592_000_000,
        plugins: BTreeMap::from([("hello".to_owned(), bundle.digest())]),
        canary: None,
        shadow: Default::default(),
    };
    let keyring = format!(
        "version = 2\nexpires = 2027-01-15T08:00:00Z\n\n[thresholds]\nroot = 1\n\n[[keys]]\nname = \"root\"\nrole = \"root\"\npublic-key = \"{}\"\n\n[[keys]]\nname = \"ops\"\nrole = \"operator\"\npublic-key = \"{}\"\n",
        root.public(),
        operator.public()
    );
    let reset = TrustReset {
        gateway: "line-7".into(),
        nonce: "00112233445566778899aabbccddeeff".into(),
        command_seq: 1_800_000_000_000,
        desired_version: 0,
        desired_issued_at_ms: 0,
        time_floor_ms: 1_800_000_000_000,
    };
    let envelope = |ty: PayloadType, payload: &[u8], key: &SecretKey| -> Value {
        let json = Envelope::sign(ty, payload.to_vec(), &[key]).to_json(ty);
        serde_json::from_str(&json).unwrap_or_default()
    };
    let command_json = serde_json::to_string(&command).unwrap_or_default();
    let desired_json = serde_json::to_string(&desired).unwrap_or_default();
    let reset_json = serde_json::to_string(&reset).unwrap_or_default();
    json!({
        "about": "Test vectors for Edgewise signed bundles and DSSE envelopes: docs/bundle-format.md, docs/management.md. Seeds are RFC 8032 private keys; every base64 is standard with padding.",
        "keys": [
            { "seed-hex": hex::encode(ROOT_SEED), "role": "root", "key": key_entry("root", &root) },
            { "seed-hex": hex::encode(OPERATOR_SEED), "role": "operator", "key": key_entry("ops", &operator) },
        ],
        "pae": {
            "payload-type": PayloadType::Manifest.as_str(),
            "body": "hello",
            "signed-bytes": "DSSEv1 38 application/vnd.edgewise.manifest+toml 5 hello",
        },
        "manifest-signature": {
            "signer": "root",
            "manifest": MANIFEST,
            "signature-base64": STANDARD.encode(manifest_signature.bytes),
        },
        "bundle": {
            "container-hex": hex::encode(bundle.to_bytes()),
            "digest": bundle.digest(),
        },
        "command": {
            "signer": "ops",
            "payload": command_json,
            "envelope": envelope(PayloadType::Command, command_json.as_bytes(), &operator),
        },
        "desired-state": {
            "signer": "ops",
            "payload": desired_json,
            "envelope": envelope(PayloadType::DesiredState, desired_json.as_bytes(), &operator),
        },
        "keyring-update": {
            "signer": "root",
            "payload": keyring,
            "envelope": envelope(PayloadType::Keyring, keyring.as_bytes(), &root),
        },
        "trust-reset": {
            "signer": "root",
            "payload": reset_json,
            "envelope": envelope(PayloadType::TrustReset, reset_json.as_bytes(), &root),
        },
    })
}

fn file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/test-vectors.json")
}

#[test]
fn the_documented_vectors_are_what_this_implementation_produces() {
    let built = vectors();
    if std::env::var("EDGEWISE_WRITE_VECTORS").as_deref() == Ok("1") {
        let text = serde_json::to_string_pretty(&built).unwrap_or_default() + "\n";
        std::fs::write(file(), text).expect("write the vectors");
    }
    let text = std::fs::read_to_string(file()).expect("docs/test-vectors.json");
    let documented: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        documented, built,
        "docs/test-vectors.json differs from what the code produces"
    );
}

/// The PAE string of `ty` and `body`, written out by hand.
fn pae(ty: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {ty} {} ", ty.len(), body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

fn b64(v: &Value) -> Vec<u8> {
    STANDARD
        .decode(v.as_str().expect("a string"))
        .expect("base64")
}

#[test]
fn every_documented_value_follows_from_its_definition() {
    let text = std::fs::read_to_string(file()).expect("docs/test-vectors.json");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    let mut keys: BTreeMap<String, VerifyingKey> = BTreeMap::new();
    for k in v["keys"].as_array().expect("keys") {
        let seed: [u8; 32] = hex::decode(k["seed-hex"].as_str().expect("seed"))
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        assert_eq!(b64(&k["key"]["public-key-base64"]), public.to_bytes());
        assert_eq!(
            k["key"]["keyid"],
            hex::encode(Sha256::digest(public.to_bytes())),
            "keyid = SHA-256 of the raw key"
        );
        keys.insert(k["key"]["name"].as_str().expect("name").to_owned(), public);
    }
    let verify = |signer: &Value, ty: &str, body: &[u8], sig: &[u8]| {
        let key = &keys[signer.as_str().expect("signer")];
        let sig = DalekSignature::from_slice(sig).expect("64 bytes");
        key.verify_strict(&pae(ty, body), &sig)
            .expect("the signature verifies over the PAE");
    };

    let p = &v["pae"];
    let body = p["body"].as_str().expect("body").as_bytes();
    let ty = p["payload-type"].as_str().expect("type");
    assert_eq!(
        pae(ty, body),
        p["signed-bytes"].as_str().expect("bytes").as_bytes()
    );

    let m = &v["manifest-signature"];
    let manifest = m["manifest"].as_str().expect("manifest").as_bytes();
    let manifest_type = "application/vnd.edgewise.manifest+toml";
    verify(
        &m["signer"],
        manifest_type,
        manifest,
        &b64(&m["signature-base64"]),
    );

    // The container, read field by field as the table in bundle-format.md lays it out.
    let container = hex::decode(v["bundle"]["container-hex"].as_str().expect("hex")).expect("hex");
    let mut at = 0;
    let mut take = |n: usize| {
        at += n;
        container[at - n..at].to_vec()
    };
    assert_eq!(take(8), b"EWBUNDLE");
    assert_eq!(take(2), [0, 1]);
    let m_len = u32::from_be_bytes(take(4).try_into().expect("4 bytes")) as usize;
    let signed = take(m_len);
    assert_eq!(signed, manifest);
    assert_eq!(
        v["bundle"]["digest"],
        hex::encode(Sha256::digest(&signed)),
        "digest = SHA-256 of the manifest"
    );
    assert_eq!(take(2), [0, 1], "one signature");
    assert_eq!(take(32), keys["root"].to_bytes(), "its key, then");
    let sig = take(64);
    verify(&json!("root"), manifest_type, &signed, &sig);
    assert_eq!(take(2), [0, 1], "one file");
    let path_len = u16::from_be_bytes(take(2).try_into().expect("2 bytes")) as usize;
    assert_eq!(take(path_len), b"plugin.wasm");
    let size = u64::from_be_bytes(take(8).try_into().expect("8 bytes")) as usize;
    let content = take(size);
    assert_eq!(
        hex::encode(Sha256::digest(&content)),
        "24eaf3439a60c96764c4f2c92a0a81b52bd4fe5d5b91f090184a0f6486b1bf29"
    );
    assert_eq!(at, container.len(), "nothing after the last file");

    for (name, ty) in [
        ("command", "application/vnd.edgewise.command+json"),
        (
            "desired-state",
            "application/vnd.edgewise.desired-state+json",
        ),
        ("keyring-update", "application/vnd.edgewise.keyring+toml"),
        ("trust-reset", "application/vnd.edgewise.trust-reset+json"),
    ] {
        let d = &v[name];
        let env = &d["envelope"];
        let fields: Vec<&str> = env
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, ["payloadType", "payload", "signatures"], "{name}");
        assert_eq!(env["payloadType"], ty, "{name}");
        let payload = b64(&env["payload"]);
        assert_eq!(
            payload,
            d["payload"].as_str().expect("payload").as_bytes(),
            "{name}"
        );
        let signature = &env["signatures"][0];
        let signer = d["signer"].as_str().expect("signer");
        assert_eq!(
            signature["keyid"],
            hex::encode(Sha256::digest(keys[signer].to_bytes())),
            "{name}: keyid names the signer"
        );
        verify(&d["signer"], ty, &payload, &b64(&signature["sig"]));
    }
    // And this implementation reads what it documents.
    let keyring = Keyring::parse(
        v["keyring-update"]["payload"].as_str().expect("toml"),
        Path::new("vector"),
    )
    .expect("the keyring parses");
    let command = Command::verify(v["command"]["envelope"].to_string().as_bytes(), &keyring)
        .expect("the command verifies");
    assert_eq!(command.0.id, "c-1");
    DesiredState::verify(
        v["desired-state"]["envelope"].to_string().as_bytes(),
        &keyring,
    )
    .expect("the desired state verifies");
    let (reset, _) = TrustReset::verify(
        v["trust-reset"]["envelope"].to_string().as_bytes(),
        &keyring,
    )
    .expect("the reset verifies");
    assert_eq!(reset.gateway, "line-7");
}

//! The command line at its rough edges, as a new operator meets them.

use std::process::{Command, Stdio};

use edgewise_tests::{edgewise, pack_example, text};

#[test]
fn version_names_the_command() {
    let out = Command::new(edgewise())
        .arg("--version")
        .output()
        .expect("runs");
    assert_eq!(
        text(&out.stdout).trim(),
        format!("edgewise {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn inspect_into_a_reader_that_stops_early_ends_quietly() {
    // Regression: `edgewise inspect b.ewb | head` panicked on the broken pipe.
    let key = edgewise_signing::SecretKey::generate().expect("key");
    let dir = tempfile::tempdir().expect("temporary directory");
    let bundle = dir.path().join("threshold.ewb");
    std::fs::write(&bundle, pack_example("threshold", &key, &[], false)).expect("bundle");
    let mut child = Command::new(edgewise())
        .arg("inspect")
        .arg(&bundle)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    // Hang up before it writes (it reads and parses the bundle first), as a `head` that has
    // had its lines does: every write then fails with a broken pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("ends");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn a_public_key_given_to_sign_with_says_which_file_to_give() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let made = Command::new(edgewise())
        .args(["keygen", "release"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(made.status.success());
    let plugin = edgewise_tests::plugin_dir("threshold");
    let out = Command::new(edgewise())
        .arg("pack")
        .arg(&plugin)
        .args(["--key", "release.pub"])
        .current_dir(dir.path())
        .output()
        .expect("runs");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("release.pub")
            && stderr.contains("this is a public key")
            && stderr.contains("NAME.key"),
        "{stderr}"
    );
}

#[test]
fn the_demo_outside_the_repository_says_where_the_plugins_are() {
    let elsewhere = tempfile::tempdir().expect("temporary directory");
    let out = Command::new(edgewise())
        .args(["demo", "--seconds", "1"])
        .current_dir(elsewhere.path())
        .output()
        .expect("runs");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--plugins"), "{stderr}");
}

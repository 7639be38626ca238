//! The Debian package (`scripts/package amd64`): what it installs, and its systemd unit checked
//! by systemd's own tools.

use std::path::Path;
use std::process::Command;

use edgewise_tests::{edgewise, repo, text};

#[test]
fn the_amd64_package_holds_a_working_binary_a_conffile_and_a_hardened_unit_systemd_accepts() {
    // The binary this test runs beside is the one packaged.
    let target_dir = edgewise()
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_owned();
    let built = Command::new(repo().join("scripts/package"))
        .arg("amd64")
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("scripts/package runs");
    assert!(built.status.success(), "{}", text(&built.stderr));
    let version = env!("CARGO_PKG_VERSION");
    let deb = repo().join(format!("target/debian/edgewise_{version}_amd64.deb"));

    let root = tempfile::tempdir().expect("temporary directory");
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path())
        .status()
        .expect("dpkg-deb runs");
    assert!(unpacked.success());
    let control = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .output()
        .expect("dpkg-deb runs");
    let control = text(&control.stdout);
    assert!(
        control.contains("Architecture: amd64") && control.contains(&format!("Version: {version}")),
        "{control}"
    );
    let control_dir = root.path().join("DEBIAN");
    let extracted = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control_dir)
        .status()
        .expect("dpkg-deb runs");
    assert!(extracted.success());
    let conffiles = std::fs::read_to_string(control_dir.join("conffiles")).expect("conffiles");
    assert_eq!(
        conffiles.trim(),
        "/etc/edgewise/gateway.toml",
        "an upgrade keeps the operator's"
    );
    let postinst = std::fs::read_to_string(control_dir.join("postinst")).expect("postinst");
    assert!(postinst.contains("adduser --system --group"), "{postinst}");

    let binary = root.path().join("usr/bin/edgewise");
    let version_line = Command::new(&binary)
        .arg("--version")
        .output()
        .expect("it runs");
    assert_eq!(
        text(&version_line.stdout).trim(),
        format!("edgewise {version}")
    );
    // The packaged configuration is a valid one (it names no keyring: nothing runs until the
    // operator adds one, and it says so).
    assert!(root.path().join("etc/edgewise/gateway.toml").is_file());

    // The unit, pointed at the unpacked binary, passes `systemd-analyze verify`, and its
    // exposure is low.
    let unit = std::fs::read_to_string(root.path().join("lib/systemd/system/edgewise.service"))
        .expect("unit");
    for setting in [
        "Type=notify",
        "User=edgewise",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "StateDirectory=edgewise",
        "ReadWritePaths=/var/lib/edgewise",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(setting), "{setting} in\n{unit}");
    }
    let checked = root.path().join("edgewise.service");
    std::fs::write(
        &checked,
        unit.replace("/usr/bin/edgewise", &binary.to_string_lossy()),
    )
    .expect("unit copy");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked)
        .output()
        .expect("systemd-analyze runs");
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&checked)
        .output()
        .expect("systemd-analyze runs");
    let report = text(&security.stdout) + &text(&security.stderr);
    let exposure: f64 = report
        .split("Overall exposure level for edgewise.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{report}");
}

//! The Debian package (`scripts/package amd64`): what it installs, and its systemd unit checked
//! by systemd's own tools.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use edgewise_tests::mqtt::{Broker, free_port, http_get};
use edgewise_tests::{edgewise, eventually, repo, text};

/// `scripts/package amd64`, built once for the tests of this file, from the binary they run
/// beside (the release build: the shipped `dist` one is the same code, linked with LTO, and
/// would cost CI a second build).
fn amd64_package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let target_dir = edgewise()
            .parent()
            .and_then(Path::parent)
            .expect("target directory")
            .to_owned();
        let built = Command::new(repo().join("scripts/package"))
            .arg("amd64")
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("EDGEWISE_PROFILE", "release")
            .output()
            .expect("scripts/package runs");
        assert!(built.status.success(), "{}", text(&built.stderr));
        let version = env!("CARGO_PKG_VERSION");
        repo().join(format!("target/debian/edgewise_{version}_amd64.deb"))
    })
}

#[test]
fn the_amd64_package_holds_a_working_binary_a_conffile_and_a_hardened_unit_systemd_accepts() {
    let deb = amd64_package();
    let version = env!("CARGO_PKG_VERSION");

    let root = tempfile::tempdir().expect("temporary directory");
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(root.path())
        .status()
        .expect("dpkg-deb runs");
    assert!(unpacked.success());
    let control = Command::new("dpkg-deb")
        .arg("-I")
        .arg(deb)
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
        .arg(deb)
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

/// A clean Debian 12 in a fresh folder, as a new gateway would have it: `debootstrap`'s
/// minimal base with systemd, from Debian's mirror (about 40 s).
fn clean_bookworm() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temporary directory");
    let made = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=systemd", "bookworm"])
        .arg(root.path())
        .arg("http://deb.debian.org/debian")
        .output()
        .expect("debootstrap runs (scripts/test installs it)");
    assert!(
        made.status.success(),
        "{}{}",
        text(&made.stdout),
        text(&made.stderr)
    );
    root
}

/// Runs `script` with `sh` inside `root` as `user`, with its own /proc (mounted in a mount
/// namespace of its own, so nothing is left mounted when it ends).
fn in_root(root: &Path, user: &str, script: &str) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--fork", "sh", "-c"])
        .arg(r#"mount -t proc proc "$0/proc" && exec chroot --userspec="$1" "$0" sh -c "$2""#)
        .arg(root)
        .arg(format!("{user}:{user}"))
        .arg(script);
    command
}

fn succeeds(mut command: Command) -> String {
    let out = command.output().expect("it runs");
    assert!(
        out.status.success(),
        "{:?}:\n{}{}",
        command,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn the_amd64_package_installs_on_a_clean_debian_and_runs_as_its_service_user() {
    let deb = amd64_package();
    let root = clean_bookworm();
    let r = root.path();
    std::fs::copy(deb, r.join("tmp/edgewise.deb")).expect("package copied in");
    // As the operations guide says: apt brings what it depends on.
    succeeds(in_root(
        r,
        "root",
        "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq /tmp/edgewise.deb",
    ));

    let passwd = std::fs::read_to_string(r.join("etc/passwd")).expect("passwd");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("edgewise:"))
        .unwrap_or_else(|| panic!("no edgewise user:\n{passwd}"));
    assert!(
        user.ends_with(":/var/lib/edgewise:/usr/sbin/nologin"),
        "{user}"
    );
    let owner = succeeds(in_root(
        r,
        "root",
        "stat -c '%U:%G %a' /etc/edgewise/gateway.toml",
    ));
    assert_eq!(
        owner.trim(),
        "root:edgewise 640",
        "readable by the service, not by others"
    );
    // systemd of the clean system accepts the unit as installed (binary, kill for reload).
    succeeds(in_root(
        r,
        "root",
        "systemd-analyze verify /lib/systemd/system/edgewise.service",
    ));

    // What systemd's StateDirectory= makes, then the operator's edit of the conffile.
    succeeds(in_root(
        r,
        "root",
        "install -d -o edgewise -g edgewise -m 0700 /var/lib/edgewise",
    ));
    let broker = Broker::start();
    let metrics = free_port();
    let config = r.join("etc/edgewise/gateway.toml");
    let packaged = std::fs::read_to_string(&config).expect("conffile");
    std::fs::write(
        &config,
        packaged
            .replace("\"gateway-1\"", "\"chrooted\"")
            .replace(
                "mqtt://127.0.0.1:1883",
                &format!("mqtt://127.0.0.1:{}", broker.port),
            )
            .replace("127.0.0.1:9464", &format!("127.0.0.1:{metrics}")),
    )
    .expect("conffile edited");

    // The packaged binary on a clean system, as the service user, with the packaged config.
    let log = r.join("tmp/gateway.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let mut gateway = in_root(
        r,
        "edgewise",
        "exec /usr/bin/edgewise run --config /etc/edgewise/gateway.toml",
    )
    .stdout(log_file.try_clone().expect("log"))
    .stderr(log_file)
    .spawn()
    .expect("the gateway starts");
    let status = eventually(Duration::from_secs(30), "the gateway comes online", || {
        broker
            .retained("edgewise/chrooted/status", Duration::from_secs(1))
            .filter(|s| s.contains("\"online\""))
            .ok_or_else(|| std::fs::read_to_string(&log).unwrap_or_default())
    });
    assert_eq!(http_get(metrics, "/healthz"), "ok\n");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let pid = status["pid"].as_u64().expect("the status names its pid");
    let term = Command::new("kill").arg(pid.to_string()).status();
    assert!(term.is_ok_and(|s| s.success()));
    let exited = gateway.wait().expect("the gateway exits");
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exited.success(), "{log}");
    let store = succeeds(in_root(
        r,
        "root",
        "stat -c '%U %a' /var/lib/edgewise/store",
    ));
    assert!(
        store.starts_with("edgewise "),
        "the store is the service user's: {store}"
    );

    // An upgrade (the same package again) keeps the operator's conffile; a purge removes it.
    succeeds(in_root(r, "root", "dpkg -i /tmp/edgewise.deb"));
    let kept = std::fs::read_to_string(&config).expect("conffile");
    assert!(kept.contains("\"chrooted\""), "{kept}");
    succeeds(in_root(r, "root", "dpkg --purge edgewise"));
    assert!(!config.exists(), "purged");
    assert!(!r.join("usr/bin/edgewise").exists(), "removed");
}

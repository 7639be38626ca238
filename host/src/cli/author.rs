//! `edgewise new <name>` and `edgewise build [dir]`: a plugin author's loop outside this
//! repository.
//!
//! `new` writes a plugin crate that builds on its own: its own cargo workspace, the template's
//! code and manifest, and a copy of the guest SDK and the WIT world this `edgewise` was built
//! with (under `sdk/`), so the plugin and the gateway that runs it agree on the contract and
//! nothing needs this repository. `build` runs cargo for `wasm32-wasip2` and puts the component
//! where the manifest says (`component`, `plugin.wasm`), ready for `replay` and `pack`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};

/// The SDK, as this binary was built with it: (path under `sdk/`, content).
const SDK: &[(&str, &str)] = &[
    (
        "edgewise-guest/src/lib.rs",
        include_str!("../../../guest-sdk/src/lib.rs"),
    ),
    (
        "edgewise-guest/src/error.rs",
        include_str!("../../../guest-sdk/src/error.rs"),
    ),
    (
        "edgewise-guest/src/host.rs",
        include_str!("../../../guest-sdk/src/host.rs"),
    ),
    (
        "edgewise-guest/src/log.rs",
        include_str!("../../../guest-sdk/src/log.rs"),
    ),
    (
        "edgewise-guest/src/message.rs",
        include_str!("../../../guest-sdk/src/message.rs"),
    ),
    (
        "edgewise-guest/src/nn.rs",
        include_str!("../../../guest-sdk/src/nn.rs"),
    ),
    ("wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
    (
        "wit/deps/wasi-nn/wasi-nn.wit",
        include_str!("../../../wit/deps/wasi-nn/wasi-nn.wit"),
    ),
];

/// The SDK's manifest outside the workspace: the versions are the workspace's (a unit test
/// holds them equal).
const SDK_MANIFEST: &str = r#"[package]
name = "edgewise-guest"
description = "Write Edgewise plugins: implement a trait, call one macro, get a wasm32-wasip2 component."
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = "0.61"
bytemuck = { version = "1", features = ["extern_crate_alloc"] }
serde = { version = "1", features = ["derive"], optional = true }
serde_json = { version = "1", features = ["preserve_order"], optional = true }

[features]
default = ["json"]
json = ["dep:serde", "dep:serde_json"]
"#;

/// The template's code and manifest.
const CODE: &str = include_str!("../../../plugins/template/src/lib.rs");
const MANIFEST: &str = include_str!("../../../plugins/template/plugin.toml");

/// Start a plugin: a crate that builds on its own, outside any workspace, with the SDK.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  edgewise new door-watch && cd door-watch\n  edgewise build\n  edgewise replay . messages.jsonl\n  edgewise pack . --key release.key"
)]
pub struct NewArgs {
    /// The plugin's name (lowercase letters, digits and `-`); also its folder.
    name: String,
    /// Where to create the folder (default: here).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// Build a plugin: cargo for wasm32-wasip2, then the component where its manifest expects it.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  edgewise build plugins/door-watch    # plugins/door-watch/plugin.wasm"
)]
pub struct BuildArgs {
    /// The plugin folder (with Cargo.toml and plugin.toml).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "`{name}`: a plugin name is lowercase letters, digits and `-`, starting with a letter"
        );
    }
    let root = args.dir.join(name);
    if root.exists() {
        bail!("{} exists already", root.display());
    }
    let manifest = MANIFEST
        .replace(
            "# The manifest of the template plugin: copy this directory to start a new plugin.",
            &format!(
                "# The manifest of plugin `{name}`: what it may read and publish, its limits."
            ),
        )
        .replace("name = \"template\"", &format!("name = \"{name}\""))
        .replace(
            "# Built by `scripts/build-plugins` from this crate.",
            "# Built by `edgewise build` from this crate.",
        );
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# The SDK and WIT world of the `edgewise` that wrote this folder (`edgewise new`).
edgewise-guest = {{ path = "sdk/edgewise-guest" }}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
# Debug info would be most of the component's size.
debug = false

# A workspace of its own: it builds the same inside another project's folder.
[workspace]
"#
    );
    let files: Vec<(PathBuf, String)> = [
        ("Cargo.toml".into(), cargo),
        ("plugin.toml".into(), manifest),
        ("src/lib.rs".into(), CODE.to_owned()),
        (
            "sdk/edgewise-guest/Cargo.toml".into(),
            SDK_MANIFEST.to_owned(),
        ),
        (
            "messages.jsonl".into(),
            "{\"topic\": \"sensors/door/back\", \"payload\": {\"open\": true}}\n".to_owned(),
        ),
        (".gitignore".into(), "/target\n/plugin.wasm\n".to_owned()),
    ]
    .into_iter()
    .map(|(path, text): (String, String)| (PathBuf::from(path), text))
    .chain(
        SDK.iter()
            .map(|(path, text)| (Path::new("sdk").join(path), (*text).to_owned())),
    )
    .collect();
    for (path, text) in files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "created {root}: a plugin that republishes sensors/# under echo/\n\nnext:\n  cd {root}\n  edgewise build                       # plugin.wasm (needs `rustup target add wasm32-wasip2`)\n  edgewise replay . messages.jsonl     # run it on recorded messages\n  edgewise pack . --key release.key    # a signed bundle for a gateway",
        root = root.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let manifest_path = dir.join("plugin.toml");
    let manifest = edgewise_signing::Manifest::from_file(&manifest_path)?;
    let cargo_toml = dir.join("Cargo.toml");
    if !cargo_toml.is_file() {
        bail!(
            "{}: no Cargo.toml: `edgewise build` builds a Rust plugin crate",
            dir.display()
        );
    }
    // cargo says where each artifact went: whatever the target directory is.
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&cargo_toml)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo (is Rust installed?)")?;
    let mut component = None;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let message: serde_json::Value =
                serde_json::from_str(&line.context("reading cargo's output")?).unwrap_or_default();
            let is_cdylib = message["target"]["crate_types"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
            if message["reason"] == "compiler-artifact" && is_cdylib {
                component = message["filenames"]
                    .as_array()
                    .and_then(|files| files.iter().find_map(|f| f.as_str()))
                    .filter(|f| f.ends_with(".wasm"))
                    .map(PathBuf::from);
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!(
            "cargo build failed (see above); the target is installed with `rustup target add wasm32-wasip2`"
        );
    }
    let built = component.context(
        "cargo built no wasm32-wasip2 component (is `crate-type = [\"cdylib\"]` under [lib]?)",
    )?;
    let target = dir.join(&manifest.component);
    std::fs::copy(&built, &target)
        .with_context(|| format!("copying {} to {}", built.display(), target.display()))?;
    let bytes = std::fs::metadata(&target)
        .map(|m| m.len())
        .unwrap_or_default();
    println!(
        "built {} {}: {} ({} KiB)",
        manifest.name,
        manifest.version,
        target.display(),
        bytes / 1024
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_copy_names_the_workspace_versions_and_every_sdk_file() {
        let workspace = include_str!("../../../Cargo.toml");
        for pin in [
            "wit-bindgen = \"0.61\"",
            "version = \"0.1.0\"",
            "edition = \"2024\"",
        ] {
            assert!(workspace.contains(pin), "the workspace moved on from {pin}");
            assert!(SDK_MANIFEST.contains(pin), "the SDK copy lacks {pin}");
        }
        let sources = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk/src"))
            .map(|dir| dir.flatten().count())
            .unwrap_or_default();
        let copied = SDK
            .iter()
            .filter(|(p, _)| p.starts_with("edgewise-guest/src/"))
            .count();
        assert_eq!(
            copied, sources,
            "every file of guest-sdk/src is in the copy"
        );
    }
}

//! `edgewise new <name>` and `edgewise build [dir]`: a plugin author's loop outside this
//! repository.
//!
//! `new` writes a plugin that builds on its own: in Rust (the default) a crate with its own cargo
//! workspace, in Python (`--lang python`) an `app.py`, in JavaScript (`--lang js`) an `app.js`;
//! with the template's manifest and a copy
//! of the guest SDK and the WIT world this `edgewise` was built with (under `sdk/`), so the
//! plugin and the gateway that runs it agree on the contract and nothing needs this repository.
//! `build` runs cargo for `wasm32-wasip2`, componentize-py (the pinned [`COMPONENTIZE_PY`]) for
//! a Python plugin or componentize-qjs ([`COMPONENTIZE_QJS`]) for a JavaScript one, and puts
//! the component where the manifest says
//! (`component`, `plugin.wasm`), ready for `replay` and `pack`.

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
];

/// The WIT world, as this binary was built with it: (path under `sdk/`, content).
const WIT: &[(&str, &str)] = &[
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

/// The Python SDK, copied to `sdk/python/` of a Python plugin.
const PYTHON_SDK: &str = include_str!("../../../guest-sdk/python/edgewise_plugin.py");

/// The componentize-py release Python plugins are built with (`pip install
/// componentize-py==<this>`); scripts/build-plugins pins the same.
pub const COMPONENTIZE_PY: &str = "0.25.0";

/// The template, in Python.
const PYTHON_CODE: &str = r#""""Republishes every message under a prefix, counting as it goes.

The whole shape of a plugin: settings read once in `init`, state kept on `self` between
messages, a log line, and a publish to a topic the manifest grants. An exception raised in
`on_message` is that message's failure (a dead letter), not a crash.
"""
import edgewise_plugin as edgewise


class Template(edgewise.Plugin):
    def init(self):
        self.prefix = edgewise.setting("prefix", "echo")
        self.seen = 0
        edgewise.log.info(f"republishing under {self.prefix}/")

    def on_message(self, msg):
        self.seen += 1
        edgewise.publish(f"{self.prefix}/{msg.topic}", msg.payload)


Handler = edgewise.handler(Template)
"#;

/// The JavaScript SDK, copied to `sdk/js/` of a JavaScript plugin.
const JS_SDK: &str = include_str!("../../../guest-sdk/js/edgewise.js");

/// The componentize-qjs release JavaScript plugins are built with (`npm install
/// componentize-qjs@<this>`); scripts/js-toolchain pins the same.
pub const COMPONENTIZE_QJS: &str = "0.4.5";

/// The template, in JavaScript.
const JS_CODE: &str = r#"// Republishes every message under a prefix, counting as it goes.
//
// The whole shape of a plugin: settings read once in `init`, state kept on `this` between
// messages, a log line, and a publish to a topic the manifest grants. An exception thrown in
// `onMessage` is that message's failure (a dead letter), not a crash.
import * as edgewise from "./sdk/js/edgewise.js";

class Template extends edgewise.Plugin {
  init() {
    this.prefix = edgewise.setting("prefix", "echo");
    this.seen = 0;
    edgewise.log.info(`republishing under ${this.prefix}/`);
  }

  onMessage(msg) {
    this.seen += 1;
    edgewise.publish(`${this.prefix}/${msg.topic}`, msg.payload);
  }
}

export const handler = edgewise.handler(Template);
"#;

/// The languages `edgewise new` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate with the `edgewise-guest` SDK.
    Rust,
    /// An `app.py` with the `edgewise_plugin` SDK, built by componentize-py.
    Python,
    /// An `app.js` with the `edgewise.js` SDK, built by componentize-qjs.
    Js,
}

/// A language whose plugin is one source file that a pinned toolchain turns into a component:
/// what `new` writes for it and how `build` runs its toolchain.
struct Script {
    /// The language's name, for people.
    language: &'static str,
    /// The source file, in the plugin folder; `build` knows the language by it.
    source: &'static str,
    /// The source and the SDK copy `new` writes (path in the folder, content).
    files: [(&'static str, &'static str); 2],
    /// The folder's .gitignore.
    ignore: &'static str,
    /// The toolchain's program, and the variable that names another.
    program: &'static str,
    program_env: &'static str,
    /// How to install it, less the version, and the version `build` is tested with.
    install: &'static str,
    version: &'static str,
    /// Its arguments, run in the plugin folder; the component's path follows.
    args: &'static [&'static str],
    /// Whether its own report is noise beside `build`'s (componentize-qjs prints a banner).
    quiet: bool,
}

const PYTHON: Script = Script {
    language: "Python",
    source: "app.py",
    files: [
        ("app.py", PYTHON_CODE),
        ("sdk/python/edgewise_plugin.py", PYTHON_SDK),
    ],
    ignore: "/plugin.wasm\n__pycache__/\n",
    program: "componentize-py",
    program_env: "EDGEWISE_COMPONENTIZE_PY",
    install: "pip install componentize-py==",
    version: COMPONENTIZE_PY,
    args: &[
        "-d",
        "sdk/wit",
        "-w",
        "plugin",
        "componentize",
        "app",
        "-p",
        ".",
        "-p",
        "sdk/python",
        "-o",
    ],
    quiet: false,
};

/// With the non-async runtime: the gateway calls plugins synchronously. `app.js` imports the
/// SDK from `sdk/js/`.
const JAVASCRIPT: Script = Script {
    language: "JavaScript",
    source: "app.js",
    files: [("app.js", JS_CODE), ("sdk/js/edgewise.js", JS_SDK)],
    ignore: "/plugin.wasm\n",
    program: "componentize-qjs",
    program_env: "EDGEWISE_COMPONENTIZE_QJS",
    install: "npm install -g componentize-qjs@",
    version: COMPONENTIZE_QJS,
    args: &[
        "--wit", "sdk/wit", "--world", "plugin", "--js", "app.js", "--sync", "-o",
    ],
    quiet: true,
};

impl Script {
    /// The toolchain over the plugin in `dir`, the component where its manifest says.
    fn build(&self, dir: &Path, manifest: &edgewise_signing::Manifest) -> anyhow::Result<ExitCode> {
        let program = std::env::var_os(self.program_env).unwrap_or_else(|| self.program.into());
        let target = dir.join(&manifest.component);
        let status = Command::new(&program)
            .current_dir(dir)
            .args(self.args)
            .arg(std::path::absolute(&target).unwrap_or_else(|_| target.clone()))
            .stdout(if self.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .status()
            .with_context(|| {
                format!(
                    "running {} (install it: `{}{}`)",
                    program.to_string_lossy(),
                    self.install,
                    self.version
                )
            })?;
        if !status.success() {
            bail!("{} failed (see above)", self.program);
        }
        report_built(manifest, &target);
        Ok(ExitCode::SUCCESS)
    }
}

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
    /// The language to write it in.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
}

/// Build a plugin: cargo for wasm32-wasip2, then the component where its manifest expects it.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  edgewise build plugins/door-watch    # plugins/door-watch/plugin.wasm"
)]
pub struct BuildArgs {
    /// The plugin folder (with plugin.toml, and Cargo.toml or app.py).
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
    let script = match args.lang {
        Lang::Rust => None,
        Lang::Python => Some(&PYTHON),
        Lang::Js => Some(&JAVASCRIPT),
    };
    if let Some(script) = script {
        let manifest = manifest.replace(
            "from this crate.",
            &format!("from {} ({}).", script.source, script.program),
        );
        let files = [
            ("plugin.toml", manifest.as_str()),
            ("messages.jsonl", MESSAGES),
            (".gitignore", script.ignore),
        ]
        .into_iter()
        .chain(script.files)
        .map(|(path, text)| (PathBuf::from(path), text.to_owned()))
        .chain(
            WIT.iter()
                .map(|(path, text)| (Path::new("sdk").join(path), (*text).to_owned())),
        );
        write_all(&root, files)?;
        println!(
            "created {root}: a {language} plugin that republishes sensors/# under echo/\n\nnext:\n  cd {root}\n  edgewise build                       # plugin.wasm (needs `{install}{version}`)\n  edgewise replay . messages.jsonl     # run it on recorded messages\n  edgewise pack . --key release.key    # a signed bundle for a gateway",
            root = root.display(),
            language = script.language,
            install = script.install,
            version = script.version,
        );
        return Ok(ExitCode::SUCCESS);
    }
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
    let files = [
        ("Cargo.toml".into(), cargo),
        ("plugin.toml".into(), manifest),
        ("src/lib.rs".into(), CODE.to_owned()),
        (
            "sdk/edgewise-guest/Cargo.toml".into(),
            SDK_MANIFEST.to_owned(),
        ),
        ("messages.jsonl".into(), MESSAGES.to_owned()),
        (".gitignore".into(), "/target\n/plugin.wasm\n".to_owned()),
    ]
    .into_iter()
    .map(|(path, text): (String, String)| (PathBuf::from(path), text))
    .chain(
        SDK.iter()
            .chain(WIT)
            .map(|(path, text)| (Path::new("sdk").join(path), (*text).to_owned())),
    );
    write_all(&root, files)?;
    println!(
        "created {root}: a plugin that republishes sensors/# under echo/\n\nnext:\n  cd {root}\n  edgewise build                       # plugin.wasm (needs `rustup target add wasm32-wasip2`)\n  edgewise replay . messages.jsonl     # run it on recorded messages\n  edgewise pack . --key release.key    # a signed bundle for a gateway",
        root = root.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A recorded message for the template to run on.
const MESSAGES: &str = "{\"topic\": \"sensors/door/back\", \"payload\": {\"open\": true}}\n";

/// Writes `files` (paths relative to `root`), making directories as needed.
fn write_all(
    root: &Path,
    files: impl IntoIterator<Item = (PathBuf, String)>,
) -> anyhow::Result<()> {
    for (path, text) in files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let manifest_path = dir.join("plugin.toml");
    let manifest = edgewise_signing::Manifest::from_file(&manifest_path)?;
    let cargo_toml = dir.join("Cargo.toml");
    if !cargo_toml.is_file()
        && let Some(script) = [&PYTHON, &JAVASCRIPT]
            .into_iter()
            .find(|script| dir.join(script.source).is_file())
    {
        return script.build(dir, &manifest);
    }
    if !cargo_toml.is_file() {
        bail!(
            "{}: no Cargo.toml, app.py or app.js: `edgewise build` builds a Rust crate, a Python or a JavaScript plugin",
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
    report_built(&manifest, &target);
    Ok(ExitCode::SUCCESS)
}

fn report_built(manifest: &edgewise_signing::Manifest, target: &Path) {
    let bytes = std::fs::metadata(target)
        .map(|m| m.len())
        .unwrap_or_default();
    println!(
        "built {} {}: {} ({} KiB)",
        manifest.name,
        manifest.version,
        target.display(),
        bytes / 1024
    );
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

    #[test]
    fn javascript_plugins_are_built_with_the_componentize_qjs_the_scripts_pin() {
        let toolchain = include_str!("../../../scripts/js-toolchain/package.json");
        assert!(
            toolchain.contains(&format!("\"componentize-qjs\": \"{COMPONENTIZE_QJS}\"")),
            "scripts/js-toolchain pins another componentize-qjs than `edgewise build` names"
        );
    }

    #[test]
    fn python_plugins_are_built_with_the_componentize_py_the_scripts_pin() {
        let script = include_str!("../../../scripts/build-plugins");
        assert!(
            script.contains(&format!("COMPONENTIZE_PY={COMPONENTIZE_PY}\n")),
            "scripts/build-plugins pins another componentize-py than `edgewise build` names"
        );
    }
}

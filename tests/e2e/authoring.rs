//! A plugin author's path from an empty folder outside this repository, as
//! docs/plugin-authors.md tells it: `edgewise new`, the docs' code, `edgewise build`,
//! `edgewise replay`, `edgewise pack`.

use std::path::Path;
use std::process::{Command, Output};

use edgewise_tests::{edgewise, repo};

fn run(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(edgewise())
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        // Its own target directory: the SDK copy must never share build state with the
        // repository's `edgewise-guest` (same name and version, other path).
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("edgewise runs");
    assert!(
        out.status.success(),
        "edgewise {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The first fenced block of `lang` after `heading` in the author guide.
fn docs_block(heading: &str, lang: &str) -> String {
    let guide = std::fs::read_to_string(repo().join("docs/plugin-authors.md")).expect("guide");
    guide
        .split(heading)
        .nth(1)
        .and_then(|rest| rest.split(&format!("```{lang}\n")).nth(1))
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("no {lang} block after {heading}"))
        .to_owned()
}

#[test]
fn the_author_guides_plugin_is_made_built_replayed_and_packed_from_an_empty_folder() {
    let empty = tempfile::tempdir().expect("temporary directory");
    run(empty.path(), &["new", "door-watch"]);
    let plugin = empty.path().join("door-watch");

    // The guide's code and grants, in the folder `new` wrote.
    std::fs::write(
        plugin.join("src/lib.rs"),
        docs_block("## 3. The code", "rust"),
    )
    .expect("code");
    let manifest = std::fs::read_to_string(plugin.join("plugin.toml")).expect("manifest");
    let manifest = manifest
        .replace(
            "subscribe = [\"sensors/#\"]",
            "subscribe = [\"home/+/door\"]",
        )
        .replace("publish = [\"echo/#\"]", "publish = [\"alarms/door\"]")
        .replace("prefix = \"echo\"", "max-open-s = 60");
    std::fs::write(plugin.join("plugin.toml"), manifest).expect("manifest");

    let built = run(&plugin, &["build"]);
    assert!(
        String::from_utf8_lossy(&built.stdout).contains("built door-watch 0.1.0"),
        "{}",
        String::from_utf8_lossy(&built.stdout)
    );
    assert!(plugin.join("plugin.wasm").is_file());

    // The guide's sample messages and replay line.
    let sample = docs_block("## 5. Build and run it on sample data", "sh");
    let messages = sample
        .split("<<'JSON'\n")
        .nth(1)
        .and_then(|rest| rest.split("JSON\n").next())
        .expect("the sample messages");
    std::fs::write(plugin.join("door.jsonl"), messages).expect("messages");
    let replayed = run(
        &plugin,
        &["replay", ".", "door.jsonl", "--set", "max-open-s=30"],
    );
    let published = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        published.contains(
            r#"{"topic":"alarms/door","payload":"{\"door\":\"back\",\"open_for_s\":94}"}"#
        ),
        "{published}"
    );

    packs(&plugin, "door-watch-0.1.0.ewb");
}

/// `edgewise pack` with a fresh release key writes `bundle` in `plugin`.
fn packs(plugin: &Path, bundle: &str) {
    let key = tempfile::tempdir().expect("key folder");
    run(key.path(), &["keygen", "release"]);
    let key_file = key.path().join("release.key");
    run(plugin, &["pack", ".", "--key", &key_file.to_string_lossy()]);
    assert!(plugin.join(bundle).is_file(), "{bundle} was not written");
}

/// `edgewise new --lang <lang>` in an empty folder outside the repository, `edgewise build`
/// with the toolchain scripts/build-plugins installed (pinned) beside the builds, named by
/// `tool_env`, `edgewise replay` of the template's message, and `edgewise pack`.
fn script_plugin_from_an_empty_folder(lang: &str, tool: &str, tool_env: &str, files: &[&str]) {
    let target = edgewise()
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_owned();
    let componentize = target.join(tool);
    assert!(
        componentize.is_file(),
        "{} is missing: run scripts/build-plugins",
        componentize.display()
    );
    let empty = tempfile::tempdir().expect("temporary directory");
    run(empty.path(), &["new", "--lang", lang, "door-log"]);
    let plugin = empty.path().join("door-log");
    for file in files {
        assert!(plugin.join(file).is_file(), "{file} was not written");
    }
    let built = Command::new(edgewise())
        .arg("build")
        .current_dir(&plugin)
        .env(tool_env, &componentize)
        .output()
        .expect("edgewise runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(String::from_utf8_lossy(&built.stdout).contains("built door-log 0.1.0"));
    let replayed = run(&plugin, &["replay", ".", "messages.jsonl"]);
    let out = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        out.contains("\"topic\":\"echo/sensors/door/back\""),
        "{out}"
    );
    packs(&plugin, "door-log-0.1.0.ewb");
}

#[test]
fn a_python_plugin_is_made_built_and_replayed_from_an_empty_folder() {
    script_plugin_from_an_empty_folder(
        "python",
        "tools/python/bin/componentize-py",
        "EDGEWISE_COMPONENTIZE_PY",
        &[
            "app.py",
            "sdk/python/edgewise_plugin.py",
            "sdk/wit/plugin.wit",
        ],
    );
}

#[test]
fn a_javascript_plugin_is_made_built_and_replayed_from_an_empty_folder() {
    script_plugin_from_an_empty_folder(
        "js",
        "tools/js/node_modules/.bin/componentize-qjs",
        "EDGEWISE_COMPONENTIZE_QJS",
        &["app.js", "sdk/js/edgewise.js", "sdk/wit/plugin.wit"],
    );
}

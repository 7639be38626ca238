//! The plugin manifest, `plugin.toml`: what a plugin is, what it may touch, and its limits.
//!
//! Parsing is strict: an unknown key, a wrong type or an out-of-range value is an error that
//! names the file, the key and what was expected. A parsed [`Manifest`] is plain data with
//! validated fields, so a signature can later cover exactly these bytes and this meaning.
//!
//! ```toml
//! name = "vibration-fault"
//! version = "0.1.0"
//! api = "0.1"                       # host API (WIT package) version the plugin targets
//! component = "plugin.wasm"         # relative to this file
//! subscribe = ["plant/+/vibration"]
//! publish = ["plant/+/vibration/fault"]
//!
//! [[models]]
//! name = "vibration"
//! encoding = "onnx"
//! file = "model/vibration.onnx"
//! inputs = { features = [1, 8] }    # optional: fix input shapes by input name
//!
//! [limits]
//! memory-mib = 16
//!
//! [settings]
//! threshold = 0.5                   # a default alone: any number is accepted
//! [settings.window]                 # a declared setting: type, range, what it is for
//! type = "integer"
//! default = 16
//! min = 1
//! max = 256
//! description = "readings averaged before the comparison"
//!
//! [evaluate]                        # optional: see `evaluate` and docs/evaluation.md
//! data = ["eval/heldout.jsonl"]
//! kind = "classification"
//! label = "/class"
//! gates = ["accuracy >= 0.9"]
//! ```

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use semver::{Version, VersionReq};
use serde::Deserialize;

use crate::evaluate::Evaluate;
use crate::namespace;
use crate::topic::{self, TopicFilter};

/// The version of the `edgewise:plugin` WIT package this code implements.
pub const HOST_API_VERSION: Version = Version::new(0, 1, 0);

/// Why a manifest was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The manifest's path.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The manifest's path.
        path: PathBuf,
        /// The TOML parser's account, with line, column and key.
        message: String,
    },
    /// A value has the right type but is not acceptable.
    #[error("{path}: `{key}`: {problem}")]
    Invalid {
        /// The manifest's path.
        path: PathBuf,
        /// The offending key, e.g. `models[1].file`.
        key: String,
        /// What was expected.
        problem: String,
    },
}

/// A validated plugin manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Plugin name: lowercase letters, digits and `-`, at most 64 characters.
    pub name: String,
    /// Plugin version.
    pub version: Version,
    /// The release counter: grows with every signed release of this plugin; a gateway refuses
    /// a lower one than it has seen (rollback protection). Required to pack a bundle.
    pub release: Option<u64>,
    /// Set by `edgewise pack --rollback` only: this bundle may replace a higher release.
    #[serde(default)]
    pub rollback: bool,
    /// Requirement on the host API version, e.g. `"0.1"`.
    pub api: VersionReq,
    /// The component file, relative to the manifest.
    pub component: PathBuf,
    /// MQTT topic filters the plugin receives messages from.
    pub subscribe: Vec<String>,
    /// MQTT topics (filters allowed) the plugin may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Whether the plugin receives what it publishes itself when a subscribe filter matches it
    /// (default false: its own outputs are never routed back to it, so it cannot loop).
    #[serde(default)]
    pub loopback: bool,
    /// The QoS the gateway publishes the plugin's outputs with: 0, 1 or 2 (default 1).
    #[serde(default = "default_publish_qos")]
    pub publish_qos: u8,
    /// Models the host loads for the plugin and serves through `wasi:nn/graph.load-by-name`.
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    /// Sandbox limits; each is further capped by the gateway.
    #[serde(default)]
    pub limits: Limits,
    /// Plugin settings, read by the plugin through `host.config`: each a default, or a
    /// declaration with its type, range and description. Every value an operator gives
    /// (`gateway.toml`, `ctl config`, `replay --set`) is checked against it.
    #[serde(default)]
    pub settings: BTreeMap<String, SettingDecl>,
    /// The evaluation set the plugin ships and the gates an update must pass (see
    /// [`crate::evaluate`]).
    pub evaluate: Option<Evaluate>,
    /// In a bundle's manifest, written by `edgewise pack`: every file of the bundle by path,
    /// with its size and SHA-256. Not written by hand.
    #[serde(default)]
    pub files: BTreeMap<String, FileDigest>,
    /// In a bundle's manifest, written by `edgewise pack --encrypt-for`: which files are
    /// ciphertext and the content key wrapped for each gateway that may read them (see
    /// [`crate::encryption`]).
    pub encryption: Option<crate::encryption::Encryption>,
}

/// A file pinned by a bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Its length in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

/// One model the host loads for a plugin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelSpec {
    /// The name the plugin passes to `load-by-name`.
    pub name: String,
    /// The graph encoding; the gateway serves `onnx`.
    pub encoding: String,
    /// The model file, relative to the manifest.
    pub file: PathBuf,
    /// Fixed input shapes by input name. Fixed shapes let the backend optimise fully.
    #[serde(default)]
    pub inputs: BTreeMap<String, Vec<usize>>,
}

/// Per-plugin sandbox limits. Defaults are listed on each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Linear memory cap in MiB (default 64). Growing past it fails like any `memory.grow`.
    pub memory_mib: u32,
    /// Wall-clock budget for one `on-message` call in milliseconds (default 100).
    pub time_per_message_ms: u64,
    /// Wall-clock budget for `init` in milliseconds (default 1000).
    pub init_time_ms: u64,
    /// Largest payload accepted in or published out, in bytes (default 262144).
    pub max_payload_bytes: u32,
    /// Most messages one `on-message` call may publish (default 64).
    pub max_publishes_per_message: u32,
    /// Host memory the gateway may hold for the plugin at once, in MiB (default 32): wasi-nn
    /// tensors and outputs it keeps, what one call publishes, its pending log output.
    pub host_memory_mib: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            time_per_message_ms: 100,
            init_time_ms: 1000,
            max_payload_bytes: 256 * 1024,
            max_publishes_per_message: 64,
            host_memory_mib: 32,
        }
    }
}

impl Limits {
    /// Each limit as the smaller of this one and `cap`'s.
    pub fn capped_by(self, cap: &Limits) -> Limits {
        Limits {
            memory_mib: self.memory_mib.min(cap.memory_mib),
            time_per_message_ms: self.time_per_message_ms.min(cap.time_per_message_ms),
            init_time_ms: self.init_time_ms.min(cap.init_time_ms),
            max_payload_bytes: self.max_payload_bytes.min(cap.max_payload_bytes),
            max_publishes_per_message: self
                .max_publishes_per_message
                .min(cap.max_publishes_per_message),
            host_memory_mib: self.host_memory_mib.min(cap.host_memory_mib),
        }
    }
}

/// A setting's value: any TOML scalar, handed to the plugin as text.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged, expecting = "a string, number or boolean")]
pub enum Setting {
    /// `key = "text"`
    String(String),
    /// `key = 3`
    Integer(i64),
    /// `key = 0.5`
    Float(f64),
    /// `key = true`
    Bool(bool),
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setting::String(s) => f.write_str(s),
            Setting::Integer(i) => write!(f, "{i}"),
            Setting::Float(x) => write!(f, "{x}"),
            Setting::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A setting as the manifest declares it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "a default value (string, number or boolean) or a table with `default`"
)]
pub enum SettingDecl {
    /// `key = 0.5`: the default; values of its kind are accepted (any number for a number).
    Default(Setting),
    /// `[settings.key]`: the default with a type, a range or choices, and a description.
    Declared(SettingSpec),
}

/// A declared setting: `[settings.<key>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    /// `string`, `integer`, `number` or `bool`; by default the kind of `default`.
    #[serde(rename = "type")]
    pub kind: Option<SettingKind>,
    /// The value when nobody sets one.
    pub default: Setting,
    /// The smallest value accepted (numbers).
    pub min: Option<f64>,
    /// The largest value accepted (numbers).
    pub max: Option<f64>,
    /// The only values accepted (strings).
    pub choices: Option<Vec<String>>,
    /// What the setting does, for `edgewise inspect` and refusals.
    #[serde(default)]
    pub description: String,
}

/// What kind of value a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettingKind {
    /// Any text.
    String,
    /// A whole number (i64).
    Integer,
    /// Any finite number.
    Number,
    /// `true` or `false`.
    Bool,
}

impl std::fmt::Display for SettingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SettingKind::String => "string",
            SettingKind::Integer => "integer",
            SettingKind::Number => "number",
            SettingKind::Bool => "bool",
        })
    }
}

impl SettingDecl {
    /// The value when nobody sets one.
    pub fn default_value(&self) -> &Setting {
        match self {
            SettingDecl::Default(value) => value,
            SettingDecl::Declared(spec) => &spec.default,
        }
    }

    /// The kind of value it takes: declared, or that of the default (a number default takes
    /// any number, an integer default included: `limit = 80` accepts `80.5`).
    pub fn kind(&self) -> SettingKind {
        if let SettingDecl::Declared(SettingSpec {
            kind: Some(kind), ..
        }) = self
        {
            return *kind;
        }
        match self.default_value() {
            Setting::String(_) => SettingKind::String,
            Setting::Integer(_) | Setting::Float(_) => SettingKind::Number,
            Setting::Bool(_) => SettingKind::Bool,
        }
    }

    /// What the setting does (empty when undeclared).
    pub fn description(&self) -> &str {
        match self {
            SettingDecl::Default(_) => "",
            SettingDecl::Declared(spec) => &spec.description,
        }
    }

    /// What values it takes, in words: `integer 1..=256`, `one of "a", "b"`, `bool`.
    pub fn accepts(&self) -> String {
        let mut text = self.kind().to_string();
        if let SettingDecl::Declared(spec) = self {
            match (spec.min, spec.max) {
                (Some(min), Some(max)) => text.push_str(&format!(" from {min} to {max}")),
                (Some(min), None) => text.push_str(&format!(" ≥ {min}")),
                (None, Some(max)) => text.push_str(&format!(" ≤ {max}")),
                (None, None) => {}
            }
            if let Some(choices) = &spec.choices {
                let quoted: Vec<String> = choices.iter().map(|c| format!("`{c}`")).collect();
                text = format!("one of {}", quoted.join(", "));
            }
        }
        text
    }

    /// Checks a value given as text (as every override arrives): `Err` says what is expected.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let refuse = || {
            Err(format!(
                "`{value}` is not accepted: expected {}",
                self.accepts()
            ))
        };
        let number = match self.kind() {
            SettingKind::String => None,
            SettingKind::Bool => {
                return if matches!(value, "true" | "false") {
                    Ok(())
                } else {
                    refuse()
                };
            }
            SettingKind::Integer => match value.parse::<i64>() {
                Ok(n) => Some(n as f64),
                Err(_) => return refuse(),
            },
            SettingKind::Number => match value.parse::<f64>() {
                Ok(n) if n.is_finite() => Some(n),
                _ => return refuse(),
            },
        };
        if let SettingDecl::Declared(spec) = self {
            if let Some(n) = number
                && (spec.min.is_some_and(|min| n < min) || spec.max.is_some_and(|max| n > max))
            {
                return refuse();
            }
            if let Some(choices) = &spec.choices
                && !choices.iter().any(|c| c == value)
            {
                return refuse();
            }
        }
        Ok(())
    }

    /// The declaration's own consistency: a kind that fits its default, a range for numbers
    /// only and in order, choices for strings only and holding the default.
    fn validate(&self) -> Result<(), String> {
        let SettingDecl::Declared(spec) = self else {
            return Ok(());
        };
        let kind = self.kind();
        let numeric = matches!(kind, SettingKind::Integer | SettingKind::Number);
        if (spec.min.is_some() || spec.max.is_some()) && !numeric {
            return Err(format!("`min` and `max` are for numbers, not a {kind}"));
        }
        if let (Some(min), Some(max)) = (spec.min, spec.max)
            && min > max
        {
            return Err(format!("`min` {min} is above `max` {max}"));
        }
        if spec.choices.is_some() && kind != SettingKind::String {
            return Err(format!("`choices` are for strings, not a {kind}"));
        }
        if spec.choices.as_ref().is_some_and(Vec::is_empty) {
            return Err("`choices` is empty: no value could be accepted".into());
        }
        let default = spec.default.to_string();
        self.check(&default)
            .map_err(|problem| format!("the default {problem}"))
    }
}

impl Manifest {
    /// Reads and validates `path`.
    pub fn from_file(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates manifest text; `origin` is the path used in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        manifest
            .validate()
            .map_err(|(key, problem)| ManifestError::Invalid {
                path: origin.to_owned(),
                key,
                problem,
            })?;
        Ok(manifest)
    }

    /// The subscribe filters, parsed (validation guarantees they parse).
    pub fn subscribe_filters(&self) -> Vec<TopicFilter> {
        self.subscribe
            .iter()
            .filter_map(|s| TopicFilter::parse(s).ok())
            .collect()
    }

    /// The publish grants, parsed (validation guarantees they parse).
    pub fn publish_filters(&self) -> Vec<TopicFilter> {
        self.publish
            .iter()
            .filter_map(|s| TopicFilter::parse(s).ok())
            .collect()
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((key.to_owned(), problem));
        if !valid_name(&self.name) {
            return bad(
                "name",
                format!(
                    "`{}` must be 1-64 of a-z, 0-9 and `-`, starting with a letter",
                    self.name
                ),
            );
        }
        if !self.api.matches(&HOST_API_VERSION) {
            return bad(
                "api",
                format!(
                    "`{}` does not match this gateway's API {HOST_API_VERSION}",
                    self.api
                ),
            );
        }
        relative_path("component", &self.component)?;
        if self.subscribe.is_empty() {
            return bad("subscribe", "at least one topic filter is needed".into());
        }
        for (i, filter) in self.subscribe.iter().enumerate() {
            match TopicFilter::parse(filter) {
                Ok(f) => reserved_grant(&f, "subscribe to")
                    .map_or(Ok(()), |problem| bad(&format!("subscribe[{i}]"), problem))?,
                Err(e) => return bad(&format!("subscribe[{i}]"), format!("`{filter}`: {e}")),
            }
        }
        for (i, filter) in self.publish.iter().enumerate() {
            match TopicFilter::parse(filter) {
                Ok(f) if f.share_group().is_some() => {
                    return bad(
                        &format!("publish[{i}]"),
                        "`$share/` is only for subscribing".into(),
                    );
                }
                Ok(f) => reserved_grant(&f, "publish to")
                    .map_or(Ok(()), |problem| bad(&format!("publish[{i}]"), problem))?,
                Err(e) => return bad(&format!("publish[{i}]"), format!("`{filter}`: {e}")),
            }
        }
        if self.publish_qos > 2 {
            return bad(
                "publish-qos",
                format!(
                    "{} is not an MQTT QoS; expected 0, 1 or 2",
                    self.publish_qos
                ),
            );
        }
        for (i, model) in self.models.iter().enumerate() {
            let key = |k: &str| format!("models[{i}].{k}");
            if model.name.is_empty() {
                return bad(&key("name"), "must not be empty".into());
            }
            if self.models[..i].iter().any(|m| m.name == model.name) {
                return bad(&key("name"), format!("`{}` is declared twice", model.name));
            }
            if model.encoding != "onnx" {
                return bad(
                    &key("encoding"),
                    format!("`{}` is not served; expected `onnx`", model.encoding),
                );
            }
            relative_path(&key("file"), &model.file)?;
            for (input, shape) in &model.inputs {
                if shape.is_empty() || shape.contains(&0) {
                    return bad(
                        &key(&format!("inputs.{input}")),
                        "expected a shape of positive dimensions, like [1, 8]".into(),
                    );
                }
            }
        }
        for (path, digest) in &self.files {
            let key = format!("files.\"{path}\"");
            relative_path(&key, Path::new(path))?;
            if !crate::bundle::is_sha256_hex(&digest.sha256) {
                return bad(
                    &format!("{key}.sha256"),
                    "expected 64 lowercase hex digits".into(),
                );
            }
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.memory-mib", u64::from(l.memory_mib)),
            ("limits.time-per-message-ms", l.time_per_message_ms),
            ("limits.init-time-ms", l.init_time_ms),
            ("limits.max-payload-bytes", u64::from(l.max_payload_bytes)),
            ("limits.host-memory-mib", u64::from(l.host_memory_mib)),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0".into());
            }
        }
        for (key, decl) in &self.settings {
            decl.validate()
                .or_else(|problem| bad(&format!("settings.{key}"), problem))?;
        }
        if let Some(encryption) = &self.encryption {
            encryption
                .check()
                .or_else(|e| bad("encryption", e.to_string()))?;
            for file in &encryption.files {
                let model = self
                    .models
                    .iter()
                    .any(|m| crate::bundle::canonical(&m.file).as_deref() == Some(file.as_str()));
                if !model || !self.files.contains_key(file) {
                    return bad(
                        "encryption.files",
                        format!("`{file}` is not a pinned model file: only models are encrypted"),
                    );
                }
            }
        }
        if let Some(evaluate) = &self.evaluate {
            evaluate.validate()?;
            for (i, file) in evaluate.data.iter().enumerate() {
                relative_path(&format!("evaluate.data[{i}]"), file)?;
            }
        }
        Ok(())
    }
}

fn default_publish_qos() -> u8 {
    1
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Files named by a manifest stay inside the plugin's directory.
fn relative_path(key: &str, path: &Path) -> Result<(), (String, String)> {
    let inside = !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(())
    } else {
        Err((
            key.to_owned(),
            format!(
                "`{}` must be a relative path inside the plugin directory",
                path.display()
            ),
        ))
    }
}

/// Why a grant is refused when it reaches the gateway's or the broker's own topics.
fn reserved_grant(filter: &TopicFilter, verb: &str) -> Option<String> {
    let reserved = namespace::reserved_by(filter)?;
    Some(format!(
        "`{filter}` reaches {reserved}: plugins may not {verb} them; name the first level of the topic (`sensors/#`, not `#` or `+/...`)"
    ))
}

/// Checks a topic a plugin wants to publish to against its grants.
pub fn publish_allowed(grants: &[TopicFilter], topic: &str) -> Result<bool, topic::TopicError> {
    topic::validate_name(topic)?;
    Ok(grants.iter().any(|g| g.matches(topic)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "vibration-fault"
        version = "1.2.3"
        api = "0.1"
        component = "plugin.wasm"
        subscribe = ["plant/+/vibration", "$share/g/plant/#"]
        publish = ["plant/+/fault"]

        [[models]]
        name = "mlp"
        encoding = "onnx"
        file = "model/mlp.onnx"
        inputs = { features = [1, 8] }

        [limits]
        memory-mib = 16

        [settings]
        threshold = 0.5
        site = "north"
    "#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("plugins/x/plugin.toml"))
    }

    fn error_of(text: &str) -> String {
        match parse(text) {
            Ok(m) => panic!("accepted: {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_complete_manifest_parses_with_defaults_filled_in() {
        let m = parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.version, Version::new(1, 2, 3));
        assert_eq!(m.models[0].inputs["features"], vec![1, 8]);
        assert_eq!(m.limits.memory_mib, 16);
        assert_eq!(
            m.limits.time_per_message_ms,
            Limits::default().time_per_message_ms
        );
        assert_eq!(m.settings["threshold"].default_value().to_string(), "0.5");
        assert_eq!(m.subscribe_filters().len(), 2);
        assert_eq!(m.publish_qos, 1);
    }

    /// GOOD with `decl` as the `[settings.window]` table.
    fn with_window(decl: &str) -> String {
        format!("{GOOD}\n[settings.window]\n{decl}\n")
    }

    #[test]
    fn a_declared_setting_checks_kind_range_and_choices() {
        let m = parse(&with_window(
            "type = \"integer\"\ndefault = 16\nmin = 1\nmax = 256\ndescription = \"readings averaged\"",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let window = &m.settings["window"];
        assert_eq!(window.accepts(), "integer from 1 to 256");
        assert_eq!(window.description(), "readings averaged");
        assert_eq!(window.check("32"), Ok(()));
        for bad in ["0", "257", "16.5", "many", ""] {
            assert_eq!(
                window.check(bad),
                Err(format!(
                    "`{bad}` is not accepted: expected integer from 1 to 256"
                ))
            );
        }
        // A default alone takes values of its kind: any number for a number.
        let threshold = &m.settings["threshold"];
        assert_eq!(threshold.accepts(), "number");
        assert_eq!(threshold.check("80.5"), Ok(()));
        assert!(threshold.check("hot").is_err());
        assert!(threshold.check("NaN").is_err(), "not a finite number");

        let mode = parse(&with_window(
            "default = \"fast\"\nchoices = [\"fast\", \"exact\"]",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let mode = &mode.settings["window"];
        assert_eq!(mode.check("exact"), Ok(()));
        assert_eq!(
            mode.check("slow"),
            Err("`slow` is not accepted: expected one of `fast`, `exact`".into())
        );
    }

    #[test]
    fn an_inconsistent_declaration_is_refused_with_its_key() {
        for (decl, problem) in [
            (
                "type = \"integer\"\ndefault = 0.5",
                "the default `0.5` is not accepted: expected integer",
            ),
            (
                "default = 300\nmax = 256",
                "the default `300` is not accepted: expected number ≤ 256",
            ),
            (
                "default = 5\nmin = 10\nmax = 1",
                "`min` 10 is above `max` 1",
            ),
            (
                "default = \"a\"\nmin = 1",
                "`min` and `max` are for numbers, not a string",
            ),
            (
                "default = 1\nchoices = [\"1\"]",
                "`choices` are for strings, not a number",
            ),
            ("default = \"a\"\nchoices = []", "`choices` is empty"),
        ] {
            let err = error_of(&with_window(decl));
            assert!(
                err.contains("`settings.window`") && err.contains(problem),
                "{decl}: {err}"
            );
        }
        let err = error_of(&with_window("default = 1\ndescripton = \"typo\""));
        assert!(err.contains("settings"), "{err}");
    }

    #[test]
    fn a_typo_in_a_key_names_the_file_the_key_and_the_line() {
        let err = error_of(&GOOD.replace("subscribe =", "subscrbe ="));
        assert!(err.starts_with("plugins/x/plugin.toml:"), "{err}");
        assert!(err.contains("subscrbe"), "{err}");
        assert!(err.contains("line 6"), "{err}");
    }

    #[test]
    fn a_wrong_type_says_what_was_expected() {
        let err = error_of(&GOOD.replace("memory-mib = 16", "memory-mib = \"lots\""));
        assert!(err.contains("memory-mib"), "{err}");
        assert!(err.contains("u32") || err.contains("integer"), "{err}");
    }

    #[test]
    fn paths_that_leave_the_plugin_directory_are_refused() {
        let err = error_of(&GOOD.replace("model/mlp.onnx", "../../etc/passwd"));
        assert!(err.contains("models[0].file"), "{err}");
        let err = error_of(&GOOD.replace("\"plugin.wasm\"", "\"/bin/sh\""));
        assert!(err.contains("`component`"), "{err}");
    }

    #[test]
    fn invalid_topics_and_names_are_refused_with_their_key() {
        assert!(error_of(&GOOD.replace("plant/+/fault", "plant/#/fault")).contains("publish[0]"));
        assert!(error_of(&GOOD.replace("\"plant/+/vibration\"", "\"\"")).contains("subscribe[0]"));
        assert!(error_of(&GOOD.replace("vibration-fault", "Vibration Fault")).contains("`name`"));
        assert!(error_of(&GOOD.replace("\"onnx\"", "\"tflite\"")).contains("encoding"));
        assert!(error_of(&GOOD.replace("api = \"0.1\"", "api = \"2\"")).contains("`api`"));
        assert!(error_of(&GOOD.replace("[1, 8]", "[1, 0]")).contains("inputs.features"));
        let qos = GOOD.replace("publish = [", "publish-qos = 3\npublish = [");
        assert!(error_of(&qos).contains("`publish-qos`"));
        assert!(
            error_of(&GOOD.replace("memory-mib = 16", "memory-mib = 0")).contains("memory-mib")
        );
    }

    #[test]
    fn limits_are_capped_field_by_field() {
        let plugin = Limits {
            memory_mib: 512,
            time_per_message_ms: 10,
            ..Limits::default()
        };
        let cap = Limits {
            memory_mib: 128,
            time_per_message_ms: 1000,
            ..Limits::default()
        };
        let eff = plugin.capped_by(&cap);
        assert_eq!((eff.memory_mib, eff.time_per_message_ms), (128, 10));
    }

    #[test]
    fn publishing_is_allowed_only_to_granted_valid_topics() {
        let m = parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
        let grants = m.publish_filters();
        assert_eq!(publish_allowed(&grants, "plant/7/fault"), Ok(true));
        assert_eq!(publish_allowed(&grants, "plant/7/vibration"), Ok(false));
        assert!(publish_allowed(&grants, "plant/+/fault").is_err());
    }
}

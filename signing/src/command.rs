//! Management commands: what an operator asks one gateway to do, signed with an `operator` key.
//!
//! A command travels as a DSSE envelope ([`crate::envelope`]) of type
//! `application/vnd.edgewise.command+json`, so its signature can never pass for a bundle's or a
//! keyring's. The JSON inside:
//!
//! ```json
//! {"id": "c-1764300000000", "gateway": "line-7", "seq": 1764300000000,
//!  "issued-at-ms": 1764300000000, "expires-at-ms": 1764300060000,
//!  "action": {"update": {"bundle-base64": "..."}}}
//! ```
//!
//! This module checks what needs only the keyring: the envelope, the signature, the JSON. The
//! gateway checks the rest (its id, the clock, the sequence number it has seen).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::keyring::{Keyring, Role};
use crate::manifest::Setting;
use crate::signature::{PayloadType, SecretKey};

/// One command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Command {
    /// Chosen by the operator; replies go to `edgewise/<gateway>/reply/<id>`.
    pub id: String,
    /// The gateway it is for.
    pub gateway: String,
    /// Grows with every command to this gateway; a gateway refuses one it has seen.
    pub seq: u64,
    /// When it was issued (ms since the Unix epoch).
    pub issued_at_ms: u64,
    /// When it stops being valid.
    pub expires_at_ms: u64,
    /// What to do.
    pub action: Action,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Action {
    /// Install a plugin, or update it: hot swap to the bundle given, inline or by digest
    /// (retained on `edgewise/bundles/<digest>`). `install` is the same action.
    #[serde(alias = "install")]
    Update {
        /// The signed bundle, base64.
        #[serde(
            rename = "bundle-base64",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        bundle_base64: Option<String>,
        /// Or the digest of a bundle retained on `edgewise/bundles/<digest>`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
    /// Stop and uninstall a plugin.
    Remove {
        /// The plugin.
        plugin: String,
    },
    /// Start a stopped plugin.
    Start {
        /// The plugin.
        plugin: String,
    },
    /// Stop a plugin: it receives nothing until started.
    Stop {
        /// The plugin.
        plugin: String,
    },
    /// The plugins and their versions.
    List,
    /// The gateway's status document.
    Status,
    /// Change a plugin's settings (a hot swap to the same bundle with the new settings).
    Config {
        /// The plugin.
        plugin: String,
        /// The settings to change.
        settings: BTreeMap<String, Setting>,
    },
    /// Go back to the plugin's last-known-good bundle.
    Rollback {
        /// The plugin.
        plugin: String,
    },
}

impl Action {
    /// The action's name, as in the JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Update { .. } => "update",
            Action::Remove { .. } => "remove",
            Action::Start { .. } => "start",
            Action::Stop { .. } => "stop",
            Action::List => "list",
            Action::Status => "status",
            Action::Config { .. } => "config",
            Action::Rollback { .. } => "rollback",
        }
    }
}

/// Why a command was refused before the gateway looked at it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Not a command envelope, or not command JSON.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// No valid signature by a trusted operator key.
    #[error("not signed by a trusted operator key: {0}")]
    Untrusted(String),
}

impl Command {
    /// The signed envelope's JSON, signed by `key`.
    pub fn sign(&self, key: &SecretKey) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Envelope::sign(PayloadType::Command, json, &[key]).to_json(PayloadType::Command)
    }

    /// Reads a signed command and checks its signature against the keyring's operator keys.
    /// Returns the command and the ids of the keys that signed it.
    pub fn verify(text: &[u8], keyring: &Keyring) -> Result<(Command, Vec<String>), CommandError> {
        let text =
            std::str::from_utf8(text).map_err(|_| CommandError::Malformed("not UTF-8".into()))?;
        let envelope = Envelope::from_json(text, PayloadType::Command)
            .map_err(|e| CommandError::Malformed(e.to_string()))?;
        let ty = PayloadType::Command;
        let signers: Vec<String> = keyring
            .signers(Role::Operator, ty, &envelope.payload, &envelope.signatures)
            .into_iter()
            .map(|k| k.key.id())
            .collect();
        if signers.is_empty() {
            return Err(CommandError::Untrusted(keyring.explain(
                Role::Operator,
                ty,
                &envelope.payload,
                &envelope.signatures,
            )));
        }
        let command = serde_json::from_slice(&envelope.payload)
            .map_err(|e| CommandError::Malformed(e.to_string()))?;
        Ok((command, signers))
    }
}

/// What a fleet of gateways should run: retained, signed, on `edgewise/fleet/<group>/desired`.
/// Each gateway of the group installs what it lacks (bundles retained on
/// `edgewise/bundles/<digest>`), hot swaps what differs, removes what is not listed, and says
/// in its status how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DesiredState {
    /// The group.
    pub group: String,
    /// Grows with every change; a gateway ignores a version it has applied or passed.
    pub version: u64,
    /// When it was issued (ms since the Unix epoch).
    pub issued_at_ms: u64,
    /// The plugins, by name, with the digest of the bundle each should run.
    pub plugins: BTreeMap<String, String>,
}

impl DesiredState {
    /// The signed envelope's JSON.
    pub fn sign(&self, key: &SecretKey) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Envelope::sign(PayloadType::DesiredState, json, &[key]).to_json(PayloadType::DesiredState)
    }

    /// Reads a signed desired state and checks it against the keyring's operator keys.
    pub fn verify(text: &[u8], keyring: &Keyring) -> Result<DesiredState, CommandError> {
        let text =
            std::str::from_utf8(text).map_err(|_| CommandError::Malformed("not UTF-8".into()))?;
        let envelope = Envelope::from_json(text, PayloadType::DesiredState)
            .map_err(|e| CommandError::Malformed(e.to_string()))?;
        let ty = PayloadType::DesiredState;
        if keyring
            .signers(Role::Operator, ty, &envelope.payload, &envelope.signatures)
            .is_empty()
        {
            return Err(CommandError::Untrusted(keyring.explain(
                Role::Operator,
                ty,
                &envelope.payload,
                &envelope.signatures,
            )));
        }
        serde_json::from_slice(&envelope.payload)
            .map_err(|e| CommandError::Malformed(e.to_string()))
    }

    /// The payload of a signed desired state, read without trusting it (for `edgewise push
    /// --group`, which re-signs an updated copy with its own key).
    pub fn read_untrusted(text: &[u8]) -> Option<DesiredState> {
        let text = std::str::from_utf8(text).ok()?;
        let envelope = Envelope::from_json(text, PayloadType::DesiredState).ok()?;
        serde_json::from_slice(&envelope.payload).ok()
    }
}

/// The `id` of a command, read without trusting it, to address a refusal.
pub fn untrusted_id(text: &[u8]) -> Option<String> {
    let envelope: serde_json::Value = serde_json::from_slice(text).ok()?;
    let payload = envelope.get("payload")?.as_str()?;
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    let command: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let id = command.get("id")?.as_str()?;
    safe_id(id).then(|| id.to_owned())
}

/// Whether a command id can be a topic level: 1 to 64 of letters, digits, `-`, `_` and `.`.
pub fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn keyring(operator: &SecretKey, release: &SecretKey) -> Keyring {
        Keyring::parse(
            &format!(
                "version = 1\n[[keys]]\nname = \"ops\"\nrole = \"operator\"\npublic-key = \"{}\"\n[[keys]]\nname = \"rel\"\nrole = \"release\"\npublic-key = \"{}\"\n",
                operator.public(),
                release.public()
            ),
            Path::new("k.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn command() -> Command {
        Command {
            id: "c-1".into(),
            gateway: "line-7".into(),
            seq: 1,
            issued_at_ms: 1000,
            expires_at_ms: 2000,
            action: Action::Stop {
                plugin: "threshold".into(),
            },
        }
    }

    #[test]
    fn an_operator_signed_command_verifies_and_nothing_else_does() {
        let key = || SecretKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let (operator, release) = (key(), key());
        let ring = keyring(&operator, &release);
        let signed = command().sign(&operator);
        let (back, signers) =
            Command::verify(signed.as_bytes(), &ring).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, command());
        assert_eq!(signers, vec![operator.public().id()]);
        assert_eq!(untrusted_id(signed.as_bytes()).as_deref(), Some("c-1"));

        let by_release = command().sign(&release);
        let why = Command::verify(by_release.as_bytes(), &ring)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(why.contains("not a Operator key"), "{why}");
        let forged = signed.replace("\"payload\": \"", "\"payload\": \"e30");
        assert!(Command::verify(forged.as_bytes(), &ring).is_err());
        assert!(matches!(
            Command::verify(b"{not json", &ring),
            Err(CommandError::Malformed(_))
        ));
    }

    #[test]
    fn actions_read_as_documented() {
        let text = r#"{"id":"c","gateway":"g","seq":2,"issued-at-ms":1,"expires-at-ms":2,"action":{"config":{"plugin":"t","settings":{"limit":90}}}}"#;
        let c: Command = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.action.name(), "config");
        let list: Command = serde_json::from_str(
            r#"{"id":"c","gateway":"g","seq":2,"issued-at-ms":1,"expires-at-ms":2,"action":"list"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(list.action, Action::List);
        let install: Command = serde_json::from_str(
            r#"{"id":"c","gateway":"g","seq":2,"issued-at-ms":1,"expires-at-ms":2,"action":{"install":{"digest":"ab"}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            install.action,
            Action::Update {
                bundle_base64: None,
                digest: Some("ab".into())
            }
        );
    }
}

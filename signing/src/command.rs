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
//! This module checks what needs only the keyring: the envelope, the signatures (a threshold
//! of distinct operator keys, named by keyid), the JSON (unknown fields are refused). The
//! gateway checks the rest against its id, its clock and what it has accepted before: see
//! `docs/management.md` for every field's rule.

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
    /// Install a plugin, or update it: hot swap to the bundle `digest`, retained in chunks on
    /// `edgewise/bundles/<digest>/<index>/<count>`. `install` is the same action.
    #[serde(alias = "install")]
    Update {
        /// The bundle's digest.
        digest: String,
        /// Run the new version in shadow beside the live one first, and promote it only if it
        /// agrees with it (see [`ShadowTrial`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shadow: Option<ShadowTrial>,
    },
    /// Promote a plugin's shadow now: it replaces the live version (hot swap, probation).
    Promote {
        /// The plugin.
        plugin: String,
    },
    /// Stop a plugin's shadow: the live version goes on, the candidate is dropped.
    Abandon {
        /// The plugin.
        plugin: String,
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
    /// Change a plugin's settings (a hot swap to the same bundle with the new settings). Every
    /// key must be one the plugin's manifest declares.
    Config {
        /// The plugin.
        plugin: String,
        /// The settings to change.
        #[serde(default)]
        settings: BTreeMap<String, Setting>,
        /// Settings whose override to drop: back to the gateway's or the manifest's value.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unset: Vec<String>,
    },
    /// Go back to the plugin's last-known-good bundle; or, naming a bundle digest, to that
    /// bundle (in the store, or retained in chunks under `edgewise/bundles/<digest>`): the only way a bundle
    /// signed as a rollback (`rollback = true`) is ever installed.
    Rollback {
        /// The plugin.
        plugin: String,
        /// The bundle to go back to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
}

impl Action {
    /// The action's name, as in the JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Update { .. } => "update",
            Action::Promote { .. } => "promote",
            Action::Abandon { .. } => "abandon",
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

/// A shadow trial: the new version gets a copy of every live message, its outputs are
/// compared with the live version's and not published, and it replaces the live version only
/// if the two agree enough. The window ends after `messages` compared or `max-seconds`,
/// whichever comes first; then the trial is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ShadowTrial {
    /// Messages to compare (default 200).
    pub messages: u64,
    /// The longest the window lasts, in seconds (default 600).
    pub max_seconds: u64,
    /// The share of messages on which both must agree (default 0.95).
    pub min_agreement: f64,
    /// Promote by itself when the trial passes (default true); if false, it waits for a
    /// `promote` or `abandon` command. A failed trial is always abandoned.
    pub promote: bool,
    /// Publish the candidate's outputs under `edgewise/<gateway>/shadow/<plugin>/<topic>`
    /// (default false: they are only compared).
    pub publish: bool,
}

impl ShadowTrial {
    /// Refuses a trial that could never be judged as meant.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.min_agreement) {
            return Err(format!(
                "min-agreement {} is not a share between 0 and 1",
                self.min_agreement
            ));
        }
        if self.messages == 0 || self.max_seconds == 0 {
            return Err("a shadow trial needs at least one message and one second".into());
        }
        Ok(())
    }
}

impl Default for ShadowTrial {
    fn default() -> Self {
        Self {
            messages: 200,
            max_seconds: 600,
            min_agreement: 0.95,
            promote: true,
            publish: false,
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
    /// Not signed by a threshold of root keys (a trust reset).
    #[error("not signed by a threshold of root keys: {0}")]
    NotRoot(String),
}

impl Command {
    /// The signed envelope's JSON, signed by `key`.
    pub fn sign(&self, key: &SecretKey) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Envelope::sign(PayloadType::Command, json, &[key]).to_json(PayloadType::Command)
    }

    /// Reads a signed command and checks its signatures against the keyring's operator keys
    /// and threshold. Returns the command and the ids of the keys that signed it.
    pub fn verify(text: &[u8], keyring: &Keyring) -> Result<(Command, Vec<String>), CommandError> {
        let envelope = read(text, PayloadType::Command)?;
        let signers: Vec<String> = keyring
            .check_envelope(Role::Operator, PayloadType::Command, &envelope)
            .map_err(CommandError::Untrusted)?
            .into_iter()
            .map(|k| k.key.id())
            .collect();
        let command = serde_json::from_slice(&envelope.payload)
            .map_err(|e| CommandError::Malformed(e.to_string()))?;
        Ok((command, signers))
    }
}

/// What a fleet of gateways should run: retained, signed, on `edgewise/fleet/<group>/desired`.
/// Each gateway of the group installs what it lacks (bundles retained on
/// `edgewise/bundles/<digest>`), hot swaps what differs, removes what is not listed, and says
/// in its status how far it got. Re-signed with a new `issued-at-ms` at least once a freshness
/// window even when nothing changes, so that a gateway shown an old one can tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DesiredState {
    /// The group.
    pub group: String,
    /// Grows with every change, and is at most `issued-at-ms`; a gateway refuses a version
    /// below the one it applied.
    pub version: u64,
    /// When it was issued (ms since the Unix epoch).
    pub issued_at_ms: u64,
    /// When it stops being valid (ms since the Unix epoch).
    pub expires_at_ms: u64,
    /// The plugins, by name, with the digest of the bundle each should run.
    pub plugins: BTreeMap<String, String>,
    /// A canary roll-out: only these gateways apply it at once; the others of the group wait
    /// until every canary reports it applied and healthy for the bake time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Plugins to try in shadow before they replace the running version, with their trials:
    /// the roll-out's update of such a plugin is promoted or abandoned by its trial.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shadow: BTreeMap<String, ShadowTrial>,
}

/// The canaries of a roll-out, and how long they must stay healthy before the rest follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Canary {
    /// The gateways that go first (chosen by `edgewise push --canary`, deterministically).
    pub gateways: Vec<String>,
    /// Seconds every canary must report the new state applied and healthy before the others
    /// apply it.
    pub bake_s: u64,
}

impl DesiredState {
    /// The signed envelope's JSON.
    pub fn sign(&self, key: &SecretKey) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Envelope::sign(PayloadType::DesiredState, json, &[key]).to_json(PayloadType::DesiredState)
    }

    /// Reads a signed desired state and checks it against the keyring's operator keys and
    /// threshold.
    pub fn verify(text: &[u8], keyring: &Keyring) -> Result<DesiredState, CommandError> {
        let envelope = read(text, PayloadType::DesiredState)?;
        keyring
            .check_envelope(Role::Operator, PayloadType::DesiredState, &envelope)
            .map_err(CommandError::Untrusted)?;
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

/// A reset of a gateway's counters and time floor, signed by a threshold of root keys: the way
/// back for a gateway whose clock was wrong (set years ahead, it accepted documents by that
/// clock, and its counters and floor now refuse everything issued today). A reset is bound to
/// the nonce the gateway shows in its status (`trust.reset-nonce`), which changes each time a
/// reset is applied: it is valid once, on that gateway, and cannot be replayed. Its time is
/// not judged (the gateway's clock is what is in doubt); its nonce is its freshness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrustReset {
    /// The gateway's id.
    pub gateway: String,
    /// The nonce its status shows.
    pub nonce: String,
    /// The highest command `seq` to count as accepted from now on.
    pub command_seq: u64,
    /// The desired-state version to count as applied.
    pub desired_version: u64,
    /// That desired state's `issued-at-ms`.
    pub desired_issued_at_ms: u64,
    /// The gateway's time floor (see the gateway's trust rules).
    pub time_floor_ms: u64,
}

impl TrustReset {
    /// The signed envelope's JSON, signed by every key of `keys`.
    pub fn sign(&self, keys: &[&SecretKey]) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Envelope::sign(PayloadType::TrustReset, json, keys).to_json(PayloadType::TrustReset)
    }

    /// Reads a signed reset and checks it against the keyring's root keys and threshold.
    /// Returns the reset and the ids of the keys that signed it.
    pub fn verify(
        text: &[u8],
        keyring: &Keyring,
    ) -> Result<(TrustReset, Vec<String>), CommandError> {
        let envelope = read(text, PayloadType::TrustReset)?;
        let signers = keyring
            .check_envelope(Role::Root, PayloadType::TrustReset, &envelope)
            .map_err(CommandError::NotRoot)?
            .into_iter()
            .map(|k| k.key.id())
            .collect();
        let reset = serde_json::from_slice(&envelope.payload)
            .map_err(|e| CommandError::Malformed(e.to_string()))?;
        Ok((reset, signers))
    }
}

/// The envelope of type `ty` in `text`.
fn read(text: &[u8], ty: PayloadType) -> Result<Envelope, CommandError> {
    let text =
        std::str::from_utf8(text).map_err(|_| CommandError::Malformed("not UTF-8".into()))?;
    Envelope::from_json(text, ty).map_err(|e| CommandError::Malformed(e.to_string()))
}

/// The `id` of a command, read without trusting it, to address a refusal.
pub fn untrusted_id(text: &[u8]) -> Option<String> {
    let envelope: serde_json::Value = serde_json::from_slice(text).ok()?;
    let payload = envelope.get("payload")?.as_str()?;
    use base64::Engine as _;
    let bytes = crate::envelope::BASE64.decode(payload).ok()?;
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
        assert!(
            why.contains("is a release key, not an operator key"),
            "{why}"
        );
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
                digest: "ab".into(),
                shadow: None
            }
        );
        let shadowed: Command = serde_json::from_str(
            r#"{"id":"c","gateway":"g","seq":2,"issued-at-ms":1,"expires-at-ms":2,"action":{"update":{"digest":"ab","shadow":{"messages":50}}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let Action::Update {
            shadow: Some(trial),
            ..
        } = shadowed.action
        else {
            panic!("a shadow trial");
        };
        assert_eq!(
            (trial.messages, trial.min_agreement, trial.promote),
            (50, 0.95, true)
        );
    }
}

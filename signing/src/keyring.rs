//! The keyring: which keys a gateway trusts, for what, and how that changes.
//!
//! ```toml
//! version = 3                       # grows with every update
//!
//! [[keys]]
//! name = "release-2026"             # for people and logs
//! role = "release"                  # release: signs bundles; operator: signs commands
//! public-key = "base64 of 32 bytes" # as `edgewise keygen` prints it
//! revoked = false                   # optional: a revoked key's signatures count for nothing
//! ```
//!
//! The first keyring is put on the gateway by its operator (the root of trust). Every later
//! one arrives as an update, signed as a [`PayloadType::Keyring`] document, and is accepted
//! only with a higher version, a signature by a key the current keyring trusts (not revoked,
//! any role), and a signature by every key the update adds, so nobody can name a key they do
//! not hold: a rotation is signed by the old key and the new one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::signature::{KeyError, PayloadType, PublicKey, Signature};

/// What a key may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Plugin bundles.
    Release,
    /// Management commands.
    Operator,
}

/// One trusted (or revoked) key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// A label for people.
    pub name: String,
    /// What it may sign.
    pub role: Role,
    /// The key.
    pub key: PublicKey,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A parsed keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    /// Its version; updates must raise it.
    pub version: u64,
    /// Its keys.
    pub keys: Vec<TrustedKey>,
}

/// Why a keyring, or an update to it, was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// Not valid keyring TOML.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and key.
        message: String,
    },
    /// A key is not a valid public key.
    #[error("{}: keys[{index}].public-key: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Which key.
        index: usize,
        /// Why.
        source: KeyError,
    },
    /// A key appears twice.
    #[error("{}: keys[{index}]: the same public key is listed twice", path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The second listing.
        index: usize,
    },
    /// An update does not raise the version.
    #[error("keyring update to version {offered} refused: this gateway has version {current}")]
    NotNewer {
        /// The update's version.
        offered: u64,
        /// The current version.
        current: u64,
    },
    /// An update lacks a signature by a currently trusted key.
    #[error("keyring update refused: not signed by any key of the current keyring")]
    NotSignedByCurrent,
    /// An update adds a key that did not sign it.
    #[error("keyring update refused: new key `{name}` ({id}) did not sign it")]
    NewKeyDidNotSign {
        /// The new key's label.
        name: String,
        /// Its id.
        id: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KeyringFile {
    version: u64,
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KeyEntry {
    name: String,
    role: Role,
    public_key: String,
    #[serde(default)]
    revoked: bool,
}

impl Keyring {
    /// Reads and parses a keyring file.
    pub fn from_file(path: &Path) -> Result<Self, KeyringError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses keyring text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, KeyringError> {
        let file: KeyringFile = toml::from_str(text).map_err(|e| KeyringError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut keys = Vec::with_capacity(file.keys.len());
        for (index, entry) in file.keys.into_iter().enumerate() {
            let key = PublicKey::parse(&entry.public_key).map_err(|source| KeyringError::Key {
                path: origin.to_owned(),
                index,
                source,
            })?;
            if keys.iter().any(|k: &TrustedKey| k.key == key) {
                return Err(KeyringError::Duplicate {
                    path: origin.to_owned(),
                    index,
                });
            }
            keys.push(TrustedKey {
                name: entry.name,
                role: entry.role,
                key,
                revoked: entry.revoked,
            });
        }
        Ok(Self {
            version: file.version,
            keys,
        })
    }

    /// The distinct keys of `role`, trusted and not revoked, with a valid signature over
    /// `body` as a `ty` document. A key that signed twice counts once; signatures by unknown,
    /// revoked or wrong-role keys count for nothing.
    pub fn signers(
        &self,
        role: Role,
        ty: PayloadType,
        body: &[u8],
        signatures: &[Signature],
    ) -> Vec<&TrustedKey> {
        let mut seen = BTreeSet::new();
        signatures
            .iter()
            .filter(|s| s.key.verifies(ty, body, &s.bytes))
            .filter_map(|s| {
                self.keys
                    .iter()
                    .find(|k| k.key == s.key && k.role == role && !k.revoked)
            })
            .filter(|k| seen.insert(k.key))
            .collect()
    }

    /// Why `signatures` earn no trust for `role`, in words, for a refusal: whose they are.
    pub fn explain(
        &self,
        role: Role,
        ty: PayloadType,
        body: &[u8],
        signatures: &[Signature],
    ) -> String {
        if signatures.is_empty() {
            return "it is not signed".into();
        }
        let accounts: Vec<String> = signatures
            .iter()
            .map(|s| {
                let id = s.key.id();
                match self.keys.iter().find(|k| k.key == s.key) {
                    None => format!("key {id} is not in the keyring"),
                    Some(k) if k.revoked => format!("key {id} (`{}`) is revoked", k.name),
                    Some(k) if k.role != role => format!(
                        "key {id} (`{}`) is a {:?} key, not a {role:?} key",
                        k.name, k.role
                    ),
                    Some(_) if !s.key.verifies(ty, body, &s.bytes) => {
                        format!("the signature by key {id} does not match the signed bytes")
                    }
                    Some(k) => format!("key {id} (`{}`) is trusted", k.name),
                }
            })
            .collect();
        accounts.join("; ")
    }

    /// Accepts `update` (keyring text signed as a [`PayloadType::Keyring`] document) over this
    /// keyring, returning the new keyring.
    pub fn accept_update(
        &self,
        text: &str,
        signatures: &[Signature],
        origin: &Path,
    ) -> Result<Keyring, KeyringError> {
        let update = Keyring::parse(text, origin)?;
        if update.version <= self.version {
            return Err(KeyringError::NotNewer {
                offered: update.version,
                current: self.version,
            });
        }
        let body = text.as_bytes();
        let valid: Vec<PublicKey> = signatures
            .iter()
            .filter(|s| s.key.verifies(PayloadType::Keyring, body, &s.bytes))
            .map(|s| s.key)
            .collect();
        let by_current = self
            .keys
            .iter()
            .any(|k| !k.revoked && valid.contains(&k.key));
        if !by_current {
            return Err(KeyringError::NotSignedByCurrent);
        }
        for new in update
            .keys
            .iter()
            .filter(|k| !k.revoked && !self.keys.iter().any(|old| old.key == k.key))
        {
            if !valid.contains(&new.key) {
                return Err(KeyringError::NewKeyDidNotSign {
                    name: new.name.clone(),
                    id: new.key.id(),
                });
            }
        }
        Ok(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::SecretKey;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ring(version: u64, keys: &[(&str, &str, &SecretKey, bool)]) -> String {
        let mut text = format!("version = {version}\n");
        for (name, role, key, revoked) in keys {
            text += &format!(
                "\n[[keys]]\nname = \"{name}\"\nrole = \"{role}\"\npublic-key = \"{}\"\nrevoked = {revoked}\n",
                key.public()
            );
        }
        text
    }

    fn parse(text: &str) -> Keyring {
        Keyring::parse(text, Path::new("keyring.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_trusted_keys_of_the_right_role_count_and_each_once() {
        let (release, operator, revoked, stranger) = (key(), key(), key(), key());
        let keyring = parse(&ring(
            1,
            &[
                ("rel", "release", &release, false),
                ("ops", "operator", &operator, false),
                ("old", "release", &revoked, true),
            ],
        ));
        let body = b"manifest";
        let ty = PayloadType::Manifest;
        let sig = release.sign(ty, body);
        let signers = |sigs: &[Signature]| keyring.signers(Role::Release, ty, body, sigs).len();
        assert_eq!(signers(std::slice::from_ref(&sig)), 1);
        assert_eq!(
            signers(&[sig.clone(), sig.clone()]),
            1,
            "a duplicate counts once"
        );
        assert_eq!(signers(&[operator.sign(ty, body)]), 0, "wrong role");
        assert_eq!(signers(&[revoked.sign(ty, body)]), 0, "revoked");
        assert_eq!(signers(&[stranger.sign(ty, body)]), 0, "unknown");
        assert_eq!(
            signers(&[release.sign(PayloadType::Command, body)]),
            0,
            "another document type"
        );
        let why = keyring.explain(Role::Release, ty, body, &[operator.sign(ty, body)]);
        assert!(why.contains("Operator key, not a Release key"), "{why}");
    }

    #[test]
    fn a_rotation_needs_the_current_key_and_the_new_one() {
        let (old, new, stranger) = (key(), key(), key());
        let current = parse(&ring(1, &[("old", "release", &old, false)]));
        let rotated = ring(
            2,
            &[
                ("old", "release", &old, true),
                ("new", "release", &new, false),
            ],
        );
        let sign = |k: &SecretKey| k.sign(PayloadType::Keyring, rotated.as_bytes());
        let origin = Path::new("update.toml");

        let accepted = current.accept_update(&rotated, &[sign(&old), sign(&new)], origin);
        assert_eq!(accepted.map(|k| k.version).ok(), Some(2));
        assert!(matches!(
            current.accept_update(&rotated, &[sign(&old)], origin),
            Err(KeyringError::NewKeyDidNotSign { .. })
        ));
        assert!(matches!(
            current.accept_update(&rotated, &[sign(&new), sign(&stranger)], origin),
            Err(KeyringError::NotSignedByCurrent)
        ));
        let stale = ring(1, &[("old", "release", &old, false)]);
        assert!(matches!(
            current.accept_update(
                &stale,
                &[old.sign(PayloadType::Keyring, stale.as_bytes())],
                origin
            ),
            Err(KeyringError::NotNewer { .. })
        ));
        let as_manifest = old.sign(PayloadType::Manifest, rotated.as_bytes());
        assert!(matches!(
            current.accept_update(&rotated, &[as_manifest, sign(&new)], origin),
            Err(KeyringError::NotSignedByCurrent)
        ));
    }

    #[test]
    fn a_bad_keyring_names_the_key() {
        let err = Keyring::parse(
            "version = 1\n[[keys]]\nname = \"x\"\nrole = \"release\"\npublic-key = \"AAAA\"\n",
            Path::new("keyring.toml"),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("keys[0].public-key"), "{err}");
        let err = Keyring::parse(
            "version = 1\n[[keys]]\nname = \"x\"\nrole = \"root\"\npublic-key = \"\"\n",
            Path::new("k.toml"),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("root") && err.contains("line 4"), "{err}");
    }
}

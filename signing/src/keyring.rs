//! The keyring: which keys a gateway trusts, for what, how many of them must agree, and how
//! that changes (the roles and thresholds of The Update Framework's root metadata).
//!
//! ```toml
//! version = 3                         # the next update must be exactly 4
//! expires = 2027-12-01T00:00:00Z      # UTC; required in an update, optional in a first file
//!
//! [thresholds]                        # distinct keys that must sign, per role (default 1 each)
//! root = 2
//! release = 1
//! operator = 1
//!
//! [[keys]]
//! name = "root-a"                     # for people and logs
//! role = "root"                       # root: signs keyrings; release: bundles;
//!                                     # operator: commands and desired states
//! public-key = "base64 of 32 bytes"   # as `edgewise keygen` prints it
//! revoked = false                     # optional: a revoked key's signatures count for nothing
//! ```
//!
//! The first keyring is put on the gateway by its operator (the root of trust). Every later one
//! arrives as an update, a [`PayloadType::Keyring`] envelope, and is accepted only when its
//! version is the current one plus one, it expires in the future, and it is signed by a
//! threshold of the *current* keyring's root keys **and** by a threshold of its *own* root keys
//! (so a root rotation is signed by the old root and the new one). Release and operator keys
//! cannot change a keyring at all; one stolen root key, under a threshold of two, cannot
//! either. A key counts once however often it signed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::envelope::Envelope;
use crate::signature::{KeyError, PayloadType, PublicKey, Signature};

/// What a key may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Keyrings: the root of trust.
    Root,
    /// Plugin bundles.
    Release,
    /// Management commands and fleet desired states.
    Operator,
}

impl Role {
    /// The role's name, as in the keyring.
    pub fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Release => "release",
            Role::Operator => "operator",
        }
    }

    /// "a root key", "a release key", "an operator key".
    pub fn a_key(self) -> &'static str {
        match self {
            Role::Root => "a root key",
            Role::Release => "a release key",
            Role::Operator => "an operator key",
        }
    }
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

/// How many distinct keys of each role must sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// For a keyring update (of the current root, and of the new one).
    pub root: usize,
    /// For a bundle.
    pub release: usize,
    /// For a command or a desired state.
    pub operator: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            root: 1,
            release: 1,
            operator: 1,
        }
    }
}

impl Thresholds {
    /// The threshold of `role`.
    pub fn of(&self, role: Role) -> usize {
        match role {
            Role::Root => self.root,
            Role::Release => self.release,
            Role::Operator => self.operator,
        }
    }
}

/// A parsed keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    /// Its version; an update must be exactly one more.
    pub version: u64,
    /// When it stops being trusted to introduce anything new (ms since the Unix epoch).
    pub expires_at_ms: Option<u64>,
    /// How many keys of each role must sign.
    pub thresholds: Thresholds,
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
    /// A threshold is 0, or more than the keys of its role could meet.
    #[error("{}: thresholds.{}: {threshold}, but {why}", path.display(), role.name())]
    Threshold {
        /// The file.
        path: PathBuf,
        /// The role.
        role: Role,
        /// The threshold.
        threshold: usize,
        /// Why it cannot be.
        why: String,
    },
    /// `expires` is not a UTC time.
    #[error("{}: expires: {message}", path.display())]
    Expires {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The update's payload is not UTF-8 text.
    #[error("keyring update refused: its payload is not UTF-8 text")]
    NotText,
    /// An update does not follow the current version.
    #[error("keyring update to version {offered} refused: this gateway has version {current}, so the next one is {}", current + 1)]
    NotNext {
        /// The update's version.
        offered: u64,
        /// The current version.
        current: u64,
    },
    /// An update without an expiry.
    #[error("keyring update refused: it has no `expires`; every keyring sent to a gateway must")]
    NoExpiry,
    /// An update past its expiry.
    #[error("keyring update refused: it expired at {}", rfc3339(*at_ms))]
    Expired {
        /// When it expired (ms since the Unix epoch).
        at_ms: u64,
    },
    /// The current keyring has no root keys: nothing can change it over the wire.
    #[error(
        "keyring update refused: the current keyring has no root keys, so no signature can change it; replace its file on the gateway"
    )]
    NoRoot,
    /// Too few root signatures.
    #[error(
        "keyring update refused: signed by {valid} of the {which} keyring's root keys, {need} needed ({why})"
    )]
    NotEnoughRoot {
        /// `current` or `new`.
        which: &'static str,
        /// Distinct valid root signatures.
        valid: usize,
        /// The threshold.
        need: usize,
        /// Whose signatures there were.
        why: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KeyringFile {
    version: u64,
    expires: Option<toml::value::Datetime>,
    #[serde(default)]
    thresholds: ThresholdsFile,
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ThresholdsFile {
    root: Option<usize>,
    release: Option<usize>,
    operator: Option<usize>,
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

/// `at_ms` as an RFC 3339 time, for messages.
pub fn rfc3339(at_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at_ms)).to_string()
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
        let expires_at_ms = match file.expires {
            None => None,
            Some(at) => Some(epoch_ms(&at).map_err(|message| KeyringError::Expires {
                path: origin.to_owned(),
                message,
            })?),
        };
        let defaults = Thresholds::default();
        let thresholds = Thresholds {
            root: file.thresholds.root.unwrap_or(defaults.root),
            release: file.thresholds.release.unwrap_or(defaults.release),
            operator: file.thresholds.operator.unwrap_or(defaults.operator),
        };
        let keyring = Self {
            version: file.version,
            expires_at_ms,
            thresholds,
            keys,
        };
        for role in [Role::Root, Role::Release, Role::Operator] {
            let threshold = thresholds.of(role);
            let usable = keyring.usable(role).count();
            let why = if threshold == 0 {
                Some("a threshold must be at least 1".to_owned())
            } else if usable > 0 && threshold > usable {
                Some(format!(
                    "the keyring has only {usable} {} key(s) not revoked",
                    role.name()
                ))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(KeyringError::Threshold {
                    path: origin.to_owned(),
                    role,
                    threshold,
                    why,
                });
            }
        }
        Ok(keyring)
    }

    /// The keys of `role` that are not revoked.
    fn usable(&self, role: Role) -> impl Iterator<Item = &TrustedKey> {
        self.keys
            .iter()
            .filter(move |k| k.role == role && !k.revoked)
    }

    /// The key with `keyid` ([`PublicKey::keyid`]), revoked or not.
    pub fn by_keyid(&self, keyid: &str) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.key.keyid() == keyid)
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
            .filter_map(|s| self.usable(role).find(|k| k.key == s.key))
            .filter(|k| seen.insert(k.key))
            .collect()
    }

    /// The signers of `role` over `body`, if they reach the role's threshold; else why not, in
    /// words, for a refusal.
    pub fn check(
        &self,
        role: Role,
        ty: PayloadType,
        body: &[u8],
        signatures: &[Signature],
    ) -> Result<Vec<&TrustedKey>, String> {
        let signers = self.signers(role, ty, body, signatures);
        let need = self.thresholds.of(role);
        if signers.len() >= need && need > 0 {
            return Ok(signers);
        }
        let why = self.explain(role, ty, body, signatures);
        Err(match need {
            1 => why,
            _ => format!(
                "{} of the {need} {} signatures needed: {why}",
                signers.len(),
                role.name()
            ),
        })
    }

    /// [`Keyring::check`] for an envelope, whose signatures name their keys by keyid.
    pub fn check_envelope(
        &self,
        role: Role,
        ty: PayloadType,
        envelope: &Envelope,
    ) -> Result<Vec<&TrustedKey>, String> {
        let (known, unknown) = envelope.resolve(|id| self.by_keyid(id).map(|k| k.key));
        self.check(role, ty, &envelope.payload, &known)
            .map_err(|why| {
                let strangers: Vec<String> = unknown
                    .iter()
                    .map(|id| format!("key {} is not in the keyring", &id[..16.min(id.len())]))
                    .collect();
                match (strangers.is_empty(), known.is_empty()) {
                    (true, _) => why,
                    (false, true) => strangers.join("; "),
                    (false, false) => format!("{why}; {}", strangers.join("; ")),
                }
            })
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
                        "key {id} (`{}`) is {}, not {}",
                        k.name,
                        k.role.a_key(),
                        role.a_key()
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

    /// Accepts `update` (a [`PayloadType::Keyring`] envelope of keyring text) over this keyring
    /// at time `now_ms`, returning the new keyring and its text. `origin` names it in errors.
    pub fn accept_update(
        &self,
        update: &Envelope,
        origin: &Path,
        now_ms: u64,
    ) -> Result<(Keyring, String), KeyringError> {
        let text = String::from_utf8(update.payload.clone()).map_err(|_| KeyringError::NotText)?;
        let new = Keyring::parse(&text, origin)?;
        if new.version != self.version.saturating_add(1) || self.version == u64::MAX {
            return Err(KeyringError::NotNext {
                offered: new.version,
                current: self.version,
            });
        }
        match new.expires_at_ms {
            None => return Err(KeyringError::NoExpiry),
            Some(at_ms) if at_ms < now_ms => return Err(KeyringError::Expired { at_ms }),
            Some(_) => {}
        }
        if self.usable(Role::Root).next().is_none() {
            return Err(KeyringError::NoRoot);
        }
        // Both the current root and the new one must agree: signatures are looked up in both.
        let lookup = |id: &str| {
            self.by_keyid(id)
                .or_else(|| new.by_keyid(id))
                .map(|k| k.key)
        };
        let (signatures, _) = update.resolve(lookup);
        let ty = PayloadType::Keyring;
        for (which, keyring) in [("current", self), ("new", &new)] {
            let valid = keyring
                .signers(Role::Root, ty, &update.payload, &signatures)
                .len();
            let need = keyring.thresholds.root;
            if valid < need || valid == 0 {
                let why = keyring.explain(Role::Root, ty, &update.payload, &signatures);
                return Err(KeyringError::NotEnoughRoot {
                    which,
                    valid,
                    need,
                    why,
                });
            }
        }
        Ok((new, text))
    }
}

/// A TOML datetime in UTC as milliseconds since the Unix epoch.
fn epoch_ms(at: &toml::value::Datetime) -> Result<u64, String> {
    let text = at.to_string();
    let time = humantime::parse_rfc3339(&text)
        .map_err(|e| format!("`{text}`: {e}; write a UTC time such as 2027-12-01T00:00:00Z"))?;
    let ms = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| format!("`{text}` is before 1970"))?
        .as_millis();
    u64::try_from(ms).map_err(|_| format!("`{text}` is too far in the future"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::SecretKey;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Keyring text: `keys` as (name, role, key, revoked), root threshold `root`.
    fn ring(version: u64, root: usize, keys: &[(&str, &str, &SecretKey, bool)]) -> String {
        let mut text = format!(
            "version = {version}\nexpires = 2099-01-01T00:00:00Z\n\n[thresholds]\nroot = {root}\n"
        );
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

    const NOW: u64 = 1_800_000_000_000;

    fn update(text: &str, signers: &[&SecretKey]) -> Envelope {
        Envelope::sign(PayloadType::Keyring, text.as_bytes().to_vec(), signers)
    }

    #[test]
    fn only_trusted_keys_of_the_right_role_count_and_each_once() {
        let (release, operator, revoked, stranger) = (key(), key(), key(), key());
        let keyring = parse(&ring(
            1,
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
        assert!(
            why.contains("is an operator key, not a release key"),
            "{why}"
        );
    }

    #[test]
    fn a_threshold_counts_distinct_keys() {
        let (a, b) = (key(), key());
        let keyring = parse(
            &ring(
                1,
                1,
                &[("a", "operator", &a, false), ("b", "operator", &b, false)],
            )
            .replace("root = 1\n", "root = 1\noperator = 2\n"),
        );
        let ty = PayloadType::Command;
        let check = |sigs: &[Signature]| {
            keyring
                .check(Role::Operator, ty, b"c", sigs)
                .map(|s| s.len())
        };
        assert_eq!(check(&[a.sign(ty, b"c"), b.sign(ty, b"c")]), Ok(2));
        let twice = check(&[a.sign(ty, b"c"), a.sign(ty, b"c")])
            .err()
            .unwrap_or_default();
        assert!(
            twice.contains("1 of the 2 operator signatures needed"),
            "{twice}"
        );
    }

    #[test]
    fn a_root_threshold_must_agree_in_the_current_keyring_and_the_new_one() {
        let (r1, r2, r3, rel, ops, evil) = (key(), key(), key(), key(), key(), key());
        let current = parse(&ring(
            4,
            2,
            &[
                ("r1", "root", &r1, false),
                ("r2", "root", &r2, false),
                ("r3", "root", &r3, false),
                ("rel", "release", &rel, false),
                ("ops", "operator", &ops, false),
            ],
        ));
        let origin = Path::new("update");
        // The next version, adding a release key the attacker holds.
        let next = ring(
            5,
            2,
            &[
                ("r1", "root", &r1, false),
                ("r2", "root", &r2, false),
                ("r3", "root", &r3, false),
                ("rel", "release", &rel, false),
                ("ops", "operator", &ops, false),
                ("evil", "release", &evil, false),
            ],
        );
        let accept =
            |signers: &[&SecretKey]| current.accept_update(&update(&next, signers), origin, NOW);
        assert!(accept(&[&r1, &r2]).is_ok(), "two of three root keys");
        for (why, signers) in [
            ("one root key", vec![&r1]),
            ("one root key twice", vec![&r1, &r1]),
            ("an operator key with a root key", vec![&ops, &r1]),
            ("release and operator keys", vec![&rel, &ops, &evil]),
        ] {
            assert!(
                matches!(
                    accept(&signers),
                    Err(KeyringError::NotEnoughRoot {
                        which: "current",
                        ..
                    })
                ),
                "{why} changed the keyring"
            );
        }
        // A root rotation needs the new root's threshold too.
        let (n1, n2) = (key(), key());
        let rotated = ring(
            5,
            2,
            &[
                ("n1", "root", &n1, false),
                ("n2", "root", &n2, false),
                ("rel", "release", &rel, false),
            ],
        );
        let rotate =
            |signers: &[&SecretKey]| current.accept_update(&update(&rotated, signers), origin, NOW);
        assert!(rotate(&[&r1, &r2, &n1, &n2]).is_ok());
        assert!(
            matches!(
                rotate(&[&n1, &n2]),
                Err(KeyringError::NotEnoughRoot {
                    which: "current",
                    ..
                })
            ),
            "signed by the new root only"
        );
        assert!(
            matches!(
                rotate(&[&r1, &r2, &n1]),
                Err(KeyringError::NotEnoughRoot { which: "new", .. })
            ),
            "one of the new root's two"
        );
    }

    #[test]
    fn versions_step_by_one_and_updates_expire() {
        let (r1, rel) = (key(), key());
        let keys = [("r1", "root", &r1, false), ("rel", "release", &rel, false)];
        let current = parse(&ring(4, 1, &keys));
        let origin = Path::new("update");
        let try_version =
            |v: u64| current.accept_update(&update(&ring(v, 1, &keys), &[&r1]), origin, NOW);
        assert!(try_version(5).is_ok());
        for v in [4, 6, u64::MAX] {
            assert!(
                matches!(try_version(v), Err(KeyringError::NotNext { .. })),
                "version {v}"
            );
        }
        let expired = ring(5, 1, &keys).replace("2099-01-01", "2020-01-01");
        assert!(matches!(
            current.accept_update(&update(&expired, &[&r1]), origin, NOW),
            Err(KeyringError::Expired { .. })
        ));
        let forever = ring(5, 1, &keys).replace("expires = 2099-01-01T00:00:00Z\n", "");
        assert!(matches!(
            current.accept_update(&update(&forever, &[&r1]), origin, NOW),
            Err(KeyringError::NoExpiry)
        ));
        let rootless = parse(&ring(4, 1, &[("rel", "release", &rel, false)]));
        assert!(matches!(
            rootless.accept_update(&update(&ring(5, 1, &keys), &[&r1]), origin, NOW),
            Err(KeyringError::NoRoot)
        ));
    }

    #[test]
    fn a_bad_keyring_names_the_key_or_the_threshold() {
        let err = |text: &str| {
            Keyring::parse(text, Path::new("keyring.toml"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e =
            err("version = 1\n[[keys]]\nname = \"x\"\nrole = \"release\"\npublic-key = \"AAAA\"\n");
        assert!(e.contains("keys[0].public-key"), "{e}");
        let e = err("version = 1\n[[keys]]\nname = \"x\"\nrole = \"king\"\npublic-key = \"\"\n");
        assert!(e.contains("king") && e.contains("line 4"), "{e}");
        let one = key();
        let e = err(&ring(1, 2, &[("r", "root", &one, false)]));
        assert!(
            e.contains("thresholds.root: 2") && e.contains("only 1 root key"),
            "{e}"
        );
        let e = err(&ring(1, 0, &[("r", "root", &one, false)]));
        assert!(e.contains("at least 1"), "{e}");
        let e = err("version = 1\nexpires = 2027-12-01T00:00:00+02:00\n");
        assert!(e.contains("expires") && e.contains("UTC"), "{e}");
    }
}

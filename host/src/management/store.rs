//! The plugin store on the gateway: signed bundles, content-addressed, verified at every load.
//!
//! ```text
//! <store>/bundles/<digest>.ewb      installed bundles, named by their digest (SHA-256 of the
//!                                   manifest, which pins every file)
//! <store>/quarantine/<digest>.ewb   bundles that failed verification at load (changed on disk)
//! <store>/cache/<digest>-<engine>.cwasm  compiled components, written only by this host
//! <store>/incoming/<digest>.<n>.part  bundles arriving in chunks, not yet verified (emptied at
//!                                   start); one verified moves into bundles/ by a rename
//! <store>/state.json                per plugin: the active bundle, the last-known-good one,
//!                                   and the highest release counter ever accepted
//! ```
//!
//! Every write is atomic (temporary file in the same directory, fsync, rename, fsync of the
//! directory), so a gateway killed at any moment finds either the old file or the new one.
//! Bundles are verified where they lie, read in blocks, never whole in memory. The
//! highest release is recorded in the same write that activates a bundle, and a lower release
//! is refused unless its signed manifest says `rollback = true`. The directory is created
//! owner-only (0700): the compiled cache in it is native code (see [`crate::runtime::plugin`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgewise_signing::bundle::{self, BundleError, EXTENSION};
use edgewise_signing::encryption::{GatewayPublicKey, GatewaySecretKey};
use edgewise_signing::{Bundle, Keyring, VerifiedBundle};
use serde::{Deserialize, Serialize};

use crate::durable_file;

/// Why the store refused something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory of the store could not be read or written.
    #[error("store: {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The state file is corrupt.
    #[error("store: {}: {problem}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The bundle failed verification.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle's release counter is lower than one already accepted.
    #[error(
        "plugin `{plugin}`: release {offered} is older than release {highest} already accepted \
         (rollback refused; a release key can sign a bundle with `edgewise pack --rollback`)"
    )]
    Rollback {
        /// The plugin.
        plugin: String,
        /// The bundle's release.
        offered: u64,
        /// The highest accepted.
        highest: u64,
    },
    /// A bundle signed as a rollback, offered by anything but a rollback command naming it.
    #[error(
        "plugin `{plugin}`: bundle {digest} is a rollback to release {offered} (release {highest} \
         is accepted); a rollback bundle is installed only by an operator's rollback command \
         naming its digest (`edgewise push --rollback`), never by an update or a fleet"
    )]
    RollbackNotAsked {
        /// The plugin.
        plugin: String,
        /// The bundle's digest.
        digest: String,
        /// The bundle's release.
        offered: u64,
        /// The highest accepted.
        highest: u64,
    },
    /// The same release with other content.
    #[error(
        "plugin `{plugin}`: release {release} is already installed with other content; raise \
         the release counter"
    )]
    Conflict {
        /// The plugin.
        plugin: String,
        /// The release.
        release: u64,
    },
}

/// On whose word a bundle is installed: a bundle signed as a rollback (`rollback = true`, a
/// release not above the highest accepted) goes in only when the operator asked for exactly it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit<'a> {
    /// An update: a new release, never a step back.
    Update,
    /// A rollback an operator asked for, by this bundle digest (a signed `rollback` command,
    /// or `edgewise install --allow-rollback` on the gateway itself).
    Rollback(&'a str),
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// A new bundle is now the plugin's active one.
    Activated {
        /// The plugin.
        plugin: String,
        /// Its version.
        version: String,
        /// Its release counter.
        release: u64,
        /// The bundle's digest.
        digest: String,
    },
    /// This very bundle was already the active one: nothing changed.
    AlreadyActive {
        /// The plugin.
        plugin: String,
        /// The bundle's digest.
        digest: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct State {
    plugins: BTreeMap<String, PluginState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PluginState {
    active: String,
    last_known_good: Option<String>,
    highest_release: u64,
    /// The bundle accepted at `highest_release`: offered again (after a rollback), it is the
    /// same content, not a conflict. Absent in stores written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    highest_digest: Option<String>,
    /// Stopped by an operator: installed, not running.
    #[serde(default)]
    stopped: bool,
    /// Setting overrides sent by an operator (`config`), over the gateway file's.
    #[serde(default)]
    settings: BTreeMap<String, String>,
}

/// One installed plugin as the store records it: what `edgewise list` and `edgewise status`
/// show, read from disk with no gateway running.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Inventory {
    /// The plugin.
    pub name: String,
    /// Its active bundle's version, if that bundle verifies.
    pub version: Option<String>,
    /// Its active bundle's release, if that bundle verifies.
    pub release: Option<u64>,
    /// The active bundle's digest.
    pub digest: String,
    /// The bundle a rollback goes back to.
    pub last_known_good: Option<String>,
    /// The highest release ever accepted.
    pub highest_release: u64,
    /// Stopped by an operator.
    pub stopped: bool,
    /// An operator's setting overrides.
    pub settings: BTreeMap<String, String>,
    /// Why the active bundle does not verify, if it does not (the gateway would fall back to
    /// the last-known-good one, or not run the plugin).
    pub problem: Option<String>,
}

/// A plugin's bundle as loaded from the store, or why it could not be.
pub struct Loaded {
    /// The plugin's name.
    pub plugin: String,
    /// Whether an operator stopped it.
    pub stopped: bool,
    /// Setting overrides an operator sent.
    pub settings: BTreeMap<String, String>,
    /// The verified bundle, or the failure (after falling back to the last-known-good).
    pub bundle: Result<VerifiedBundle, StoreError>,
}

/// The file in the store that holds the gateway's X25519 private key, which decrypts the
/// models of bundles encrypted for it (`edgewise keygen --gateway`).
pub const GATEWAY_KEY_FILE: &str = "gateway.x25519";

/// The store in one directory, checked against one keyring.
pub struct Store {
    root: PathBuf,
    keyring: Keyring,
    max_bundle_bytes: u64,
    gateway_key: Option<std::sync::Arc<GatewaySecretKey>>,
}

/// The gateway's decryption key in `root`, if it has one.
pub fn read_gateway_key(root: &Path) -> Result<Option<GatewaySecretKey>, StoreError> {
    let path = root.join(GATEWAY_KEY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => zeroize::Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Io { path, source }),
    };
    let key = GatewaySecretKey::from_text(&text).map_err(|e| StoreError::State {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(&path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the gateway's decryption key is readable by others: chmod 600 it");
        }
    }
    Ok(Some(key))
}

impl Store {
    /// Opens (creating if needed) the store in `root`.
    pub fn open(root: &Path, keyring: Keyring, max_bundle_bytes: u64) -> Result<Self, StoreError> {
        for dir in [
            root.to_owned(),
            root.join("bundles"),
            root.join("quarantine"),
            root.join("cache"),
            incoming_dir(root),
        ] {
            create_private_dir(&dir)?;
        }
        let gateway_key = read_gateway_key(root)?.map(std::sync::Arc::new);
        Ok(Self {
            root: root.to_owned(),
            keyring,
            max_bundle_bytes,
            gateway_key,
        })
    }

    /// The gateway's public decryption key, if it has a key pair (shown in its status, for
    /// `edgewise pack --encrypt-for`).
    pub fn gateway_public_key(&self) -> Option<GatewayPublicKey> {
        self.gateway_key.as_ref().map(|k| k.public())
    }

    /// Makes the encrypted models of `verified` readable here, or refuses it: encrypted for
    /// other gateways, no key here, or a file that does not decrypt. A bundle without
    /// encryption passes unchanged.
    pub fn unlock(&self, verified: &mut VerifiedBundle) -> Result<(), StoreError> {
        verified.unlock(self.gateway_key.as_deref(), &self.root)?;
        Ok(())
    }

    /// Verifies the bundle file at `path` where it lies, its models unlocked (see
    /// [`Store::unlock`]).
    pub fn verify_file(&self, path: &Path) -> Result<VerifiedBundle, StoreError> {
        let mut verified = Bundle::verify_file(path, self.max_bundle_bytes, &self.keyring)?;
        self.unlock(&mut verified)?;
        Ok(verified)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The keyring bundles are checked against.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Checks bundles against `keyring` from now on (it was updated).
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.keyring = keyring;
    }

    /// Bundle `digest` as the store holds it (installed now or before), verified again.
    pub fn bundle(&self, digest: &str) -> Option<VerifiedBundle> {
        if !bundle::is_sha256_hex(digest) || !self.bundle_path(digest).is_file() {
            return None;
        }
        self.load(digest).ok()
    }

    /// The directory of compiled components.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Verifies the bundle file at `path` where it lies and makes it its plugin's active bundle
    /// (a copy of the file goes into the store). Nothing in the store changes unless every
    /// check passed.
    pub fn install_file(&self, path: &Path, admit: Admit) -> Result<Installed, StoreError> {
        let verified = self.verify_file(path)?;
        self.admit(&verified, admit, |to| {
            durable_file::copy_atomically(path, to)
        })
    }

    /// Like [`Store::install_file`], from the bundle's bytes; `origin` names it in errors.
    pub fn install(
        &self,
        bytes: &[u8],
        origin: &Path,
        admit: Admit,
    ) -> Result<Installed, StoreError> {
        if bytes.len() as u64 > self.max_bundle_bytes {
            return Err(BundleError::TooLarge {
                max: self.max_bundle_bytes,
            }
            .into());
        }
        let mut verified = Bundle::verify(bytes, &self.keyring, origin)?;
        self.unlock(&mut verified)?;
        self.admit(&verified, admit, |to| {
            durable_file::write_atomically(to, bytes)
        })
    }

    /// Makes `verified`, read from the file `staged` in [`incoming_dir`], its plugin's
    /// active bundle: the file moves into the store. Nothing in the store changes unless every
    /// check passed; `staged` stays where it is then, for the caller to remove.
    pub fn install_staged(
        &self,
        verified: &VerifiedBundle,
        staged: &Path,
        admit: Admit,
    ) -> Result<Installed, StoreError> {
        self.admit(verified, admit, |to| {
            durable_file::move_atomically(staged, to)
        })
    }

    /// Makes `verified`, a bundle the store holds (see [`Store::bundle`]), its plugin's
    /// active bundle again.
    pub fn reinstate(
        &self,
        verified: &VerifiedBundle,
        admit: Admit,
    ) -> Result<Installed, StoreError> {
        self.admit(verified, admit, |to| match to.is_file() {
            true => Ok(()),
            false => Err(std::io::ErrorKind::NotFound.into()),
        })
    }

    /// Whether `verified` may go in now: `Ok(true)` if it would become its plugin's active
    /// bundle, `Ok(false)` if it is that already, `Err` if the plugin's history refuses it
    /// (rollback, conflict). Changes nothing: an update's gate runs between this and the
    /// install.
    pub fn admission(&self, verified: &VerifiedBundle, admit: Admit) -> Result<bool, StoreError> {
        Self::check(&self.state()?, verified, admit)
    }

    /// Checks `verified` against the plugin's history (rollback, conflict) and, if it may go
    /// in, has `place` put its file where the store keeps it and records it as active.
    fn admit(
        &self,
        verified: &VerifiedBundle,
        admit: Admit,
        place: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<Installed, StoreError> {
        let manifest = &verified.manifest;
        let plugin = manifest.name.clone();
        let release = manifest.release.unwrap_or_default();
        let mut state = self.state()?;
        let previous = state.plugins.get(&plugin).cloned();
        if !Self::check(&state, verified, admit)? {
            return Ok(Installed::AlreadyActive {
                plugin,
                digest: verified.digest.clone(),
            });
        }
        let target = self.bundle_path(&verified.digest);
        place(&target).map_err(|source| StoreError::Io {
            path: target.clone(),
            source,
        })?;
        let (highest, highest_digest) = match &previous {
            Some(p) if p.highest_release >= release && p.highest_digest.is_some() => {
                (p.highest_release, p.highest_digest.clone())
            }
            Some(p) if p.highest_release > release => (p.highest_release, None),
            _ => (release, Some(verified.digest.clone())),
        };
        let (stopped, settings) = previous
            .as_ref()
            .map(|p| (p.stopped, p.settings.clone()))
            .unwrap_or_default();
        state.plugins.insert(
            plugin.clone(),
            PluginState {
                active: verified.digest.clone(),
                last_known_good: previous.map(|p| p.active),
                highest_release: highest,
                highest_digest,
                stopped,
                settings,
            },
        );
        self.save(&state)?;
        Ok(Installed::Activated {
            plugin,
            version: manifest.version.to_string(),
            release,
            digest: verified.digest.clone(),
        })
    }

    /// The plugin's history's word on `verified`: `Ok(true)` if it may become the active
    /// bundle, `Ok(false)` if it is that already, `Err` if refused.
    fn check(state: &State, verified: &VerifiedBundle, admit: Admit) -> Result<bool, StoreError> {
        let manifest = &verified.manifest;
        let plugin = manifest.name.clone();
        let release = manifest.release.unwrap_or_default();
        let Some(p) = state.plugins.get(&plugin) else {
            return Ok(true);
        };
        if p.active == verified.digest {
            return Ok(false);
        }
        // The newest release, rolled back from and offered again: the operator tries it
        // once more (a fleet re-pushing it, say); nothing older comes in this way.
        let again = release == p.highest_release
            && [&p.highest_digest, &p.last_known_good]
                .iter()
                .any(|d| d.as_deref() == Some(verified.digest.as_str()));
        if !again {
            if release < p.highest_release && !manifest.rollback {
                return Err(StoreError::Rollback {
                    plugin,
                    offered: release,
                    highest: p.highest_release,
                });
            }
            if release == p.highest_release && !manifest.rollback {
                return Err(StoreError::Conflict { plugin, release });
            }
            // A rollback bundle is valid forever once signed: it steps back only when an
            // operator names it now.
            if release <= p.highest_release && admit != Admit::Rollback(&verified.digest) {
                return Err(StoreError::RollbackNotAsked {
                    plugin,
                    digest: verified.digest.clone(),
                    offered: release,
                    highest: p.highest_release,
                });
            }
        }
        Ok(true)
    }

    /// Loads and re-verifies every plugin's active bundle. A bundle that fails (changed on
    /// disk, or its signer revoked) is moved to quarantine and the plugin falls back to its
    /// last-known-good bundle, if that one verifies.
    pub fn load_all(&self) -> Result<Vec<Loaded>, StoreError> {
        let mut state = self.state()?;
        let mut changed = false;
        let mut loaded = Vec::new();
        for (plugin, entry) in state.plugins.iter_mut() {
            let bundle = match self.load(&entry.active) {
                Ok(bundle) => Ok(bundle),
                Err(error) => {
                    tracing::error!(plugin, digest = entry.active, "{error}; quarantined");
                    self.quarantine(&entry.active);
                    match entry.last_known_good.take().map(|d| (self.load(&d), d)) {
                        Some((Ok(bundle), digest)) => {
                            tracing::warn!(plugin, digest, "running the last-known-good bundle");
                            entry.active = digest;
                            changed = true;
                            Ok(bundle)
                        }
                        _ => Err(error),
                    }
                }
            };
            loaded.push(Loaded {
                plugin: plugin.clone(),
                stopped: entry.stopped,
                settings: entry.settings.clone(),
                bundle,
            });
        }
        if changed {
            self.save(&state)?;
        }
        Ok(loaded)
    }

    /// Every installed plugin, its active bundle verified (without quarantining anything: a
    /// read-only look).
    pub fn inventory(&self) -> Result<Vec<Inventory>, StoreError> {
        Ok(self
            .state()?
            .plugins
            .into_iter()
            .map(|(name, entry)| {
                let (version, release, problem) = match self.load(&entry.active) {
                    Ok(b) => (
                        Some(b.manifest.version.to_string()),
                        b.manifest.release,
                        None,
                    ),
                    Err(e) => (None, None, Some(e.to_string())),
                };
                Inventory {
                    name,
                    version,
                    release,
                    digest: entry.active,
                    last_known_good: entry.last_known_good,
                    highest_release: entry.highest_release,
                    stopped: entry.stopped,
                    settings: entry.settings,
                    problem,
                }
            })
            .collect())
    }

    /// Makes `plugin`'s last-known-good bundle active again, keeping the one it replaces as the
    /// new last-known-good; returns that bundle, verified. The highest release seen stays.
    pub fn rollback(&self, plugin: &str) -> Result<VerifiedBundle, StoreError> {
        let mut state = self.state()?;
        let entry = state
            .plugins
            .get_mut(plugin)
            .ok_or_else(|| self.unknown(plugin))?;
        let previous = entry
            .last_known_good
            .clone()
            .ok_or_else(|| StoreError::State {
                path: self.state_path(),
                problem: format!("plugin `{plugin}` has no earlier bundle to go back to"),
            })?;
        let bundle = self.load(&previous)?;
        entry.last_known_good = Some(std::mem::replace(&mut entry.active, previous));
        self.save(&state)?;
        Ok(bundle)
    }

    /// The active bundle of `plugin`, verified, with its setting overrides.
    pub fn active(
        &self,
        plugin: &str,
    ) -> Result<(VerifiedBundle, BTreeMap<String, String>), StoreError> {
        let state = self.state()?;
        let entry = state
            .plugins
            .get(plugin)
            .ok_or_else(|| self.unknown(plugin))?;
        Ok((self.load(&entry.active)?, entry.settings.clone()))
    }

    /// Records an operator's stop or start.
    pub fn set_stopped(&self, plugin: &str, stopped: bool) -> Result<(), StoreError> {
        let mut state = self.state()?;
        state
            .plugins
            .get_mut(plugin)
            .ok_or_else(|| self.unknown(plugin))?
            .stopped = stopped;
        self.save(&state)
    }

    /// Records an operator's setting overrides for `plugin`: the whole set, replacing the
    /// earlier one.
    pub fn set_settings(
        &self,
        plugin: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let mut state = self.state()?;
        state
            .plugins
            .get_mut(plugin)
            .ok_or_else(|| self.unknown(plugin))?
            .settings = settings.clone();
        self.save(&state)
    }

    /// Uninstalls `plugin`: forgets it and deletes its bundles. Its highest release is
    /// forgotten too, so a later install starts afresh.
    pub fn remove(&self, plugin: &str) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let entry = state
            .plugins
            .remove(plugin)
            .ok_or_else(|| self.unknown(plugin))?;
        self.save(&state)?;
        for digest in std::iter::once(entry.active).chain(entry.last_known_good) {
            let _ = std::fs::remove_file(self.bundle_path(&digest));
            let _ = std::fs::remove_file(self.evaluation_path(&digest));
        }
        Ok(())
    }

    /// Keeps the gate's results with bundle `digest` (written before it goes live).
    pub fn save_evaluation(
        &self,
        digest: &str,
        results: &serde_json::Value,
    ) -> Result<(), StoreError> {
        write_atomically(
            &self.evaluation_path(digest),
            results.to_string().as_bytes(),
        )
    }

    /// The gate's results kept with bundle `digest`, if it was evaluated here.
    pub fn evaluation(&self, digest: &str) -> Option<serde_json::Value> {
        let text = std::fs::read(self.evaluation_path(digest)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn evaluation_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("bundles")
            .join(format!("{digest}.evaluation.json"))
    }

    fn unknown(&self, plugin: &str) -> StoreError {
        StoreError::State {
            path: self.state_path(),
            problem: format!("no plugin `{plugin}` is installed"),
        }
    }

    /// The active bundle of every installed plugin: name, digest, highest release.
    pub fn list(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        Ok(self
            .state()?
            .plugins
            .into_iter()
            .map(|(name, p)| (name, p.active, p.highest_release))
            .collect())
    }

    fn load(&self, digest: &str) -> Result<VerifiedBundle, StoreError> {
        let path = self.bundle_path(digest);
        let verified = self.verify_file(&path)?;
        if verified.digest != digest {
            return Err(BundleError::File {
                path: path.display().to_string(),
                problem: format!("content digest is {}, not its name", verified.digest),
            }
            .into());
        }
        Ok(verified)
    }

    fn quarantine(&self, digest: &str) {
        let from = self.bundle_path(digest);
        let to = self
            .root
            .join("quarantine")
            .join(format!("{digest}.{EXTENSION}"));
        if let Err(e) = std::fs::rename(&from, &to) {
            tracing::warn!("cannot quarantine {}: {e}", from.display());
        }
    }

    fn bundle_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("bundles")
            .join(format!("{digest}.{EXTENSION}"))
    }

    fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    fn backup_path(&self) -> PathBuf {
        self.root.join("state.json.bak")
    }

    /// The store's state: `state.json`; if that is missing or corrupt, its copy
    /// `state.json.bak` (written after it, with the same content); if that fails too, rebuilt
    /// from the bundles in the store. Either way a gateway keeps running its plugins, the log
    /// says what happened, and the state file is written again.
    fn state(&self) -> Result<State, StoreError> {
        let (path, backup) = (self.state_path(), self.backup_path());
        let problem = match read_state(&path) {
            Ok(Some(state)) => return Ok(state),
            Ok(None) if !backup.exists() => return Ok(State::default()),
            Ok(None) => "missing".to_owned(),
            Err(problem) => problem,
        };
        let state = match read_state(&backup) {
            Ok(Some(state)) => {
                tracing::warn!(
                    "{}: {problem}; using its copy {}",
                    path.display(),
                    backup.display()
                );
                state
            }
            other => {
                let why = match other {
                    Err(p) => p,
                    _ => "missing".to_owned(),
                };
                let state = self.rebuild();
                tracing::error!(
                    plugins = state.plugins.len(),
                    "{}: {problem}, and its copy: {why}; rebuilt from the bundles in the store (operators' setting overrides and stops are lost; the highest release is that of the newest bundle)",
                    path.display()
                );
                state
            }
        };
        self.save(&state)?;
        Ok(state)
    }

    /// A state from the bundles in the store: for each plugin, its verified bundle of the
    /// highest release active, the next one its last-known-good.
    fn rebuild(&self) -> State {
        let mut found: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        let bundles = std::fs::read_dir(self.root.join("bundles"))
            .into_iter()
            .flatten();
        for entry in bundles.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(digest) = name.strip_suffix(&format!(".{EXTENSION}")) else {
                continue;
            };
            match self.load(digest) {
                Ok(bundle) => found
                    .entry(bundle.manifest.name.clone())
                    .or_default()
                    .push((
                        bundle.manifest.release.unwrap_or_default(),
                        digest.to_owned(),
                    )),
                Err(e) => tracing::warn!("not taken into the rebuilt state: {e}"),
            }
        }
        let plugins = found
            .into_iter()
            .map(|(plugin, mut bundles)| {
                bundles.sort();
                let (release, active) = bundles.pop().unwrap_or_default();
                let state = PluginState {
                    last_known_good: bundles.pop().map(|(_, digest)| digest),
                    highest_release: release,
                    highest_digest: Some(active.clone()),
                    active,
                    stopped: false,
                    settings: BTreeMap::new(),
                };
                (plugin, state)
            })
            .collect();
        State { plugins }
    }

    /// Writes the state, then the same as its copy.
    fn save(&self, state: &State) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StoreError::State {
            path: self.state_path(),
            problem: e.to_string(),
        })?;
        write_atomically(&self.state_path(), &bytes)?;
        write_atomically(&self.backup_path(), &bytes)
    }
}

/// The state in `path`: `None` if there is no such file, the problem if it does not parse.
fn read_state(path: &Path) -> Result<Option<State>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("corrupt ({e})")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The directory of the store in `root` that bundles arriving in chunks are assembled in:
/// inside the store, so that one verified there moves into place by a rename.
pub fn incoming_dir(root: &Path) -> PathBuf {
    root.join("incoming")
}

/// Bytes the files under `root` take (the store: bundles, journal, compiled cache), for the
/// `edgewise_store_bytes` gauge; what cannot be read counts as nothing.
pub fn bytes_on_disk(root: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => bytes_on_disk(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// [`durable_file::write_atomically`], with the file named in the error.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    durable_file::write_atomically(path, bytes).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    durable_file::create_private_dir(dir).map_err(|source| StoreError::Io {
        path: dir.to_owned(),
        source,
    })
}

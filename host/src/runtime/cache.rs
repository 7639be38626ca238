//! The compiled-component cache: machine code, bound to the bundle it came from and checked
//! before it is loaded.
//!
//! Compiling a component takes tens of milliseconds to seconds; loading wasmtime's serialized
//! form takes a fraction of one, but it is native code that wasmtime trusts as it is
//! (`Component::deserialize` is `unsafe`). So a cache entry is only ever written by this host
//! and is used only if its own header says it belongs to the verified bundle being loaded and
//! to this engine, and a MAC over header and code matches. The MAC's key is 32 random bytes in
//! `<cache>/key` (owner-only, 0600), made once per store: an entry copied from another
//! plugin's slot, edited, or written by anyone without the key is compiled again, and the log
//! says why. The directory is the store's, owner-only (0700).
//!
//! An entry, `<cache>/<bundle digest>-<engine hash>.cwasm`:
//!
//! | bytes | what |
//! | --- | --- |
//! | 8 | `EWCWASM1` |
//! | 64 | the bundle digest, lowercase hex |
//! | 16 | the engine's compatibility hash, lowercase hex |
//! | 32 | HMAC-SHA256 under the key, over `edgewise compiled cache v1`, the two fields above and the code |
//! | rest | the code: wasmtime's serialized component |

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"EWCWASM1";
const DOMAIN: &[u8] = b"edgewise compiled cache v1";
const HEADER: usize = 8 + 64 + 16 + 32;

/// The cache in one directory, with its key.
pub struct Cache {
    dir: PathBuf,
    key: [u8; 32],
}

/// Why an entry was not used.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("not a cache entry")]
    Format,
    #[error("it belongs to bundle {0}")]
    OtherBundle(String),
    #[error("it was compiled for another engine")]
    OtherEngine,
    #[error("its MAC does not match: it changed on disk, or this host did not write it")]
    Mac,
    #[error("wasmtime refused it: {0}")]
    Wasmtime(String),
}

impl Cache {
    /// The cache in `dir`, making its key on first use.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        crate::durable_file::create_private_dir(dir)?;
        let path = dir.join("key");
        let key = match std::fs::read(&path) {
            Ok(bytes) => bytes.try_into().map_err(|_| {
                std::io::Error::other(format!("{}: not a 32-byte key", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => make_key(&path)?,
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir: dir.to_owned(),
            key,
        })
    }

    /// The component for bundle `digest` from the cache, or `compile()`d and cached.
    pub fn component<E>(
        &self,
        engine: &Engine,
        plugin: &str,
        digest: &str,
        compile: impl FnOnce() -> Result<Component, E>,
    ) -> Result<Component, E> {
        let engine_hash = engine_hash(engine);
        let file = self.dir.join(format!("{digest}-{engine_hash}.cwasm"));
        if let Ok(bytes) = std::fs::read(&file) {
            match self.load(engine, &bytes, digest, &engine_hash) {
                Ok(component) => return Ok(component),
                Err(why) => {
                    tracing::warn!(
                        plugin,
                        "compiled cache {} not used ({why}): compiling again",
                        file.display()
                    );
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        let component = compile()?;
        self.forget_other_engines(digest, &file);
        match component.serialize() {
            Ok(code) => {
                let entry = self.entry(digest, &engine_hash, &code);
                if let Err(e) = crate::durable_file::write_atomically(&file, &entry) {
                    tracing::warn!(plugin, "cannot cache the compiled component: {e}");
                }
            }
            Err(e) => tracing::warn!(plugin, "cannot serialise the compiled component: {e}"),
        }
        Ok(component)
    }

    /// The component in `bytes`, if its header binds it to `digest` and this engine and its
    /// MAC matches. The one `unsafe` of the host besides the tract backend's.
    #[allow(unsafe_code)]
    fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
        engine_hash: &str,
    ) -> Result<Component, Refused> {
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(Refused::Format);
        }
        let (their_digest, their_engine) = (&bytes[8..72], &bytes[72..88]);
        if their_digest != digest.as_bytes() {
            return Err(Refused::OtherBundle(
                String::from_utf8_lossy(their_digest).into_owned(),
            ));
        }
        if their_engine != engine_hash.as_bytes() {
            return Err(Refused::OtherEngine);
        }
        let (mac, code) = (&bytes[88..HEADER], &bytes[HEADER..]);
        self.mac(their_digest, their_engine, code)
            .verify_slice(mac)
            .map_err(|_| Refused::Mac)?;
        // SAFETY: this host wrote these bytes (the MAC is under a key only it can read) as the
        // compiled form of the bundle `digest`, verified at this load, for this very engine;
        // they are never taken from a bundle or the network.
        unsafe { Component::deserialize(engine, code) }
            .map_err(|e| Refused::Wasmtime(e.to_string()))
    }

    fn mac(&self, digest: &[u8], engine_hash: &[u8], code: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for part in [DOMAIN, digest, engine_hash, code] {
            mac.update(part);
        }
        mac
    }

    fn entry(&self, digest: &str, engine_hash: &str, code: &[u8]) -> Vec<u8> {
        let mac = self
            .mac(digest.as_bytes(), engine_hash.as_bytes(), code)
            .finalize()
            .into_bytes();
        let mut entry = Vec::with_capacity(HEADER + code.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(digest.as_bytes());
        entry.extend_from_slice(engine_hash.as_bytes());
        entry.extend_from_slice(&mac);
        entry.extend_from_slice(code);
        entry
    }

    /// Entries of bundle `digest` for another engine are stale.
    fn forget_other_engines(&self, digest: &str, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = entry.file_name().to_string_lossy().starts_with(digest);
            if ours && path != keep {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// This engine's compatibility hash, as 16 hex digits.
fn engine_hash(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// A new random key in `path`, readable by its owner only; if another process made one at the
/// same moment, that one.
fn make_key(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path)?
            .try_into()
            .map_err(|_| std::io::Error::other(format!("{}: not a 32-byte key", path.display()))),
        Err(e) => Err(e),
    }
}

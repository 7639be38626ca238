//! Signed plugin bundles: one file with the manifest, its signatures, the component and the
//! models. `docs/bundle-format.md` is the specification; this is the reference reader/writer.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! "EWBUNDLE" u16 format=1
//! u32 manifest length, manifest bytes (UTF-8 TOML)
//! u16 signature count, each: 32-byte ed25519 public key, 64-byte signature
//! u16 file count, each: u16 path length, path (UTF-8), u64 size, bytes
//! (nothing after)
//! ```
//!
//! [`Bundle::verify`] checks in a fixed order, each step only on what the previous one
//! vouched for: the size cap and framing, then the signatures over the exact manifest bytes,
//! then the manifest's parse, then policy (a bundle manifest must carry `release` and pin its
//! files), then every file's size and SHA-256 against the manifest. Nothing is compiled or
//! interpreted before all of it passed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::encryption::{ContentKey, GatewaySecretKey};
use crate::keyring::{Keyring, Role};
use crate::manifest::{Manifest, ManifestError};
use crate::signature::{PayloadType, PublicKey, SecretKey, Signature};

/// The first bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"EWBUNDLE";
/// The container format this code reads and writes.
pub const FORMAT: u16 = 1;
/// The conventional file extension.
pub const EXTENSION: &str = "ewb";
/// The largest bundle read by default: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Limits on the framing, far above any real bundle, so a hostile header cannot make the
/// reader allocate.
const MAX_MANIFEST_BYTES: u32 = 1 << 20;
const MAX_FILES: u16 = 1024;

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// Larger than the cap.
    #[error("the bundle is larger than the limit of {max} bytes")]
    TooLarge {
        /// The cap.
        max: u64,
    },
    /// The container is malformed: truncated, bad magic, bad lengths, trailing bytes.
    #[error("malformed bundle at byte {offset}: {problem}")]
    Malformed {
        /// Where reading stopped.
        offset: usize,
        /// What was wrong.
        problem: String,
    },
    /// No signature by a trusted key of the right role.
    #[error("bundle manifest not signed by a trusted release key: {0}")]
    Untrusted(String),
    /// The manifest (signed, so from a trusted author) is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest is valid but not acceptable in a bundle.
    #[error("bundle manifest: {0}")]
    Policy(String),
    /// A file does not match what the manifest pins, or is not pinned at all.
    #[error("bundle file `{path}`: {problem}")]
    File {
        /// The file's path in the bundle.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Its models are encrypted and this gateway has no key to read them.
    #[error(
        "the bundle's models are encrypted for {recipients} gateway(s) and this gateway has no key: make one with `edgewise keygen --gateway --store {store}` and have the bundle packed with `--encrypt-for` its public key"
    )]
    NoGatewayKey {
        /// How many gateways it was encrypted for.
        recipients: usize,
        /// The store the key belongs in.
        store: String,
    },
    /// Its models are encrypted and could not be decrypted here.
    #[error(transparent)]
    Encryption(#[from] crate::encryption::EncryptionError),
}

/// A bundle as read from its bytes: framing checked, nothing else yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The manifest, exactly as signed.
    pub manifest: Vec<u8>,
    /// The signatures over it.
    pub signatures: Vec<Signature>,
    /// The files, by path, in the order stored.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Where a bundle's bytes are.
#[derive(Debug, Clone)]
pub enum Source {
    /// In memory (a bundle read whole: tests, the CLI).
    Memory(Arc<[u8]>),
    /// In a file, read as needed. The open file, not its path: a bundle moved or replaced
    /// after it was verified still reads as the file that was verified.
    File(Arc<std::fs::File>, PathBuf),
}

impl Source {
    /// The bundle file at `path`, refused if larger than `max` bytes.
    pub fn open(path: &Path, max: u64) -> Result<Source, BundleError> {
        let file = open_capped(path, max)?;
        Ok(Source::File(Arc::new(file), path.to_owned()))
    }

    fn len(&self) -> Result<u64, BundleError> {
        match self {
            Source::Memory(bytes) => Ok(bytes.len() as u64),
            Source::File(file, path) => {
                file.metadata()
                    .map(|m| m.len())
                    .map_err(|source| BundleError::Io {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }

    /// Fills `out` from byte `at`; the caller has checked that the range is inside.
    fn read_at(&self, at: u64, out: &mut [u8]) -> Result<(), BundleError> {
        match self {
            Source::Memory(bytes) => {
                let start = at as usize;
                out.copy_from_slice(&bytes[start..start + out.len()]);
                Ok(())
            }
            Source::File(file, path) => std::os::unix::fs::FileExt::read_exact_at(&**file, out, at)
                .map_err(|source| BundleError::Io {
                    path: path.clone(),
                    source,
                }),
        }
    }

    /// The bytes of `span`.
    fn read(&self, span: Span) -> Result<Vec<u8>, BundleError> {
        let mut out = vec![0; span.size as usize];
        self.read_at(span.offset, &mut out)?;
        Ok(out)
    }

    /// The SHA-256 of `span`, read in blocks.
    fn sha256(&self, span: Span) -> Result<String, BundleError> {
        if let Source::Memory(bytes) = self {
            let start = span.offset as usize;
            return Ok(sha256_hex(&bytes[start..start + span.size as usize]));
        }
        let mut hasher = Sha256::new();
        let mut block = vec![0; HASH_BLOCK.min(span.size as usize)];
        let mut at = span.offset;
        let end = span.offset + span.size;
        while at < end {
            let n = block.len().min((end - at) as usize);
            self.read_at(at, &mut block[..n])?;
            hasher.update(&block[..n]);
            at += n as u64;
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// Bytes hashed at a time when verifying a bundle where it lies.
const HASH_BLOCK: usize = 64 << 10;

/// Where a file's bytes are in its bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    offset: u64,
    size: u64,
}

/// A container's framing: everything but the files' bytes.
struct Layout {
    manifest: Vec<u8>,
    signatures: Vec<Signature>,
    files: Vec<(String, Span)>,
}

/// A bundle that passed every check: trusted, parsed, every file as pinned.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The manifest text, exactly as signed.
    pub manifest_text: String,
    /// The trusted keys that signed it.
    pub signers: Vec<PublicKey>,
    /// The bundle's identity: the SHA-256 of its manifest (which pins every file), lowercase
    /// hex. See [`Bundle::digest`].
    pub digest: String,
    /// Where its files are, by path.
    files: BTreeMap<String, Span>,
    source: Source,
    /// The key to its encrypted models, once [`VerifiedBundle::unlock`] found it.
    content_key: Option<Arc<ContentKey>>,
}

impl VerifiedBundle {
    /// The content of the file at `path` as the manifest names it (`component`, a model's
    /// `file`), read from the bundle and checked against its pin again: the bytes handed out
    /// are the pinned bytes, whatever happened to the file since it was verified.
    pub fn file(&self, path: &Path) -> Result<Vec<u8>, BundleError> {
        let missing = |name: String| BundleError::File {
            path: name,
            problem: "not in the bundle".into(),
        };
        let name = canonical(path).ok_or_else(|| missing(path.display().to_string()))?;
        let span = *self.files.get(&name).ok_or_else(|| missing(name.clone()))?;
        let bytes = self.source.read(span)?;
        let pinned = self
            .manifest
            .files
            .get(&name)
            .map(|pin| pin.sha256.as_str());
        if pinned != Some(sha256_hex(&bytes).as_str()) {
            return Err(BundleError::File {
                path: name,
                problem: "changed since the bundle was verified".into(),
            });
        }
        Ok(bytes)
    }

    /// Like [`VerifiedBundle::file`], decrypted in memory when the file is one the bundle
    /// encrypts (after [`VerifiedBundle::unlock`]).
    pub fn plain_file(&self, path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, BundleError> {
        let bytes = self.file(path)?;
        let name = canonical(path).unwrap_or_default();
        match (&self.manifest.encryption, self.content_key.as_deref()) {
            (Some(enc), Some(key)) if enc.covers(&name) => Ok(key.decrypt(&name, &bytes)?),
            (Some(enc), None) if enc.covers(&name) => Err(BundleError::File {
                path: name,
                problem: "encrypted, and no content key was given".into(),
            }),
            _ => Ok(zeroize::Zeroizing::new(bytes)),
        }
    }

    /// Makes its encrypted models readable with this gateway's `secret`: unwraps the content
    /// key and decrypts every encrypted file once, to check it authenticates (the plaintext is
    /// dropped, zeroized, at once). Nothing to do for a bundle without encryption. `store` names
    /// where a missing key belongs, for the refusal.
    pub fn unlock(
        &mut self,
        secret: Option<&GatewaySecretKey>,
        store: &Path,
    ) -> Result<(), BundleError> {
        let Some(enc) = &self.manifest.encryption else {
            return Ok(());
        };
        let secret = secret.ok_or_else(|| BundleError::NoGatewayKey {
            recipients: enc.recipients.len(),
            store: store.display().to_string(),
        })?;
        self.content_key = Some(Arc::new(enc.content_key(secret)?));
        for file in &enc.files {
            self.plain_file(Path::new(file))?;
        }
        Ok(())
    }

    /// The paths of its files.
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }
}

/// Opens a bundle file, refusing one larger than `max` bytes.
fn open_capped(path: &Path, max: u64) -> Result<std::fs::File, BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() > max {
        return Err(BundleError::TooLarge { max });
    }
    Ok(file)
}

/// Reads a bundle file, refusing one larger than `max` bytes before reading it all.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, BundleError> {
    let file = open_capped(path, max)?;
    let mut bytes = Vec::new();
    // `take` guards against a file that grows while it is read.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| BundleError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(BundleError::TooLarge { max });
    }
    Ok(bytes)
}

/// SHA-256 in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `text` is a SHA-256 as these formats write one (a bundle digest, a file pin, a
/// keyid): 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Bundle {
    /// Parses the container. Checks framing only: nothing here is trusted yet.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let source = Source::Memory(bytes.into());
        let layout = Layout::read(&source)?;
        let files = layout
            .files
            .into_iter()
            .map(|(path, span)| Ok((path, source.read(span)?)))
            .collect::<Result<_, BundleError>>()?;
        Ok(Self {
            manifest: layout.manifest,
            signatures: layout.signatures,
            files,
        })
    }

    /// The bundle's identity: the SHA-256 of the manifest bytes, in lowercase hex. The
    /// manifest pins the size and hash of every file, so this names the content; signatures
    /// are not part of it (the same release signed again is the same bundle). Computing it costs
    /// one pass over the manifest instead of a second pass over every file.
    pub fn digest(&self) -> String {
        sha256_hex(&self.manifest)
    }

    /// The container's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_be_bytes());
        out.extend_from_slice(&(self.manifest.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.manifest);
        out.extend_from_slice(&(self.signatures.len() as u16).to_be_bytes());
        for s in &self.signatures {
            out.extend_from_slice(&s.key.to_bytes());
            out.extend_from_slice(&s.bytes);
        }
        out.extend_from_slice(&(self.files.len() as u16).to_be_bytes());
        for (path, bytes) in &self.files {
            out.extend_from_slice(&(path.len() as u16).to_be_bytes());
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Verifies a bundle's bytes against `keyring`, in the order the module doc gives.
    /// `origin` names the bundle in manifest errors.
    pub fn verify(
        bytes: &[u8],
        keyring: &Keyring,
        origin: &Path,
    ) -> Result<VerifiedBundle, BundleError> {
        Self::verify_source(Source::Memory(bytes.into()), keyring, origin)
    }

    /// Verifies the bundle file at `path` where it lies, refusing one over `max` bytes; the
    /// bundle it returns reads its files from there.
    pub fn verify_file(
        path: &Path,
        max: u64,
        keyring: &Keyring,
    ) -> Result<VerifiedBundle, BundleError> {
        Self::verify_source(Source::open(path, max)?, keyring, path)
    }

    /// Verifies the bundle in `source`.
    pub fn verify_source(
        source: Source,
        keyring: &Keyring,
        origin: &Path,
    ) -> Result<VerifiedBundle, BundleError> {
        let layout = Layout::read(&source)?;
        let digest = sha256_hex(&layout.manifest);
        let ty = PayloadType::Manifest;
        let signers: Vec<PublicKey> = keyring
            .check(Role::Release, ty, &layout.manifest, &layout.signatures)
            .map_err(BundleError::Untrusted)?
            .into_iter()
            .map(|k| k.key)
            .collect();
        let manifest_text = String::from_utf8(layout.manifest)
            .map_err(|_| BundleError::Policy("the manifest is not UTF-8".into()))?;
        let manifest = Manifest::parse(&manifest_text, &origin.join("manifest"))?;
        if manifest.release.is_none() {
            return Err(BundleError::Policy("no `release` counter".into()));
        }
        let mut pinned: Vec<&Path> = vec![&manifest.component];
        pinned.extend(manifest.models.iter().map(|m| m.file.as_path()));
        for path in pinned {
            let pinned = canonical(path).is_some_and(|p| manifest.files.contains_key(&p));
            if !pinned {
                return Err(BundleError::Policy(format!(
                    "`{}` is used but not pinned in [files]",
                    path.display()
                )));
            }
        }
        let mut files = BTreeMap::new();
        for (path, span) in layout.files {
            let Some(pin) = manifest.files.get(&path) else {
                return Err(BundleError::File {
                    path,
                    problem: "not pinned by the manifest".into(),
                });
            };
            if span.size != pin.size {
                return Err(BundleError::File {
                    path,
                    problem: format!("{} bytes, the manifest pins {}", span.size, pin.size),
                });
            }
            let actual = source.sha256(span)?;
            if actual != pin.sha256 {
                return Err(BundleError::File {
                    path,
                    problem: format!("SHA-256 {actual}, the manifest pins {}", pin.sha256),
                });
            }
            files.insert(path, span);
        }
        if let Some(missing) = manifest.files.keys().find(|p| !files.contains_key(*p)) {
            return Err(BundleError::File {
                path: missing.clone(),
                problem: "pinned by the manifest but missing from the bundle".into(),
            });
        }
        Ok(VerifiedBundle {
            manifest,
            manifest_text,
            signers,
            digest,
            files,
            source,
            content_key: None,
        })
    }
}

impl Layout {
    /// Reads the framing of the container in `source`, checking every length against what is
    /// there; files' bytes are skipped, not read.
    fn read(source: &Source) -> Result<Layout, BundleError> {
        let mut r = Reader {
            source,
            len: source.len()?,
            at: 0,
        };
        if r.take(8)? != MAGIC {
            return Err(r.malformed(0, "not an Edgewise bundle (bad magic)"));
        }
        let format = r.u16()?;
        if format != FORMAT {
            return Err(r.malformed(8, &format!("format {format}; this gateway reads {FORMAT}")));
        }
        let manifest_len = r.u32()?;
        if manifest_len > MAX_MANIFEST_BYTES {
            return Err(r.malformed(r.at - 4, "manifest length over 1 MiB"));
        }
        let manifest = r.take(u64::from(manifest_len))?;
        let count = r.u16()?;
        let mut signatures = Vec::with_capacity(usize::from(count.min(16)));
        for _ in 0..count {
            let key = <[u8; 32]>::try_from(r.take(32)?).map_err(|_| r.malformed(r.at, "key"))?;
            let sig = <[u8; 64]>::try_from(r.take(64)?).map_err(|_| r.malformed(r.at, "sig"))?;
            signatures.push(Signature {
                key: PublicKey::from_bytes(key),
                bytes: sig,
            });
        }
        let count = r.u16()?;
        if count > MAX_FILES {
            return Err(r.malformed(r.at - 2, &format!("{count} files; at most {MAX_FILES}")));
        }
        let mut files: Vec<(String, Span)> = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let start = r.at;
            let len = r.u16()?;
            let path = String::from_utf8(r.take(u64::from(len))?)
                .map_err(|_| r.malformed(start, "file path is not UTF-8"))?;
            if canonical(Path::new(&path)).as_deref() != Some(path.as_str()) {
                return Err(r.malformed(
                    start,
                    &format!(
                        "file path `{path}` must be relative, `/`-separated, without `.` or `..`"
                    ),
                ));
            }
            if files.iter().any(|(p, _)| *p == path) {
                return Err(r.malformed(start, &format!("file `{path}` appears twice")));
            }
            let size = r.u64()?;
            let offset = r.at;
            r.skip(size)?;
            files.push((path, Span { offset, size }));
        }
        if r.at != r.len {
            return Err(r.malformed(r.at, &format!("{} bytes after the last file", r.len - r.at)));
        }
        Ok(Layout {
            manifest,
            signatures,
            files,
        })
    }
}

/// Why a plugin directory could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The plugin cannot be packed as it is.
    #[error("{}: {problem}", path.display())]
    Refused {
        /// The manifest.
        path: PathBuf,
        /// Why.
        problem: String,
    },
}

/// Packs the plugin directory `dir` into a bundle signed by `key`; see [`pack_with`].
pub fn pack(
    dir: &Path,
    key: &SecretKey,
    rollback: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Bundle, PackError> {
    let options = PackOptions {
        rollback,
        ..PackOptions::default()
    };
    pack_with(dir, key, &options, progress)
}

/// How `pack` writes a bundle.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Mark the bundle as allowed to replace a higher release.
    pub rollback: bool,
    /// Encrypt the model files for these gateways only (none: models in the clear).
    pub encrypt_for: Vec<crate::encryption::GatewayPublicKey>,
}

/// Packs the plugin directory `dir` into a bundle signed by `key`. The manifest is the
/// directory's `plugin.toml` as written, with `rollback = true` put first if asked, a
/// `[files]` table appended that pins the component and every model and, when encrypting, an
/// `[encryption]` table: the models are then stored and pinned as ciphertext. `progress` hears
/// the bytes hashed so far, for large models.
pub fn pack_with(
    dir: &Path,
    key: &SecretKey,
    options: &PackOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Bundle, PackError> {
    let rollback = options.rollback;
    let manifest_path = dir.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest_path).map_err(|source| PackError::Io {
        path: manifest_path.clone(),
        source,
    })?;
    let manifest = Manifest::parse(&text, &manifest_path)?;
    let refuse = |problem: &str| PackError::Refused {
        path: manifest_path.clone(),
        problem: problem.to_owned(),
    };
    if manifest.release.is_none() {
        return Err(refuse(
            "add a `release = <n>` counter (raise it with every release)",
        ));
    }
    if !manifest.files.is_empty() || manifest.rollback || manifest.encryption.is_some() {
        return Err(refuse(
            "`files`, `rollback` and `encryption` are written by `edgewise pack`, not by hand",
        ));
    }
    let models: Vec<String> = manifest
        .models
        .iter()
        .filter_map(|m| canonical(&m.file))
        .collect();
    let content_key = match options.encrypt_for.is_empty() {
        true => None,
        false if models.is_empty() => {
            return Err(refuse(
                "--encrypt-for: the plugin has no model files to encrypt",
            ));
        }
        false => {
            Some(crate::encryption::ContentKey::generate().map_err(|e| refuse(&e.to_string()))?)
        }
    };
    let mut paths: Vec<String> = std::iter::once(&manifest.component)
        .chain(manifest.models.iter().map(|m| &m.file))
        .chain(manifest.evaluate.iter().flat_map(|e| &e.data))
        .filter_map(|p| canonical(p))
        .collect();
    paths.sort();
    paths.dedup();
    let mut files = Vec::with_capacity(paths.len());
    let mut pins =
        String::from("\n# Written by `edgewise pack`: every file of the bundle.\n[files]\n");
    let mut hashed = 0u64;
    for path in paths {
        let file = dir.join(&path);
        let mut content =
            std::fs::read(&file).map_err(|source| PackError::Io { path: file, source })?;
        if let Some(key) = content_key.as_ref().filter(|_| models.contains(&path)) {
            let plain = zeroize::Zeroizing::new(content);
            content = key
                .encrypt(&path, &plain)
                .map_err(|e| refuse(&e.to_string()))?;
        }
        let mut hasher = Sha256::new();
        for chunk in content.chunks(1 << 20) {
            hasher.update(chunk);
            hashed += chunk.len() as u64;
            progress(hashed);
        }
        pins += &format!(
            "\"{path}\" = {{ size = {}, sha256 = \"{}\" }}\n",
            content.len(),
            hex::encode(hasher.finalize())
        );
        files.push((path, content));
    }
    let mut signed = String::new();
    if rollback {
        signed += "# Written by `edgewise pack --rollback`: may replace a higher release.\nrollback = true\n";
    }
    signed += &text;
    if !signed.ends_with('\n') {
        signed.push('\n');
    }
    signed += &pins;
    if let Some(key) = &content_key {
        let recipients = options
            .encrypt_for
            .iter()
            .map(|gateway| key.wrap_for(gateway))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(&e.to_string()))?;
        let mut files = models.clone();
        files.sort();
        files.dedup();
        signed += &crate::encryption::Encryption {
            scheme: crate::encryption::SCHEME.into(),
            files,
            recipients,
        }
        .to_toml();
    }
    // What is signed must parse as what was meant.
    let check = Manifest::parse(&signed, &manifest_path)?;
    debug_assert_eq!(check.files.len(), files.len());
    let signature = key.sign(PayloadType::Manifest, signed.as_bytes());
    Ok(Bundle {
        manifest: signed.into_bytes(),
        signatures: vec![signature],
        files,
    })
}

/// The canonical bundle path of a relative path: `/`-separated normal components, or `None`
/// for anything that could leave the bundle (`..`, absolute, empty, backslashes).
pub fn canonical(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::Normal(part) => {
                let part = part.to_str()?;
                if part.contains('\\') || part.contains('\0') {
                    return None;
                }
                parts.push(part);
            }
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A cursor over a container, reading its framing.
struct Reader<'a> {
    source: &'a Source,
    len: u64,
    at: u64,
}

impl Reader<'_> {
    /// Moves past `n` bytes, if there are that many.
    fn skip(&mut self, n: u64) -> Result<u64, BundleError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.len);
        let Some(end) = end else {
            return Err(self.malformed(
                self.at,
                &format!("truncated: {n} bytes expected, {} left", self.len - self.at),
            ));
        };
        let start = self.at;
        self.at = end;
        Ok(start)
    }

    /// The next `n` bytes (framing only: at most the manifest's 1 MiB).
    fn take(&mut self, n: u64) -> Result<Vec<u8>, BundleError> {
        let start = self.skip(n)?;
        self.source.read(Span {
            offset: start,
            size: n,
        })
    }

    fn u16(&mut self) -> Result<u16, BundleError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, BundleError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, BundleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_be_bytes(a))
    }

    fn malformed(&self, offset: u64, problem: &str) -> BundleError {
        BundleError::Malformed {
            offset: offset as usize,
            problem: problem.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sha256_is_64_lowercase_hex_digits() {
        assert!(is_sha256_hex(&sha256_hex(b"x")));
        assert!(!is_sha256_hex(&sha256_hex(b"x").to_uppercase()));
        assert!(!is_sha256_hex(&sha256_hex(b"x")[1..]));
        assert!(!is_sha256_hex("#"));
        assert!(!is_sha256_hex(&format!("{}/", &sha256_hex(b"x")[1..])));
    }
}

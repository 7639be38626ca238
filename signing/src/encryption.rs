//! Model files encrypted at rest, for chosen gateways.
//!
//! `edgewise pack --encrypt-for <gateway key>...` encrypts every model file of a bundle with a
//! fresh content key (XChaCha20-Poly1305, the file's path as associated data, so files cannot
//! be swapped) and wraps that key for each recipient gateway, HPKE-style: an ephemeral X25519
//! key agreed with the gateway's public key, HKDF-SHA256 over the shared secret and both public
//! keys, XChaCha20-Poly1305 around the content key. The manifest's `[encryption]` table lists the
//! encrypted files and the wrapped keys; its `[files]` pins are of the ciphertext, so checking a
//! signature needs no key. A gateway verifies first, then unwraps the key with its own private
//! key and decrypts into memory only. Keys, and the plaintext this module hands out, are zeroized
//! when dropped.
//!
//! It protects a stolen disk or SD card: weights at rest are ciphertext. It does not protect
//! from whoever controls the running gateway as root (the key is on the same disk, the weights
//! are in its memory); docs/bundle-format.md says so.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::Deserialize;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// The only scheme: X25519, HKDF-SHA256, XChaCha20-Poly1305.
pub const SCHEME: &str = "x25519-hkdf-sha256-xchacha20poly1305";
const NONCE: usize = 24;
const TAG: usize = 16;
const KEY_INFO: &[u8] = b"edgewise bundle content key v1";
const FILE_AAD: &[u8] = b"edgewise model file v1\0";

/// Why encryption or decryption failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncryptionError {
    /// The bundle was encrypted for other gateways.
    #[error(
        "the bundle's models are encrypted for {} other gateway key(s) ({}), not for this gateway's key {mine}",
        recipients.len(),
        recipients.join(", ")
    )]
    NotARecipient {
        /// This gateway's key id.
        mine: String,
        /// The recipients' key ids.
        recipients: Vec<String>,
    },
    /// A wrapped key or a file did not authenticate: changed after it was encrypted, or
    /// encrypted with another key.
    #[error(
        "{what} does not decrypt: it was changed after it was encrypted, or encrypted with another key"
    )]
    Authentication {
        /// What failed.
        what: String,
    },
    /// The `[encryption]` table is malformed.
    #[error("[encryption]: {0}")]
    Malformed(String),
    /// A key could not be read or made.
    #[error("{0}")]
    Key(String),
}

/// The manifest's `[encryption]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Encryption {
    /// Always [`SCHEME`].
    pub scheme: String,
    /// The encrypted files, by bundle path.
    pub files: Vec<String>,
    /// The content key, wrapped for each gateway that may decrypt.
    pub recipients: Vec<Recipient>,
}

/// The content key wrapped for one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Recipient {
    /// The gateway's public key, base64.
    pub key: String,
    /// The ephemeral public key the wrapping key was agreed with, base64.
    pub ephemeral: String,
    /// Nonce and ciphertext of the content key, base64.
    pub wrapped_key: String,
}

/// A gateway's X25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayPublicKey(x25519_dalek::PublicKey);

impl GatewayPublicKey {
    /// The short id shown in refusals and listings: the first 16 hex digits of the key's
    /// SHA-256.
    pub fn id(&self) -> String {
        crate::bundle::sha256_hex(self.0.as_bytes())[..16].to_owned()
    }
}

impl std::fmt::Display for GatewayPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&BASE64.encode(self.0.as_bytes()))
    }
}

impl std::str::FromStr for GatewayPublicKey {
    type Err = EncryptionError;

    /// Base64 of the 32 key bytes.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; 32] = BASE64
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                EncryptionError::Key(format!(
                    "`{}` is not a gateway public key (base64 of 32 bytes)",
                    text.trim()
                ))
            })?;
        Ok(GatewayPublicKey(bytes.into()))
    }
}

/// A gateway's X25519 private key; zeroized when dropped.
pub struct GatewaySecretKey(x25519_dalek::StaticSecret);

impl GatewaySecretKey {
    /// A new random key.
    pub fn generate() -> Result<Self, EncryptionError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *bytes)
            .map_err(|e| EncryptionError::Key(format!("no randomness: {e}")))?;
        Ok(GatewaySecretKey(x25519_dalek::StaticSecret::from(*bytes)))
    }

    /// Its public half.
    pub fn public(&self) -> GatewayPublicKey {
        GatewayPublicKey((&self.0).into())
    }

    /// The key file's text: a labelled base64 line.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "edgewise-gateway-key-x25519 {}\n",
            BASE64.encode(self.0.as_bytes())
        ))
    }

    /// Reads what [`GatewaySecretKey::to_text`] wrote.
    pub fn from_text(text: &str) -> Result<Self, EncryptionError> {
        let bad = || EncryptionError::Key("not an edgewise gateway key file".into());
        let encoded = text
            .trim()
            .strip_prefix("edgewise-gateway-key-x25519 ")
            .ok_or_else(bad)?;
        let bytes = Zeroizing::new(BASE64.decode(encoded.trim()).map_err(|_| bad())?);
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad())?;
        Ok(GatewaySecretKey(x25519_dalek::StaticSecret::from(array)))
    }
}

/// A bundle's content key; zeroized when dropped.
pub struct ContentKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

impl ContentKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, EncryptionError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *key)
            .map_err(|e| EncryptionError::Key(format!("no randomness: {e}")))?;
        Ok(ContentKey(key))
    }

    /// `nonce || ciphertext || tag` of the file at `path`.
    pub fn encrypt(&self, path: &str, plain: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let nonce = random_nonce()?;
        let aad = [FILE_AAD, path.as_bytes()].concat();
        let sealed = cipher(&self.0)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| EncryptionError::Key(format!("{path}: encryption failed")))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// The plaintext of the file at `path`, in memory only.
    pub fn decrypt(
        &self,
        path: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EncryptionError> {
        let failed = || EncryptionError::Authentication {
            what: format!("model file {path}"),
        };
        if sealed.len() < NONCE + TAG {
            return Err(failed());
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let aad = [FILE_AAD, path.as_bytes()].concat();
        cipher(&self.0)
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| failed())
    }

    /// This key wrapped for `recipient`.
    pub fn wrap_for(&self, recipient: &GatewayPublicKey) -> Result<Recipient, EncryptionError> {
        let mut ephemeral_bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *ephemeral_bytes)
            .map_err(|e| EncryptionError::Key(format!("no randomness: {e}")))?;
        let ephemeral = x25519_dalek::StaticSecret::from(*ephemeral_bytes);
        let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral);
        let shared = ephemeral.diffie_hellman(&recipient.0);
        let wrapping = wrapping_key(shared.as_bytes(), &ephemeral_public, &recipient.0);
        let nonce = random_nonce()?;
        let sealed = cipher(&wrapping)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: self.0.as_slice(),
                    aad: recipient.0.as_bytes(),
                },
            )
            .map_err(|_| EncryptionError::Key("wrapping the content key failed".into()))?;
        Ok(Recipient {
            key: recipient.to_string(),
            ephemeral: BASE64.encode(ephemeral_public.as_bytes()),
            wrapped_key: BASE64.encode([nonce.as_slice(), &sealed].concat()),
        })
    }
}

impl Encryption {
    /// The content key, unwrapped with this gateway's `secret`.
    pub fn content_key(&self, secret: &GatewaySecretKey) -> Result<ContentKey, EncryptionError> {
        self.check()?;
        let mine = secret.public();
        let mine_text = mine.to_string();
        let Some(recipient) = self.recipients.iter().find(|r| r.key == mine_text) else {
            return Err(EncryptionError::NotARecipient {
                mine: mine.id(),
                recipients: self
                    .recipients
                    .iter()
                    .map(|r| {
                        r.key
                            .parse::<GatewayPublicKey>()
                            .map_or_else(|_| "?".into(), |k| k.id())
                    })
                    .collect(),
            });
        };
        let malformed =
            |what: &str| EncryptionError::Malformed(format!("recipient {}: {what}", mine.id()));
        let ephemeral: GatewayPublicKey = recipient
            .ephemeral
            .parse()
            .map_err(|_| malformed("bad `ephemeral`"))?;
        let wrapped = BASE64
            .decode(&recipient.wrapped_key)
            .map_err(|_| malformed("bad `wrapped-key`"))?;
        if wrapped.len() != NONCE + 32 + TAG {
            return Err(malformed("`wrapped-key` has the wrong length"));
        }
        let shared = secret.0.diffie_hellman(&ephemeral.0);
        let wrapping = wrapping_key(shared.as_bytes(), &ephemeral.0, &mine.0);
        let (nonce, body) = wrapped.split_at(NONCE);
        let mut key = cipher(&wrapping)
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: mine.0.as_bytes(),
                },
            )
            .map_err(|_| EncryptionError::Authentication {
                what: format!("the content key wrapped for {}", mine.id()),
            })?;
        let mut array = Zeroizing::new([0u8; 32]);
        array.copy_from_slice(&key);
        key.zeroize();
        Ok(ContentKey(array))
    }

    /// Whether `path` (canonical) is one of the encrypted files.
    pub fn covers(&self, path: &str) -> bool {
        self.files.iter().any(|f| f == path)
    }

    /// The table's own consistency: the scheme, at least one file and one recipient.
    pub fn check(&self) -> Result<(), EncryptionError> {
        if self.scheme != SCHEME {
            return Err(EncryptionError::Malformed(format!(
                "scheme `{}` is not supported (only {SCHEME})",
                self.scheme
            )));
        }
        if self.files.is_empty() || self.recipients.is_empty() {
            return Err(EncryptionError::Malformed(
                "needs `files` and `recipients`".into(),
            ));
        }
        Ok(())
    }

    /// The table as TOML, appended to a manifest by `pack`.
    pub fn to_toml(&self) -> String {
        let quoted: Vec<String> = self.files.iter().map(|f| format!("\"{f}\"")).collect();
        let mut text = format!(
            "\n# Written by `edgewise pack --encrypt-for`: these files are ciphertext, readable by the\n# gateways below only.\n[encryption]\nscheme = \"{}\"\nfiles = [{}]\n",
            self.scheme,
            quoted.join(", ")
        );
        for r in &self.recipients {
            text += &format!(
                "\n[[encryption.recipients]]\nkey = \"{}\"\nephemeral = \"{}\"\nwrapped-key = \"{}\"\n",
                r.key, r.ephemeral, r.wrapped_key
            );
        }
        text
    }
}

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

fn random_nonce() -> Result<[u8; NONCE], EncryptionError> {
    let mut nonce = [0u8; NONCE];
    getrandom::fill(&mut nonce).map_err(|e| EncryptionError::Key(format!("no randomness: {e}")))?;
    Ok(nonce)
}

/// HKDF-SHA256 over the shared secret, salted with both public keys (ephemeral first).
fn wrapping_key(
    shared: &[u8; 32],
    ephemeral: &x25519_dalek::PublicKey,
    recipient: &x25519_dalek::PublicKey,
) -> Zeroizing<[u8; 32]> {
    let salt = [ephemeral.as_bytes().as_slice(), recipient.as_bytes()].concat();
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far under HKDF-SHA256's limit of 255 * 32: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(&salt), shared).expand(KEY_INFO, &mut *key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(recipients: &[&GatewaySecretKey], key: &ContentKey) -> Encryption {
        Encryption {
            scheme: SCHEME.into(),
            files: vec!["model/m.onnx".into()],
            recipients: recipients
                .iter()
                .map(|r| key.wrap_for(&r.public()).expect("wrap"))
                .collect(),
        }
    }

    #[test]
    fn each_recipient_unwraps_the_key_and_reads_the_file() {
        let (a, b) = (
            GatewaySecretKey::generate().expect("key"),
            GatewaySecretKey::generate().expect("key"),
        );
        let key = ContentKey::generate().expect("key");
        let sealed = key.encrypt("model/m.onnx", b"weights").expect("encrypt");
        assert!(!sealed.windows(7).any(|w| w == b"weights"));
        let enc = table(&[&a, &b], &key);
        for gateway in [&a, &b] {
            let unwrapped = enc.content_key(gateway).expect("a recipient unwraps");
            assert_eq!(
                unwrapped
                    .decrypt("model/m.onnx", &sealed)
                    .expect("decrypts")
                    .as_slice(),
                b"weights"
            );
        }
    }

    #[test]
    fn another_gateway_a_changed_byte_or_a_swapped_file_is_refused() {
        let (a, stranger) = (
            GatewaySecretKey::generate().expect("key"),
            GatewaySecretKey::generate().expect("key"),
        );
        let key = ContentKey::generate().expect("key");
        let enc = table(&[&a], &key);
        let refusal = enc.content_key(&stranger).expect_err("not a recipient");
        assert!(
            refusal.to_string().contains(&stranger.public().id()),
            "{refusal}"
        );
        assert!(refusal.to_string().contains(&a.public().id()), "{refusal}");

        let mut sealed = key.encrypt("model/m.onnx", b"weights").expect("encrypt");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(
            key.decrypt("model/m.onnx", &sealed),
            Err(EncryptionError::Authentication { .. })
        ));
        let sealed = key.encrypt("model/m.onnx", b"weights").expect("encrypt");
        assert!(
            key.decrypt("model/other.onnx", &sealed).is_err(),
            "bound to its path"
        );

        let mut forged = enc.clone();
        forged.recipients[0].wrapped_key = table(&[&a], &ContentKey::generate().expect("key"))
            .recipients[0]
            .wrapped_key
            .clone();
        assert!(
            forged.content_key(&a).is_err(),
            "a wrapped key from another ephemeral key fails"
        );
    }

    #[test]
    fn key_files_and_public_keys_round_trip() {
        let k = GatewaySecretKey::generate().expect("key");
        let again = GatewaySecretKey::from_text(&k.to_text()).expect("reads back");
        assert_eq!(again.public(), k.public());
        assert_eq!(
            k.public()
                .to_string()
                .parse::<GatewayPublicKey>()
                .expect("parses"),
            k.public()
        );
        assert!(GatewaySecretKey::from_text("-----BEGIN PRIVATE KEY-----").is_err());
        assert!("c2hvcnQ=".parse::<GatewayPublicKey>().is_err());
    }
}

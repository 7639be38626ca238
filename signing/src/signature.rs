//! Keys and signatures: ed25519 over a domain-separated encoding of the exact signed bytes.
//!
//! What is signed is DSSE's pre-authentication encoding (PAE) of a payload type and the
//! payload, `"DSSEv1" SP len(type) SP type SP len(body) SP body`, with lengths in ASCII
//! decimal. Every kind of signed document has its own type ([`PayloadType`]), so a signature
//! over a management command can never pass as one over a bundle manifest, whatever the bytes.
//! Verification is `verify_strict` (no small-order keys, canonical `S`).
//!
//! Private keys are PKCS#8 PEM files, as `openssl genpkey -algorithm ed25519` writes them, so
//! `openssl pkeyutl -sign -rawin` can sign with the same file; public keys are written as the
//! 32 raw bytes in base64, one line. A key's *keyid* ([`PublicKey::keyid`]) is the SHA-256 of
//! those 32 bytes in lowercase hex; its short [`id`](PublicKey::id), for people and logs, is the
//! first 16 hex digits of it.

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Base64 as every Edgewise document writes it: the standard alphabet, padded, and on reading
/// nothing but the canonical form (RFC 4648 §4).
pub const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// The kinds of signed document. The type string is bound into every signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    /// A bundle manifest (TOML).
    Manifest,
    /// A management command (JSON).
    Command,
    /// A keyring (TOML).
    Keyring,
    /// A fleet's desired state (JSON).
    DesiredState,
    /// A root-signed reset of a gateway's counters (JSON).
    TrustReset,
}

impl PayloadType {
    /// The type string bound into the signature.
    pub const fn as_str(self) -> &'static str {
        match self {
            PayloadType::Manifest => "application/vnd.edgewise.manifest+toml",
            PayloadType::Command => "application/vnd.edgewise.command+json",
            PayloadType::Keyring => "application/vnd.edgewise.keyring+toml",
            PayloadType::DesiredState => "application/vnd.edgewise.desired-state+json",
            PayloadType::TrustReset => "application/vnd.edgewise.trust-reset+json",
        }
    }
}

/// The bytes a signature covers: DSSE's PAE of `ty` and `body`.
pub fn signed_bytes(ty: PayloadType, body: &[u8]) -> Vec<u8> {
    let ty = ty.as_str();
    let mut out = format!("DSSEv1 {} {ty} {} ", ty.len(), body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not a PKCS#8 PEM ed25519 private key.
    #[error("not an ed25519 private key in PKCS#8 PEM: {0}")]
    Private(String),
    /// Not 32 bytes of base64.
    #[error("not an ed25519 public key (32 bytes, base64): {0}")]
    Public(String),
    /// The system's random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// A public key: who signed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// From the one-line base64 text form.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|e| KeyError::Public(e.to_string()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| KeyError::Public(format!("{} bytes", b.len())))?;
        VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::Public(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// The raw 32 bytes.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// From raw bytes, as found in a bundle.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Its keyid, as DSSE envelopes name their signers: the SHA-256 of the 32 raw bytes, in
    /// lowercase hex (64 digits).
    pub fn keyid(&self) -> String {
        hex::encode(Sha256::digest(self.0))
    }

    /// A short id for people and logs: the first 16 hex digits of its keyid.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    /// Whether `signature` is this key's over `signed_bytes(ty, body)`.
    pub fn verifies(&self, ty: PayloadType, body: &[u8], signature: &[u8; 64]) -> bool {
        VerifyingKey::from_bytes(&self.0).is_ok_and(|key| {
            key.verify_strict(
                &signed_bytes(ty, body),
                &ed25519_dalek::Signature::from_bytes(signature),
            )
            .is_ok()
        })
    }
}

impl fmt::Display for PublicKey {
    /// The one-line base64 form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

/// One signature and the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The signer.
    pub key: PublicKey,
    /// The ed25519 signature.
    pub bytes: [u8; 64],
}

/// A private key. Its `Debug` shows only the public half.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// From its 32-byte seed (RFC 8032's private key), as test vectors give it.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// From a PKCS#8 PEM file's text.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        if PublicKey::parse(text.trim()).is_ok() {
            return Err(KeyError::Private(
                "this is a public key (NAME.pub from `edgewise keygen`); signing takes the private one, NAME.key".into(),
            ));
        }
        SigningKey::from_pkcs8_pem(text)
            .map(Self)
            .map_err(|e| KeyError::Private(e.to_string()))
    }

    /// The PKCS#8 PEM text, for a file only its owner can read. Version 1 (RFC 5208, the
    /// private key alone), as `openssl genpkey` writes it: OpenSSL 3.0 cannot read version 2.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let pair = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        };
        pair.to_pkcs8_pem(Default::default())
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Private(e.to_string()))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `body` as a document of type `ty`.
    pub fn sign(&self, ty: PayloadType, body: &[u8]) -> Signature {
        Signature {
            key: self.public(),
            bytes: self.0.sign(&signed_bytes(ty, body)).to_bytes(),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public().id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_key_given_for_signing_is_named_as_such() {
        let key = SecretKey::from_seed([7; 32]);
        let err = SecretKey::from_pem(&format!("{}\n", key.public()))
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_err_and(|e| e.contains("this is a public key")),
            "{err:?}"
        );
    }

    #[test]
    fn the_signed_bytes_are_dsse_pae() {
        assert_eq!(
            signed_bytes(PayloadType::Manifest, b"hello"),
            b"DSSEv1 38 application/vnd.edgewise.manifest+toml 5 hello".to_vec()
        );
    }

    #[test]
    fn a_signature_verifies_only_for_its_type_body_and_key() {
        let key = SecretKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let other = SecretKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let sig = key.sign(PayloadType::Manifest, b"body");
        assert!(sig.key.verifies(PayloadType::Manifest, b"body", &sig.bytes));
        assert!(!sig.key.verifies(PayloadType::Command, b"body", &sig.bytes));
        assert!(!sig.key.verifies(PayloadType::Manifest, b"bodY", &sig.bytes));
        assert!(
            !other
                .public()
                .verifies(PayloadType::Manifest, b"body", &sig.bytes)
        );
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let key = SecretKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let pem = key.to_pem().unwrap_or_else(|e| panic!("{e}"));
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = SecretKey::from_pem(&pem).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.public(), key.public());
        let public = PublicKey::parse(&key.public().to_string()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(public, key.public());
        assert!(PublicKey::parse("AAAA").is_err());
        assert!(
            SecretKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }
}

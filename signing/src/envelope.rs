//! Signed documents outside bundles (keyring updates now, management commands next), as DSSE
//! JSON envelopes:
//!
//! ```json
//! {"payloadType": "application/vnd.edgewise.keyring+toml",
//!  "payload": "<base64 of the document>",
//!  "signatures": [{"keyid": "<key id>", "publicKey": "<base64>", "sig": "<base64>"}]}
//! ```
//!
//! Each signature is over the same pre-authentication encoding as a bundle manifest's
//! ([`crate::signature::signed_bytes`]), so one verifier serves both.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::signature::{PayloadType, PublicKey, SecretKey, Signature};

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not the JSON of an envelope.
    #[error("not a signed envelope: {0}")]
    Json(String),
    /// Of another type than expected.
    #[error("a `{found}` envelope where `{expected}` was expected")]
    WrongType {
        /// The type wanted.
        expected: &'static str,
        /// The type found.
        found: String,
    },
    /// A field is not valid base64, or a key or signature has the wrong length.
    #[error("envelope field `{0}` is malformed")]
    Field(&'static str),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    payload_type: String,
    payload: String,
    signatures: Vec<WireSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSignature {
    keyid: String,
    public_key: String,
    sig: String,
}

/// A document with its signatures, not yet checked against any keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The document's bytes.
    pub payload: Vec<u8>,
    /// The signatures over them (as `ty` documents).
    pub signatures: Vec<Signature>,
}

impl Envelope {
    /// Signs `payload` as a `ty` document with every key in `keys`.
    pub fn sign(ty: PayloadType, payload: Vec<u8>, keys: &[&SecretKey]) -> Self {
        let signatures = keys.iter().map(|k| k.sign(ty, &payload)).collect();
        Self {
            payload,
            signatures,
        }
    }

    /// The envelope's JSON.
    pub fn to_json(&self, ty: PayloadType) -> String {
        let wire = Wire {
            payload_type: ty.as_str().to_owned(),
            payload: BASE64.encode(&self.payload),
            signatures: self
                .signatures
                .iter()
                .map(|s| WireSignature {
                    keyid: s.key.id(),
                    public_key: s.key.to_string(),
                    sig: BASE64.encode(s.bytes),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&wire).unwrap_or_default()
    }

    /// Reads an envelope that must be of type `ty`.
    pub fn from_json(text: &str, ty: PayloadType) -> Result<Self, EnvelopeError> {
        let wire: Wire =
            serde_json::from_str(text).map_err(|e| EnvelopeError::Json(e.to_string()))?;
        if wire.payload_type != ty.as_str() {
            return Err(EnvelopeError::WrongType {
                expected: ty.as_str(),
                found: wire.payload_type,
            });
        }
        let payload = BASE64
            .decode(&wire.payload)
            .map_err(|_| EnvelopeError::Field("payload"))?;
        let signatures = wire
            .signatures
            .iter()
            .map(|s| {
                let key = PublicKey::parse(&s.public_key)
                    .map_err(|_| EnvelopeError::Field("publicKey"))?;
                let bytes: [u8; 64] = BASE64
                    .decode(&s.sig)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or(EnvelopeError::Field("sig"))?;
                Ok(Signature { key, bytes })
            })
            .collect::<Result<_, EnvelopeError>>()?;
        Ok(Self {
            payload,
            signatures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_and_keeps_its_type() {
        let key = SecretKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let env = Envelope::sign(PayloadType::Keyring, b"version = 2\n".to_vec(), &[&key]);
        let json = env.to_json(PayloadType::Keyring);
        let back =
            Envelope::from_json(&json, PayloadType::Keyring).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, env);
        assert!(back.signatures[0].key.verifies(
            PayloadType::Keyring,
            &back.payload,
            &back.signatures[0].bytes
        ));
        assert!(matches!(
            Envelope::from_json(&json, PayloadType::Command),
            Err(EnvelopeError::WrongType { .. })
        ));
        assert!(Envelope::from_json("{}", PayloadType::Keyring).is_err());
    }
}

//! Signed documents outside bundles (commands, desired states, keyrings) as standard DSSE JSON
//! envelopes ([DSSE v1](https://github.com/secure-systems-lab/dsse/blob/master/envelope.md)):
//!
//! ```json
//! {"payloadType": "application/vnd.edgewise.command+json",
//!  "payload": "<base64 of the document>",
//!  "signatures": [{"keyid": "<64 hex digits>", "sig": "<base64 of 64 bytes>"}]}
//! ```
//!
//! Strict where DSSE leaves room: every field is required and no other is allowed (in the
//! envelope and in each signature); base64 is the standard alphabet with padding, canonical
//! (RFC 4648 §4; no line breaks, no missing or extra `=`); `keyid` is the signer's
//! [`PublicKey::keyid`] and is how the verifier finds the key in its keyring: the envelope never
//! carries a public key. Each signature is over the same pre-authentication encoding as a
//! bundle manifest's ([`crate::signature::signed_bytes`]), so one verifier serves both.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub use crate::signature::BASE64;
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
    /// A field is not canonical base64, or a keyid or signature has the wrong form.
    #[error("envelope field `{0}` is malformed")]
    Field(&'static str),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wire {
    payload_type: String,
    payload: String,
    signatures: Vec<WireSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSignature {
    keyid: String,
    sig: String,
}

/// One signature of an envelope: who says they made it, and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeSignature {
    /// The signer's keyid (64 lowercase hex digits).
    pub keyid: String,
    /// The ed25519 signature.
    pub sig: [u8; 64],
}

/// A document with its signatures, not yet checked against any keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The document's bytes.
    pub payload: Vec<u8>,
    /// The signatures over them (as documents of the envelope's type).
    pub signatures: Vec<EnvelopeSignature>,
}

impl Envelope {
    /// Signs `payload` as a `ty` document with every key in `keys`.
    pub fn sign(ty: PayloadType, payload: Vec<u8>, keys: &[&SecretKey]) -> Self {
        let signatures = keys
            .iter()
            .map(|k| {
                let s = k.sign(ty, &payload);
                EnvelopeSignature {
                    keyid: s.key.keyid(),
                    sig: s.bytes,
                }
            })
            .collect();
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
                    keyid: s.keyid.clone(),
                    sig: BASE64.encode(s.sig),
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
                if !crate::bundle::is_sha256_hex(&s.keyid) {
                    return Err(EnvelopeError::Field("keyid"));
                }
                let sig: [u8; 64] = BASE64
                    .decode(&s.sig)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or(EnvelopeError::Field("sig"))?;
                Ok(EnvelopeSignature {
                    keyid: s.keyid.clone(),
                    sig,
                })
            })
            .collect::<Result<_, EnvelopeError>>()?;
        Ok(Self {
            payload,
            signatures,
        })
    }

    /// The signatures whose keyid `lookup` knows, as signatures by those keys; the keyids it
    /// does not know, for an explanation. Whether each signature is valid is for the caller.
    pub fn resolve(
        &self,
        lookup: impl Fn(&str) -> Option<PublicKey>,
    ) -> (Vec<Signature>, Vec<String>) {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for s in &self.signatures {
            match lookup(&s.keyid) {
                Some(key) => known.push(Signature { key, bytes: s.sig }),
                None => unknown.push(s.keyid.clone()),
            }
        }
        (known, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_envelope_round_trips_and_names_its_signers_by_keyid_only() {
        let key = key();
        let env = Envelope::sign(PayloadType::Keyring, b"version = 2\n".to_vec(), &[&key]);
        let json = env.to_json(PayloadType::Keyring);
        assert!(
            !json.contains(&key.public().to_string()),
            "no public key: {json}"
        );
        assert!(json.contains(&key.public().keyid()), "{json}");
        let back =
            Envelope::from_json(&json, PayloadType::Keyring).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, env);
        let (known, unknown) =
            back.resolve(|id| (id == key.public().keyid()).then(|| key.public()));
        assert!(unknown.is_empty());
        assert!(
            known[0]
                .key
                .verifies(PayloadType::Keyring, &back.payload, &known[0].bytes)
        );
        assert!(matches!(
            Envelope::from_json(&json, PayloadType::Command),
            Err(EnvelopeError::WrongType { .. })
        ));
    }

    #[test]
    fn anything_but_the_strict_form_is_refused() {
        let key = key();
        let env = Envelope::sign(PayloadType::Command, b"{}".to_vec(), &[&key]);
        let json = env.to_json(PayloadType::Command);
        let read = |text: &str| Envelope::from_json(text, PayloadType::Command);
        assert!(read(&json).is_ok());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = v.clone();
            f(&mut v);
            v.to_string()
        };
        for (why, text) in [
            ("an unknown field", with(&|v| v["extra"] = 1.into())),
            (
                "a public key beside the keyid",
                with(&|v| v["signatures"][0]["publicKey"] = "AAAA".into()),
            ),
            (
                "no keyid",
                with(&|v| {
                    v["signatures"][0] = serde_json::json!({"sig": v["signatures"][0]["sig"]})
                }),
            ),
            (
                "a short keyid",
                with(&|v| v["signatures"][0]["keyid"] = "0000000000000000".into()),
            ),
            (
                "an upper-case keyid",
                with(&|v| {
                    let id = v["signatures"][0]["keyid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_uppercase();
                    v["signatures"][0]["keyid"] = id.into()
                }),
            ),
            ("unpadded base64", with(&|v| v["payload"] = "e30".into())),
            (
                "URL-safe base64",
                with(&|v| {
                    let sig = v["signatures"][0]["sig"]
                        .as_str()
                        .unwrap_or_default()
                        .replace('+', "-")
                        .replace('/', "_");
                    v["signatures"][0]["sig"] = format!("{sig}-").into()
                }),
            ),
            (
                "no payload type",
                with(&|v| {
                    v.as_object_mut().map(|o| o.remove("payloadType"));
                }),
            ),
        ] {
            assert!(read(&text).is_err(), "{why} was accepted: {text}");
        }
    }
}

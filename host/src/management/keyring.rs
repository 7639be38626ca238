//! Keyring updates and root-signed counter resets over MQTT, and how fresh the gateway's trust
//! is.
//!
//! An update arrives retained on `edgewise/fleet/<group>/keyring` (every gateway of a group) or
//! `edgewise/<gateway>/keyring` (one): a DSSE envelope that [`Keyring::accept_update`] takes
//! only from a threshold of the current root keys and of its own, as the next version, before
//! it expires. It is written over the gateway's keyring file atomically, then checks every
//! bundle, command and desired state from that moment; running plugins keep running, and one
//! whose signer it revokes stops loading at the next start. The update in force, seen again
//! (it is retained), is ignored; any other refusal is logged and shown in the status.
//!
//! [`Manager::report_trust`] tells the status, the metrics and the log when the trust has gone
//! stale: the keyring expired or expires within `trust.keyring-warning-days`, or the newest
//! desired state of the gateway's group is older than `trust.desired-freshness-h` (an attacker
//! who withholds updates, a freeze attack, shows there).
//!
//! A root-signed reset ([`TrustReset`], on `edgewise/<gateway>/trust-reset`) sets the counters
//! and the time floor again for a gateway whose clock was wrong; see [`super::trust`].

use std::path::Path;

use edgewise_signing::command::TrustReset;
use edgewise_signing::envelope::Envelope;
use edgewise_signing::keyring::rfc3339;
use edgewise_signing::{KeyringError, PayloadType};
use serde_json::json;

use super::reply::Replier;
use super::store::write_atomically;
use super::{Change, Manager};

impl Manager {
    /// A keyring update arrived: applied if the current keyring's root accepts it.
    pub(super) fn keyring_update(&mut self, payload: &[u8]) {
        if payload.is_empty() {
            return; // a cleared retained message
        }
        let origin = Path::new("keyring update");
        let envelope = std::str::from_utf8(payload)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|text| {
                Envelope::from_json(text, PayloadType::Keyring).map_err(|e| e.to_string())
            });
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(e) => return self.refuse_keyring(format!("keyring update refused: {e}")),
        };
        let current = self.store.keyring();
        match current.accept_update(&envelope, origin, self.trust.now_ms()) {
            Ok((keyring, text)) => {
                let Some(path) = self.config.keyring.clone() else {
                    return;
                };
                if let Err(e) = write_atomically(&path, text.as_bytes()) {
                    return self.refuse_keyring(format!("keyring update not written: {e}"));
                }
                tracing::info!(
                    version = keyring.version,
                    keys = keyring.keys.len(),
                    revoked = keyring.keys.iter().filter(|k| k.revoked).count(),
                    expires = keyring.expires_at_ms.map(rfc3339),
                    "keyring updated"
                );
                self.store.set_keyring(keyring);
                self.keyring_refusal = None;
            }
            Err(KeyringError::NotNext { offered, current }) if offered <= current => {
                tracing::debug!(offered, current, "keyring update already in force");
            }
            Err(e) => self.refuse_keyring(e.to_string()),
        }
    }

    fn refuse_keyring(&mut self, reason: String) {
        tracing::warn!("{reason}");
        self.keyring_refusal = Some(reason);
    }

    /// Puts the state of the gateway's trust in the status and the metrics, and logs what
    /// went stale.
    /// A root-signed reset of the counters (see [`super::trust`]): applied if a threshold of
    /// root keys signed it for this gateway and its current nonce, whatever the clocks say, and
    /// whether the keyring has expired or not (a wrong clock can make it look expired). The
    /// outcome is replied on `edgewise/<gateway>/reply/trust-reset`.
    pub(super) fn trust_reset(&mut self, payload: &[u8]) {
        let reply = Replier::new(self.link.clone(), &self.config.gateway_id, "trust-reset");
        let outcome = TrustReset::verify(payload, self.store.keyring())
            .map_err(|e| e.to_string())
            .and_then(|(reset, signers)| {
                if reset.gateway != self.config.gateway_id {
                    return Err(format!("a reset for gateway `{}`", reset.gateway));
                }
                self.trust.reset(&reset)?;
                Ok((reset, signers))
            });
        match outcome {
            Ok((reset, signers)) => {
                tracing::warn!(
                    command_seq = reset.command_seq,
                    desired_version = reset.desired_version,
                    time_floor = rfc3339(reset.time_floor_ms),
                    ?signers,
                    "trust counters reset by the root"
                );
                reply.send("done", json!({ "reset": reset, "signed-by": signers }));
            }
            Err(reason) => {
                tracing::warn!("trust reset refused: {reason}");
                reply.send("refused", json!({ "reason": reason }));
            }
        }
    }

    pub(super) fn report_trust(&mut self) {
        let now = self.trust.now_ms();
        let policy = self.config.trust;
        let keyring = self.store.keyring();
        let mut stale = Vec::new();
        let mut keyring_stale = false;
        if let Some(at) = keyring.expires_at_ms {
            let warning = policy.keyring_warning_days.saturating_mul(86_400_000);
            if at < now {
                stale.push(format!(
                    "the keyring expired at {}: no bundle, command or desired state is taken until a keyring update arrives",
                    rfc3339(at)
                ));
                keyring_stale = true;
            } else if at - now < warning {
                stale.push(format!("the keyring expires at {}", rfc3339(at)));
                keyring_stale = true;
            }
        }
        let mut desired_stale = false;
        if self.config.group.is_some() {
            let window = policy.desired_freshness_h.saturating_mul(3_600_000);
            let issued = self.trust.desired_issued_at_ms();
            let since = match issued {
                0 => self.started_at_ms,
                issued => issued,
            };
            if now.saturating_sub(since) > window {
                desired_stale = true;
                stale.push(match issued {
                    0 => format!(
                        "no desired state for this group in the {} h since start",
                        policy.desired_freshness_h
                    ),
                    _ => format!(
                        "the newest desired state was issued at {}, more than {} h ago: fleet updates may be withheld",
                        rfc3339(issued),
                        policy.desired_freshness_h
                    ),
                });
            }
        }
        self.metrics.set_stale("keyring", keyring_stale);
        self.metrics.set_stale("desired-state", desired_stale);
        if stale != self.stale {
            for reason in stale.iter().filter(|r| !self.stale.contains(r)) {
                tracing::warn!("stale trust: {reason}");
            }
            self.stale = stale.clone();
        }
        let trust = json!({
            "keyring": {
                "version": keyring.version,
                "expires": keyring.expires_at_ms.map(rfc3339),
                "refused": self.keyring_refusal,
            },
            "stale": stale,
            "clock-behind": self.trust.clock_behind(),
            "reset-nonce": self.trust.reset_nonce(),
        });
        let _ = self.changes.send(Change::Trust(trust));
    }
}

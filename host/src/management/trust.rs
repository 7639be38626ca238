//! What the gateway accepted before, and the clock it judges signed documents by.
//!
//! Counters make a signed document impossible to replay or roll back: the highest command
//! `seq`, the fleet desired state applied (version and issue time). They are bounded so that a
//! stolen key cannot jam them: a command's `seq`, like a desired state's `version`, may not
//! exceed its own `issued-at-ms`, and that may not be more than `max-clock-skew-s` ahead of the
//! gateway's clock. Every document expires, and a command may not live longer than
//! `max-command-lifetime-s`.
//!
//! The gateway's clock is `max(system clock, floor)`. The floor is the time of the newest
//! document accepted, as far as the system clock vouched for it (`min(issued-at, system clock)`
//! at acceptance): a gateway without a real-time clock that boots in 1970 still refuses what
//! expired before its last accepted document, and since the floor never passes the system
//! clock, documents issued ahead of it cannot walk the gateway's time forward step by step.
//! Kept in `<store>/trust.json`, written (atomically) before anything a document asks for is
//! done.
//!
//! A gateway whose clock was wrong (years ahead) accepted documents by that clock; once the
//! clock is right its floor and counters refuse everything issued today. A reset signed by a
//! threshold of root keys ([`TrustReset`]) sets them again; it names the nonce kept here and
//! shown in the status, which changes with every reset applied, so each reset works once.

use std::path::{Path, PathBuf};

use edgewise_signing::Keyring;
use edgewise_signing::command::{Command, DesiredState, TrustReset};
use edgewise_signing::keyring::rfc3339;
use serde::{Deserialize, Serialize};

use super::store::{StoreError, write_atomically};
use crate::config::TrustConfig;

/// The counters, as kept on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Counters {
    /// The highest command `seq` accepted.
    command_seq: u64,
    /// The version of the desired state applied last.
    desired_version: u64,
    /// Its `issued-at-ms`.
    desired_issued_at_ms: u64,
    /// The newest `issued-at-ms` of any document accepted.
    time_floor_ms: u64,
    /// What the next root-signed reset must name (absent in files from before resets).
    #[serde(default)]
    reset_nonce: String,
}

/// The gateway's counters and time rules.
#[derive(Debug)]
pub struct Trust {
    path: PathBuf,
    counters: Counters,
    policy: TrustConfig,
}

impl Trust {
    /// The counters kept in `store`, with `policy`'s rules. A store from before this file
    /// existed starts from its older `commands.json` and `fleet.json`.
    pub fn open(store: &Path, policy: TrustConfig) -> Result<Self, StoreError> {
        let path = store.join("trust.json");
        let counters = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::State {
                path: path.clone(),
                problem: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Counters {
                command_seq: legacy(&store.join("commands.json"), "high-water"),
                desired_version: legacy(&store.join("fleet.json"), "applied-version"),
                ..Counters::default()
            },
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let mut trust = Self {
            path,
            counters,
            policy,
        };
        if trust.counters.reset_nonce.is_empty() {
            let mut next = trust.counters.clone();
            next.reset_nonce = new_nonce();
            trust.save(next)?;
        }
        Ok(trust)
    }

    /// The nonce a root-signed reset must name now.
    pub fn reset_nonce(&self) -> &str {
        &self.counters.reset_nonce
    }

    /// Applies `reset` (its root signatures checked by the caller) if it names the current
    /// nonce; a new nonce is drawn in the same write, so the reset cannot be applied again.
    pub fn reset(&mut self, reset: &TrustReset) -> Result<(), String> {
        if reset.nonce != self.counters.reset_nonce {
            return Err(format!(
                "the reset names nonce `{}`, not this gateway's current one (see `trust.reset-nonce` in its status): used already, or for another gateway",
                reset.nonce
            ));
        }
        let next = Counters {
            command_seq: reset.command_seq,
            desired_version: reset.desired_version,
            desired_issued_at_ms: reset.desired_issued_at_ms,
            time_floor_ms: reset.time_floor_ms,
            reset_nonce: new_nonce(),
        };
        self.save(next).map_err(|e| e.to_string())
    }

    /// The time the gateway judges documents by: its clock, or the floor if the clock is
    /// behind it.
    pub fn now_ms(&self) -> u64 {
        crate::clock::now_ms().max(self.counters.time_floor_ms)
    }

    /// Whether the system clock is behind the newest document accepted (set wrong, or never
    /// set: no real-time clock).
    pub fn clock_behind(&self) -> bool {
        crate::clock::now_ms() < self.counters.time_floor_ms
    }

    /// Why `issued` … `expires` is not acceptable now, if it is not.
    fn check_times(&self, issued_at_ms: u64, expires_at_ms: u64) -> Result<(), String> {
        let now = self.now_ms();
        let skew = self.policy.max_clock_skew_s.saturating_mul(1000);
        if issued_at_ms > now.saturating_add(skew) {
            return Err(format!(
                "issued at {}, more than {} s after this gateway's clock ({}): refused (`trust.max-clock-skew-s`)",
                rfc3339(issued_at_ms),
                self.policy.max_clock_skew_s,
                rfc3339(now)
            ));
        }
        if expires_at_ms < now {
            return Err(format!(
                "expired at {}, {} s ago",
                rfc3339(expires_at_ms),
                (now - expires_at_ms) / 1000
            ));
        }
        if expires_at_ms < issued_at_ms {
            return Err("it expires before it was issued".into());
        }
        Ok(())
    }

    /// Why nothing new may be taken on `keyring`'s word, if it has expired: no bundle, command
    /// or desired state until a keyring update arrives (that one is judged by the root).
    pub fn keyring_in_force(&self, keyring: &Keyring) -> Result<(), String> {
        match keyring.expires_at_ms {
            Some(at) if at < self.now_ms() => Err(format!(
                "this gateway's keyring expired at {}: it takes nothing new until a keyring update arrives",
                rfc3339(at)
            )),
            _ => Ok(()),
        }
    }

    /// Why `command` may not run, if it may not: its times and its `seq`.
    pub fn check_command(&self, command: &Command) -> Result<(), String> {
        self.check_times(command.issued_at_ms, command.expires_at_ms)?;
        let lifetime_s = (command.expires_at_ms - command.issued_at_ms) / 1000;
        if lifetime_s > self.policy.max_command_lifetime_s {
            return Err(format!(
                "valid for {lifetime_s} s, longer than the {} s a command may be (`trust.max-command-lifetime-s`)",
                self.policy.max_command_lifetime_s
            ));
        }
        if command.seq <= self.counters.command_seq {
            return Err(format!(
                "sequence number {} already used (this gateway is at {})",
                command.seq, self.counters.command_seq
            ));
        }
        if command.seq > command.issued_at_ms {
            return Err(format!(
                "sequence number {} is beyond its own issued-at-ms {}: a seq may not run ahead of the clock",
                command.seq, command.issued_at_ms
            ));
        }
        Ok(())
    }

    /// Records `command` as accepted (its `seq` and time), on disk, before it runs.
    pub fn accept_command(&mut self, command: &Command) -> Result<(), StoreError> {
        let mut next = self.counters.clone();
        next.command_seq = command.seq;
        next.time_floor_ms = floor(next.time_floor_ms, command.issued_at_ms);
        self.save(next)
    }

    /// Why `desired` may not be applied, if it may not. One already applied (the same version
    /// and issue time, retained and seen again) is `Ok(false)`: nothing to do.
    pub fn check_desired(&self, desired: &DesiredState) -> Result<bool, String> {
        self.check_times(desired.issued_at_ms, desired.expires_at_ms)?;
        if desired.version > desired.issued_at_ms {
            return Err(format!(
                "version {} is beyond its own issued-at-ms {}: a version may not run ahead of the clock",
                desired.version, desired.issued_at_ms
            ));
        }
        let (version, issued) = (
            self.counters.desired_version,
            self.counters.desired_issued_at_ms,
        );
        if (desired.version, desired.issued_at_ms) == (version, issued) {
            return Ok(false);
        }
        if desired.version < version {
            return Err(format!(
                "version {} is older than version {version} applied here",
                desired.version
            ));
        }
        if desired.issued_at_ms < issued {
            return Err(format!(
                "issued at {}, before the desired state applied here ({})",
                rfc3339(desired.issued_at_ms),
                rfc3339(issued)
            ));
        }
        Ok(true)
    }

    /// Records `desired` as applied.
    pub fn accept_desired(&mut self, desired: &DesiredState) -> Result<(), StoreError> {
        let mut next = self.counters.clone();
        next.desired_version = desired.version;
        next.desired_issued_at_ms = desired.issued_at_ms;
        next.time_floor_ms = floor(next.time_floor_ms, desired.issued_at_ms);
        self.save(next)
    }

    /// When the desired state applied last was issued (0: never).
    pub fn desired_issued_at_ms(&self) -> u64 {
        self.counters.desired_issued_at_ms
    }

    fn save(&mut self, next: Counters) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(&next).unwrap_or_default();
        write_atomically(&self.path, &bytes)?;
        self.counters = next;
        Ok(())
    }
}

/// A fresh reset nonce: 128 random bits in hex.
fn new_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The floor after accepting a document issued at `issued_at_ms`: only as far as the system
/// clock vouches for.
fn floor(floor: u64, issued_at_ms: u64) -> u64 {
    floor.max(issued_at_ms.min(crate::clock::now_ms()))
}

/// A counter from a store's older files, 0 if absent.
fn legacy(path: &Path, key: &str) -> u64 {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v[key].as_u64())
        .unwrap_or(0)
}

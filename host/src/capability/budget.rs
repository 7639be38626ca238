//! What a plugin instance may spend on the host: time within a call, and host memory.
//!
//! Epoch interruption stops wasm code at its deadline, but not the host working for it, and the
//! plugin's memory cap covers its linear memory, not what the host holds on its behalf. So every
//! host call that can wait or hold memory checks here: a blocking poll waits at most until the
//! call's [`Deadline`], and every byte the host keeps for the plugin (wasi-nn tensors and
//! outputs, what a call publishes) is a [`Charge`] on its [`HostMemory`] account, refused once
//! the account is full and given back when the host lets go of it. Going over is an
//! [`Exceeded`] error: returned from a host function it traps the instance, and the trap names
//! what ran out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const MIB: usize = 1024 * 1024;

/// A limit a plugin went over inside a host call; it traps the instance.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Exceeded {
    /// The call's deadline passed while the host was working or waiting for the plugin.
    #[error("its deadline passed while {during}")]
    Deadline {
        /// What the host was doing.
        during: String,
    },
    /// The plugin's host-memory account is full.
    #[error(
        "host memory budget of {limit_mib} MiB exhausted: {what} needs {bytes} bytes with {used} already held"
    )]
    HostMemory {
        /// What asked for memory.
        what: &'static str,
        /// How much it needed.
        bytes: usize,
        /// What the plugin already held.
        used: usize,
        /// The budget.
        limit_mib: u32,
    },
    /// The plugin kept calling after the host refused it.
    #[error("{0}")]
    Abuse(String),
    /// A host component (a model backend) panicked while working for the plugin.
    #[error("the host panicked while working for the plugin: {0}")]
    HostPanic(String),
}

/// When the current call must be over; none between calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// A deadline at `at`.
    pub fn at(at: Instant) -> Self {
        Self(Some(at))
    }

    /// The instant, if a call is running.
    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// Whether `work` expected to take `cost` can still finish in time.
    pub fn allows(self, cost: std::time::Duration) -> bool {
        self.0.is_none_or(|at| Instant::now() + cost <= at)
    }
}

/// One instance's account of host memory, shared by every capability that allocates for it.
#[derive(Debug)]
pub struct HostMemory {
    used: AtomicUsize,
    limit: usize,
}

impl HostMemory {
    /// An empty account holding at most `limit_mib` MiB.
    pub fn new(limit_mib: u32) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit: limit_mib as usize * MIB,
        })
    }

    /// Charges `bytes` for `what`, or refuses if the account would go over its limit.
    pub fn charge(self: &Arc<Self>, what: &'static str, bytes: usize) -> Result<Charge, Exceeded> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let after = used.saturating_add(bytes);
            if after > self.limit {
                return Err(Exceeded::HostMemory {
                    what,
                    bytes,
                    used,
                    limit_mib: (self.limit / MIB) as u32,
                });
            }
            match self
                .used
                .compare_exchange_weak(used, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(Charge {
                        account: self.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes held on an account; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    account: Arc<HostMemory>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A value the host keeps for a plugin, with the memory charged for it.
pub struct Charged<T> {
    /// The value.
    pub value: T,
    _charge: Charge,
}

impl<T> Charged<T> {
    /// Charges `bytes` for `value` to `account`.
    pub fn new(
        account: &Arc<HostMemory>,
        what: &'static str,
        bytes: usize,
        value: T,
    ) -> Result<Self, Exceeded> {
        Ok(Self {
            value,
            _charge: account.charge(what, bytes)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_refused_past_the_limit_and_given_back_on_drop() {
        let account = HostMemory::new(1);
        let half = account.charge("a", MIB / 2).expect("fits");
        let error = account.charge("b", MIB).expect_err("over");
        assert!(matches!(error, Exceeded::HostMemory { used, .. } if used == MIB / 2));
        drop(half);
        assert_eq!(account.used(), 0);
        let _all = account.charge("c", MIB).expect("fits once given back");
    }

    #[test]
    fn a_deadline_allows_only_work_that_fits_before_it() {
        let soon = Deadline::at(Instant::now() + std::time::Duration::from_millis(50));
        assert!(soon.allows(std::time::Duration::ZERO));
        assert!(!soon.allows(std::time::Duration::from_secs(5)));
        assert!(Deadline::default().allows(std::time::Duration::from_secs(5)));
    }
}

//! When a failing plugin may start again: restart at once, then back off.
//!
//! A pure state machine with the clock passed in, so it is tested without waiting. A trap or a
//! failed start counts as a failure; the first [`RestartPolicy::free_restarts`] failures in a
//! row restart the instance for the very next message. After that the plugin rests for a
//! backoff that doubles with each further failure up to [`RestartPolicy::max_backoff`];
//! messages arriving while it rests fail fast as `BackingOff` instead of queueing behind a
//! crash loop. One success resets the count.

use std::time::{Duration, Instant};

/// How quickly a failing plugin is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Failures in a row that still restart at once.
    pub free_restarts: u32,
    /// The first rest after the free restarts.
    pub first_backoff: Duration,
    /// The longest rest.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            free_restarts: 3,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Tracks consecutive failures of one plugin.
#[derive(Debug, Clone)]
pub struct Supervisor {
    policy: RestartPolicy,
    failures: u32,
    resting_until: Option<Instant>,
}

impl Supervisor {
    /// A supervisor with no failures recorded.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            resting_until: None,
        }
    }

    /// `Ok` if the plugin may run now, else how long it still rests.
    pub fn admit(&self, now: Instant) -> Result<(), Duration> {
        match self.resting_until {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a handled message: the plugin is healthy again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.resting_until = None;
    }

    /// Records a trap or failed start at `now`; returns the rest imposed, if any.
    pub fn failed(&mut self, now: Instant) -> Option<Duration> {
        self.failures += 1;
        let over = self.failures.checked_sub(self.policy.free_restarts + 1)?;
        let backoff = self
            .policy
            .first_backoff
            .saturating_mul(2u32.saturating_pow(over.min(16)))
            .min(self.policy.max_backoff);
        self.resting_until = Some(now + backoff);
        Some(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn supervisor() -> Supervisor {
        Supervisor::new(RestartPolicy {
            free_restarts: 2,
            first_backoff: SEC,
            max_backoff: 4 * SEC,
        })
    }

    #[test]
    fn the_first_failures_restart_at_once() {
        let (mut s, t0) = (supervisor(), Instant::now());
        assert_eq!(s.failed(t0), None);
        assert_eq!(s.failed(t0), None);
        assert_eq!(s.admit(t0), Ok(()));
    }

    #[test]
    fn further_failures_back_off_doubling_up_to_the_cap() {
        let (mut s, t0) = (supervisor(), Instant::now());
        s.failed(t0);
        s.failed(t0);
        assert_eq!(s.failed(t0), Some(SEC));
        assert_eq!(s.admit(t0 + SEC / 2), Err(SEC / 2));
        assert_eq!(s.admit(t0 + SEC), Ok(()));
        assert_eq!(s.failed(t0 + SEC), Some(2 * SEC));
        assert_eq!(s.failed(t0 + 3 * SEC), Some(4 * SEC));
        assert_eq!(s.failed(t0 + 7 * SEC), Some(4 * SEC));
    }

    #[test]
    fn a_success_resets_the_count() {
        let (mut s, t0) = (supervisor(), Instant::now());
        for _ in 0..3 {
            s.failed(t0);
        }
        s.succeeded();
        assert_eq!(s.admit(t0), Ok(()));
        assert_eq!(s.failures(), 0);
        assert_eq!(s.failed(t0), None);
    }
}

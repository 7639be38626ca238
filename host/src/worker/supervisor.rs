//! When a failing plugin may start again: restart at once, then rest, then give up.
//!
//! A pure state machine with the clock passed in, so it is tested without waiting. A trap or a
//! failed start is a failure; successes do not wipe the slate, so a plugin cannot dodge its
//! rests by succeeding in between (a plugin that traps on every other message rests like one
//! that traps on all of them). The budget is counted over a window: up to
//! [`RestartPolicy::free_restarts`] failures within [`RestartPolicy::window`] restart the
//! instance for the very next message; one more and the plugin rests, for a time that doubles
//! with each rest up to [`RestartPolicy::max_backoff`]. Messages arriving while it rests fail
//! fast instead of queueing behind a crash loop. A plugin that goes a whole window without a
//! failure starts again with a clean slate; one that has rested [`RestartPolicy::max_rests`]
//! times without such a window is failed for good, until an operator starts it again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How quickly a failing plugin is restarted, and when it is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Failures within the window that still restart at once.
    pub free_restarts: u32,
    /// The window failures are counted over, and the quiet time that wipes the slate.
    pub window: Duration,
    /// The first rest.
    pub first_backoff: Duration,
    /// The longest rest.
    pub max_backoff: Duration,
    /// Rests without a quiet window between them after which the plugin is failed for good.
    pub max_rests: u32,
    /// Times a message whose handling trapped is tried in all before it is dead-lettered.
    pub attempts: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            free_restarts: 3,
            window: Duration::from_secs(60),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_rests: 8,
            attempts: 3,
        }
    }
}

/// What a failure leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A fresh instance takes the next message.
    Restart,
    /// No instance starts before this much time has passed.
    Rest(Duration),
    /// The plugin is failed for good.
    GiveUp,
}

/// Tracks the recent failures of one plugin.
#[derive(Debug, Clone)]
pub struct Supervisor {
    policy: RestartPolicy,
    failures: VecDeque<Instant>,
    rests: u32,
    resting_until: Option<Instant>,
    given_up: bool,
}

impl Supervisor {
    /// A supervisor with no failures recorded.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            failures: VecDeque::new(),
            rests: 0,
            resting_until: None,
            given_up: false,
        }
    }

    /// The policy it follows.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// `Ok` if the plugin may run now, else how long it still rests (`None`: for good).
    pub fn admit(&self, now: Instant) -> Result<(), Option<Duration>> {
        if self.given_up {
            return Err(None);
        }
        match self.resting_until {
            Some(until) if until > now => Err(Some(until - now)),
            _ => Ok(()),
        }
    }

    /// Failures within the window before `now`.
    pub fn recent_failures(&self, now: Instant) -> u32 {
        self.failures
            .iter()
            .filter(|&&at| now.saturating_duration_since(at) < self.policy.window)
            .count() as u32
    }

    /// Whether the plugin was failed for good.
    pub fn given_up(&self) -> bool {
        self.given_up
    }

    /// Records a trap or failed start at `now`.
    pub fn failed(&mut self, now: Instant) -> Verdict {
        let window = self.policy.window;
        if self
            .failures
            .back()
            .is_some_and(|&last| now.saturating_duration_since(last) >= window)
        {
            // A whole window without a failure: a clean slate.
            self.failures.clear();
            self.rests = 0;
        }
        while self
            .failures
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if self.failures.len() as u32 <= self.policy.free_restarts {
            return Verdict::Restart;
        }
        if self.rests >= self.policy.max_rests {
            self.given_up = true;
            return Verdict::GiveUp;
        }
        let backoff = self
            .policy
            .first_backoff
            .saturating_mul(2u32.saturating_pow(self.rests.min(16)))
            .min(self.policy.max_backoff);
        self.rests += 1;
        self.resting_until = Some(now + backoff);
        Verdict::Rest(backoff)
    }

    /// Forgets every failure: an operator started the plugin again.
    pub fn reset(&mut self) {
        *self = Self::new(self.policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn supervisor() -> Supervisor {
        Supervisor::new(RestartPolicy {
            free_restarts: 2,
            window: 60 * SEC,
            first_backoff: SEC,
            max_backoff: 4 * SEC,
            max_rests: 4,
            attempts: 1,
        })
    }

    #[test]
    fn the_first_failures_restart_at_once() {
        let (mut s, t0) = (supervisor(), Instant::now());
        assert_eq!(s.failed(t0), Verdict::Restart);
        assert_eq!(s.failed(t0), Verdict::Restart);
        assert_eq!(s.admit(t0), Ok(()));
    }

    #[test]
    fn further_failures_rest_doubling_up_to_the_cap() {
        let (mut s, t0) = (supervisor(), Instant::now());
        s.failed(t0);
        s.failed(t0);
        assert_eq!(s.failed(t0), Verdict::Rest(SEC));
        assert_eq!(s.admit(t0 + SEC / 2), Err(Some(SEC / 2)));
        assert_eq!(s.admit(t0 + SEC), Ok(()));
        assert_eq!(s.failed(t0 + SEC), Verdict::Rest(2 * SEC));
        assert_eq!(s.failed(t0 + 3 * SEC), Verdict::Rest(4 * SEC));
        assert_eq!(s.failed(t0 + 7 * SEC), Verdict::Rest(4 * SEC));
    }

    #[test]
    fn successes_in_between_do_not_dodge_the_rest() {
        // A plugin trapping on every other message: the successes are not even reported here,
        // and three failures inside the window are enough to rest.
        let (mut s, t0) = (supervisor(), Instant::now());
        assert_eq!(s.failed(t0), Verdict::Restart);
        assert_eq!(s.failed(t0 + SEC / 10), Verdict::Restart);
        assert_eq!(s.failed(t0 + SEC / 5), Verdict::Rest(SEC));
    }

    #[test]
    fn a_quiet_window_wipes_the_slate() {
        let (mut s, t0) = (supervisor(), Instant::now());
        for _ in 0..3 {
            s.failed(t0);
        }
        let later = t0 + 61 * SEC;
        assert_eq!(s.recent_failures(later), 0);
        assert_eq!(s.failed(later), Verdict::Restart);
        assert_eq!(s.failed(later), Verdict::Restart);
        assert_eq!(s.failed(later), Verdict::Rest(SEC));
    }

    #[test]
    fn a_plugin_that_keeps_failing_is_given_up_until_reset() {
        let (mut s, mut now) = (supervisor(), Instant::now());
        let mut verdicts = Vec::new();
        for _ in 0..8 {
            let verdict = s.failed(now);
            if let Verdict::Rest(rest) = verdict {
                now += rest;
            }
            verdicts.push(verdict);
        }
        assert_eq!(verdicts[6], Verdict::GiveUp);
        assert_eq!(s.admit(now + 3600 * SEC), Err(None));
        s.reset();
        assert_eq!(s.admit(now), Ok(()));
    }
}

//! Probation of a new version after a hot swap: a pure state machine, no I/O.
//!
//! For its first [`Probation::messages`] messages the new version is watched, with the old one
//! kept ready by the plugin's thread. Each handled message is [`Trial::record`]ed; more traps
//! than [`Probation::max_trap_share`] of the watched messages and the verdict is
//! [`Outcome::RollBack`], as soon as that many have happened (no need to wait for the end);
//! once every watched message is in without that, [`Outcome::Commit`].

/// Probation of a new version: how many first messages, and what share of them may trap.
#[derive(Debug, Clone, Copy)]
pub struct Probation {
    /// The first messages the new version is watched on.
    pub messages: u32,
    /// The share of those that may trap before the gateway goes back to the old version.
    pub max_trap_share: f64,
}

/// What to do after a message handled on probation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Keep watching.
    Continue,
    /// Probation is over and passed: the old version may go.
    Commit,
    /// Too many traps: go back to the old version now.
    RollBack,
}

/// A probation under way.
#[derive(Debug, Clone)]
pub struct Trial {
    remaining: u32,
    traps: u32,
    allowed: f64,
}

impl Trial {
    /// A probation by `policy`, no message seen yet.
    pub fn new(policy: Probation) -> Self {
        Self {
            remaining: policy.messages,
            traps: 0,
            allowed: policy.max_trap_share * f64::from(policy.messages),
        }
    }

    /// Records one handled message, which `trapped` or not.
    pub fn record(&mut self, trapped: bool) -> Outcome {
        self.traps += u32::from(trapped);
        self.remaining = self.remaining.saturating_sub(1);
        if f64::from(self.traps) > self.allowed {
            Outcome::RollBack
        } else if self.remaining == 0 {
            Outcome::Commit
        } else {
            Outcome::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(messages: u32, share: f64) -> Trial {
        Trial::new(Probation {
            messages,
            max_trap_share: share,
        })
    }

    #[test]
    fn a_version_that_never_traps_is_committed_after_its_watched_messages() {
        let mut t = trial(3, 0.1);
        assert_eq!(t.record(false), Outcome::Continue);
        assert_eq!(t.record(false), Outcome::Continue);
        assert_eq!(t.record(false), Outcome::Commit);
    }

    #[test]
    fn traps_within_the_share_are_forgiven() {
        // 20 messages, 10 %: two traps are allowed, the third rolls back.
        let mut t = trial(20, 0.1);
        assert_eq!(t.record(true), Outcome::Continue);
        assert_eq!(t.record(true), Outcome::Continue);
        for _ in 0..17 {
            assert_eq!(t.record(false), Outcome::Continue);
        }
        assert_eq!(t.record(false), Outcome::Commit);
    }

    #[test]
    fn one_trap_too_many_rolls_back_at_once_not_at_the_end() {
        let mut t = trial(20, 0.1);
        t.record(true);
        t.record(true);
        assert_eq!(t.record(true), Outcome::RollBack);
    }

    #[test]
    fn with_no_share_allowed_the_first_trap_rolls_back() {
        let mut t = trial(20, 0.0);
        assert_eq!(t.record(false), Outcome::Continue);
        assert_eq!(t.record(true), Outcome::RollBack);
    }

    #[test]
    fn a_trap_on_the_last_watched_message_still_rolls_back() {
        let mut t = trial(2, 0.0);
        assert_eq!(t.record(false), Outcome::Continue);
        assert_eq!(t.record(true), Outcome::RollBack);
    }
}

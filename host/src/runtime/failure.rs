//! Why a message was not handled: every way a plugin call can end other than success.
//!
//! Each variant says enough for an operator to act without a debugger, and its text reads
//! after "plugin `x` failed on topic `y`: ".

use std::time::Duration;

use crate::capability::budget::Exceeded;

/// How a message failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// The plugin returned an error; the instance lives on.
    #[error("plugin returned an error: {0}")]
    Rejected(String),
    /// The instance trapped and was dropped; a fresh one takes the next message.
    #[error("instance trapped ({0}); it was dropped and a fresh one takes the next message")]
    Trap(TrapKind),
    /// The plugin could not be started: instantiation failed or `init` returned an error.
    #[error("plugin could not start: {0}")]
    Start(String),
    /// The payload is over the plugin's limit; the plugin was not called.
    #[error("payload of {size} bytes is over the plugin's limit of {limit} bytes")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        limit: u32,
    },
    /// The plugin keeps failing and is resting; the plugin was not called.
    #[error("plugin is backing off after {failures} failures within its window; next start in {:.1}s", retry_in.as_secs_f64())]
    BackingOff {
        /// Failures within the supervisor's window.
        failures: u32,
        /// Time until the next start is tried.
        retry_in: Duration,
    },
    /// The plugin failed too often and was given up until an operator starts it again; the
    /// plugin was not called.
    #[error(
        "plugin was failed for good after failing through every rest (last: {last}); `ctl start` it again once fixed"
    )]
    GivenUp {
        /// The last failure before it was given up.
        last: String,
    },
}

impl Failure {
    /// Whether this failure ended the instance (and counts towards backoff).
    pub fn ends_instance(&self) -> bool {
        matches!(self, Failure::Trap(_) | Failure::Start(_))
    }

    /// Whether handling the message again might succeed: a trap may have come from load on
    /// the machine (a deadline) or from the instance's state; a refusal by the plugin or the
    /// host will not change.
    pub fn worth_retrying(&self) -> bool {
        matches!(self, Failure::Trap(_))
    }
}

/// What made an instance trap.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrapKind {
    /// The call ran past its time budget.
    #[error("ran past its deadline of {ms} ms")]
    Deadline {
        /// The budget.
        ms: u64,
    },
    /// The plugin asked for more memory than its limit and then aborted.
    #[error("memory limit of {mib} MiB reached")]
    MemoryLimit {
        /// The limit.
        mib: u32,
    },
    /// Recursion too deep for the wasm stack.
    #[error("wasm stack overflow")]
    StackOverflow,
    /// A limit on what the host does for the plugin: the deadline passed inside a host call,
    /// its host memory ran out, it kept calling after being refused, or the host panicked.
    #[error("{0}")]
    Host(Exceeded),
    /// Any other trap: a panic, `unreachable`, an out-of-bounds access.
    #[error("{0}")]
    Other(String),
}

//! One plugin's message loop: admit a message, call the plugin, return what it published.
//!
//! The worker owns a [`CompiledPlugin`] and at most one live [`Instance`]; messages are handled
//! one at a time, in the order given. A trap drops the instance and the [`Supervisor`] decides
//! when a fresh one starts; a message whose handling trapped is tried again on a fresh instance,
//! up to [`RestartPolicy::attempts`] times in all, so a deadline missed once under load loses
//! nothing. A failure is returned as a [`MessageError`] naming the plugin, the topic and the
//! attempts, and logged; it never ends the loop. The worker's [`State`] is what an operator
//! sees of it. Never does I/O beyond calling the plugin.
//!
//! Under `edgewise run` each worker lives on its plugin's own [`thread`], which feeds it from
//! the plugin's [`mailbox`], hands back what it returns and swaps versions, with [`probation`]
//! deciding when a new version goes back to the old one; [`vitals`] is what the gateway can
//! see of the thread from outside. A candidate version can run in [`shadow`] beside it, on a
//! thread of its own, fed copies of its messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use self::supervisor::{RestartPolicy, Supervisor, Verdict};
use crate::capability::host::Publish;
use crate::runtime::failure::Failure;
use crate::runtime::instance::Instance;
use crate::runtime::plugin::CompiledPlugin;

pub mod mailbox;
pub mod probation;
pub mod shadow;
pub mod supervisor;
pub mod thread;
pub mod vitals;

pub use crate::bindings::edgewise::plugin::types::Message;

/// A message a plugin did not handle, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("plugin `{plugin}` failed on topic `{topic}` ({attempts} attempts): {failure}")]
pub struct MessageError {
    /// The plugin's name.
    pub plugin: String,
    /// The message's topic.
    pub topic: String,
    /// How many times the plugin was called with it.
    pub attempts: u32,
    /// What happened the last time.
    pub failure: Failure,
}

/// How a plugin is doing, as an operator sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Handling messages; no failure within the supervisor's window.
    Running,
    /// Handling messages, but it failed within the window.
    Failing {
        /// Failures within the window.
        failures: u32,
    },
    /// Resting after failing too often: messages fail fast until then.
    Resting {
        /// Time left.
        left: Duration,
    },
    /// Failed for good: every message goes to the dead letters until an operator starts it.
    Failed,
}

impl State {
    /// The state's name in the status document.
    pub fn name(&self) -> &'static str {
        match self {
            State::Running => "running",
            State::Failing { .. } => "failing",
            State::Resting { .. } => "resting",
            State::Failed => "failed",
        }
    }
}

/// Counters for one plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages the plugin handled successfully.
    pub handled: u64,
    /// Messages that failed, for any reason.
    pub failed: u64,
    /// Instances that trapped or failed to start.
    pub traps: u64,
    /// Instances started (successfully or not).
    pub starts: u64,
    /// Messages published.
    pub published: u64,
    /// The largest linear memory an instance has had, in bytes.
    pub peak_memory_bytes: u64,
}

/// Feeds one plugin its messages.
pub struct Worker {
    plugin: Arc<CompiledPlugin>,
    instance: Option<Instance>,
    supervisor: Supervisor,
    stats: Stats,
    last_failure: Option<String>,
}

impl Worker {
    /// A worker for `plugin`; no instance runs until [`Worker::start`] or the first message.
    pub fn new(plugin: Arc<CompiledPlugin>, policy: RestartPolicy) -> Self {
        Self {
            plugin,
            instance: None,
            supervisor: Supervisor::new(policy),
            stats: Stats::default(),
            last_failure: None,
        }
    }

    /// How the plugin is doing at `now`.
    pub fn state(&self, now: Instant) -> State {
        match self.supervisor.admit(now) {
            Err(None) => State::Failed,
            Err(Some(left)) => State::Resting { left },
            Ok(()) => match self.supervisor.recent_failures(now) {
                0 => State::Running,
                failures => State::Failing { failures },
            },
        }
    }

    /// The last failure that ended an instance, if any.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// Forgets every failure, so a plugin failed for good runs again.
    pub fn revive(&mut self) {
        self.supervisor.reset();
    }

    /// The plugin this worker runs.
    pub fn plugin(&self) -> &CompiledPlugin {
        &self.plugin
    }

    /// How it restarts, retries and gives up.
    pub fn policy(&self) -> &RestartPolicy {
        self.supervisor.policy()
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Starts an instance now, so that a plugin that cannot start is reported at load time.
    pub fn start(&mut self) -> Result<(), Failure> {
        self.ensure_instance(Instant::now()).map(|_| ())
    }

    /// Handles one message, trying it again on a fresh instance after a trap; returns what
    /// the plugin published.
    pub fn handle(&mut self, msg: &Message) -> Result<Vec<Publish>, MessageError> {
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let outcome = self.try_handle(msg, Instant::now());
            match &outcome {
                Err(failure)
                    if failure.worth_retrying() && attempts < self.supervisor.policy().attempts =>
                {
                    tracing::debug!(
                        plugin = self.plugin.name(),
                        topic = msg.topic,
                        attempts,
                        "{failure}; trying again"
                    );
                }
                _ => break outcome,
            }
        };
        match &outcome {
            Ok(published) => {
                self.stats.handled += 1;
                self.stats.published += published.len() as u64;
            }
            Err(failure) => {
                self.stats.failed += 1;
                tracing::warn!(plugin = self.plugin.name(), topic = msg.topic, "{failure}");
            }
        }
        outcome.map_err(|failure| MessageError {
            plugin: self.plugin.name().to_owned(),
            topic: msg.topic.clone(),
            attempts,
            failure,
        })
    }

    fn try_handle(&mut self, msg: &Message, now: Instant) -> Result<Vec<Publish>, Failure> {
        let limit = self.plugin.limits().max_payload_bytes;
        if msg.payload.len() > limit as usize {
            return Err(Failure::PayloadTooLarge {
                size: msg.payload.len(),
                limit,
            });
        }
        let instance = self.ensure_instance(now)?;
        let outcome = instance.handle(msg);
        let peak = instance.peak_memory_bytes() as u64;
        self.stats.peak_memory_bytes = self.stats.peak_memory_bytes.max(peak);
        match outcome {
            Ok(published) => Ok(published),
            Err(failure) => {
                if failure.ends_instance() {
                    self.instance = None;
                    self.record_failure(&failure, Instant::now());
                }
                Err(failure)
            }
        }
    }

    fn ensure_instance(&mut self, now: Instant) -> Result<&mut Instance, Failure> {
        let instance = match self.instance.take() {
            Some(instance) => instance,
            None => {
                self.supervisor.admit(now).map_err(|rest| match rest {
                    Some(retry_in) => Failure::BackingOff {
                        failures: self.supervisor.recent_failures(now),
                        retry_in,
                    },
                    None => Failure::GivenUp {
                        last: self.last_failure.clone().unwrap_or_default(),
                    },
                })?;
                self.stats.starts += 1;
                Instance::start(&self.plugin).inspect_err(|f| self.record_failure(f, now))?
            }
        };
        Ok(self.instance.insert(instance))
    }

    fn record_failure(&mut self, failure: &Failure, now: Instant) {
        self.stats.traps += 1;
        self.last_failure = Some(failure.to_string());
        let failures = self.supervisor.recent_failures(now) + 1;
        match self.supervisor.failed(now) {
            Verdict::Restart => {}
            Verdict::Rest(rest) => tracing::warn!(
                plugin = self.plugin.name(),
                failures,
                "plugin keeps failing ({failures} failures within {} s); resting {:.1}s before the next start",
                self.supervisor.policy().window.as_secs(),
                rest.as_secs_f64()
            ),
            Verdict::GiveUp => tracing::error!(
                plugin = self.plugin.name(),
                "plugin failed for good: it kept failing after {} rests (last: {failure}); every message now goes to its dead-letter topic until an operator starts it again",
                self.supervisor.policy().max_rests
            ),
        }
    }
}

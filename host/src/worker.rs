//! One plugin's message loop: admit a message, call the plugin, return what it published.
//!
//! The worker owns a [`CompiledPlugin`] and at most one live [`Instance`]; messages are handled
//! one at a time, in the order given. A trap drops the instance and the [`Supervisor`] decides
//! when a fresh one starts. A failure is returned as a [`MessageError`] naming the plugin and
//! the topic, and logged; it never ends the loop. Never does I/O beyond calling the plugin.

use std::sync::Arc;
use std::time::Instant;

use crate::capability::host::Publish;
use crate::failure::Failure;
use crate::instance::Instance;
use crate::plugin::CompiledPlugin;
use crate::supervisor::{RestartPolicy, Supervisor};

pub use crate::bindings::edgewise::plugin::types::Message;

/// A message a plugin did not handle, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("plugin `{plugin}` failed on topic `{topic}`: {failure}")]
pub struct MessageError {
    /// The plugin's name.
    pub plugin: String,
    /// The message's topic.
    pub topic: String,
    /// What happened.
    pub failure: Failure,
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
}

/// Feeds one plugin its messages.
pub struct Worker {
    plugin: Arc<CompiledPlugin>,
    instance: Option<Instance>,
    supervisor: Supervisor,
    stats: Stats,
}

impl Worker {
    /// A worker for `plugin`; no instance runs until [`Worker::start`] or the first message.
    pub fn new(plugin: Arc<CompiledPlugin>, policy: RestartPolicy) -> Self {
        Self {
            plugin,
            instance: None,
            supervisor: Supervisor::new(policy),
            stats: Stats::default(),
        }
    }

    /// The plugin this worker runs.
    pub fn plugin(&self) -> &CompiledPlugin {
        &self.plugin
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Starts an instance now, so that a plugin that cannot start is reported at load time.
    pub fn start(&mut self) -> Result<(), Failure> {
        self.ensure_instance(Instant::now()).map(|_| ())
    }

    /// Handles one message; returns what the plugin published.
    pub fn handle(&mut self, msg: &Message) -> Result<Vec<Publish>, MessageError> {
        let outcome = self.try_handle(msg, Instant::now());
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
        match instance.handle(msg) {
            Ok(published) => {
                self.supervisor.succeeded();
                Ok(published)
            }
            Err(failure) => {
                if failure.ends_instance() {
                    self.instance = None;
                    self.record_failure(now);
                } else {
                    // The plugin answered: it is alive, whatever it thought of the message.
                    self.supervisor.succeeded();
                }
                Err(failure)
            }
        }
    }

    fn ensure_instance(&mut self, now: Instant) -> Result<&mut Instance, Failure> {
        let instance = match self.instance.take() {
            Some(instance) => instance,
            None => {
                self.supervisor
                    .admit(now)
                    .map_err(|retry_in| Failure::BackingOff {
                        failures: self.supervisor.failures(),
                        retry_in,
                    })?;
                self.stats.starts += 1;
                Instance::start(&self.plugin).inspect_err(|_| self.record_failure(now))?
            }
        };
        Ok(self.instance.insert(instance))
    }

    fn record_failure(&mut self, now: Instant) {
        self.stats.traps += 1;
        if let Some(rest) = self.supervisor.failed(now) {
            tracing::warn!(
                plugin = self.plugin.name(),
                failures = self.supervisor.failures(),
                "plugin keeps failing; resting {:.1}s before the next start",
                rest.as_secs_f64()
            );
        }
    }
}

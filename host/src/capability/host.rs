//! The `edgewise:plugin/host` interface: publish, log, config, clock.
//!
//! `publish` never touches the network: it checks the topic against the manifest's grants and
//! the payload against the limit, charges it to the instance's host memory, then appends it to
//! the per-message outbox, which the worker takes when `on-message` succeeds and drops when it
//! fails. A refused publish is counted and logged at most once per [`REFUSAL_LOG_INTERVAL`];
//! a call that keeps publishing after more refusals than it may publish messages traps. A new
//! `PluginCtx` may publish only where its manifest says and holds the manifest's settings with
//! overrides applied. `log` goes through the plugin's [`PluginLog`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgewise_signing::manifest::publish_allowed;
use edgewise_signing::{Limits, TopicFilter};

use super::budget::{Charged, Exceeded, HostMemory};
use super::log::PluginLog;
use crate::bindings::edgewise::plugin::host::{Host, Level};
use crate::bindings::edgewise::plugin::types::{self, PublishError};

/// At most one log line per plugin this often about refused publishes.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One message a plugin published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The topic, checked against the grants.
    pub topic: String,
    /// The payload, within the size limit.
    pub payload: Vec<u8>,
}

/// What a plugin's manifest grants it, shared by all its instances.
#[derive(Debug, Clone)]
pub struct Grants {
    /// The plugin's name, used in every log line.
    pub name: Arc<str>,
    /// Topics (filters allowed) it may publish to.
    pub publish: Arc<[TopicFilter]>,
    /// Its settings, overrides applied.
    pub settings: Arc<BTreeMap<String, String>>,
    /// Its effective limits.
    pub limits: Limits,
    /// Its log, shared by all its instances.
    pub log: Arc<PluginLog>,
    /// Refused publishes not yet logged, and when they last were.
    pub refusals: Arc<Mutex<RefusalLog>>,
}

/// Refused publishes, logged at most once per [`REFUSAL_LOG_INTERVAL`].
#[derive(Debug, Default)]
pub struct RefusalLog {
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// Per-instance state of the host interface.
pub struct PluginCtx {
    grants: Grants,
    memory: Arc<HostMemory>,
    outbox: Vec<Charged<Publish>>,
    refused_this_call: u32,
}

impl PluginCtx {
    /// A context that allows exactly what `grants` allow, with an empty outbox whose payloads
    /// are charged to `memory`.
    pub fn new(grants: Grants, memory: Arc<HostMemory>) -> Self {
        Self {
            grants,
            memory,
            outbox: Vec::new(),
            refused_this_call: 0,
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> Arc<str> {
        self.grants.name.clone()
    }

    /// The plugin's log.
    pub fn log(&self) -> &Arc<PluginLog> {
        &self.grants.log
    }

    /// Takes what was published since the last call, and gives back its memory.
    pub fn take_outbox(&mut self) -> Vec<Publish> {
        self.refused_this_call = 0;
        self.outbox.drain(..).map(|p| p.value).collect()
    }

    /// Forgets what was published since the last call.
    pub fn discard_outbox(&mut self) {
        self.refused_this_call = 0;
        self.outbox.clear();
    }

    /// Counts a refused publish; logs it if none was logged lately; traps a call that keeps
    /// publishing after more refusals than it may publish messages.
    fn refuse(&mut self, topic: &str, bytes: usize, error: PublishError) -> wasmtime::Result<()> {
        self.refused_this_call += 1;
        if let Some(c) = self.grants.log.counters() {
            c.publishes_refused.inc();
        }
        let mut log = self
            .grants
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        log.unlogged += 1;
        let due = log
            .logged_at
            .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL);
        if due {
            tracing::warn!(
                plugin = &*self.grants.name,
                topic = super::log::sanitize(topic.as_bytes()),
                bytes,
                refused = log.unlogged,
                "publish refused: {} ({} refused since the last such line; at most one line per {} s)",
                error.name(),
                log.unlogged,
                REFUSAL_LOG_INTERVAL.as_secs()
            );
            log.unlogged = 0;
            log.logged_at = Some(Instant::now());
        }
        let allowed = self.grants.limits.max_publishes_per_message;
        if self.refused_this_call > allowed {
            return Err(Exceeded::Abuse(format!(
                "kept publishing after {} refused publishes in one call (the last: {})",
                self.refused_this_call - 1,
                error.name()
            ))
            .into());
        }
        Ok(())
    }
}

impl types::Host for PluginCtx {}

impl Host for PluginCtx {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.grants.log.line(level, "host.log", message.as_bytes());
        Ok(())
    }

    fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), PublishError>> {
        let limits = &self.grants.limits;
        let refused = match publish_allowed(&self.grants.publish, &topic) {
            Err(_) => Some(PublishError::InvalidTopic),
            Ok(false) => Some(PublishError::NotGranted),
            Ok(true) if payload.len() > limits.max_payload_bytes as usize => {
                Some(PublishError::TooLarge)
            }
            Ok(true) if self.outbox.len() >= limits.max_publishes_per_message as usize => {
                Some(PublishError::TooMany)
            }
            Ok(true) => None,
        };
        if let Some(error) = refused {
            self.refuse(&topic, payload.len(), error)?;
            return Ok(Err(error));
        }
        let bytes = topic.len() + payload.len();
        let publish = Charged::new(&self.memory, "a publish", bytes, Publish { topic, payload })?;
        self.outbox.push(publish);
        Ok(Ok(()))
    }

    fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.grants.settings.get(&key).cloned())
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(crate::clock::now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PluginCtx {
        let grants = Grants {
            name: "t".into(),
            publish: vec![TopicFilter::parse("out/+").expect("valid filter")].into(),
            settings: Arc::new(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
            limits: Limits {
                max_payload_bytes: 4,
                max_publishes_per_message: 2,
                ..Limits::default()
            },
            log: PluginLog::new("t".into(), Arc::default()),
            refusals: Arc::default(),
        };
        PluginCtx::new(grants, HostMemory::new(1))
    }

    fn publish(c: &mut PluginCtx, topic: &str, payload: Vec<u8>) -> Result<(), PublishError> {
        c.publish(topic.into(), payload).expect("no trap")
    }

    #[test]
    fn publishes_collect_in_the_outbox_until_taken() {
        let mut c = ctx();
        assert_eq!(publish(&mut c, "out/a", b"1".to_vec()), Ok(()));
        assert_eq!(
            c.take_outbox(),
            vec![Publish {
                topic: "out/a".into(),
                payload: b"1".to_vec()
            }]
        );
        assert!(c.take_outbox().is_empty());
    }

    #[test]
    fn publishing_outside_the_grants_or_limits_is_refused() {
        let mut c = ctx();
        assert_eq!(
            publish(&mut c, "elsewhere", vec![]),
            Err(PublishError::NotGranted)
        );
        assert_eq!(
            publish(&mut c, "out/#", vec![]),
            Err(PublishError::InvalidTopic)
        );
        c.discard_outbox();
        assert_eq!(
            publish(&mut c, "out/a", vec![0; 5]),
            Err(PublishError::TooLarge)
        );
        assert_eq!(publish(&mut c, "out/a", vec![]), Ok(()));
        assert_eq!(publish(&mut c, "out/b", vec![]), Ok(()));
        assert_eq!(publish(&mut c, "out/c", vec![]), Err(PublishError::TooMany));
        assert_eq!(c.take_outbox().len(), 2);
    }

    #[test]
    fn a_call_that_keeps_publishing_after_refusals_traps() {
        let mut c = ctx();
        for _ in 0..2 {
            assert_eq!(
                publish(&mut c, "elsewhere", vec![]),
                Err(PublishError::NotGranted)
            );
        }
        let trap = c.publish("elsewhere".into(), vec![]).expect_err("traps");
        assert!(trap.to_string().contains("kept publishing after 2 refused"));
    }

    #[test]
    fn published_payloads_are_charged_until_the_outbox_is_taken() {
        let mut c = PluginCtx::new(
            Grants {
                limits: Limits {
                    max_payload_bytes: 1 << 20,
                    ..Limits::default()
                },
                ..ctx().grants
            },
            HostMemory::new(1),
        );
        let half = vec![0; 512 * 1024];
        assert_eq!(publish(&mut c, "out/a", half.clone()), Ok(()));
        let trap = c
            .publish("out/b".into(), half.clone())
            .expect_err("over budget");
        assert!(trap.to_string().contains("host memory budget of 1 MiB"));
        c.take_outbox();
        assert_eq!(publish(&mut c, "out/b", half), Ok(()));
    }

    #[test]
    fn config_reads_settings() {
        let mut c = ctx();
        assert_eq!(c.config("k".into()).ok().flatten(), Some("v".into()));
        assert_eq!(c.config("missing".into()).ok().flatten(), None);
    }
}

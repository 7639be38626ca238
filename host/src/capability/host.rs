//! The `edgewise:plugin/host` interface: publish, log, config, clock.
//!
//! `publish` never touches the network: it checks the topic against the manifest's grants and
//! the payload against the limit, then appends to the per-message outbox, which the worker takes
//! when `on-message` succeeds and drops when it fails. A new `PluginCtx` may publish only where
//! its manifest says and holds the manifest's settings with overrides applied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use edgewise_signing::manifest::publish_allowed;
use edgewise_signing::{Limits, TopicFilter};

use crate::bindings::edgewise::plugin::host::{Host, Level};
use crate::bindings::edgewise::plugin::types::{self, PublishError};

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
}

/// Per-instance state of the host interface.
pub struct PluginCtx {
    grants: Grants,
    outbox: Vec<Publish>,
}

impl PluginCtx {
    /// A context that allows exactly what `grants` allow, with an empty outbox.
    pub fn new(grants: Grants) -> Self {
        Self {
            grants,
            outbox: Vec::new(),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> Arc<str> {
        self.grants.name.clone()
    }

    /// Takes what was published since the last call.
    pub fn take_outbox(&mut self) -> Vec<Publish> {
        std::mem::take(&mut self.outbox)
    }

    /// Forgets what was published since the last call.
    pub fn discard_outbox(&mut self) {
        self.outbox.clear();
    }
}

impl types::Host for PluginCtx {}

impl Host for PluginCtx {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &*self.grants.name;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), PublishError> {
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
            tracing::warn!(
                plugin = &*self.grants.name,
                topic,
                bytes = payload.len(),
                "publish refused: {}",
                error.name()
            );
            return Err(error);
        }
        self.outbox.push(Publish { topic, payload });
        Ok(())
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.grants.settings.get(&key).cloned()
    }

    fn now_ms(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PluginCtx {
        PluginCtx::new(Grants {
            name: "t".into(),
            publish: vec![TopicFilter::parse("out/+").expect("valid filter")].into(),
            settings: Arc::new(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
            limits: Limits {
                max_payload_bytes: 4,
                max_publishes_per_message: 2,
                ..Limits::default()
            },
        })
    }

    #[test]
    fn publishes_collect_in_the_outbox_until_taken() {
        let mut c = ctx();
        assert_eq!(c.publish("out/a".into(), b"1".to_vec()), Ok(()));
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
            c.publish("elsewhere".into(), vec![]),
            Err(PublishError::NotGranted)
        );
        assert_eq!(
            c.publish("out/#".into(), vec![]),
            Err(PublishError::InvalidTopic)
        );
        assert_eq!(
            c.publish("out/a".into(), vec![0; 5]),
            Err(PublishError::TooLarge)
        );
        assert_eq!(c.publish("out/a".into(), vec![]), Ok(()));
        assert_eq!(c.publish("out/b".into(), vec![]), Ok(()));
        assert_eq!(
            c.publish("out/c".into(), vec![]),
            Err(PublishError::TooMany)
        );
        assert_eq!(c.take_outbox().len(), 2);
    }

    #[test]
    fn config_reads_settings() {
        let mut c = ctx();
        assert_eq!(c.config("k".into()), Some("v".into()));
        assert_eq!(c.config("missing".into()), None);
    }
}

//! The gateway's own topics as they arrive: management commands, the fleet's desired state,
//! bundles in chunks, and the status published under this gateway's id.
//!
//! Sits beside the router on the inbound path: a message under `edgewise/` is never routed to
//! a plugin (no plugin may subscribe there, see `edgewise_signing::namespace`); it comes here.
//! Commands, desired states, keyring updates, bundles and the statuses of a roll-out's canaries
//! go to the manager thread as
//! [`Request`]s, which checks
//! them there (signatures over whole bundles, an fsync per command): this task, which polls
//! MQTT, does no more than look at a topic and a size, and write a bundle's chunks into the
//! file they are assembled in ([`Incoming`]). Anything larger than a command or a chunk can be
//! is refused unread. A status with another process's
//! instance id means two gateways share one id, which the log says plainly, since all the
//! broker shows is each one taking the session from the other.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use edgewise_signing::namespace;
use rand::Rng;
use serde_json::Value;

use crate::config::Config;
use crate::gateway::incoming::{Assembly, Incoming};
use crate::management::{Replier, Request};
use crate::mqtt::{Delivery, Link};

/// How often the same warning about a twin gateway is logged at most.
const TWIN_WARNING_EVERY: Duration = Duration::from_secs(60);

/// What the gateway does with messages on its own topics.
pub struct Control {
    gateway: String,
    command: String,
    desired: Option<String>,
    keyring: Vec<String>,
    trust_reset: String,
    status: String,
    instance: String,
    max_command_bytes: usize,
    /// Whether the gateway is managed (a keyring is configured): else commands are not read.
    managed: bool,
    requests: Sender<Request>,
    incoming: Incoming,
    last_twin_warning: Option<Instant>,
}

impl Control {
    /// The control topics of `config`'s gateway; when `managed`, commands go to whoever reads
    /// `requests`.
    pub fn new(config: &Config, managed: bool, requests: Sender<Request>) -> Self {
        Self {
            gateway: config.gateway_id.clone(),
            command: config.command_topic(),
            desired: config.desired_topic(),
            keyring: config.keyring_topics(),
            trust_reset: namespace::trust_reset(&config.gateway_id),
            status: config.status_topic(),
            instance: format!("{:016x}", rand::rng().random::<u64>()),
            max_command_bytes: config.max_command_bytes(),
            managed,
            requests,
            incoming: Incoming::new(
                &crate::management::store::incoming_dir(&config.store),
                config.max_bundle_bytes(),
            ),
            last_twin_warning: None,
        }
    }

    /// This process's instance id, published in its status.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The gateway topics to subscribe to.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut topics = vec![self.status.clone()];
        if self.managed {
            topics.push(self.command.clone());
            topics.extend(self.desired.clone());
            topics.extend(self.keyring.iter().cloned());
            topics.push(self.trust_reset.clone());
        }
        topics
    }

    /// Handles one message on a gateway topic; every other gateway topic is ignored.
    pub fn receive(&mut self, delivery: Delivery, link: &Arc<Link>) {
        let topic = delivery.topic.as_str();
        if topic == self.status {
            self.check_twin(&delivery.payload, delivery.retain);
            return;
        }
        if !self.managed {
            return;
        }
        if delivery.payload.len() > self.max_command_bytes {
            let (size, max) = (delivery.payload.len(), self.max_command_bytes);
            let reason = format!(
                "{size} bytes, more than the {max} a command or a bundle chunk may have: refused unread"
            );
            tracing::warn!(topic, "{reason}");
            if topic == self.command {
                Replier::new(link.clone(), &self.gateway, "invalid")
                    .send("refused", serde_json::json!({ "reason": reason }));
            }
            return;
        }
        let request = if topic == self.command {
            Request::Command {
                payload: delivery.payload,
                retained: delivery.retain,
                response: delivery.response,
                received: Instant::now(),
            }
        } else if self.desired.as_deref() == Some(topic) {
            Request::Desired(delivery.payload.to_vec())
        } else if self.keyring.iter().any(|t| t == topic) {
            Request::Keyring(delivery.payload.to_vec())
        } else if topic == self.trust_reset {
            Request::TrustReset(delivery.payload.to_vec())
        } else if let Some(gateway) = namespace::status_of(topic) {
            // Subscribed to only while a roll-out waits on that gateway as a canary.
            Request::PeerStatus {
                gateway: gateway.to_owned(),
                payload: delivery.payload.to_vec(),
            }
        } else if let Some((digest, index, count)) = namespace::parse_bundle_chunk(topic) {
            let ready = match self.incoming.chunk(digest, index, count, &delivery.payload) {
                Ok(Assembly::Waiting) => return,
                Ok(Assembly::Ready(path)) => Ok(path),
                Err(e) => {
                    tracing::warn!(topic, "bundle chunk refused: {e}");
                    Err(e.to_string())
                }
            };
            Request::Bundle(digest.to_owned(), ready)
        } else {
            return;
        };
        let _ = self.requests.send(request);
    }

    /// Warns when a status under this gateway's id comes from another process that says it is
    /// online: a second gateway with the same id (or, once, the stale status of one that lost
    /// power before its last will could be published).
    fn check_twin(&mut self, payload: &[u8], retained: bool) {
        let Ok(status) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        let instance = status["instance"].as_str().unwrap_or_default();
        if status["state"] != "online" || instance == self.instance {
            return;
        }
        if self
            .last_twin_warning
            .is_some_and(|at| at.elapsed() < TWIN_WARNING_EVERY)
        {
            return;
        }
        self.last_twin_warning = Some(Instant::now());
        tracing::error!(
            other_instance = instance,
            other_pid = status["pid"].as_u64(),
            other_started_at_ms = status["started_at_ms"].as_u64(),
            retained,
            "another edgewise process says it is online as this gateway ({}): two gateways with \
             one gateway-id take the broker session from each other, and each sees only \
             dropped connections; give every gateway its own `gateway-id`",
            self.status
        );
    }
}

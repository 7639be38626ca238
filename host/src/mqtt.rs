//! The broker connection: options from the config, acknowledgements, reconnect backoff.
//!
//! The gateway task is the sole owner of the rumqttc `EventLoop`; everything else sends through
//! the [`Link`]. Inbound QoS 1 messages are acknowledged manually, by [`Ack`], only after every
//! plugin they were routed to has handled them: a gateway killed mid-message gets the message
//! again from the broker, which keeps the session (clean session off).
//!
//! When an established connection drops, the link is renewed: a fresh client and event loop,
//! same client id, so the broker resumes the session and delivers again whatever was not
//! acknowledged. rumqttc 0.25.1 can livelock when it resumes with a publish stashed on a
//! packet-id collision and the broker lost the session (rumqtt issue #1056, open); starting
//! fresh sidesteps its in-flight state and keeps at-least-once: an output is queued before its
//! input's acknowledgement on the same connection, so an input the broker saw acknowledged had
//! its outputs delivered first, and one it did not is delivered again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::Rng;
use rumqttc::{
    AsyncClient, EventLoop, LastWill, MqttOptions, Publish, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use tokio::runtime::Handle;

use crate::config::Config;

/// The status payload the broker publishes for us if we vanish.
pub const OFFLINE: &str = r#"{"state":"offline"}"#;

/// The current broker connection as everyone but the event loop sees it: the client to send
/// through, and a generation that changes when the connection is renewed.
pub struct Link {
    options: MqttOptions,
    current: RwLock<(AsyncClient, u64)>,
}

impl Link {
    /// A link from the configuration, and the event loop the gateway task will poll. Connects
    /// nothing yet.
    pub fn new(config: &Config) -> Result<(Arc<Link>, EventLoop), String> {
        let options = options(config)?;
        let (client, eventloop) = AsyncClient::new(options.clone(), REQUEST_CAPACITY);
        Ok((
            Arc::new(Link {
                options,
                current: RwLock::new((client, 0)),
            }),
            eventloop,
        ))
    }

    /// The client of the current connection, and its generation.
    pub fn client(&self) -> (AsyncClient, u64) {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A fresh client and event loop for a new connection; what was queued on the old one is
    /// dropped (its inputs were not acknowledged, so the broker delivers them again).
    pub fn renew(&self) -> EventLoop {
        let (client, eventloop) = AsyncClient::new(self.options.clone(), REQUEST_CAPACITY);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = (client, current.1 + 1);
        eventloop
    }
}

/// Requests (publishes, acknowledgements) queued for the event loop: the bounded buffer that
/// holds outputs while the broker is away.
const REQUEST_CAPACITY: usize = 1024;

fn options(config: &Config) -> Result<MqttOptions, String> {
    let (host, port) = config.broker_address()?;
    let mut options = MqttOptions::new(config.client_id(), host, port);
    options
        .set_keep_alive(Duration::from_secs(config.broker.keep_alive_s))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_last_will(LastWill::new(
            config.status_topic(),
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    if config.broker_tls() {
        let tls = tls_config(config)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    if let (Some(user), Some(password)) = (&config.broker.username, &config.broker.password) {
        options.set_credentials(user, password.expose());
    }
    Ok(options)
}

/// TLS from the configured files: the CA to trust and, for mutual TLS, the client certificate.
fn tls_config(config: &Config) -> Result<Arc<ClientConfig>, String> {
    let read =
        |key: &str, path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
            CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("`broker.{key}` {}: {e}", path.display()))
        };
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &config.broker.ca_file {
        for cert in read("ca-file", ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("`broker.ca-file` {}: {e}", ca.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let tls = match (
        &config.broker.client_cert_file,
        &config.broker.client_key_file,
    ) {
        (Some(cert), Some(key)) => {
            let chain = read("client-cert-file", cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("`broker.client-key-file` {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(tls))
}

/// Acknowledges one inbound message to the broker when the last holder drops it.
///
/// Each plugin the message was routed to holds a clone of the `Arc<Ack>`; the message is
/// acknowledged once all of them have handled it (or dropped it by queue policy).
pub struct Ack {
    link: Arc<Link>,
    generation: u64,
    publish: Publish,
    runtime: Handle,
    cancelled: AtomicBool,
}

impl Ack {
    /// An acknowledgement for `publish`, received on connection `generation` (its payload is
    /// not kept).
    pub fn new(link: Arc<Link>, generation: u64, publish: &Publish, runtime: Handle) -> Self {
        let publish = Publish {
            payload: Default::default(),
            ..publish.clone()
        };
        Self {
            link,
            generation,
            publish,
            runtime,
            cancelled: AtomicBool::new(false),
        }
    }

    /// Withholds the acknowledgement: some holder did not handle the message (shutdown, or
    /// its output could not be sent), so the broker must deliver it again.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        let (client, generation) = self.link.client();
        // A message from an earlier connection is not acknowledged on this one: its packet id
        // means nothing here, and the broker delivers it again anyway.
        if self.cancelled.load(Ordering::Relaxed) || generation != self.generation {
            return;
        }
        if client.try_ack(&self.publish).is_err() {
            // The request channel is full: queue the ack behind the traffic ahead of it.
            let publish = self.publish.clone();
            self.runtime.spawn(async move {
                if let Err(e) = client.ack(&publish).await {
                    tracing::warn!(topic = publish.topic, "could not acknowledge: {e}");
                }
            });
        }
    }
}

/// Capped exponential backoff with jitter, for reconnecting.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt: the current step with ±25 % jitter, so that a fleet
    /// of gateways does not reconnect in lockstep after a broker restart.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::rng().random_range(0.75..=1.25))
    }

    /// Back to the shortest delay, after a successful connection.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_bounded_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(800));
        let mut b = Backoff::new(min, max);
        let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        for (delay, step) in delays.iter().zip([100u64, 200, 400, 800, 800, 800]) {
            let step = Duration::from_millis(step);
            assert!(
                *delay >= step.mul_f64(0.75) && *delay <= step.mul_f64(1.25),
                "{delay:?} for {step:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= min.mul_f64(1.25));
    }
}

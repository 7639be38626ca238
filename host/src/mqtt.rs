//! The broker connection: options from the config, acknowledgements, reconnect backoff.
//!
//! MQTT 3.1.1 and MQTT 5 are both rumqttc, with separate types; [`Client`], [`Connection`] and
//! [`Event`] hide which one the config chose, so the gateway is written once. The gateway task
//! is the sole owner of the event loop ([`Connection`]); everything else sends through the
//! [`Link`]. With several brokers configured, each failed attempt moves to the next one.
//! Inbound QoS 1 messages are acknowledged manually ([`Client::try_ack`]), by the gateway's
//! message path once they are in its journal, in arrival order; until then the broker keeps
//! them in the session (clean session off). Every publish is tagged in the order it is queued,
//! so the PUBACK of an output from the journal's outbox comes back as [`Event::Delivered`].
//!
//! When an established connection drops, the link is renewed: a fresh client and event loop,
//! same client id, so the broker resumes the session and delivers again whatever was not
//! acknowledged. rumqttc 0.25.1 can livelock when it resumes with a publish stashed on a
//! packet-id collision and the broker lost the session (rumqtt issue #1056, open); starting
//! fresh sidesteps its in-flight state; what it drops is still in the journal (inputs are
//! delivered again by the broker, outputs sent again by the gateway).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::config::{Config, Endpoint, Protocol};
use bytes::Bytes;
use rand::Rng;
use rumqttc::v5;
use rumqttc::{LastWill, MqttOptions, Outgoing, Packet, Publish, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Why a gateway is offline, as its status says.
#[derive(Debug, Clone, Copy)]
pub enum Offline {
    /// The broker lost the connection and published the last will (set at connect time, so
    /// with no time of its own).
    ConnectionLost,
    /// The gateway stopped cleanly, at this time (ms since the epoch).
    Stopped(u64),
}

/// The status the broker publishes for us if we vanish (the last will), and that a clean
/// shutdown leaves: offline, why and when, with who and which fleet group, so a fleet summary
/// can count it.
pub fn offline_status(config: &Config, why: Offline) -> String {
    let mut status = serde_json::json!({
        "state": "offline",
        "gateway": config.gateway_id,
        "fleet": { "group": config.group },
    });
    match why {
        Offline::ConnectionLost => {
            status["reason"] = "connection lost (the broker published the last will)".into();
        }
        Offline::Stopped(at_ms) => {
            status["reason"] = "stopped".into();
            status["at_ms"] = at_ms.into();
        }
    }
    status.to_string()
}

/// A request the client could not queue for the event loop.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(String);

/// The connection options of every configured broker, for the configured protocol.
enum Options {
    V4(Vec<MqttOptions>),
    V5(Vec<v5::MqttOptions>),
}

/// The current broker connection as everyone but the event loop sees it: the client to send
/// through, a generation that changes when the connection is renewed, and which broker of the
/// configured list it is for.
pub struct Link {
    options: Options,
    endpoints: Vec<Endpoint>,
    current: RwLock<Current>,
}

struct Current {
    client: Client,
    generation: u64,
    endpoint: usize,
}

impl Link {
    /// A link from the configuration, and the event loop the gateway task will poll. Connects
    /// nothing yet.
    pub fn new(config: &Config) -> Result<(Arc<Link>, Connection), String> {
        let endpoints = config.endpoints()?;
        let tls = match endpoints.iter().any(|e| e.tls) {
            true => Some(tls_config(config)?),
            false => None,
        };
        let options = match config.broker.protocol {
            Protocol::V311 => Options::V4(
                endpoints
                    .iter()
                    .map(|e| options_v4(config, e, tls.clone()))
                    .collect(),
            ),
            Protocol::V5 => Options::V5(
                endpoints
                    .iter()
                    .map(|e| options_v5(config, e, tls.clone()))
                    .collect(),
            ),
        };
        let (client, connection) = connect(&options, 0);
        let current = Current {
            client,
            generation: 0,
            endpoint: 0,
        };
        let link = Link {
            options,
            endpoints,
            current: RwLock::new(current),
        };
        Ok((Arc::new(link), connection))
    }

    /// The client of the current connection, and its generation.
    pub fn client(&self) -> (Client, u64) {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        (current.client.clone(), current.generation)
    }

    /// The broker the current connection is for, as `host:port`.
    pub fn endpoint(&self) -> String {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let e = &self.endpoints[current.endpoint];
        format!("{}:{}", e.host, e.port)
    }

    /// A fresh client and event loop for a new connection; what was queued on the old one is
    /// dropped (its inputs were not acknowledged, so the broker delivers them again).
    pub fn renew(&self) -> Connection {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let (client, connection) = connect(&self.options, current.endpoint);
        current.client = client;
        current.generation += 1;
        connection
    }

    /// Points the next connection attempt of `connection` at the next configured broker, if
    /// there are several. Whatever is queued on the connection stays queued.
    pub fn fail_over(&self, connection: &mut Connection) {
        if self.endpoints.len() < 2 {
            return;
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        current.endpoint = (current.endpoint + 1) % self.endpoints.len();
        match (&mut connection.kind, &self.options) {
            (ConnectionKind::V4(eventloop), Options::V4(options)) => {
                eventloop.mqtt_options = options[current.endpoint].clone();
            }
            (ConnectionKind::V5(eventloop), Options::V5(options)) => {
                eventloop.options = options[current.endpoint].clone();
            }
            // A connection is always made from this link's options.
            _ => {}
        }
    }
}

fn connect(options: &Options, endpoint: usize) -> (Client, Connection) {
    let (client, connection) = match options {
        Options::V4(options) => {
            let (client, mut eventloop) =
                rumqttc::AsyncClient::new(options[endpoint].clone(), REQUEST_CAPACITY);
            eventloop.set_network_options(network_options());
            (
                ClientKind::V4(client),
                ConnectionKind::V4(Box::new(eventloop)),
            )
        }
        Options::V5(options) => {
            let (client, eventloop) =
                v5::AsyncClient::new(options[endpoint].clone(), REQUEST_CAPACITY);
            (
                ClientKind::V5(client),
                ConnectionKind::V5(Box::new(eventloop)),
            )
        }
    };
    let tags = Tags::default();
    (
        Client {
            kind: client,
            tags: tags.clone(),
        },
        Connection {
            kind: connection,
            tags,
            in_flight: HashMap::new(),
        },
    )
}

/// The largest packet MQTT can carry: a remaining length of 268,435,455 bytes and the fixed
/// header.
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// The largest MQTT packets the gateway needs: plugin payloads up to the host's cap and, when
/// managed, commands carrying a whole bundle; it sends outputs and dead letters (the input in
/// base64, cut to a kilobyte when it was over the plugin's limit).
fn needed_packet_sizes(config: &Config) -> (usize, usize) {
    const HEADERS: usize = 64 * 1024;
    let payload = config.caps().max_payload_bytes as usize;
    let incoming = match config.keyring {
        Some(_) => payload.max(config.max_command_bytes()),
        None => payload,
    };
    (incoming + HEADERS, payload.saturating_mul(4) / 3 + HEADERS)
}

/// MQTT 3.1.1 cannot tell the broker a limit, and rumqttc drops the connection on a packet over
/// its own: the broker would send that message again at every reconnect, forever (a poison
/// message). So the gateway reads any packet MQTT allows and refuses what is too large itself
/// (acknowledged, dead-lettered, counted). Bound its memory with the broker's
/// `message_size_limit`.
fn packet_sizes_v4(config: &Config) -> (usize, usize) {
    (MQTT_MAX_PACKET, needed_packet_sizes(config).1)
}

/// MQTT 5 announces the gateway's limit in CONNECT (Maximum Packet Size): the broker must not
/// send a larger packet, and drops it as delivered (MQTT-3.1.2-24, -25).
fn packet_size_v5(config: &Config) -> u32 {
    u32::try_from(needed_packet_sizes(config).0).unwrap_or(u32::MAX)
}

/// TCP_NODELAY: an output or an acknowledgement is one small packet that should leave now, not
/// wait (Nagle) for the broker's ACK of the previous one, which Linux may delay by up to 40 ms.
/// Measured in the gateway benchmark: p50 added latency 12.7 ms without it.
fn network_options() -> rumqttc::NetworkOptions {
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network
}

/// Requests (publishes, acknowledgements) queued for the event loop: the bounded buffer that
/// holds outputs while the broker is away.
const REQUEST_CAPACITY: usize = 1024;

/// MQTT 3.1.1: a persistent session (clean session off), manual acknowledgements, and the
/// offline status as last will.
fn options_v4(config: &Config, endpoint: &Endpoint, tls: Option<Arc<ClientConfig>>) -> MqttOptions {
    let mut options = MqttOptions::new(config.client_id(), &endpoint.host, endpoint.port);
    let (incoming, outgoing) = packet_sizes_v4(config);
    options
        .set_keep_alive(Duration::from_secs(config.broker.keep_alive_s))
        .set_max_packet_size(incoming, outgoing)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_last_will(LastWill::new(
            config.status_topic(),
            offline_status(config, Offline::ConnectionLost),
            QoS::AtLeastOnce,
            true,
        ));
    if let (true, Some(tls)) = (endpoint.tls, tls) {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    if let (Some(user), Some(password)) = (&config.broker.username, &config.broker.password) {
        options.set_credentials(user, password.expose());
    }
    options
}

/// MQTT 5: the same, with a session that never expires (MQTT 5 ends a session at disconnect
/// unless the client asks otherwise).
fn options_v5(
    config: &Config,
    endpoint: &Endpoint,
    tls: Option<Arc<ClientConfig>>,
) -> v5::MqttOptions {
    let mut options = v5::MqttOptions::new(config.client_id(), &endpoint.host, endpoint.port);
    options
        .set_keep_alive(Duration::from_secs(config.broker.keep_alive_s))
        .set_clean_start(false)
        .set_max_packet_size(Some(packet_size_v5(config)))
        .set_session_expiry_interval(Some(u32::MAX))
        .set_network_options(network_options())
        .set_manual_acks(true)
        .set_last_will(v5::mqttbytes::v5::LastWill::new(
            config.status_topic(),
            offline_status(config, Offline::ConnectionLost),
            v5::mqttbytes::QoS::AtLeastOnce,
            true,
            None,
        ));
    if let (true, Some(tls)) = (endpoint.tls, tls) {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    if let (Some(user), Some(password)) = (&config.broker.username, &config.broker.password) {
        options.set_credentials(user, password.expose());
    }
    options
}

/// TLS from the configured files: the CA to trust and, for mutual TLS, the client certificate.
fn tls_config(config: &Config) -> Result<Arc<ClientConfig>, String> {
    let b = &config.broker;
    let client = b
        .client_cert_file
        .as_deref()
        .zip(b.client_key_file.as_deref());
    tls_client_config(b.ca_file.as_deref(), client, "broker.")
}

/// A rustls client configuration (ring provider) trusting the CA certificates in `ca` (PEM)
/// and, for mutual TLS, presenting the certificate chain and key in `client`. Errors name the
/// file, and the setting as `<prefix>ca-file`, `<prefix>client-cert-file` or
/// `<prefix>client-key-file`.
pub fn tls_client_config(
    ca: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
    prefix: &str,
) -> Result<Arc<ClientConfig>, String> {
    let read =
        |key: &str, path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
            CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("`{prefix}{key}` {}: {e}", path.display()))
        };
    let mut roots = RootCertStore::empty();
    if let Some(ca) = ca {
        for cert in read("ca-file", ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("`{prefix}ca-file` {}: {e}", ca.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let tls = match client {
        Some((cert, key)) => {
            let chain = read("client-cert-file", cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("`{prefix}client-key-file` {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(tls))
}

/// What each publish queued on a connection was, in the order the event loop takes them:
/// `Some(key)` for an output of the journal's outbox, `None` for anything else. The event loop
/// reports each publish it sends (`Outgoing::Publish(pkid)`), in that same order, so the packet
/// id of every outbox entry is known, and its PUBACK says it was delivered.
type Tags = Arc<Mutex<VecDeque<Option<u64>>>>;

/// The sending half of one connection, whichever MQTT version it speaks.
#[derive(Clone)]
pub struct Client {
    kind: ClientKind,
    tags: Tags,
}

#[derive(Clone)]
enum ClientKind {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

impl Client {
    /// Queues a publish of outbox entry `key` if there is room; its delivery comes back as
    /// [`Event::Delivered`]. Gives the payload back when the queue is full.
    pub fn try_publish_tracked(
        &self,
        key: u64,
        topic: &str,
        qos: QoS,
        payload: Vec<u8>,
    ) -> Result<(), Option<Vec<u8>>> {
        let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        let sent = match &self.kind {
            ClientKind::V4(c) => match c.try_publish(topic, qos, false, payload) {
                Ok(()) => Ok(()),
                Err(rumqttc::ClientError::TryRequest(rumqttc::Request::Publish(p))) => {
                    Err(Some(p.payload.to_vec()))
                }
                Err(_) => Err(None),
            },
            ClientKind::V5(c) => match c.try_publish(topic, qos_v5(qos), false, payload) {
                Ok(()) => Ok(()),
                Err(v5::ClientError::TryRequest(v5::Request::Publish(p))) => {
                    Err(Some(p.payload.to_vec()))
                }
                Err(_) => Err(None),
            },
        };
        if sent.is_ok() {
            tags.push_back(Some(key));
        }
        sent
    }

    /// Queues a publish if there is room.
    pub fn try_publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), SendError> {
        let payload = payload.into();
        let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        let sent = match &self.kind {
            ClientKind::V4(c) => c.try_publish(topic, qos, retain, payload).map_err(send),
            ClientKind::V5(c) => c
                .try_publish(topic, qos_v5(qos), retain, payload)
                .map_err(send),
        };
        if sent.is_ok() {
            tags.push_back(None);
        }
        sent
    }

    /// Publishes an MQTT 5 response (QoS 1) to `response`, with its correlation data; with
    /// MQTT 3.1.1 a plain publish to the response topic.
    pub fn try_respond(&self, response: &Response, payload: Vec<u8>) -> Result<(), SendError> {
        let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        let sent = match &self.kind {
            ClientKind::V4(c) => c
                .try_publish(response.topic.as_str(), QoS::AtLeastOnce, false, payload)
                .map_err(send),
            ClientKind::V5(c) => {
                let properties = v5::mqttbytes::v5::PublishProperties {
                    correlation_data: response.correlation.clone(),
                    ..Default::default()
                };
                c.try_publish_with_properties(
                    response.topic.as_str(),
                    v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    payload,
                    properties,
                )
                .map_err(send)
            }
        };
        if sent.is_ok() {
            tags.push_back(None);
        }
        sent
    }

    /// Subscribes to `filters` at QoS 1.
    pub fn try_subscribe(&self, filters: &[String]) -> Result<(), SendError> {
        match &self.kind {
            ClientKind::V4(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
                )
                .map_err(send),
            ClientKind::V5(c) => c
                .try_subscribe_many(filters.iter().map(|f| {
                    v5::mqttbytes::v5::Filter::new(f.clone(), v5::mqttbytes::QoS::AtLeastOnce)
                }))
                .map_err(send),
        }
    }

    /// Unsubscribes from `filters`.
    pub fn try_unsubscribe(&self, filters: &[String]) -> Result<(), SendError> {
        for filter in filters {
            match &self.kind {
                ClientKind::V4(c) => c.try_unsubscribe(filter.clone()).map_err(send)?,
                ClientKind::V5(c) => c.try_unsubscribe(filter.clone()).map_err(send)?,
            }
        }
        Ok(())
    }

    /// Asks the event loop to disconnect cleanly (the broker then drops the last will).
    pub fn try_disconnect(&self) -> Result<(), SendError> {
        match &self.kind {
            ClientKind::V4(c) => c.try_disconnect().map_err(send),
            ClientKind::V5(c) => c.try_disconnect().map_err(send),
        }
    }

    /// Acknowledges an inbound message (QoS 1 or 2) if there is room in the request queue.
    /// The gateway calls this in arrival order, once each message is in the journal.
    pub fn try_ack(&self, receipt: &Receipt) -> Result<(), SendError> {
        match (&self.kind, receipt) {
            (ClientKind::V4(c), Receipt::V4(p)) => c.try_ack(p).map_err(send),
            (ClientKind::V5(c), Receipt::V5(p)) => c.try_ack(p).map_err(send),
            _ => Err(SendError("acknowledgement for another protocol".into())),
        }
    }
}

fn send(e: impl std::fmt::Display) -> SendError {
    SendError(e.to_string())
}

fn qos_v5(qos: QoS) -> v5::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// The receiving half of one connection: the rumqttc event loop, polled by the gateway task.
pub struct Connection {
    kind: ConnectionKind,
    tags: Tags,
    /// Outbox entries sent and not yet acknowledged, by packet id.
    in_flight: HashMap<u16, u64>,
}

enum ConnectionKind {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// What the gateway acts on, from either protocol's events.
pub enum Event {
    /// The broker accepted the connection.
    Connected,
    /// A message arrived.
    Message(Box<Delivery>),
    /// The broker has outbox entry `key` (its PUBACK or PUBCOMP arrived; at QoS 0, it was
    /// sent).
    Delivered(u64),
    /// The broker acknowledged one of our UNSUBSCRIBEs.
    Unsubscribed,
    /// Our disconnect request went out.
    DisconnectSent,
    /// Anything else (acknowledgements, pings).
    Other,
}

/// An inbound message.
pub struct Delivery {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// Whether the broker sent it as a retained message.
    pub retain: bool,
    /// Whether the broker says it may have sent it before (MQTT's DUP flag).
    pub dup: bool,
    /// Its packet id (0 at QoS 0).
    pub pkid: u16,
    /// MQTT 5 request/response: where the sender wants the answer, and the correlation data
    /// to give back with it.
    pub response: Option<Response>,
    /// What acknowledging it takes.
    pub receipt: Receipt,
}

/// Where an MQTT 5 request wants its response.
#[derive(Clone, Debug)]
pub struct Response {
    /// The response topic.
    pub topic: String,
    /// The correlation data, returned as given.
    pub correlation: Option<Bytes>,
}

/// What acknowledging a message takes: the publish, without its payload.
#[derive(Clone)]
pub enum Receipt {
    /// MQTT 3.1.1.
    V4(Publish),
    /// MQTT 5.
    V5(v5::mqttbytes::v5::Publish),
}

impl Receipt {
    /// Whether the message needs an acknowledgement at all (QoS 1 or 2).
    pub fn wanted(&self) -> bool {
        match self {
            Receipt::V4(p) => p.qos != QoS::AtMostOnce,
            Receipt::V5(p) => p.qos != v5::mqttbytes::QoS::AtMostOnce,
        }
    }
}

impl Connection {
    /// Drives the connection until the next event; an error means the connection is down (the
    /// next poll tries again).
    pub async fn poll(&mut self) -> Result<Event, String> {
        let event = match &mut self.kind {
            ConnectionKind::V4(eventloop) => match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => Event::Connected,
                Ok(rumqttc::Event::Incoming(Packet::Publish(publish))) => {
                    let payload = publish.payload.clone();
                    let (topic, retain, dup, pkid) = (
                        publish.topic.clone(),
                        publish.retain,
                        publish.dup,
                        publish.pkid,
                    );
                    let receipt = Receipt::V4(Publish {
                        payload: Bytes::new(),
                        ..publish
                    });
                    Event::Message(Box::new(Delivery {
                        topic,
                        payload,
                        retain,
                        dup,
                        pkid,
                        response: None,
                        receipt,
                    }))
                }
                Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => self.sent(pkid),
                Ok(rumqttc::Event::Incoming(Packet::PubAck(ack))) => self.acknowledged(ack.pkid),
                Ok(rumqttc::Event::Incoming(Packet::PubComp(ack))) => self.acknowledged(ack.pkid),
                Ok(rumqttc::Event::Incoming(Packet::UnsubAck(_))) => Event::Unsubscribed,
                Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect)) => Event::DisconnectSent,
                Ok(_) => Event::Other,
                Err(e) => return Err(e.to_string()),
            },
            ConnectionKind::V5(eventloop) => match eventloop.poll().await {
                Ok(v5::Event::Incoming(v5::Incoming::ConnAck(_))) => Event::Connected,
                Ok(v5::Event::Incoming(v5::Incoming::Publish(publish))) => {
                    let payload = publish.payload.clone();
                    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                    let (retain, dup, pkid) = (publish.retain, publish.dup, publish.pkid);
                    let response = publish.properties.as_ref().and_then(|p| {
                        Some(Response {
                            topic: p.response_topic.clone()?,
                            correlation: p.correlation_data.clone(),
                        })
                    });
                    let receipt = Receipt::V5(v5::mqttbytes::v5::Publish {
                        payload: Bytes::new(),
                        ..publish
                    });
                    Event::Message(Box::new(Delivery {
                        topic,
                        payload,
                        retain,
                        dup,
                        pkid,
                        response,
                        receipt,
                    }))
                }
                Ok(v5::Event::Outgoing(Outgoing::Publish(pkid))) => self.sent(pkid),
                Ok(v5::Event::Incoming(v5::Incoming::PubAck(ack))) => self.acknowledged(ack.pkid),
                Ok(v5::Event::Incoming(v5::Incoming::PubComp(ack))) => self.acknowledged(ack.pkid),
                Ok(v5::Event::Incoming(v5::Incoming::UnsubAck(_))) => Event::Unsubscribed,
                Ok(v5::Event::Outgoing(Outgoing::Disconnect)) => Event::DisconnectSent,
                Ok(_) => Event::Other,
                Err(e) => return Err(e.to_string()),
            },
        };
        Ok(event)
    }

    /// The event loop sent the next queued publish, as `pkid` (0 at QoS 0).
    fn sent(&mut self, pkid: u16) -> Event {
        let tag = self
            .tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .flatten();
        match tag {
            Some(key) if pkid == 0 => Event::Delivered(key),
            Some(key) => {
                self.in_flight.insert(pkid, key);
                Event::Other
            }
            None => Event::Other,
        }
    }

    fn acknowledged(&mut self, pkid: u16) -> Event {
        self.in_flight
            .remove(&pkid)
            .map_or(Event::Other, Event::Delivered)
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

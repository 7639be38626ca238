//! The gateway's configuration file, `gateway.toml`: parsed strictly, validated, paths resolved.
//!
//! Every key is documented with its default in `docs/configuration.md`. An unknown key or a bad
//! value is an error naming the file, the line and the key. The broker password is a [`Secret`]
//! that never prints.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgewise_signing::{Limits, namespace};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::runtime::default_caps;
use crate::worker::supervisor::RestartPolicy;

/// The largest message on the gateway's own topics: a bundle chunk
/// (`namespace::BUNDLE_CHUNK_BYTES`, 256 KiB) with room to spare, far above any command,
/// desired state or keyring.
const MAX_CONTROL_MESSAGE_BYTES: usize = 1 << 20;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's account, with line, column and key.
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("{}: `{key}`: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What was expected.
        problem: String,
    },
}

/// A validated gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// This gateway's id: the `<gateway>` in `edgewise/<gateway>/...` topics.
    pub gateway_id: String,
    /// The fleet group it follows: `edgewise/fleet/<group>/desired` (default: none).
    pub group: Option<String>,
    /// The plugin store: installed signed bundles (default `store`, relative to the file).
    #[serde(default = "default_store")]
    pub store: PathBuf,
    /// The keyring of trusted keys (relative to the file); without it no bundle is trusted.
    pub keyring: Option<PathBuf>,
    /// The largest bundle accepted, in MiB (default 64).
    #[serde(default = "default_max_bundle_mib")]
    pub max_bundle_mib: u64,
    /// Development only: a directory whose subdirectories are unsigned plugin directories,
    /// loaded only by `edgewise run --allow-unsigned`.
    pub plugins: Option<PathBuf>,
    /// The MQTT broker connection.
    pub broker: Broker,
    /// The log filter, in `RUST_LOG` syntax (`info`, `warn,edgewise_host::gateway=debug`);
    /// the `EDGEWISE_LOG` environment variable overrides it.
    pub log: Option<String>,
    /// How log lines are written: `text` (default) or `json` (one object a line, for a log
    /// shipper); the `EDGEWISE_LOG_FORMAT` environment variable overrides it.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Per-plugin message queues.
    #[serde(default)]
    pub queue: Queue,
    /// Host-wide caps on every plugin's limits; a key left out keeps the built-in cap.
    #[serde(default)]
    limits: Caps,
    /// Where metrics go.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// How hot swaps watch a new version.
    #[serde(default)]
    pub update: UpdateConfig,
    /// How failing plugins are retried, rested and given up.
    #[serde(default)]
    pub restart: RestartConfig,
    /// The longest a SIGTERM takes to end the process, in seconds (default 10, a container's
    /// grace period): messages not finished by then stay in the journal for the next start.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_s: u64,
    /// MQTT 5 request/response: a verified command's replies also go to its response topic
    /// only if that topic starts with this (default `edgewise/`). A refusal of a command that
    /// did not verify never goes to a response topic.
    #[serde(default = "default_response_prefix")]
    pub response_prefix: String,
    /// The local journal between the broker and the plugins.
    #[serde(default)]
    pub journal: JournalConfig,
    /// How signed documents are judged in time (see `management::trust`).
    #[serde(default)]
    pub trust: TrustConfig,
    /// Setting overrides by plugin name: `[settings.threshold] limit = 90`.
    #[serde(default)]
    pub settings: BTreeMap<String, BTreeMap<String, edgewise_signing::manifest::Setting>>,
}

/// Caps on plugin limits, each optional.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Caps {
    memory_mib: Option<u32>,
    time_per_message_ms: Option<u64>,
    init_time_ms: Option<u64>,
    max_payload_bytes: Option<u32>,
    max_publishes_per_message: Option<u32>,
    host_memory_mib: Option<u32>,
}

/// How to reach the broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Broker {
    /// `mqtt://host[:port]` (port 1883 by default) or `mqtts://host[:port]` for TLS (8883), or
    /// a list of them: the brokers of a cluster, tried in turn when a connection fails.
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    /// The MQTT version: `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: Protocol,
    /// CA certificates (PEM) to trust for `mqtts://`; required with it.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS, with `client-key-file`.
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key_file: Option<PathBuf>,
    /// MQTT client id (default `edgewise-<gateway-id>`). Keep it stable: the broker keeps the
    /// gateway's session, and with it unacknowledged messages, under this id.
    pub client_id: Option<String>,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password, with `username`.
    pub password: Option<Secret>,
    /// Keep-alive interval in seconds (default 30).
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// First reconnect delay in milliseconds (default 250); doubles up to `reconnect-max-ms`.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in milliseconds (default 30000).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
}

/// The MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

/// One broker address, parsed from a `broker.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to speak TLS (`mqtts://`).
    pub tls: bool,
}

impl Endpoint {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`.
    fn parse(url: &str) -> Result<Self, String> {
        let (rest, tls, default_port) =
            match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
                (Some(rest), _) => (rest, false, 1883),
                (_, Some(rest)) => (rest, true, 8883),
                _ => return Err(format!("`{url}` must start with mqtt:// or mqtts://")),
            };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|e| format!("port `{port}` in `{url}`: {e}"))?,
            ),
            None => (rest, default_port),
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

/// `url = "..."` or `url = ["...", "..."]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a broker URL or a list of broker URLs")]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line: time, level, target, fields, message.
    Json,
}

/// Where metrics go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// Address to serve Prometheus scrapes on, e.g. `127.0.0.1:9464` or `localhost:9464`
    /// (default: none).
    #[serde(default, deserialize_with = "listen_address")]
    pub listen: Option<std::net::SocketAddr>,
    /// Seconds between publishes on `edgewise/<gateway>/metrics`; 0 turns them off (default 60).
    #[serde(default = "default_metrics_interval")]
    pub publish_interval_s: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            publish_interval_s: default_metrics_interval(),
        }
    }
}

/// `host:port`: an IP address, or a name resolved once, at start (IPv4 preferred, so that
/// `localhost` means 127.0.0.1 as scrapers expect).
fn listen_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    use std::net::ToSocketAddrs;
    let text = String::deserialize(d)?;
    let expected =
        "expected HOST:PORT, such as `127.0.0.1:9464`, `0.0.0.0:9464` or `localhost:9464`";
    let addrs: Vec<std::net::SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| serde::de::Error::custom(format!("`{text}`: {e}; {expected}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` resolves to nothing; {expected}"))
        })
}

fn default_metrics_interval() -> u64 {
    60
}

/// How a new version is watched after a hot swap.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpdateConfig {
    /// The first messages a new version handles on probation, with the old one kept ready
    /// (default 20).
    #[serde(default = "default_probation")]
    pub probation_messages: u32,
    /// The share of those that may trap; one more and the gateway goes back to the old version
    /// by itself (default 0.1).
    #[serde(default = "default_trap_share")]
    pub max_trap_share: f64,
    /// The longest an update's evaluation gate may run, new and running version together, in
    /// seconds; past it the update is refused (default 120). The manager waits on it, so a
    /// slow or hostile evaluation set cannot hold every other command back.
    #[serde(default = "default_gate_timeout")]
    pub gate_timeout_s: u64,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            probation_messages: default_probation(),
            max_trap_share: default_trap_share(),
            gate_timeout_s: default_gate_timeout(),
        }
    }
}

fn default_probation() -> u32 {
    20
}
fn default_trap_share() -> f64 {
    0.1
}

fn default_gate_timeout() -> u64 {
    120
}

/// How the gateway judges signed documents in time (see `management::trust`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TrustConfig {
    /// How far ahead of the gateway's clock a document's `issued-at-ms` may be, in seconds
    /// (default 300): the issuer's clock may run that much ahead.
    pub max_clock_skew_s: u64,
    /// The longest a command may be valid, in seconds (default 3600).
    pub max_command_lifetime_s: u64,
    /// When the newest desired state applied was issued longer ago than this, in hours, the
    /// gateway reports it `stale` (default 168, a week): an attacker withholding updates shows.
    pub desired_freshness_h: u64,
    /// When the keyring expires within this many days, the gateway reports it `stale`
    /// (default 30).
    pub keyring_warning_days: u64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            max_clock_skew_s: 300,
            max_command_lifetime_s: 3600,
            desired_freshness_h: 168,
            keyring_warning_days: 30,
        }
    }
}

/// The local journal (see `journal` and `flow`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct JournalConfig {
    /// The journal file (default `journal.redb` in the store directory).
    pub path: Option<PathBuf>,
    /// Most it holds, in MiB (default 256): when full, no more messages are taken in.
    pub max_mib: u64,
    /// Longest a message waits for its group commit, in milliseconds (default 5).
    pub commit_interval_ms: u64,
    /// Whether each commit that accepts messages is on disk before they are acknowledged
    /// (default true); off, at least one commit a second is, and a crash loses up to that.
    pub fsync: bool,
    /// Most the outputs waiting for the broker may hold, in MiB (default 64): about an hour of
    /// 100 small outputs a second.
    pub max_outbox_mib: u64,
    /// What happens when the outputs waiting for the broker hold `max-outbox-mib`.
    pub outbox_overflow: OutboxOverflow,
}

/// What the gateway does when the outputs waiting for the broker fill their share of the
/// journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboxOverflow {
    /// Plugins get no more messages until the broker takes outputs: nothing is lost; their
    /// backlogs grow in the journal, and when it is full the broker holds the rest.
    Block,
    /// The oldest output not yet sent is dropped for each new one (counted per plugin in
    /// `edgewise_outputs_dropped_total`, and logged): plugins keep working on fresh data.
    DropOldest,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_mib: 256,
            commit_interval_ms: 5,
            fsync: true,
            max_outbox_mib: 64,
            outbox_overflow: OutboxOverflow::Block,
        }
    }
}

impl JournalConfig {
    /// The cap in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_mib.saturating_mul(1 << 20)
    }

    /// The outbox's cap in bytes.
    pub fn max_outbox_bytes(&self) -> u64 {
        self.max_outbox_mib.saturating_mul(1 << 20)
    }
}

/// How failing plugins are retried, rested and given up (see `supervisor`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RestartConfig {
    /// Times a message whose handling trapped is tried in all (default 3).
    pub attempts: u32,
    /// Failures within the window that still restart at once (default 3).
    pub free_restarts: u32,
    /// The window failures are counted over, in seconds (default 60).
    pub window_s: u64,
    /// The first rest, in milliseconds (default 1000); each further one doubles.
    pub first_backoff_ms: u64,
    /// The longest rest, in milliseconds (default 60000).
    pub max_backoff_ms: u64,
    /// Rests without a quiet window after which a plugin is failed for good (default 8).
    pub max_rests: u32,
}

impl Default for RestartConfig {
    fn default() -> Self {
        let p = RestartPolicy::default();
        Self {
            attempts: p.attempts,
            free_restarts: p.free_restarts,
            window_s: p.window.as_secs(),
            first_backoff_ms: p.first_backoff.as_millis() as u64,
            max_backoff_ms: p.max_backoff.as_millis() as u64,
            max_rests: p.max_rests,
        }
    }
}

impl RestartConfig {
    /// The policy these settings describe.
    pub fn policy(&self) -> RestartPolicy {
        RestartPolicy {
            attempts: self.attempts.max(1),
            free_restarts: self.free_restarts,
            window: Duration::from_secs(self.window_s),
            first_backoff: Duration::from_millis(self.first_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            max_rests: self.max_rests,
        }
    }
}

fn default_shutdown_timeout() -> u64 {
    10
}

fn default_response_prefix() -> String {
    format!("{}/", namespace::ROOT)
}

/// What to do with a message for a plugin whose queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Wait for room: the gateway stops reading from the broker, which holds the messages.
    Block,
    /// Drop the oldest queued message to make room (counted and logged).
    DropOldest,
    /// Drop the new message (counted and logged).
    DropNewest,
}

/// Per-plugin queues.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Queue {
    /// Messages waiting per plugin (default 1000).
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Policy when full (default `block`).
    #[serde(default = "default_overflow")]
    pub overflow: Overflow,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            depth: default_depth(),
            overflow: default_overflow(),
        }
    }
}

fn default_store() -> PathBuf {
    PathBuf::from("store")
}
/// A Pi-class gateway (1-4 GiB) holds an update's bundle several times over while it arrives,
/// is verified and loads (5.5 times its size for an inline update, measured by the review
/// behind issue 11); 64 MiB keeps that within what such a gateway can spare.
fn default_max_bundle_mib() -> u64 {
    64
}
fn default_keep_alive() -> u64 {
    30
}
fn default_reconnect_min() -> u64 {
    250
}
fn default_reconnect_max() -> u64 {
    30_000
}
fn default_depth() -> usize {
    1000
}
fn default_overflow() -> Overflow {
    Overflow::Block
}

/// A string that never appears in logs or debug output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Config {
    /// Reads, validates and resolves `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&Self::read_text(path)?, path)
    }

    /// The text of the config file `path`.
    pub fn read_text(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses and validates text; relative paths are resolved against `origin`'s directory.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |key, problem: String| ConfigError::Invalid {
            path: origin.to_owned(),
            key,
            problem,
        };
        let id_ok = !config.gateway_id.is_empty()
            && config
                .gateway_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !id_ok {
            return Err(invalid(
                "gateway-id",
                "use letters, digits, `-` and `_` only (it is a topic level)".into(),
            ));
        }
        let level_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if config.group.as_deref().is_some_and(|g| !level_ok(g)) {
            return Err(invalid(
                "group",
                "use letters, digits, `-` and `_` only (it is a topic level)".into(),
            ));
        }
        if let Some(filter) = &config.log {
            EnvFilter::try_new(filter).map_err(|e| invalid("log", e.to_string()))?;
        }
        if config.broker.url.is_empty() {
            return Err(invalid("broker.url", "lists no broker".into()));
        }
        let endpoints = config.endpoints().map_err(|p| invalid("broker.url", p))?;
        let tls = endpoints.iter().any(|e| e.tls);
        if tls && config.broker.ca_file.is_none() {
            return Err(invalid(
                "broker.ca-file",
                "is required with mqtts://".into(),
            ));
        }
        if !tls && config.broker.ca_file.is_some() {
            return Err(invalid(
                "broker.ca-file",
                "is only used with mqtts://".into(),
            ));
        }
        if config.broker.client_cert_file.is_some() != config.broker.client_key_file.is_some() {
            return Err(invalid(
                "broker.client-key-file",
                "client-cert-file and client-key-file go together".into(),
            ));
        }
        if config.broker.password.is_some() && config.broker.username.is_none() {
            return Err(invalid(
                "broker.password",
                "given without `broker.username`".into(),
            ));
        }
        if config.broker.keep_alive_s < 5 {
            return Err(invalid("broker.keep-alive-s", "must be at least 5".into()));
        }
        if config.broker.reconnect_min_ms == 0
            || config.broker.reconnect_max_ms < config.broker.reconnect_min_ms
        {
            return Err(invalid(
                "broker.reconnect-max-ms",
                "must be at least reconnect-min-ms, which must be over 0".into(),
            ));
        }
        if config.queue.depth == 0 {
            return Err(invalid("queue.depth", "must be at least 1".into()));
        }
        if config.update.gate_timeout_s == 0 {
            return Err(invalid(
                "update.gate-timeout-s",
                "must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&config.update.max_trap_share) {
            return Err(invalid(
                "update.max-trap-share",
                "must be between 0 and 1".into(),
            ));
        }
        if config.trust.max_command_lifetime_s == 0 {
            return Err(invalid(
                "trust.max-command-lifetime-s",
                "must be at least 1".into(),
            ));
        }
        if config.trust.desired_freshness_h == 0 {
            return Err(invalid(
                "trust.desired-freshness-h",
                "must be at least 1".into(),
            ));
        }
        if config.journal.max_outbox_mib == 0 {
            return Err(invalid(
                "journal.max-outbox-mib",
                "must be at least 1".into(),
            ));
        }
        if config.journal.max_mib == 0 {
            return Err(invalid("journal.max-mib", "must be at least 1".into()));
        }
        if config.max_bundle_mib == 0 {
            return Err(invalid("max-bundle-mib", "must be at least 1".into()));
        }
        let prefix = &config.response_prefix;
        if prefix.len() < 2 || !prefix.ends_with('/') || prefix.contains(['+', '#', '\0']) {
            return Err(invalid(
                "response-prefix",
                format!("`{prefix}` must be a topic prefix ending in `/`, without wildcards"),
            ));
        }
        if let Some(dir) = origin.parent() {
            config.store = dir.join(&config.store);
            for path in [
                &mut config.plugins,
                &mut config.keyring,
                &mut config.journal.path,
            ]
            .into_iter()
            .flatten()
            {
                *path = dir.join(&*path);
            }
            let b = &mut config.broker;
            for file in [
                &mut b.ca_file,
                &mut b.client_cert_file,
                &mut b.client_key_file,
            ]
            .into_iter()
            .flatten()
            {
                *file = dir.join(&*file);
            }
        }
        Ok(config)
    }

    /// The host-wide caps: the built-in ones with this file's `[limits]` applied.
    pub fn caps(&self) -> Limits {
        let d = default_caps();
        let c = &self.limits;
        Limits {
            memory_mib: c.memory_mib.unwrap_or(d.memory_mib),
            time_per_message_ms: c.time_per_message_ms.unwrap_or(d.time_per_message_ms),
            init_time_ms: c.init_time_ms.unwrap_or(d.init_time_ms),
            max_payload_bytes: c.max_payload_bytes.unwrap_or(d.max_payload_bytes),
            max_publishes_per_message: c
                .max_publishes_per_message
                .unwrap_or(d.max_publishes_per_message),
            host_memory_mib: c.host_memory_mib.unwrap_or(d.host_memory_mib),
        }
    }

    /// The brokers to try, in order, from `broker.url`.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, String> {
        self.broker.url.iter().map(|u| Endpoint::parse(u)).collect()
    }

    /// The bundle size cap in bytes.
    pub fn max_bundle_bytes(&self) -> u64 {
        self.max_bundle_mib.saturating_mul(1 << 20)
    }

    /// The largest message taken on the gateway's own topics (commands, desired states,
    /// keyrings, bundle chunks): bundles travel in chunks, so this is independent of the
    /// bundle cap. Anything larger is refused unread.
    pub fn max_command_bytes(&self) -> usize {
        MAX_CONTROL_MESSAGE_BYTES
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> String {
        self.broker
            .client_id
            .clone()
            .unwrap_or_else(|| format!("edgewise-{}", self.gateway_id))
    }

    /// The top-level keys whose values differ between two texts of a config file and that
    /// only a restart applies: every key but `settings`, `log` and `log-format`, which a
    /// reload applies. A text that does not parse has no keys.
    pub fn needs_restart(before: &str, after: &str) -> Vec<String> {
        let table = |text: &str| toml::from_str::<toml::Table>(text).unwrap_or_default();
        let (before, after) = (table(before), table(after));
        let mut keys: Vec<String> = before
            .keys()
            .chain(after.keys())
            .filter(|key| !matches!(key.as_str(), "settings" | "log" | "log-format"))
            .filter(|key| before.get(*key) != after.get(*key))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Setting overrides for `plugin`, as text.
    pub fn settings_for(&self, plugin: &str) -> BTreeMap<String, String> {
        self.settings
            .get(plugin)
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
            .unwrap_or_default()
    }

    /// The reconnect delays.
    pub fn reconnect(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.broker.reconnect_min_ms),
            Duration::from_millis(self.broker.reconnect_max_ms),
        )
    }

    /// The journal file.
    pub fn journal_path(&self) -> PathBuf {
        self.journal
            .path
            .clone()
            .unwrap_or_else(|| self.store.join("journal.redb"))
    }

    /// The retained status topic.
    pub fn status_topic(&self) -> String {
        namespace::status(&self.gateway_id)
    }

    /// The metrics topic.
    pub fn metrics_topic(&self) -> String {
        namespace::metrics(&self.gateway_id)
    }

    /// The topic of this gateway's fleet group's desired state, if it has a group.
    pub fn desired_topic(&self) -> Option<String> {
        self.group.as_ref().map(|g| namespace::desired(g))
    }

    /// The topics keyring updates arrive on: the gateway's own, and its group's.
    pub fn keyring_topics(&self) -> Vec<String> {
        let mut topics = vec![namespace::keyring(&self.gateway_id)];
        topics.extend(self.group.as_ref().map(|g| namespace::group_keyring(g)));
        topics
    }

    /// The topic management commands arrive on.
    pub fn command_topic(&self) -> String {
        namespace::command(&self.gateway_id)
    }

    /// The dead-letter topic for `plugin`.
    pub fn dead_letter_topic(&self, plugin: &str) -> String {
        namespace::dead_letter(&self.gateway_id, plugin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        gateway-id = "line-7"
        plugins = "plugins"

        [broker]
        url = "mqtt://127.0.0.1:1884"
        username = "gw"
        password = "hunter2"

        [limits]
        memory-mib = 32

        [queue]
        depth = 10
        overflow = "drop-oldest"

        [settings.threshold]
        limit = 90
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/edgewise/gateway.toml"))
    }

    #[test]
    fn a_complete_file_parses_with_defaults_and_resolved_paths() {
        let c = parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: 1884,
            tls: false,
        };
        assert_eq!(c.endpoints(), Ok(vec![endpoint]));
        assert_eq!(c.broker.protocol, Protocol::V311);
        assert_eq!(c.log, None);
        assert_eq!(c.client_id(), "edgewise-line-7");
        assert_eq!(
            c.plugins.as_deref(),
            Some(Path::new("/etc/edgewise/plugins"))
        );
        assert_eq!(c.store, Path::new("/etc/edgewise/store"));
        assert_eq!(c.keyring, None);
        assert_eq!(c.max_bundle_bytes(), 64 << 20);
        assert_eq!(c.queue.overflow, Overflow::DropOldest);
        assert_eq!(c.broker.keep_alive_s, 30);
        assert_eq!(c.settings_for("threshold")["limit"], "90");
        assert_eq!(c.status_topic(), "edgewise/line-7/status");
        assert_eq!(c.caps().memory_mib, 32);
        assert_eq!(
            c.caps().time_per_message_ms,
            default_caps().time_per_message_ms
        );
    }

    #[test]
    fn a_reload_names_what_only_a_restart_applies() {
        let before = "gateway-id = \"a\"\nlog = \"info\"\n[broker]\nurl = \"mqtt://x\"\n[settings.t]\nlimit = 1\n";
        let after = "gateway-id = \"a\"\nlog = \"debug\"\n[broker]\nurl = \"mqtt://y\"\n[settings.t]\nlimit = 2\n[queue]\ncapacity = 8\n";
        assert_eq!(Config::needs_restart(before, after), ["broker", "queue"]);
        assert!(Config::needs_restart(before, before).is_empty());
    }

    #[test]
    fn several_brokers_mqtt_5_and_a_log_filter() {
        let text = GOOD
            .replace(
                "url = \"mqtt://127.0.0.1:1884\"",
                "url = [\"mqtt://a\", \"mqtt://b:1999\"]\nprotocol = \"5\"",
            )
            .replace(
                "plugins = \"plugins\"",
                "plugins = \"plugins\"\nlog = \"warn,edgewise_host=debug\"",
            );
        let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let ports: Vec<(String, u16)> = c
            .endpoints()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.host, e.port))
            .collect();
        assert_eq!(ports, [("a".into(), 1883), ("b".into(), 1999)]);
        assert_eq!(c.broker.protocol, Protocol::V5);
        assert_eq!(c.log.as_deref(), Some("warn,edgewise_host=debug"));
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        let with = |format: &str| {
            parse(&GOOD.replace(
                "plugins = \"plugins\"",
                &format!("plugins = \"plugins\"\nlog-format = \"{format}\""),
            ))
            .map(|c| c.log_format)
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            parse(GOOD).map(|c| c.log_format).ok(),
            Some(LogFormat::Text)
        );
        assert_eq!(with("json"), Ok(LogFormat::Json));
        let err = with("xml").err().unwrap_or_default();
        assert!(err.contains("xml") && err.contains("json"), "{err}");
    }

    #[test]
    fn the_packaged_configuration_parses() {
        let c = Config::parse(
            include_str!("../packaging/gateway.toml"),
            Path::new("/etc/edgewise/gateway.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.store, Path::new("/var/lib/edgewise/store"));
        assert_eq!(c.metrics.listen.map(|a| a.port()), Some(9464));
    }

    #[test]
    fn the_password_never_prints() {
        let c = parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(
            c.broker.password.as_ref().map(Secret::expose),
            Some("hunter2")
        );
    }

    #[test]
    fn a_bad_line_names_the_file_the_line_and_the_key() {
        let err = parse(&GOOD.replace("depth = 10", "depht = 10"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("gateway.toml") && err.contains("line 14") && err.contains("depht"),
            "{err}"
        );
        let err = parse(&GOOD.replace("\"drop-oldest\"", "\"drop-some\""))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("drop-some") && err.contains("block"), "{err}");
    }

    #[test]
    fn the_gate_timeout_defaults_to_two_minutes_and_is_never_zero() {
        let c = parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.update.gate_timeout_s, 120);
        let err = parse(&format!("{GOOD}\n[update]\ngate-timeout-s = 0\n"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("update.gate-timeout-s"), "{err}");
    }

    #[test]
    fn the_metrics_address_takes_a_host_name_and_says_the_form_when_wrong() {
        let with = |listen: &str| {
            parse(&format!("{GOOD}\n[metrics]\nlisten = \"{listen}\"\n"))
                .map(|c| c.metrics.listen)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            with("localhost:9464"),
            Ok(Some(
                "127.0.0.1:9464".parse().unwrap_or_else(|e| panic!("{e}"))
            ))
        );
        assert_eq!(
            with("0.0.0.0:9464"),
            Ok(Some(
                "0.0.0.0:9464".parse().unwrap_or_else(|e| panic!("{e}"))
            ))
        );
        let err = with("9464").err().unwrap_or_default();
        assert!(
            err.contains("metrics.listen") || err.contains("listen"),
            "names the key: {err}"
        );
        assert!(err.contains("HOST:PORT, such as `127.0.0.1:9464`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |text: String| {
            parse(&text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(GOOD.replace("mqtt://127.0.0.1:1884", "http://x")).contains("broker.url"));
        assert!(err(GOOD.replace("mqtt://127.0.0.1:1884", "mqtts://x")).contains("broker.ca-file"));
        assert!(
            err(GOOD.replace("mqtt://127.0.0.1:1884", "mqtt://x:99999")).contains("broker.url")
        );
        assert!(err(GOOD.replace("line-7", "line/7")).contains("gateway-id"));
        assert!(err(GOOD.replace("\"mqtt://127.0.0.1:1884\"", "[]")).contains("broker.url"));
        let numeric = err(GOOD.replace("\"mqtt://127.0.0.1:1884\"", "5"));
        assert!(numeric.contains("a broker URL or a list"), "{numeric}");
        let protocol = err(GOOD.replace("username", "protocol = \"4\"\nusername"));
        assert!(
            protocol.contains("protocol") && protocol.contains("3.1.1"),
            "{protocol}"
        );
        let log = err(GOOD.replace(
            "plugins = \"plugins\"",
            "plugins = \"plugins\"\nlog = \"info,[=\"",
        ));
        assert!(log.contains("`log`"), "{log}");
        assert!(err(GOOD.replace("depth = 10", "depth = 0")).contains("queue.depth"));
        assert!(err(GOOD.replace("username = \"gw\"", "")).contains("broker.password"));
    }
}

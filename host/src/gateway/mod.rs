//! `edgewise run`: plugins fed from an MQTT broker, their outputs published back, managed by
//! signed commands.
//!
//! The data path, one room each: the broker connection ([`crate::mqtt`]) → the [`router`]
//! (topic filter → plugins) → the [`flow`] over the [`journal`] (group commit, then
//! acknowledgements in arrival order; a backlog per plugin) → each plugin's thread
//! (`worker::thread`, fed from its [`Slot`]'s mailbox) → its outputs back through the
//! journal's outbox → the broker. Messages on the gateway's own topics (`edgewise/...`) go to
//! [`control`] instead, never to a plugin, and from there to the manager thread
//! ([`crate::management`]), which sends back the [`Change`]s this task applies.
//!
//! [`Gateway`] is the task that owns all of it, written as one method per event: a message
//! from the broker, a plugin thread's report, a change from the manager, the connection going
//! up or down, a timer, and shutdown. Plugin code never runs on this task, and nothing here
//! waits for a plugin; each plugin thread reports its [`Vitals`](crate::worker::vitals), which
//! become its entry in the [`status`].
//!
//! The router's filters, and the gateway's own, are what the broker session is subscribed to;
//! [`subscriptions`] keeps that set, and what is being let go, across connections and runs.
//!
//! A plugin's outputs are recognised when the broker hands them back ([`echoes`]): they are not
//! routed to the plugin that published them, and a chain longer than [`MAX_HOPS`] is a cycle,
//! broken with a dead letter. A hot swap reaches the plugin's thread through its mailbox, in
//! line with the messages: every message before it is handled by the old version, every one
//! after by the new, none lost, none twice. A SIGTERM ends the process within
//! `shutdown-timeout-s`: what is not finished by then stays in the journal.

pub mod control;
pub mod echoes;
pub mod flow;
pub mod incoming;
pub mod journal;
pub mod outbox;
pub mod router;
pub mod slot;
pub mod status;
pub mod subscriptions;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgewise_signing::command::Action;
use edgewise_signing::namespace;
use rumqttc::QoS;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{self, UnboundedReceiver};

use self::control::Control;
use self::echoes::{Echo, Echoes, MAX_HOPS};
use self::flow::{Flow, Policy};
use self::journal::{Journal, JournalError};
use self::router::Router;
pub use self::slot::Options;
use self::slot::{Slot, load_plugin, plugin_sources};
use self::status::Status;
use self::subscriptions::Subscriptions;
use crate::config::Config;
use crate::http::Health;
use crate::management::store::StoreError;
use crate::management::trust::Trust;
use crate::management::{Change, Manager, Outlets, Replier, Request};
use crate::metrics::{GatewayMetrics, Metrics};
use crate::mqtt::{Backoff, Connection, Delivery, Event, Link, Offline, offline_status};
use crate::runtime::cache::Cache;
use crate::runtime::{Compiler, Runtime, RuntimeError};
use crate::service::ServiceManager;
use crate::worker::Worker;
use crate::worker::probation::Probation;
use crate::worker::thread::{Job, Report, Shared, Swap, dead_letter};

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The wasm runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The plugin directory could not be listed.
    #[error("cannot list plugins in {}: {source}", path.display())]
    Plugins {
        /// The directory.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The broker settings are unusable.
    #[error("broker: {0}")]
    Broker(String),
    /// The keyring could not be read.
    #[error(transparent)]
    Keyring(#[from] edgewise_signing::KeyringError),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics address could not be bound.
    #[error("metrics: cannot listen on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
}

/// Hands a re-read `gateway.toml` to a running gateway: its plugin settings (see
/// [`crate::management::settings`]); the rest of the file applies at the next start.
#[derive(Clone)]
pub struct Reloader {
    requests: Sender<Request>,
}

impl Reloader {
    /// Applies `config`'s `[settings.<plugin>]` tables to the installed plugins.
    pub fn reload(&self, config: Config) {
        if self
            .requests
            .send(Request::Reload(Box::new(config)))
            .is_err()
        {
            tracing::warn!(
                "no store: plugin directories take their settings at start; restart to apply"
            );
        }
    }
}

/// How often the plugins' vitals are read into the status document.
const VITALS_PERIOD: Duration = Duration::from_millis(250);

/// How often the store's size is measured for `edgewise_store_bytes`.
const STORE_MEASURE_PERIOD: Duration = Duration::from_secs(30);

/// The gateway task: everything between the broker and the plugins' threads.
pub struct Gateway {
    config: Config,
    link: Arc<Link>,
    /// The event loop; polled by this task only.
    connection: Connection,
    metrics: Arc<Metrics>,
    /// The whole gateway's gauges: connection, reconnects, store size.
    gauges: GatewayMetrics,
    /// When the store's size was last measured.
    store_measured: Option<Instant>,
    /// The walk measuring it, off this task.
    store_measuring: Option<tokio::task::JoinHandle<()>>,
    /// What `/readyz` says.
    health: Arc<Health>,
    /// systemd, when it runs the gateway as a `Type=notify` service.
    service: ServiceManager,
    /// Every plugin started since the gateway started (a removed one stays, marked, so that
    /// the router's indices hold).
    slots: Vec<Slot>,
    status: Status,
    flow: Flow,
    router: Router,
    control: Control,
    echoes: Echoes,
    /// What the broker session is subscribed to, and what it is letting go.
    subscriptions: Subscriptions,
    /// What every plugin thread is given.
    shared: Shared,
    /// To the manager thread.
    requests: Sender<Request>,
    reports: UnboundedReceiver<Report>,
    changes: UnboundedReceiver<Change>,
    backoff: Backoff,
    /// Whether the current connection was accepted by the broker.
    established: bool,
}

impl Gateway {
    /// Opens the journal, loads every plugin and starts its thread, and starts the manager;
    /// connects nothing yet.
    pub async fn start(config: Config, options: Options) -> Result<Gateway, GatewayError> {
        let (link, connection) = Link::new(&config).map_err(GatewayError::Broker)?;
        let (store, sources, refused) = plugin_sources(&config, options)?;
        let runtime = Arc::new(Runtime::new(
            config.caps(),
            (sources.len() as u32 * 2).max(16),
        )?);
        let metrics = Metrics::new();
        let health = Arc::new(Health::new(metrics.gateway().connected));
        if let Some(addr) = config.metrics.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Metrics { addr, source })?;
            tokio::spawn(crate::http::serve(
                listener,
                metrics.clone(),
                health.clone(),
            ));
            tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        }

        // Compiled components of signed bundles; without a store (unsigned development
        // directories) nothing is cached.
        let cache = store
            .as_ref()
            .and_then(|store| match Cache::open(&store.cache_dir()) {
                Ok(cache) => Some(Arc::new(cache)),
                Err(e) => {
                    tracing::warn!("compiled cache unusable, every start compiles: {e}");
                    None
                }
            });
        let compiler = Compiler { runtime, cache };
        let (requests, requests_rx) = std::sync::mpsc::channel();
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let managed = store.is_some();
        let decryption_key = store
            .as_ref()
            .and_then(|store| store.gateway_public_key())
            .map(|key| key.to_string());
        if let Some(store) = store {
            let trust = Trust::open(store.root(), config.trust)?;
            let manager = Manager::new(
                compiler.clone(),
                store,
                trust,
                config.clone(),
                metrics.clone(),
                Outlets {
                    changes: changes_tx,
                    requests: requests.clone(),
                    link: link.clone(),
                },
            );
            std::thread::Builder::new()
                .name("manager".into())
                .spawn(move || manager.serve(requests_rx))
                .map_err(|e| {
                    GatewayError::Broker(format!("cannot start the manager thread: {e}"))
                })?;
        }
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let shared = Shared {
            reports: reports_tx,
            probation: Probation {
                messages: config.update.probation_messages,
                max_trap_share: config.update.max_trap_share,
            },
        };
        let (mut flow, mut backlogs, subscribed) = open_flow(&config, &metrics)?;
        let control = Control::new(&config, managed, requests.clone());
        let mut status = Status::new(
            &config.gateway_id,
            config.group.as_deref(),
            control.instance(),
            refused,
        );
        status.decryption_key = decryption_key;

        let mut slots: Vec<Slot> = Vec::new();
        for (source, stopped) in sources {
            let loaded = load_plugin(&compiler, &config, source, &metrics);
            let (worker, entry) = match loaded {
                Ok(loaded) => loaded,
                Err((name, entry)) => {
                    status.plugins.insert(name, entry);
                    continue;
                }
            };
            let name = worker.plugin().name().to_owned();
            status.plugins.insert(name.clone(), entry);
            match Slot::spawn(worker, &config, &shared, &metrics) {
                Ok(mut slot) => {
                    slot.stopped = stopped;
                    if stopped {
                        status.set_state(&name, "stopped");
                    }
                    let backlog = backlogs.remove(&name).unwrap_or_default();
                    flow.add_lane(name.as_str().into(), slot.lane(), backlog);
                    slots.push(slot);
                }
                Err(error) => {
                    let entry = json!({ "name": name, "state": "failed", "error": error });
                    status.plugins.insert(name, entry);
                }
            }
        }
        for (plugin, backlog) in backlogs {
            if status.plugins.contains_key(&plugin) {
                // Installed but not running (it failed to load): kept for when it does.
                tracing::warn!(
                    plugin,
                    waiting = backlog.len(),
                    "plugin not running: its messages stay in the journal"
                );
                continue;
            }
            match flow.forget(&plugin) {
                Ok(n) => tracing::warn!(
                    plugin,
                    dropped = n,
                    "plugin no longer installed: its messages in the journal are dropped"
                ),
                Err(e) => tracing::error!(plugin, "{e}"),
            }
        }
        let router = route_table(&slots);
        let routed: BTreeSet<String> = router.subscriptions().into_iter().collect();
        log_joined(&router, &routed);
        let own = control.subscriptions().into_iter().collect();
        let subscriptions = Subscriptions::new(subscribed.clone(), routed, own);
        // What this run will subscribe to is part of the session from its first connection on.
        if subscriptions.session() != subscribed
            && let Err(e) = flow.record_subscriptions(&subscriptions.session())
        {
            tracing::warn!("{e}: the next start may not unsubscribe from what this one drops");
        }
        let (first_delay, longest_delay) = config.reconnect();
        tracing::info!(
            gateway = config.gateway_id,
            plugins = slots.len(),
            plugin_code = compiler.runtime.plugin_code(),
            "gateway starting"
        );
        Ok(Gateway {
            link,
            connection,
            gauges: metrics.gateway(),
            service: ServiceManager::from_env(),
            store_measured: None,
            store_measuring: None,
            health,
            metrics,
            slots,
            status,
            flow,
            router,
            control,
            echoes: Echoes::default(),
            subscriptions,
            shared,
            requests,
            reports,
            changes,
            backoff: Backoff::new(first_delay, longest_delay),
            established: false,
            config,
        })
    }

    /// What hands this gateway a re-read `gateway.toml`.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            requests: self.requests.clone(),
        }
    }

    /// Runs until `shutdown` completes, then stops taking messages, lets each plugin finish
    /// what is queued, publishes its outputs and the offline status, and disconnects.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), GatewayError> {
        let period = Duration::from_secs(self.config.metrics.publish_interval_s.max(1));
        let mut metrics_due =
            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut checkup = tokio::time::interval(VITALS_PERIOD);
        checkup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let running = self.slots.iter().filter(|s| !s.removed).count();
        self.service.ready(&format!(
            "{running} plugins; connecting to {}",
            self.link.endpoint()
        ));
        loop {
            tokio::select! {
                // Biased: the group commit waits, below, until the event loop has nothing ready.
                biased;
                () = &mut shutdown => break,
                _ = checkup.tick() => self.on_checkup(),
                _ = metrics_due.tick(), if self.config.metrics.publish_interval_s > 0 => {
                    self.publish_metrics();
                }
                Some(change) = self.changes.recv() => self.on_change(change),
                Some(report) = self.reports.recv() => self.on_report(report),
                event = self.connection.poll() => match event {
                    Ok(event) => self.on_event(event),
                    Err(error) => {
                        let delay = self.on_connection_lost(&error);
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                },
                () = std::future::ready(()), if self.flow.has_batch() => self.commit(),
            }
        }
        self.shut_down().await;
        Ok(())
    }

    // ---- the broker

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => self.on_connected(),
            Event::Message(delivery) => self.on_message(*delivery),
            Event::Delivered(key) => {
                self.flow.delivered(key);
                self.send_due();
            }
            Event::Unsubscribed => {
                if self.subscriptions.unsubscribed() {
                    self.record_subscriptions();
                }
            }
            Event::DisconnectSent | Event::Other => self.send_due(),
        }
    }

    /// The broker accepted the connection: subscribe, say online, send what waits.
    fn on_connected(&mut self) {
        self.backoff.reset();
        self.established = true;
        self.gauges.connected.set(1);
        self.service
            .status(&format!("connected to {}", self.link.endpoint()));
        tracing::info!(broker = self.link.endpoint(), "connected to the broker");
        let (client, generation) = self.link.client();
        let (unsubscribe, subscribe) = self.subscriptions.connected();
        if !unsubscribe.is_empty() {
            tracing::info!(
                filters = ?unsubscribe,
                "unsubscribing from what the broker session holds and nobody wants"
            );
            self.send_unsubscribe(&unsubscribe);
        }
        self.send_subscribe(&subscribe);
        let status_topic = self.config.status_topic();
        if let Err(e) =
            client.try_publish(&status_topic, QoS::AtLeastOnce, true, self.status.render())
        {
            tracing::error!("publishing status: {e}");
        }
        self.flow.reconnected();
        self.flow.send(&client, generation);
    }

    /// A message from the broker: to the control topics, or routed into the journal.
    fn on_message(&mut self, delivery: Delivery) {
        let generation = self.link.client().1;
        if namespace::is_gateway_topic(&delivery.topic) {
            // Never a plugin's: no plugin may subscribe under `edgewise/`.
            let receipt = delivery.receipt.clone();
            self.control.receive(delivery, &self.link);
            self.flow.acknowledge(receipt, generation);
        } else {
            let (targets, hops) = self.route(&delivery);
            self.flow.arrive(delivery, targets, hops, generation);
        }
        if self.flow.batch_due() {
            self.commit();
        }
    }

    /// The connection dropped or could not be made: a fresh one (the broker resumes the
    /// session), or the next broker of the list; returns how long to wait first.
    fn on_connection_lost(&mut self, error: &str) -> Duration {
        let broker = self.link.endpoint();
        self.gauges.connected.set(0);
        self.service
            .status(&format!("broker {broker} lost; reconnecting"));
        self.gauges.reconnects.inc();
        if std::mem::take(&mut self.established) {
            self.connection = self.link.renew();
        } else {
            self.link.fail_over(&mut self.connection);
        }
        let delay = self.backoff.next_delay();
        tracing::warn!(
            broker,
            "broker connection: {error}; retrying in {} ms",
            delay.as_millis()
        );
        delay
    }

    /// Where a message from the broker goes: the plugins its topic is routed to (less the one
    /// whose own output it is), and how many plugins its chain has passed through. A chain
    /// that went round too often is broken here, with a dead letter, and goes nowhere.
    fn route(&self, delivery: &Delivery) -> (Vec<Arc<str>>, u8) {
        let echo = self.echoes.recognise(&delivery.topic, &delivery.payload);
        let hops = echo.as_ref().map_or(0, |e| e.hops);
        let mut targets = self.router.route(&delivery.topic);
        if let Some(echo) = &echo {
            // A plugin's own output goes back to it only if its manifest asks.
            let slots = &self.slots;
            targets.retain(|&ix| slots[ix].loopback || *slots[ix].name != *echo.origin);
            if hops >= MAX_HOPS && !targets.is_empty() {
                self.break_cycle(echo, delivery, &targets);
                return (Vec::new(), hops);
            }
        }
        let names = targets
            .iter()
            .map(|&ix| self.slots[ix].name.as_str().into())
            .collect();
        (names, hops)
    }

    /// Breaks a routing cycle: the message went through too many plugins. It is not
    /// delivered; a dead letter on the last publisher's topic and a log line say where it
    /// went round.
    fn break_cycle(&self, echo: &Echo, delivery: &Delivery, targets: &[usize]) {
        let next: Vec<&str> = targets
            .iter()
            .map(|&ix| self.slots[ix].name.as_str())
            .collect();
        let topic = delivery.topic.as_str();
        tracing::warn!(
            plugin = &*echo.origin,
            topic,
            hops = echo.hops,
            "routing cycle: this message has gone through {} plugins; not delivered to {next:?}",
            echo.hops
        );
        let letter = dead_letter(
            json!({
                "plugin": &*echo.origin,
                "topic": topic,
                "error": format!("routing cycle: the message went through {} plugins (at most {MAX_HOPS}) and was not delivered to {next:?}", echo.hops),
            }),
            &delivery.payload,
            self.config.caps().max_payload_bytes as usize,
        );
        let (client, _) = self.link.client();
        let _ = client.try_publish(
            &self.config.dead_letter_topic(&echo.origin),
            QoS::AtLeastOnce,
            false,
            letter.to_string(),
        );
    }

    // ---- the journal

    /// Makes the group commit; if the journal cannot be written, renews the connection so the
    /// broker sends the unacknowledged messages again.
    fn commit(&mut self) {
        let (client, generation) = self.link.client();
        if let Err(e) = self.flow.commit(&client, generation) {
            tracing::error!(
                "{e}: nothing of that commit was acknowledged; reconnecting for the broker to send it again"
            );
            self.connection = self.link.renew();
        }
        self.health.set_journal_full(self.flow.is_full());
    }

    /// Sends what is due: acknowledgements, then outputs, while the client takes them.
    fn send_due(&mut self) {
        let (client, generation) = self.link.client();
        self.flow.send(&client, generation);
    }

    // ---- the plugins' threads

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Done(dones) => {
                for done in dones {
                    // Recorded before they can be published, so their echo is known when it
                    // comes.
                    let hops = done.hops.saturating_add(1);
                    for (topic, payload) in &done.outputs {
                        self.echoes.record(topic, payload, &done.plugin, hops);
                    }
                    self.flow.done(done);
                }
                if self.flow.batch_due() {
                    self.commit();
                }
            }
            Report::RolledBack {
                plugin,
                reason,
                progress,
            } => {
                let _ = self.requests.send(Request::RolledBack {
                    plugin,
                    reason,
                    progress,
                });
            }
        }
    }

    fn on_checkup(&mut self) {
        self.service.keep_alive();
        if self.status.read_vitals(&self.slots, &self.metrics) {
            self.publish_status();
        }
        self.health.set_failed(self.status.failed_plugins());
        if self
            .store_measured
            .is_none_or(|at| at.elapsed() >= STORE_MEASURE_PERIOD)
            && self
                .store_measuring
                .as_ref()
                .is_none_or(|m| m.is_finished())
        {
            // Walking the store's files is disk I/O (an SD card may take long): never on this
            // task, which every message passes through, and one walk at a time.
            self.store_measured = Some(Instant::now());
            let (root, gauge) = (self.config.store.clone(), self.gauges.store_bytes.clone());
            self.store_measuring = Some(tokio::task::spawn_blocking(move || {
                gauge.set(crate::management::store::bytes_on_disk(&root) as i64);
            }));
        }
    }

    // ---- the manager's changes

    fn on_change(&mut self, change: Change) {
        if !matches!(
            change,
            Change::Subscribe(_) | Change::Unsubscribe(_) | Change::Fleet(_) | Change::Trust(_)
        ) {
            // A change, and `list` and `status` above all, starts from the plugins' state now,
            // not at the last checkup.
            self.status.read_vitals(&self.slots, &self.metrics);
        }
        match change {
            Change::Live {
                worker,
                entry,
                probation,
                reply,
                received,
            } => self.go_live(*worker, entry, probation, reply, received),
            Change::Stopped {
                plugin,
                stopped,
                reply,
            } => self.set_stopped(&plugin, stopped, reply),
            Change::Removed { plugin, reply } => self.remove(&plugin, reply),
            Change::Report { action, reply } => self.answer(&action, &reply),
            Change::Subscribe(topics) => self.subscribe(topics),
            Change::Unsubscribe(topics) => self.unsubscribe(topics),
            Change::Fleet(progress) => {
                self.status.fleet = progress;
                self.publish_status();
            }
            Change::Trust(trust) => {
                if self.status.trust != trust {
                    self.status.trust = trust;
                    self.publish_status();
                }
            }
            Change::Health { plugin, entry } => {
                self.status.merge(&plugin, entry);
                self.publish_status();
            }
            Change::Shadow { plugin, tap } => {
                // A plugin that is gone has dropped its end: the shadow hears it and ends.
                if let Some(ix) = self.live_slot(&plugin) {
                    self.slots[ix].mailbox.push(Job::Shadow(tap));
                }
            }
        }
    }

    /// A new version: swapped in on the plugin's thread between two messages, or, for a
    /// plugin not running, started on a thread of its own.
    fn go_live(
        &mut self,
        worker: Worker,
        entry: serde_json::Value,
        probation: bool,
        reply: Replier,
        received: Instant,
    ) {
        let name = worker.plugin().name().to_owned();
        let filters = worker.plugin().subscribe().to_vec();
        self.status.plugins.insert(name.clone(), entry);
        match self.live_slot(&name) {
            Some(ix) => {
                let swap = Swap {
                    worker,
                    probation: probation.then_some(self.shared.probation),
                    progress: Box::new(reply),
                    received,
                };
                self.slots[ix].filters = filters;
                self.slots[ix].mailbox.push(Job::Swap(Box::new(swap)));
            }
            None => match Slot::spawn(worker, &self.config, &self.shared, &self.metrics) {
                Ok(slot) => {
                    self.flow
                        .add_lane(slot.name.as_str().into(), slot.lane(), Vec::new());
                    self.slots.push(slot);
                    let swap_ms = received.elapsed().as_secs_f64() * 1e3;
                    reply.send("live", json!({ "swap_ms": swap_ms }));
                }
                Err(error) => reply.send("failed", json!({ "reason": error })),
            },
        }
        self.reroute();
        self.publish_status();
    }

    /// An operator stopped or started a plugin: it leaves or rejoins the routing table.
    fn set_stopped(&mut self, plugin: &str, stopped: bool, reply: Replier) {
        let Some(ix) = self.live_slot(plugin) else {
            let reason = format!("`{plugin}` is not running here");
            return reply.send("failed", json!({ "reason": reason }));
        };
        self.slots[ix].stopped = stopped;
        if !stopped {
            self.slots[ix].mailbox.push(Job::Revive);
            self.flow.refill(plugin, false);
        }
        let state = if stopped { "stopped" } else { "running" };
        self.status.set_state(plugin, state);
        reply.send("done", json!({ "plugin": plugin, "plugin-state": state }));
        self.reroute();
        self.publish_status();
    }

    /// A plugin was uninstalled: its thread finishes, its backlog is dropped.
    fn remove(&mut self, plugin: &str, reply: Replier) {
        if let Some(ix) = self.live_slot(plugin) {
            self.slots[ix].removed = true;
            self.slots[ix].mailbox.close();
        }
        match self.flow.remove_lane(plugin) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                plugin,
                dropped = n,
                "removed: its messages in the journal are dropped"
            ),
            Err(e) => tracing::error!(plugin, "{e}"),
        }
        self.status.plugins.remove(plugin);
        reply.send("done", json!({ "removed": plugin }));
        self.reroute();
        self.publish_status();
    }

    /// Answers `list` (the plugins' entries) or `status` (the whole document).
    fn answer(&self, action: &Action, reply: &Replier) {
        match action {
            Action::List => {
                let plugins: Vec<_> = self.status.plugins.values().collect();
                reply.send("done", json!({ "plugins": plugins }));
            }
            _ => {
                let status: serde_json::Value =
                    serde_json::from_str(&self.status.render()).unwrap_or_default();
                reply.send("done", json!({ "status": status }));
            }
        }
    }

    /// The slot of plugin `name`, if it is installed here (stopped or not).
    fn live_slot(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == name && !s.removed)
    }

    /// Rebuilds the routing table after a change; subscribes to the filters it adds, then
    /// unsubscribes from those it no longer needs (removed, or now covered by a broader one).
    /// Messages already in a plugin's backlog stay there; new ones follow the new table.
    fn reroute(&mut self) {
        self.router = route_table(&self.slots);
        let wanted: BTreeSet<String> = self.router.subscriptions().into_iter().collect();
        let (added, stale) = self.subscriptions.route(wanted);
        log_joined(&self.router, &added);
        self.send_subscribe(&added);
        self.send_unsubscribe(&stale);
        self.record_subscriptions();
    }

    /// Keeps what the broker session may be subscribed to in the journal, for the next process.
    fn record_subscriptions(&mut self) {
        if let Err(e) = self
            .flow
            .record_subscriptions(&self.subscriptions.session())
        {
            tracing::warn!("{e}: the next start may not unsubscribe from what this one drops");
        }
    }

    /// Subscribes to gateway topics the manager asks for (bundles it awaits).
    fn subscribe(&mut self, topics: Vec<String>) {
        let added = self.subscriptions.add_own(topics);
        self.send_subscribe(&added);
        self.record_subscriptions();
    }

    /// Unsubscribes from gateway topics the manager no longer needs (a bundle it has).
    fn unsubscribe(&mut self, topics: Vec<String>) {
        let stale = self.subscriptions.remove_own(topics);
        if !stale.is_empty() {
            tracing::info!(filters = ?stale, "unsubscribed: no longer awaited");
            self.send_unsubscribe(&stale);
            self.record_subscriptions();
        }
    }

    fn send_subscribe(&self, filters: &[String]) {
        if !filters.is_empty()
            && let Err(e) = self.link.client().0.try_subscribe(filters)
        {
            tracing::error!("subscribing: {e}");
        }
    }

    /// Sends one UNSUBSCRIBE a filter; what does not fit the request queue goes at the next
    /// connection (the session keeps the filter until the broker acknowledges).
    fn send_unsubscribe(&mut self, filters: &[String]) {
        let (client, _) = self.link.client();
        for filter in filters {
            match client.try_unsubscribe(std::slice::from_ref(filter)) {
                Ok(()) => self.subscriptions.unsubscribe_sent(filter),
                Err(e) => {
                    tracing::warn!(filter, "unsubscribing: {e}; again at the next connection");
                    break;
                }
            }
        }
    }

    // ---- what the gateway publishes of itself

    fn publish_status(&self) {
        let (client, _) = self.link.client();
        let topic = self.config.status_topic();
        let _ = client.try_publish(&topic, QoS::AtLeastOnce, true, self.status.render());
    }

    fn publish_metrics(&self) {
        let (client, _) = self.link.client();
        let topic = self.config.metrics_topic();
        let _ = client.try_publish(&topic, QoS::AtMostOnce, false, self.metrics.render());
    }

    // ---- shutdown

    /// Stops taking messages; gives the plugins three quarters of `shutdown-timeout-s` to
    /// finish what is in their mailboxes and the broker to take their outputs, the rest to say
    /// goodbye. What is not finished stays in the journal, and messages that arrive now are not
    /// acknowledged: the broker delivers them again next time.
    async fn shut_down(mut self) {
        self.service.stopping();
        let grace = Duration::from_secs(self.config.shutdown_timeout_s);
        tracing::info!(
            "shutting down: finishing queued messages for up to {:.1} s",
            grace.as_secs_f64() * 0.75
        );
        for slot in &self.slots {
            slot.mailbox.close();
        }
        let started = tokio::time::Instant::now();
        let give_up = tokio::time::sleep_until(started + grace.mul_f64(0.75));
        let hard_stop = tokio::time::sleep_until(started + grace);
        tokio::pin!(give_up, hard_stop);
        let mut poll_threads = tokio::time::interval(Duration::from_millis(20));
        let mut goodbye_said = false;
        let mut disconnect_sent = false;
        loop {
            tokio::select! {
                Some(report) = self.reports.recv() => {
                    if let Report::Done(dones) = report {
                        dones.into_iter().for_each(|done| self.flow.done(done));
                    }
                }
                _ = poll_threads.tick(), if !goodbye_said => {
                    self.commit();
                    let finished = self
                        .slots
                        .iter()
                        .all(|s| s.thread.as_ref().is_none_or(JoinHandle::is_finished));
                    if finished && !self.established {
                        // No broker to wait for: what it has not got is in the journal, and
                        // its last will says the gateway is offline.
                        let outputs = self.flow.undelivered();
                        tracing::info!(
                            outputs,
                            "shutdown: the broker is unreachable; outputs left in the journal are sent at the next start"
                        );
                        break;
                    }
                    if finished && self.flow.undelivered() == 0 {
                        self.say_goodbye();
                        goodbye_said = true;
                    }
                }
                () = &mut give_up, if !goodbye_said => {
                    self.commit();
                    for (plugin, waiting) in self.flow.unfinished() {
                        tracing::warn!(
                            plugin = &*plugin,
                            waiting,
                            "shutdown: messages left in the journal, handled at the next start"
                        );
                    }
                    if self.flow.undelivered() > 0 {
                        tracing::warn!(
                            outputs = self.flow.undelivered(),
                            "shutdown: outputs left in the journal, sent at the next start"
                        );
                    }
                    self.say_goodbye();
                    goodbye_said = true;
                }
                () = &mut hard_stop => {
                    tracing::warn!("shutdown: gave up waiting for the broker");
                    break;
                }
                event = self.connection.poll() => match event {
                    Ok(Event::Connected) => self.established = true,
                    Ok(Event::DisconnectSent) => disconnect_sent = true,
                    Ok(Event::Delivered(key)) => self.flow.delivered(key),
                    Ok(_) => {}
                    Err(_) if disconnect_sent => break,
                    Err(e) => {
                        tracing::debug!("broker connection while shutting down: {e}");
                        self.established = false;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        self.commit();
        tracing::info!("gateway stopped");
    }

    /// Publishes the offline status and disconnects.
    fn say_goodbye(&self) {
        let (client, _) = self.link.client();
        let _ = client.try_publish(
            &self.config.status_topic(),
            QoS::AtLeastOnce,
            true,
            offline_status(&self.config, Offline::Stopped(crate::clock::now_ms())),
        );
        let _ = client.try_disconnect();
    }
}

/// The message path, the backlogs the journal held (by plugin, for their lanes), and the
/// filters the broker session was last subscribed to.
type Opened = (
    Flow,
    std::collections::BTreeMap<String, Vec<u64>>,
    BTreeSet<String>,
);

/// Opens the journal and the message path over it.
fn open_flow(config: &Config, metrics: &Metrics) -> Result<Opened, GatewayError> {
    let path = config.journal_path();
    let opening = Instant::now();
    let (journal, recovered) =
        Journal::open(&path, config.journal.max_bytes(), config.journal.fsync)?;
    let open_ms = opening.elapsed().as_secs_f64() * 1e3;
    let policy = Policy {
        commit_interval: Duration::from_millis(config.journal.commit_interval_ms),
        depth: config.queue.depth,
        overflow: config.queue.overflow,
        // rumqttc's window: 100 with MQTT 3.1.1; with MQTT 5 the broker's Receive Maximum,
        // often 20 (Mosquitto's default).
        max_unacked: match config.broker.protocol {
            crate::config::Protocol::V311 => 64,
            crate::config::Protocol::V5 => 16,
        },
        max_outbox: config.journal.max_outbox_bytes(),
        outbox_overflow: config.journal.outbox_overflow,
    };
    let flow = Flow::new(journal, recovered.outbox, policy, metrics.journal());
    tracing::info!(
        journal = %path.display(),
        waiting = recovered.backlogs.values().map(Vec::len).sum::<usize>(),
        outputs = flow.undelivered(),
        open_ms = format!("{open_ms:.1}"),
        "journal open"
    );
    Ok((flow, recovered.backlogs, recovered.subscribed))
}

/// Says which subscriptions the gateway made up to cover plugins' overlapping filters.
fn log_joined<'a>(router: &Router, filters: impl IntoIterator<Item = &'a String>) {
    for filter in filters.into_iter().filter(|f| !router.is_asked_for(f)) {
        tracing::info!(
            filter,
            "plugins' filters overlap: subscribed to one filter that covers them, so that a broker copying per subscription sends each message once; what no plugin asked for is dropped"
        );
    }
}

/// The routing table of the slots that take messages.
fn route_table(slots: &[Slot]) -> Router {
    Router::new(
        slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.routed())
            .map(|(ix, s)| (ix, s.filters.as_slice())),
    )
}

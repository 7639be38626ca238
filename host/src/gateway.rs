//! `edgewise run`: plugins fed from an MQTT broker, their outputs published back, managed by
//! signed commands.
//!
//! Owns the MQTT event loop (polled by this task only), one worker thread per plugin, and a
//! bounded [`Mailbox`] in front of each. The data path: broker → [`Router`] → mailbox →
//! worker thread (`Worker::handle`) → outputs published → inbound message acknowledged. A plugin
//! that fails to load is reported in the status and skipped; the others run.
//!
//! Plugins come from the [`Store`] (signed bundles, verified again at this load). Unsigned
//! plugin directories are refused unless the operator passed `--allow-unsigned`, which is
//! logged as a warning at start and shown in the status.
//!
//! Messages on the gateway's own topics (`edgewise/...`) go to [`Control`], never to a plugin:
//! management commands on `edgewise/<gateway>/cmd` are checked ([`CommandLog`]) and carried
//! out by the [`Manager`] thread, which sends back [`Change`]s. A hot swap reaches the
//! plugin's thread (`worker::thread`) through its mailbox, in line with the messages: every
//! message before it is handled by the old version, every one after by the new, none lost,
//! none twice.
//!
//! Containment: plugin code runs only on its plugin's thread, `init` included, so nothing a
//! plugin does can stop this task. Each thread reports its [`Vitals`], which this task turns
//! into the plugin's status (`stuck` when a call overruns, whatever the thread said). A plugin's
//! outputs are recognised when the broker hands them back ([`Echoes`]): they are not routed to
//! the plugin that published them, and a chain longer than [`MAX_HOPS`] is a cycle, broken with
//! a dead letter. A SIGTERM ends the process within `shutdown-timeout-s`: messages not
//! finished by then stay unacknowledged, for the broker to deliver again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgewise_signing::command::Action;
use edgewise_signing::{Keyring, Manifest, TopicFilter, VerifiedBundle, namespace};
use rumqttc::QoS;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::control::Control;
use crate::echoes::MAX_HOPS;
use crate::flow::{Done, Flow, Lane, Policy};
use crate::journal::{Journal, JournalError};
use crate::mailbox::Mailbox;
use crate::management::{Change, CommandLog, Manager};
use crate::metrics::{Metrics, PluginMetrics};
use crate::mqtt::{Backoff, Connection, Delivery, Event, Link, offline_status};
use crate::plugin::{CompiledPlugin, MANIFEST_FILE};
use crate::router::Router;
use crate::runtime::{Runtime, RuntimeError};
use crate::store::{Store, StoreError};
use crate::vitals::Vitals;
use crate::worker::Worker;
use crate::worker::probation::Probation;
use crate::worker::thread::{Job, Shared, Swap, dead_letter, serve};

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

/// How `edgewise run` was asked to behave beyond its config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Development only: load the unsigned plugin directories under `plugins`.
    pub allow_unsigned: bool,
}

/// Where a plugin comes from.
enum Source {
    /// A verified signed bundle from the store, with an operator's setting overrides.
    Bundle(Box<VerifiedBundle>, BTreeMap<String, String>),
    /// An unsigned plugin directory (development).
    Directory(PathBuf),
}

impl Slot {
    /// Its lane on the message path.
    fn lane(&self) -> Lane {
        Lane::new(self.mailbox.clone(), self.metrics.clone())
    }
}

/// A running plugin as the gateway sees it.
struct Slot {
    name: String,
    filters: Vec<TopicFilter>,
    /// Whether its own outputs are routed back to it (the manifest's `loopback`).
    loopback: bool,
    mailbox: Arc<Mailbox<Job>>,
    metrics: PluginMetrics,
    vitals: Arc<Vitals>,
    /// How long one message may keep its thread before the plugin counts as stuck.
    allowance: Duration,
    thread: Option<JoinHandle<()>>,
    stopped: bool,
    removed: bool,
}

/// Runs the gateway until `shutdown` completes, then stops taking messages, lets each plugin
/// finish what is queued, publishes its outputs and the offline status, and disconnects.
pub async fn run(
    config: Config,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let (link, mut eventloop) = Link::new(&config).map_err(GatewayError::Broker)?;
    let (store, sources, refused) = plugin_sources(&config, options)?;
    let runtime = Arc::new(Runtime::new(
        config.caps(),
        (sources.len() as u32 * 2).max(16),
    )?);
    let cache = config.store.join("cache");
    let metrics = Metrics::new();
    if let Some(addr) = config.metrics.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Metrics { addr, source })?;
        tokio::spawn(crate::metrics::serve(listener, metrics.clone()));
        tracing::info!(%addr, "serving metrics");
    }

    let (requests, requests_rx) = std::sync::mpsc::channel();
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let managed = store.is_some();
    if let Some(store) = store {
        let commands = CommandLog::open(
            store.root().join("commands.json"),
            &config.gateway_id,
            &config.response_prefix,
            store.keyring().clone(),
        )?;
        let manager = Manager::new(
            runtime.clone(),
            store,
            commands,
            config.clone(),
            metrics.clone(),
            changes_tx.clone(),
            link.clone(),
        );
        std::thread::Builder::new()
            .name("manager".into())
            .spawn(move || manager.serve(requests_rx))
            .map_err(|e| GatewayError::Broker(format!("cannot start the manager thread: {e}")))?;
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let shared = Shared {
        done: done_tx,
        requests,
        probation: Probation {
            messages: config.update.probation_messages,
            max_trap_share: config.update.max_trap_share,
        },
        echoes: Arc::default(),
    };

    let journal_path = config.journal_path();
    let opening = std::time::Instant::now();
    let (journal, mut recovered) = Journal::open(
        &journal_path,
        config.journal.max_bytes(),
        config.journal.fsync,
    )?;
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
    };
    let outbox = std::mem::take(&mut recovered.outbox);
    let mut flow = Flow::new(journal, outbox, policy);
    tracing::info!(
        journal = %journal_path.display(),
        waiting = recovered.backlogs.values().map(Vec::len).sum::<usize>(),
        outputs = flow.undelivered(),
        open_ms = format!("{open_ms:.1}"),
        "journal open"
    );

    let mut slots: Vec<Slot> = Vec::new();
    let mut health: BTreeMap<String, Value> = refused;
    for (source, stopped) in sources {
        match load_plugin(&runtime, &config, source, &cache, &metrics) {
            Ok((worker, entry)) => {
                let name = worker.plugin().name().to_owned();
                health.insert(name.clone(), entry);
                match spawn_slot(worker, &config, &shared, &metrics) {
                    Ok(mut slot) => {
                        slot.stopped = stopped;
                        slots.push(slot);
                    }
                    Err(error) => {
                        health.insert(
                            name.clone(),
                            json!({ "name": name, "state": "failed", "error": error }),
                        );
                    }
                }
            }
            Err((name, entry)) => {
                health.insert(name, entry);
            }
        }
    }
    for slot in slots.iter().filter(|s| s.stopped) {
        if let Some(entry) = health.get_mut(&slot.name).and_then(Value::as_object_mut) {
            entry.insert("state".into(), json!("stopped"));
        }
    }
    for slot in &slots {
        let backlog = recovered.backlogs.remove(&slot.name).unwrap_or_default();
        flow.add_lane(slot.name.as_str().into(), slot.lane(), backlog);
    }
    for (plugin, backlog) in std::mem::take(&mut recovered.backlogs) {
        if health.contains_key(&plugin) {
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
    let mut router = route_table(&slots);
    let mut control = Control::new(&config, managed, shared.requests.clone());
    let mut subscriptions: BTreeSet<String> = router.subscriptions().into_iter().collect();
    subscriptions.extend(control.subscriptions());
    let instance = control.instance().to_owned();
    let mut fleet = Value::Null;
    let started_at_ms = now_ms();
    let status = |health: &BTreeMap<String, Value>, fleet: &Value| {
        json!({
            "state": "online",
            "gateway": config.gateway_id,
            "pid": std::process::id(),
            "instance": instance,
            "started_at_ms": started_at_ms,
            "plugins": health.values().collect::<Vec<_>>(),
            "fleet": fleet,
        })
        .to_string()
    };
    tracing::info!(
        gateway = config.gateway_id,
        plugins = slots.len(),
        "gateway starting"
    );

    let (first_delay, longest_delay) = config.reconnect();
    let mut backoff = Backoff::new(first_delay, longest_delay);
    let mut established = false;
    let period = Duration::from_secs(config.metrics.publish_interval_s.max(1));
    let mut report = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // How often the plugins' vitals are read into the status.
    let mut checkup = tokio::time::interval(VITALS_PERIOD);
    checkup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            // Biased: the group commit waits, below, until the event loop has nothing ready.
            biased;
            () = &mut shutdown => break,
            _ = checkup.tick() => {
                if read_vitals(&slots, &mut health, &metrics) {
                    let (client, _) = link.client();
                    let _ = client.try_publish(&config.status_topic(), QoS::AtLeastOnce, true, status(&health, &fleet));
                }
            }
            _ = report.tick(), if config.metrics.publish_interval_s > 0 => {
                let (client, _) = link.client();
                let _ = client.try_publish(&config.metrics_topic(), QoS::AtMostOnce, false, metrics.render());
            }
            Some(change) = changes.recv() => {
                let Applied { status_changed, reroute } = match change {
                    Change::Subscribe(topics) => {
                        let (client, _) = link.client();
                        if !topics.is_empty() && let Err(e) = client.try_subscribe(&topics) {
                            tracing::error!("subscribing: {e}");
                        }
                        subscriptions.extend(topics);
                        Applied { status_changed: false, reroute: false }
                    }
                    Change::Fleet(progress) => {
                        fleet = progress;
                        Applied { status_changed: true, reroute: false }
                    }
                    change => {
                        // `list` and `status` answer with the plugins' state now, not at the
                        // last checkup.
                        read_vitals(&slots, &mut health, &metrics);
                        let current = status(&health, &fleet);
                        apply(change, &mut slots, &mut health, &mut flow, &config, &shared, &metrics, &current)
                    }
                };
                if reroute {
                    // Messages already in a plugin's backlog stay there; new ones follow the new table.
                    router = route_table(&slots);
                    let wanted: Vec<String> = router
                        .subscriptions()
                        .into_iter()
                        .filter(|f| !subscriptions.contains(f))
                        .collect();
                    if !wanted.is_empty() {
                        let (client, _) = link.client();
                        if let Err(e) = client.try_subscribe(&wanted) {
                            tracing::error!("subscribing: {e}");
                        }
                        subscriptions.extend(wanted);
                    }
                }
                if status_changed {
                    let (client, _) = link.client();
                    let _ = client.try_publish(&config.status_topic(), QoS::AtLeastOnce, true, status(&health, &fleet));
                }
            }
            Some(done) = done_rx.recv() => {
                flow.done(done);
                if flow.batch_due() {
                    commit(&mut flow, &link, &mut eventloop);
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Connected) => {
                    backoff.reset();
                    established = true;
                    let (client, _) = link.client();
                    tracing::info!(broker = link.endpoint(), "connected to the broker");
                    let filters: Vec<String> = subscriptions.iter().cloned().collect();
                    if !filters.is_empty() && let Err(e) = client.try_subscribe(&filters) {
                        tracing::error!("subscribing: {e}");
                    }
                    if let Err(e) = client.try_publish(&config.status_topic(), QoS::AtLeastOnce, true, status(&health, &fleet)) {
                        tracing::error!("publishing status: {e}");
                    }
                    flow.reconnected();
                    flow.send(&client, link.client().1);
                }
                Ok(Event::Message(delivery)) => {
                    let generation = link.client().1;
                    if namespace::is_gateway_topic(&delivery.topic) {
                        // Never a plugin's: no plugin may subscribe under `edgewise/`.
                        let receipt = delivery.receipt.clone();
                        control.receive(*delivery, &link);
                        flow.acknowledge(receipt, generation);
                    } else {
                        let (targets, hops) = route(&router, &slots, &shared, &config, &link, &delivery);
                        flow.arrive(*delivery, targets, hops, generation);
                    }
                    if flow.batch_due() {
                        commit(&mut flow, &link, &mut eventloop);
                    }
                }
                Ok(Event::Delivered(key)) => {
                    flow.delivered(key);
                    let (client, generation) = link.client();
                    flow.send(&client, generation);
                }
                Ok(_) => {
                    let (client, generation) = link.client();
                    flow.send(&client, generation);
                }
                Err(e) => {
                    let broker = link.endpoint();
                    if std::mem::take(&mut established) {
                        eventloop = link.renew();
                    } else {
                        link.fail_over(&mut eventloop);
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(broker, "broker connection: {e}; retrying in {} ms", delay.as_millis());
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            },
            () = std::future::ready(()), if flow.has_batch() => {
                commit(&mut flow, &link, &mut eventloop);
            }
        }
    }

    let grace = Duration::from_secs(config.shutdown_timeout_s);
    tracing::info!(
        "shutting down: finishing queued messages for up to {:.1} s",
        grace.as_secs_f64() * 0.75
    );
    for slot in &slots {
        slot.mailbox.close();
    }
    // Three quarters of the grace period to finish what is in the mailboxes and send their
    // outputs, the rest to say goodbye. What is not finished stays in the journal, and
    // messages that arrive now are not acknowledged: the broker delivers them again next time.
    let started = tokio::time::Instant::now();
    let give_up = tokio::time::sleep_until(started + grace.mul_f64(0.75));
    let hard_stop = tokio::time::sleep_until(started + grace);
    tokio::pin!(give_up, hard_stop);
    let mut poll_threads = tokio::time::interval(Duration::from_millis(20));
    let mut goodbye_said = false;
    let mut disconnect_sent = false;
    loop {
        tokio::select! {
            Some(done) = done_rx.recv() => flow.done(done),
            _ = poll_threads.tick(), if !goodbye_said => {
                commit(&mut flow, &link, &mut eventloop);
                let finished = slots.iter().all(|s| s.thread.as_ref().is_none_or(JoinHandle::is_finished));
                if finished && flow.undelivered() == 0 {
                    say_goodbye(&link, &config);
                    goodbye_said = true;
                }
            }
            () = &mut give_up, if !goodbye_said => {
                commit(&mut flow, &link, &mut eventloop);
                for (plugin, waiting) in flow.unfinished() {
                    tracing::warn!(
                        plugin = &*plugin,
                        waiting,
                        "shutdown: messages left in the journal, handled at the next start"
                    );
                }
                if flow.undelivered() > 0 {
                    tracing::warn!(
                        outputs = flow.undelivered(),
                        "shutdown: outputs left in the journal, sent at the next start"
                    );
                }
                say_goodbye(&link, &config);
                goodbye_said = true;
            }
            () = &mut hard_stop => {
                tracing::warn!("shutdown: gave up waiting for the broker");
                break;
            }
            event = eventloop.poll() => match event {
                Ok(Event::DisconnectSent) => disconnect_sent = true,
                Ok(Event::Delivered(key)) => flow.delivered(key),
                Ok(_) => {}
                Err(_) if disconnect_sent => break,
                Err(e) => {
                    tracing::debug!("broker connection while shutting down: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
    commit(&mut flow, &link, &mut eventloop);
    tracing::info!("gateway stopped");
    Ok(())
}

/// Makes the group commit; if the journal cannot be written, renews the connection so the
/// broker sends the unacknowledged messages again.
fn commit(flow: &mut Flow, link: &Link, eventloop: &mut Connection) {
    let (client, generation) = link.client();
    if let Err(e) = flow.commit(&client, generation) {
        tracing::error!(
            "{e}: nothing of that commit was acknowledged; reconnecting for the broker to send it again"
        );
        *eventloop = link.renew();
    }
}

/// Where a message from the broker goes: the plugins its topic is routed to (less the one
/// whose own output it is), and how many plugins its chain has passed through. A chain that
/// went round too often is broken here, with a dead letter, and goes nowhere.
fn route(
    router: &Router,
    slots: &[Slot],
    shared: &Shared,
    config: &Config,
    link: &Link,
    delivery: &Delivery,
) -> (Vec<Arc<str>>, u8) {
    let echo = shared.echoes.recognise(&delivery.topic, &delivery.payload);
    let hops = echo.as_ref().map_or(0, |e| e.hops);
    let mut targets = router.route(&delivery.topic);
    if let Some(echo) = &echo {
        // A plugin's own output goes back to it only if its manifest asks.
        targets.retain(|&ix| slots[ix].loopback || *slots[ix].name != *echo.origin);
        if hops >= MAX_HOPS && !targets.is_empty() {
            break_cycle(
                config,
                link,
                echo,
                &delivery.topic,
                &delivery.payload,
                &targets,
                slots,
            );
            return (Vec::new(), hops);
        }
    }
    let names = targets
        .iter()
        .map(|&ix| slots[ix].name.as_str().into())
        .collect();
    (names, hops)
}

/// Publishes the offline status and disconnects.
fn say_goodbye(link: &Link, config: &Config) {
    let (client, _) = link.client();
    let _ = client.try_publish(
        &config.status_topic(),
        QoS::AtLeastOnce,
        true,
        offline_status(config),
    );
    let _ = client.try_disconnect();
}

/// How often the plugins' vitals are read into the status document.
const VITALS_PERIOD: Duration = Duration::from_millis(250);

/// Reads every live plugin's vitals into its status entry and state gauge; true if any entry
/// changed.
fn read_vitals(slots: &[Slot], health: &mut BTreeMap<String, Value>, metrics: &Metrics) -> bool {
    let mut changed = false;
    for slot in slots.iter().filter(|s| !s.removed) {
        let Some(entry) = health.get_mut(&slot.name).and_then(Value::as_object_mut) else {
            continue;
        };
        if slot.stopped {
            metrics.set_state(&slot.name, "stopped");
            continue;
        }
        let mut fields = slot.vitals.render(slot.allowance);
        // The status changes when the state or the reason does, not with every tick of a
        // countdown.
        let same = ["state", "reason"]
            .iter()
            .all(|k| entry.get(*k) == fields.get(*k));
        entry.remove("error");
        entry.remove("resting_ms");
        entry.remove("stuck_ms");
        entry.append(&mut fields);
        if let Some(state) = entry.get("state").and_then(Value::as_str) {
            metrics.set_state(&slot.name, state);
        }
        changed |= !same;
    }
    changed
}

/// Breaks a routing cycle: the message went through too many plugins. It is not delivered;
/// a dead letter on the last publisher's topic and a log line say where it went round.
fn break_cycle(
    config: &Config,
    link: &Link,
    echo: &crate::echoes::Echo,
    topic: &str,
    payload: &[u8],
    targets: &[usize],
    slots: &[Slot],
) {
    let next: Vec<&str> = targets.iter().map(|&ix| slots[ix].name.as_str()).collect();
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
        payload,
        config.caps().max_payload_bytes as usize,
    );
    let (client, _) = link.client();
    let _ = client.try_publish(
        &config.dead_letter_topic(&echo.origin),
        QoS::AtLeastOnce,
        false,
        letter.to_string(),
    );
}

/// The store (when a keyring is configured), what to run from it and with `--allow-unsigned`
/// from plugin directories (each with whether an operator stopped it), and the status of
/// those refused before loading.
type Sources = (Option<Store>, Vec<(Source, bool)>, BTreeMap<String, Value>);

/// What to run: every plugin in the store, and with `--allow-unsigned` the plugin directories.
fn plugin_sources(config: &Config, options: Options) -> Result<Sources, GatewayError> {
    let mut sources = Vec::new();
    let mut refused = BTreeMap::new();
    let mut names = Vec::new();
    let store = match &config.keyring {
        Some(path) => {
            let keyring = Keyring::from_file(path)?;
            let store = Store::open(&config.store, keyring, config.max_bundle_bytes())?;
            for loaded in store.load_all()? {
                match loaded.bundle {
                    Ok(bundle) => {
                        names.push(loaded.plugin);
                        let source = Source::Bundle(Box::new(bundle), loaded.settings);
                        sources.push((source, loaded.stopped));
                    }
                    Err(error) => {
                        tracing::error!(plugin = loaded.plugin, "{error}");
                        let entry = json!({ "name": loaded.plugin, "state": "failed", "error": error.to_string() });
                        refused.insert(loaded.plugin, entry);
                    }
                }
            }
            Some(store)
        }
        None => {
            tracing::warn!(
                "no `keyring` configured: no signed plugin can be trusted, and management commands are off"
            );
            None
        }
    };
    let Some(root) = &config.plugins else {
        return Ok((store, sources, refused));
    };
    let dirs = plugin_dirs(root)?;
    if dirs.is_empty() {
        return Ok((store, sources, refused));
    }
    if !options.allow_unsigned {
        for dir in dirs {
            let name = dir_name(&dir);
            let error = format!(
                "unsigned plugin directory {} refused: pack and install it as a signed bundle, or run with --allow-unsigned for development",
                dir.display()
            );
            tracing::error!(plugin = name, "{error}");
            refused.insert(
                name.clone(),
                json!({ "name": name, "state": "refused", "error": error }),
            );
        }
        return Ok((store, sources, refused));
    }
    tracing::warn!(
        "DEVELOPMENT MODE (--allow-unsigned): running UNSIGNED plugins from {}; never do this in production",
        root.display()
    );
    for dir in dirs {
        if names.contains(&dir_name(&dir)) {
            tracing::warn!(
                plugin = dir_name(&dir),
                "installed as a signed bundle: its unsigned directory is ignored"
            );
            continue;
        }
        sources.push((Source::Directory(dir), false));
    }
    Ok((store, sources, refused))
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What applying a change requires of the loop.
struct Applied {
    status_changed: bool,
    reroute: bool,
}

/// Applies one change prepared by the manager.
// One argument over clippy's seven: the loop's state; it becomes a `Gateway` with one method
// per event when this loop is split (issue 10, item 8).
#[allow(clippy::too_many_arguments)]
fn apply(
    change: Change,
    slots: &mut Vec<Slot>,
    health: &mut BTreeMap<String, Value>,
    flow: &mut Flow,
    config: &Config,
    shared: &Shared,
    metrics: &Arc<Metrics>,
    status: &str,
) -> Applied {
    let live = |slots: &[Slot], name: &str| slots.iter().position(|s| s.name == name && !s.removed);
    match change {
        Change::Live {
            worker,
            entry,
            probation,
            reply,
            received,
        } => {
            let name = worker.plugin().name().to_owned();
            let filters = worker.plugin().subscribe().to_vec();
            health.insert(name.clone(), entry);
            match live(slots, &name) {
                Some(ix) => {
                    let swap = Swap {
                        worker: *worker,
                        probation: probation.then_some(shared.probation),
                        reply,
                        received,
                    };
                    slots[ix].filters = filters;
                    slots[ix].mailbox.push(Job::Swap(Box::new(swap)));
                }
                None => match spawn_slot(*worker, config, shared, metrics) {
                    Ok(slot) => {
                        // A plugin installed again gets what the journal kept for it.
                        flow.add_lane(slot.name.as_str().into(), slot.lane(), Vec::new());
                        slots.push(slot);
                        reply.send(
                            "live",
                            json!({ "swap_ms": received.elapsed().as_secs_f64() * 1e3 }),
                        );
                    }
                    Err(error) => reply.send("failed", json!({ "reason": error })),
                },
            }
            Applied {
                status_changed: true,
                reroute: true,
            }
        }
        Change::Stopped {
            plugin,
            stopped,
            reply,
        } => {
            let Some(ix) = live(slots, &plugin) else {
                reply.send(
                    "failed",
                    json!({ "reason": format!("`{plugin}` is not running here") }),
                );
                return Applied {
                    status_changed: false,
                    reroute: false,
                };
            };
            slots[ix].stopped = stopped;
            if !stopped {
                slots[ix].mailbox.push(Job::Revive);
                flow.refill(&plugin, false);
            }
            let state = if stopped { "stopped" } else { "running" };
            if let Some(entry) = health.get_mut(&plugin).and_then(Value::as_object_mut) {
                entry.insert("state".into(), json!(state));
            }
            reply.send("done", json!({ "plugin": plugin, "plugin-state": state }));
            Applied {
                status_changed: true,
                reroute: true,
            }
        }
        Change::Removed { plugin, reply } => {
            if let Some(ix) = live(slots, &plugin) {
                slots[ix].removed = true;
                slots[ix].mailbox.close();
            }
            match flow.remove_lane(&plugin) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    plugin,
                    dropped = n,
                    "removed: its messages in the journal are dropped"
                ),
                Err(e) => tracing::error!(plugin, "{e}"),
            }
            health.remove(&plugin);
            reply.send("done", json!({ "removed": plugin }));
            Applied {
                status_changed: true,
                reroute: true,
            }
        }
        Change::Report { action, reply } => {
            let plugins: Vec<&Value> = health.values().collect();
            match action {
                Action::List => reply.send("done", json!({ "plugins": plugins })),
                _ => reply.send(
                    "done",
                    json!({ "status": serde_json::from_str::<Value>(status).unwrap_or_default() }),
                ),
            }
            Applied {
                status_changed: false,
                reroute: false,
            }
        }
        Change::Subscribe(_) | Change::Fleet(_) => Applied {
            status_changed: false,
            reroute: false,
        },
        Change::Health { plugin, entry } => {
            if let (Some(old), Value::Object(new)) = (
                health.get_mut(&plugin).and_then(Value::as_object_mut),
                entry,
            ) {
                old.extend(new);
            }
            Applied {
                status_changed: true,
                reroute: false,
            }
        }
    }
}

/// The routing table of the slots that take messages.
fn route_table(slots: &[Slot]) -> Router {
    Router::new(
        slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.stopped && !s.removed)
            .map(|(ix, s)| (ix, s.filters.as_slice())),
    )
}

/// Loads and starts one plugin; the error is its name and status entry.
fn load_plugin(
    runtime: &Runtime,
    config: &Config,
    source: Source,
    cache: &Path,
    metrics: &Arc<Metrics>,
) -> Result<(Worker, Value), (String, Value)> {
    let label = match &source {
        Source::Bundle(bundle, _) => bundle.manifest.name.clone(),
        Source::Directory(dir) => dir_name(dir),
    };
    let failed = |error: String| {
        tracing::error!(plugin = label, "{error}");
        (
            label.clone(),
            json!({ "name": label, "state": "failed", "error": error }),
        )
    };
    let (plugin, origin) = match source {
        Source::Bundle(bundle, overrides) => {
            let mut settings = config.settings_for(&bundle.manifest.name);
            settings.extend(overrides);
            let plugin = CompiledPlugin::from_bundle(runtime, &bundle, &settings, Some(cache))
                .map_err(|e| failed(e.to_string()))?;
            (plugin, crate::management::describe(&bundle))
        }
        Source::Directory(dir) => {
            let manifest =
                Manifest::from_file(&dir.join(MANIFEST_FILE)).map_err(|e| failed(e.to_string()))?;
            let settings = config.settings_for(&manifest.name);
            let plugin = CompiledPlugin::from_manifest(runtime, &dir, manifest, &settings)
                .map_err(|e| failed(e.to_string()))?;
            (plugin, json!({ "signed": false }))
        }
    };
    let name = plugin.name().to_owned();
    let version = plugin.manifest().version.to_string();
    metrics.instrument(&plugin);
    // Started on its own thread (see `serve`): plugin code never runs on the gateway's.
    let worker = Worker::new(Arc::new(plugin), config.restart.policy());
    let mut entry = json!({ "name": name, "version": version, "state": "starting" });
    if let (Some(entry), Value::Object(origin)) = (entry.as_object_mut(), origin) {
        for (k, v) in origin {
            entry.entry(k).or_insert(v);
        }
    }
    tracing::info!(plugin = name, version, "plugin loaded");
    Ok((worker, entry))
}

/// Starts the thread that serves `worker`'s plugin from a new mailbox.
fn spawn_slot(
    worker: Worker,
    config: &Config,
    shared: &Shared,
    metrics: &Arc<Metrics>,
) -> Result<Slot, String> {
    let name = worker.plugin().name().to_owned();
    let filters = worker.plugin().subscribe().to_vec();
    let loopback = worker.plugin().manifest().loopback;
    let allowance = stuck_after(&worker);
    let plugin_metrics = metrics.plugin(&name);
    let vitals = Arc::new(Vitals::default());
    // The backlog is in the journal; the mailbox holds a window of it (see `flow`).
    let mailbox = Arc::new(Mailbox::new());
    let dead_letter_topic = config.dead_letter_topic(&name);
    let thread = {
        let (mailbox, shared, metrics) = (mailbox.clone(), shared.clone(), plugin_metrics.clone());
        let vitals = vitals.clone();
        std::thread::Builder::new()
            .name(format!("plugin-{name}"))
            .spawn(move || {
                serve(
                    worker,
                    &mailbox,
                    &shared,
                    &dead_letter_topic,
                    &metrics,
                    &vitals,
                )
            })
            .map_err(|e| format!("cannot start its thread: {e}"))?
    };
    Ok(Slot {
        name,
        filters,
        loopback,
        mailbox,
        metrics: plugin_metrics,
        vitals,
        allowance,
        thread: Some(thread),
        stopped: false,
        removed: false,
    })
}

/// How long one message may keep a plugin's thread before the plugin counts as stuck: every
/// attempt at its deadline (or at starting an instance), plus a margin for the host's own work.
fn stuck_after(worker: &Worker) -> Duration {
    let limits = worker.plugin().limits();
    let attempt = limits.time_per_message_ms.max(limits.init_time_ms);
    let attempts = u64::from(worker.policy().attempts);
    Duration::from_millis(attempts * attempt) + STUCK_MARGIN
}

/// What the host may add to a plugin's deadlines before the plugin counts as stuck.
const STUCK_MARGIN: Duration = Duration::from_secs(1);

/// The plugin directories under `root`: every subdirectory holding a plugin.toml, by name.
fn plugin_dirs(root: &Path) -> Result<Vec<PathBuf>, GatewayError> {
    let entries = std::fs::read_dir(root).map_err(|source| GatewayError::Plugins {
        path: root.to_owned(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

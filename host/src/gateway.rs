//! `edgewise run`: plugins fed from an MQTT broker, their outputs published back.
//!
//! Owns the MQTT event loop (polled by this task only), one worker thread per plugin, and a
//! bounded [`Mailbox`] in front of each. The data path: broker → [`Router`] → mailbox →
//! worker thread (`Worker::handle`) → outputs published → inbound message acknowledged. A plugin
//! that fails to load is reported in the status and skipped; the others run.
//!
//! Plugins come from the [`Store`] (signed bundles, verified again at this load). Unsigned
//! plugin directories are refused unless the operator passed `--allow-unsigned`, which is
//! logged as a warning at start and shown in the status.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use edgewise_signing::{Keyring, Manifest, TopicFilter, VerifiedBundle};
use rumqttc::QoS;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::runtime::Handle;

use crate::config::Config;
use crate::mailbox::{Mailbox, Pushed};
use crate::metrics::{Metrics, PluginMetrics, observe};
use crate::mqtt::{Ack, Backoff, Event, Link, OFFLINE};
use crate::plugin::{CompiledPlugin, MANIFEST_FILE};
use crate::router::Router;
use crate::runtime::{Runtime, RuntimeError};
use crate::store::{Store, StoreError};
use crate::supervisor::RestartPolicy;
use crate::worker::{Message, Worker};

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The wasm runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
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
    /// A verified signed bundle from the store.
    Bundle(Box<VerifiedBundle>),
    /// An unsigned plugin directory (development).
    Directory(PathBuf),
}

/// One inbound message for one plugin; acknowledged when every holder is done with it.
struct Job {
    msg: Message,
    ack: Arc<Ack>,
}

/// A running plugin as the gateway sees it.
struct Slot {
    name: String,
    filters: Vec<TopicFilter>,
    mailbox: Arc<Mailbox<Job>>,
    metrics: PluginMetrics,
    thread: Option<JoinHandle<()>>,
}

/// Runs the gateway until `shutdown` completes, then stops taking messages, lets each plugin
/// finish what is queued, publishes its outputs and the offline status, and disconnects.
pub async fn run(
    config: Config,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let (link, mut eventloop) = Link::new(&config).map_err(GatewayError::Broker)?;
    let (sources, mut health) = plugin_sources(&config, options)?;
    let runtime = Runtime::new(config.caps(), (sources.len() as u32 * 2).max(4))?;
    let cache = config.store.join("cache");
    let handle = Handle::current();
    let metrics = Metrics::new();
    if let Some(addr) = config.metrics.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Metrics { addr, source })?;
        tokio::spawn(crate::metrics::serve(listener, metrics.clone()));
        tracing::info!(%addr, "serving metrics");
    }

    let mut slots = Vec::new();
    for source in sources {
        match start_plugin(&runtime, &config, source, &cache, &link, &handle, &metrics) {
            Ok((slot, entry)) => {
                slots.push(slot);
                health.push(entry);
            }
            Err(entry) => health.push(entry),
        }
    }
    let router = Router::new(
        slots
            .iter()
            .enumerate()
            .map(|(ix, s)| (ix, s.filters.as_slice())),
    );
    let subscriptions = router.subscriptions();
    let online = json!({
        "state": "online",
        "gateway": config.gateway_id,
        "pid": std::process::id(),
        "started_at_ms": now_ms(),
        "plugins": health,
    })
    .to_string();
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
    // Messages waiting for room in a full mailbox under the `block` policy, in arrival order.
    // The broker's in-flight window bounds them for QoS 1: nothing is acknowledged meanwhile.
    let mut stalled: VecDeque<(usize, Job)> = VecDeque::new();
    tokio::pin!(shutdown);
    loop {
        while let Some((ix, job)) = stalled.pop_front() {
            if let Pushed::Full(job) = slots[ix].mailbox.push(job) {
                stalled.push_front((ix, job));
                break;
            }
        }
        let room = async {
            match stalled.front() {
                Some((ix, _)) => slots[*ix].mailbox.room().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = room => {}
            _ = report.tick(), if config.metrics.publish_interval_s > 0 => {
                let (client, _) = link.client();
                let _ = client.try_publish(&config.metrics_topic(), QoS::AtMostOnce, false, metrics.render());
            }
            event = eventloop.poll() => match event {
                Ok(Event::Connected) => {
                    backoff.reset();
                    established = true;
                    let (client, _) = link.client();
                    tracing::info!(broker = link.endpoint(), "connected to the broker");
                    if !subscriptions.is_empty() && let Err(e) = client.try_subscribe(&subscriptions) {
                        tracing::error!("subscribing: {e}");
                    }
                    if let Err(e) = client.try_publish(&config.status_topic(), QoS::AtLeastOnce, true, online.clone()) {
                        tracing::error!("publishing status: {e}");
                    }
                }
                Ok(Event::Message(delivery)) => {
                    let ack = Arc::new(Ack::new(link.clone(), link.client().1, &delivery, handle.clone()));
                    let msg = Message { topic: delivery.topic.clone(), payload: delivery.payload.to_vec(), received_at_ms: now_ms() };
                    for ix in router.route(&msg.topic) {
                        let job = Job { msg: msg.clone(), ack: ack.clone() };
                        if !stalled.is_empty() {
                            stalled.push_back((ix, job));
                            continue;
                        }
                        let slot = &slots[ix];
                        match slot.mailbox.push(job) {
                            Pushed::Queued => {}
                            Pushed::Full(job) => stalled.push_back((ix, job)),
                            Pushed::Dropped(lost) => {
                                slot.metrics.drops.inc();
                                let dropped = slot.metrics.drops.get();
                                tracing::warn!(plugin = slot.name, topic = lost.msg.topic, dropped, "queue full: message dropped by the overflow policy");
                            }
                        }
                        slot.metrics.queue_depth.set(slot.mailbox.len() as i64);
                    }
                }
                Ok(_) => {}
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
        }
    }

    tracing::info!("shutting down: finishing queued messages");
    for (_, job) in stalled.drain(..) {
        job.ack.cancel();
    }
    for slot in &slots {
        slot.mailbox.close();
    }
    let threads: Vec<JoinHandle<()>> = slots.iter_mut().filter_map(|s| s.thread.take()).collect();
    let mut joined =
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join())));
    // Keep the connection moving while the workers publish their last outputs. Messages that
    // arrive now are not acknowledged: the broker delivers them again next time.
    let mut finished = false;
    let mut disconnect_sent = false;
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut joined, if !finished => {
                finished = true;
                let (client, _) = link.client();
                let _ = client.try_publish(&config.status_topic(), QoS::AtLeastOnce, true, OFFLINE);
                let _ = client.try_disconnect();
            }
            () = &mut deadline => {
                tracing::warn!("gave up waiting for the broker while shutting down");
                break;
            }
            event = eventloop.poll() => match event {
                Ok(Event::DisconnectSent) => disconnect_sent = true,
                Ok(_) => {}
                Err(_) if disconnect_sent => break,
                Err(e) => {
                    tracing::warn!("broker connection while shutting down: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// What to run: every plugin in the store, and with `--allow-unsigned` the plugin
/// directories; the second list is the status of those refused before loading.
fn plugin_sources(
    config: &Config,
    options: Options,
) -> Result<(Vec<Source>, Vec<serde_json::Value>), GatewayError> {
    let mut sources = Vec::new();
    let mut refused = Vec::new();
    let mut names = Vec::new();
    match &config.keyring {
        Some(path) => {
            let keyring = Keyring::from_file(path)?;
            let store = Store::open(&config.store, keyring, config.max_bundle_bytes())?;
            for loaded in store.load_all()? {
                match loaded.bundle {
                    Ok(bundle) => {
                        names.push(loaded.plugin);
                        sources.push(Source::Bundle(Box::new(bundle)));
                    }
                    Err(error) => {
                        tracing::error!(plugin = loaded.plugin, "{error}");
                        refused.push(json!({ "name": loaded.plugin, "state": "failed", "error": error.to_string() }));
                    }
                }
            }
        }
        None => tracing::warn!("no `keyring` configured: no signed plugin can be trusted"),
    }
    let Some(root) = &config.plugins else {
        return Ok((sources, refused));
    };
    let dirs = plugin_dirs(root)?;
    if dirs.is_empty() {
        return Ok((sources, refused));
    }
    if !options.allow_unsigned {
        for dir in dirs {
            let name = dir_name(&dir);
            let error = format!(
                "unsigned plugin directory {} refused: pack and install it as a signed bundle, or run with --allow-unsigned for development",
                dir.display()
            );
            tracing::error!(plugin = name, "{error}");
            refused.push(json!({ "name": name, "state": "refused", "error": error }));
        }
        return Ok((sources, refused));
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
        sources.push(Source::Directory(dir));
    }
    Ok((sources, refused))
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Loads, starts and spawns the worker thread of one plugin; the error is its status.
fn start_plugin(
    runtime: &Runtime,
    config: &Config,
    source: Source,
    cache: &Path,
    link: &Arc<Link>,
    handle: &Handle,
    metrics: &Metrics,
) -> Result<(Slot, serde_json::Value), serde_json::Value> {
    let label = match &source {
        Source::Bundle(bundle) => bundle.manifest.name.clone(),
        Source::Directory(dir) => dir_name(dir),
    };
    let failed = |error: String| {
        tracing::error!(plugin = label, "{error}");
        json!({ "name": label, "state": "failed", "error": error })
    };
    let (plugin, origin) = match source {
        Source::Bundle(bundle) => {
            let settings = config.settings_for(&bundle.manifest.name);
            let plugin = CompiledPlugin::from_bundle(runtime, &bundle, &settings, Some(cache))
                .map_err(|e| failed(e.to_string()))?;
            let origin = json!({
                "signed": true,
                "release": bundle.manifest.release,
                "digest": bundle.digest,
            });
            (plugin, origin)
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
    let filters = plugin.subscribe().to_vec();
    let plugin_metrics = metrics.plugin(&name);
    let inference = plugin_metrics.inference.clone();
    plugin.observe_inference(Box::new(move |elapsed| observe(&inference, elapsed)));
    let mut worker = Worker::new(Arc::new(plugin), RestartPolicy::default());
    let mut entry = match worker.start() {
        Ok(()) => json!({ "name": name, "version": version, "state": "running" }),
        Err(failure) => {
            tracing::error!(plugin = name, "{failure}");
            json!({ "name": name, "version": version, "state": "failing", "error": failure.to_string() })
        }
    };
    if let (Some(entry), serde_json::Value::Object(origin)) = (entry.as_object_mut(), origin) {
        entry.extend(origin);
    }
    let mailbox = Arc::new(Mailbox::new(config.queue.depth, config.queue.overflow));
    let dead_letter = config.dead_letter_topic(&name);
    let thread = {
        let (mailbox, link, handle, metrics) = (
            mailbox.clone(),
            link.clone(),
            handle.clone(),
            plugin_metrics.clone(),
        );
        std::thread::Builder::new()
            .name(format!("plugin-{name}"))
            .spawn(move || serve(worker, &mailbox, &link, &handle, &dead_letter, &metrics))
            .map_err(|e| failed(format!("cannot start its thread: {e}")))?
    };
    tracing::info!(plugin = name, version, "plugin loaded");
    let slot = Slot {
        name,
        filters,
        mailbox,
        metrics: plugin_metrics,
        thread: Some(thread),
    };
    Ok((slot, entry))
}

/// A plugin's worker thread: handle each queued message, publish its outputs (or its failure
/// to the dead-letter topic), then let go of it, which acknowledges it.
fn serve(
    mut worker: Worker,
    mailbox: &Mailbox<Job>,
    link: &Link,
    handle: &Handle,
    dead_letter: &str,
    metrics: &PluginMetrics,
) {
    let qos = match worker.plugin().manifest().publish_qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    while let Some(job) = mailbox.pop() {
        metrics.queue_depth.set(mailbox.len() as i64);
        metrics.messages_in.inc();
        let (traps, started) = (worker.stats().traps, Instant::now());
        let handled = worker.handle(&job.msg);
        observe(&metrics.handling, started.elapsed());
        metrics.traps.inc_by(worker.stats().traps - traps);
        let outputs = match handled {
            Ok(published) => {
                metrics.messages_out.inc_by(published.len() as u64);
                published
                    .into_iter()
                    .map(|p| (p.topic, p.payload))
                    .collect()
            }
            Err(error) => {
                metrics.failures.inc();
                let letter = json!({
                    "plugin": error.plugin,
                    "topic": error.topic,
                    "error": error.failure.to_string(),
                    "payload_base64": BASE64.encode(&job.msg.payload),
                });
                vec![(dead_letter.to_owned(), letter.to_string().into_bytes())]
            }
        };
        for (topic, payload) in outputs {
            // Waits for room in the client's request queue: a bounded buffer while the broker is away.
            let (client, _) = link.client();
            if let Err(e) = client.publish_blocking(handle, &topic, qos, payload) {
                tracing::error!(
                    plugin = worker.plugin().name(),
                    topic,
                    "output not sent: {e}"
                );
                job.ack.cancel();
            }
        }
    }
}

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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

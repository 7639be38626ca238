//! Management over MQTT: signed commands in, progress replies out, plugin changes prepared.
//!
//! The gateway task hands each message on `edgewise/<gateway>/cmd` to the [`Manager`]'s
//! thread, where [`CommandLog::check`] refuses, with a reason, what is retained, malformed,
//! forged, for another gateway, or out of its time and sequence bounds ([`trust`]). It records
//! the new sequence number on disk before anything is done, and answers a QoS 1 duplicate of
//! an accepted command with its last reply instead of running it twice.
//!
//! The [`Manager`] then carries out accepted commands, one at a time: it verifies and
//! stages bundles in the store, compiles the new version and runs its `init` (all before
//! anything changes for the running plugin), and sends the gateway task a [`Change`] to apply.
//! The swap itself happens on the plugin's thread, between two messages (see `gateway`).
//! Replies go to `edgewise/<gateway>/reply/<id>`: `received`, `verified`, `evaluating`,
//! `evaluated`, `shadowing`, `ready`, `promoted`, `abandoned`, `staged`, `live`,
//! `rolled-back`, `failed`, `refused`, or `done` with the result.
//!
//! An update whose bundle ships an evaluation set passes its [`gate`] first: the new version
//! runs over the set on this thread, beside the running version, before anything is installed.
//!
//! An update may instead run the new version in [`shadow`] beside the live one, and promote it
//! only if the two agree.
//!
//! Rooms: [`commands`] checks each command, [`reply`] answers it, [`fleet`] applies desired
//! states ([`canary`] holds one back until its canaries are healthy), [`gate`] evaluates an
//! update, [`shadow`] runs trials, [`keyring`] applies keyring updates and reports how fresh
//! the gateway's trust is, [`settings`] changes plugin settings (`ctl config`, a reload of
//! `gateway.toml`), [`trust`] keeps the counters and the clock documents are judged by,
//! [`store`] keeps the bundles.

pub mod canary;
pub mod commands;
pub mod fleet;
pub mod gate;
pub mod keyring;
pub mod reply;
pub mod settings;
pub mod shadow;
pub mod store;
pub mod trust;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use edgewise_signing::command::{Action, Command};
use edgewise_signing::{VerifiedBundle, namespace};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use self::commands::{Checked, CommandLog};
use self::fleet::Rollout;
pub use self::reply::Replier;
use self::store::{Admit, Store};
use self::trust::Trust;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mqtt::{Link, Response};
use crate::runtime::Compiler;
use crate::runtime::plugin::CompiledPlugin;
use crate::worker::Worker;
use crate::worker::thread::Progress;

/// What the gateway task must change, prepared by the manager.
pub enum Change {
    /// Put `worker` live for its plugin: swap it in between two messages (or start the
    /// plugin if it is new), with the old version kept during probation.
    Live {
        /// The new version, instantiated, its `init` done.
        worker: Box<Worker>,
        /// Its status entry.
        entry: Value,
        /// Whether it runs on probation (a new version) or not (new settings, a rollback).
        probation: bool,
        /// Where to say it is live.
        reply: Replier,
        /// When the command was received, for the swap time.
        received: Instant,
    },
    /// Stop or start routing messages to a plugin.
    Stopped {
        /// The plugin.
        plugin: String,
        /// Stopped or started.
        stopped: bool,
        /// Where to answer.
        reply: Replier,
    },
    /// A plugin was uninstalled.
    Removed {
        /// The plugin.
        plugin: String,
        /// Where to answer.
        reply: Replier,
    },
    /// Answer `list` or `status` from the gateway's view.
    Report {
        /// Which.
        action: Action,
        /// Where to answer.
        reply: Replier,
    },
    /// Subscribe to more topics (the chunks of bundles a command or a roll-out awaits).
    Subscribe(Vec<String>),
    /// Unsubscribe from topics subscribed to by [`Change::Subscribe`] (a bundle no longer
    /// awaited), so that a reconnection does not have the broker send its chunks again.
    Unsubscribe(Vec<String>),
    /// The fleet roll-out's progress, for the status.
    Fleet(Value),
    /// The state of the gateway's trust (keyring, freshness), for the status.
    Trust(Value),
    /// Start (`Some`) or end (`None`) a shadow beside a plugin: its thread offers every message
    /// it handles to the tap.
    Shadow {
        /// The live plugin.
        plugin: String,
        /// The shadow's end of the tap.
        tap: Option<crate::worker::shadow::ShadowTap>,
    },
    /// A plugin's status entry changed.
    Health {
        /// The plugin.
        plugin: String,
        /// Its entry.
        entry: Value,
    },
}

/// What the manager thread is asked to do.
pub enum Request {
    /// A message arrived on the command topic: check it (signature, replay, expiry), then run
    /// it. Checked here, not on the task that polls MQTT: verifying a command that carries a
    /// bundle hashes all of it, and recording its sequence number is an fsync.
    Command {
        /// The message as received.
        payload: bytes::Bytes,
        /// Whether the broker sent it as a retained message.
        retained: bool,
        /// An MQTT 5 request's response topic.
        response: Option<Response>,
        /// When it arrived.
        received: Instant,
    },
    /// A fleet's desired state arrived (signed, maybe retained).
    Desired(Vec<u8>),
    /// A keyring update arrived (signed, maybe retained).
    Keyring(Vec<u8>),
    /// A root-signed reset of the counters arrived.
    TrustReset(Vec<u8>),
    /// The chunks of bundle `digest` are all in, assembled in this file (in the store's
    /// `incoming/`, not yet verified); or a chunk of it was refused, for this reason.
    Bundle(String, Result<PathBuf, String>),
    /// `gateway.toml` was read again (SIGHUP): apply its plugin settings.
    Reload(Box<Config>),
    /// Another gateway's status arrived (a canary of a roll-out this gateway waits on).
    PeerStatus {
        /// Its gateway id.
        gateway: String,
        /// The status document.
        payload: Vec<u8>,
    },
    /// A plugin's shadow said how it is doing, or how its trial was judged.
    Shadow {
        /// The plugin.
        plugin: String,
        /// What it said.
        said: crate::worker::shadow::Said,
    },
    /// A plugin thread went back to the old version during probation; make the store agree.
    RolledBack {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
        /// The update's progress.
        progress: Box<dyn Progress>,
    },
}

/// An update that did not come to a [`Change`].
pub(crate) enum Unfinished {
    /// It failed for this reason, not yet told.
    Failed(String),
    /// Its outcome, said here, was already answered (it changed nothing, was rolled back, or
    /// its gate refused it).
    Answered(String),
}

/// Carries out commands that change plugins, on its own thread.
pub struct Manager {
    compiler: Compiler,
    store: Store,
    commands: CommandLog,
    trust: Trust,
    config: Config,
    metrics: Arc<Metrics>,
    changes: UnboundedSender<Change>,
    link: Arc<Link>,
    /// A fleet roll-out waiting for bundles.
    rollout: Option<Rollout>,
    /// Commands waiting for their bundle's chunks under `edgewise/bundles/<digest>`, by digest.
    awaiting: BTreeMap<String, Awaited>,
    /// The last keyring update refused, for the status.
    keyring_refusal: Option<String>,
    /// What went stale, as last reported.
    stale: Vec<String>,
    /// When the manager started (for the freshness of a group's first desired state).
    started_at_ms: u64,
    /// A roll-out held back until its canaries are healthy.
    following: Option<canary::Following>,
    /// Shadow trials running, by plugin.
    shadows: BTreeMap<String, shadow::Running>,
    /// Its own request channel, for the shadows' threads to report on.
    requests: std::sync::mpsc::Sender<Request>,
}

/// A command waiting for its bundle.
struct Awaited {
    reply: Replier,
    received: Instant,
    /// `Some(plugin)` for a rollback to that bundle of `plugin`; `None` for an update.
    rollback_of: Option<String>,
    /// For an update in shadow: its trial.
    shadow: Option<edgewise_signing::command::ShadowTrial>,
}

/// How often the manager looks at how fresh its trust is, when nothing else happens.
const TRUST_CHECK: Duration = Duration::from_secs(60);

/// Where the manager's work goes.
pub struct Outlets {
    /// Changes, to the gateway task.
    pub changes: UnboundedSender<Change>,
    /// The manager's own requests: threads it starts (shadows) report there.
    pub requests: std::sync::mpsc::Sender<Request>,
    /// The broker, for replies.
    pub link: Arc<Link>,
}

impl Manager {
    /// A manager over `store`, checking commands against its keyring and `trust`.
    pub fn new(
        compiler: Compiler,
        store: Store,
        trust: Trust,
        config: Config,
        metrics: Arc<Metrics>,
        outlets: Outlets,
    ) -> Self {
        let Outlets {
            changes,
            requests,
            link,
        } = outlets;
        let commands = CommandLog::new(&config.gateway_id, &config.response_prefix);
        Self {
            compiler,
            store,
            commands,
            trust,
            config,
            metrics,
            changes,
            link,
            rollout: None,
            awaiting: BTreeMap::new(),
            keyring_refusal: None,
            stale: Vec::new(),
            started_at_ms: crate::clock::now_ms(),
            following: None,
            shadows: BTreeMap::new(),
            requests,
        }
    }

    /// Runs requests until the channel closes; reports how fresh its trust is at start, after
    /// each request, and every minute.
    pub fn serve(mut self, requests: std::sync::mpsc::Receiver<Request>) {
        self.report_trust();
        loop {
            // A roll-out baking wakes the manager when its bake time is over.
            let wait = self
                .bake_left()
                .map_or(TRUST_CHECK, |left| left.min(TRUST_CHECK));
            let request = match requests.recv_timeout(wait) {
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => {
                    self.follow_if_baked();
                    self.report_trust();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match request {
                Request::Command {
                    payload,
                    retained,
                    response,
                    received,
                } => {
                    if let Checked::Accepted(command, reply) = self.commands.check(
                        &payload,
                        retained,
                        response,
                        &self.link,
                        self.store.keyring(),
                        &mut self.trust,
                    ) {
                        self.run(*command, reply, received);
                    }
                }
                Request::Desired(payload) => self.desired(&payload),
                Request::Keyring(payload) => self.keyring_update(&payload),
                Request::TrustReset(payload) => self.trust_reset(&payload),
                Request::Bundle(digest, assembled) => self.bundle(&digest, assembled),
                Request::Reload(config) => self.reload(&config),
                Request::Shadow { plugin, said } => self.shadow_said(plugin, said),
                Request::PeerStatus { gateway, payload } => self.peer_status(&gateway, &payload),
                Request::RolledBack {
                    plugin,
                    reason,
                    progress: reply,
                } => {
                    let outcome = self.store.rollback(&plugin);
                    let mut entry = match &outcome {
                        Ok(bundle) => describe(bundle),
                        Err(_) => json!({ "name": plugin }),
                    };
                    if let Some(e) = entry.as_object_mut() {
                        e.insert("state".into(), json!("running"));
                        e.insert("rolled-back".into(), json!(reason));
                    }
                    let _ = self.changes.send(Change::Health { plugin, entry });
                    match outcome {
                        Ok(bundle) => reply.send(
                            "rolled-back",
                            json!({ "reason": reason, "running": describe(&bundle) }),
                        ),
                        Err(e) => reply.send(
                            "rolled-back",
                            json!({ "reason": reason, "store": e.to_string() }),
                        ),
                    }
                }
            }
            self.report_trust();
        }
    }

    fn run(&mut self, command: Command, reply: Replier, received: Instant) {
        let change = match command.action {
            Action::Update { digest, shadow } => {
                self.await_bundle(digest, &reply, received, None, shadow)
            }
            Action::Promote { plugin } => return self.promote(&plugin, Some(&reply), None),
            Action::Abandon { plugin } => {
                return self.abandon(&plugin, Some(&reply), "an operator abandoned it");
            }
            Action::Config {
                plugin,
                settings,
                unset,
            } => self.configure(&plugin, &settings, &unset, &reply, received),
            Action::Rollback {
                plugin,
                digest: Some(digest),
            } => match self.store.bundle(&digest) {
                // Rolled back to before: the bundle is in the store still.
                Some(bundle) => {
                    let admit = Admit::Rollback(&digest);
                    match self.update(bundle, None, &reply, received, admit, Some(&plugin)) {
                        Ok(change) => Ok(change),
                        Err(Unfinished::Answered(_)) => return,
                        Err(Unfinished::Failed(reason)) => Err(reason),
                    }
                }
                None => self.await_bundle(digest, &reply, received, Some(plugin), None),
            },
            Action::Rollback {
                plugin,
                digest: None,
            } => self
                .store
                .rollback(&plugin)
                .map_err(|e| e.to_string())
                .and_then(|bundle| {
                    let overrides = self
                        .store
                        .active(&plugin)
                        .map(|(_, s)| s)
                        .unwrap_or_default();
                    self.prepare(&bundle, &overrides, false, &reply, received)
                }),
            Action::Stop { plugin } => self.set_stopped(plugin, true, &reply),
            Action::Start { plugin } => self.set_stopped(plugin, false, &reply),
            Action::Remove { plugin } => self
                .store
                .remove(&plugin)
                .map(|()| Change::Removed {
                    plugin,
                    reply: reply.clone(),
                })
                .map_err(|e| e.to_string()),
            action @ (Action::List | Action::Status) => Ok(Change::Report {
                action,
                reply: reply.clone(),
            }),
        };
        match change {
            Ok(change) => {
                let _ = self.changes.send(change);
            }
            Err(reason) => reply.send("failed", json!({ "reason": reason })),
        }
    }

    /// Records an operator's stop or start, and the change for the gateway to route by.
    fn set_stopped(
        &self,
        plugin: String,
        stopped: bool,
        reply: &Replier,
    ) -> Result<Change, String> {
        self.store
            .set_stopped(&plugin, stopped)
            .map(|()| Change::Stopped {
                plugin,
                stopped,
                reply: reply.clone(),
            })
            .map_err(|e| e.to_string())
    }

    /// Subscribes to the bundle `digest` a command waits for (an update, or a rollback of
    /// plugin `rollback_of`), and remembers the command. A digest is a topic level here: one
    /// that is not 64 lowercase hex digits (`#`, `+`) would subscribe to other bundles.
    fn await_bundle(
        &mut self,
        digest: String,
        reply: &Replier,
        received: Instant,
        rollback_of: Option<String>,
        shadow: Option<edgewise_signing::command::ShadowTrial>,
    ) -> Result<Change, String> {
        if !edgewise_signing::bundle::is_sha256_hex(&digest) {
            return Err(format!(
                "`{digest}` is not a bundle digest (64 lowercase hex digits)"
            ));
        }
        let topic = namespace::bundle_chunks(&digest);
        reply.send("waiting", json!({ "for": topic }));
        let awaited = Awaited {
            reply: reply.clone(),
            received,
            rollback_of,
            shadow,
        };
        self.awaiting.insert(digest, awaited);
        Ok(Change::Subscribe(vec![topic]))
    }

    /// Verifies the bundle `digest` assembled in the file `staged`, where it lies.
    pub(crate) fn verify_staged(
        &self,
        digest: &str,
        staged: &std::path::Path,
    ) -> Result<VerifiedBundle, String> {
        let mut verified = edgewise_signing::Bundle::verify_file(
            staged,
            self.config.max_bundle_bytes(),
            self.store.keyring(),
        )
        .map_err(|e| e.to_string())?;
        self.store
            .unlock(&mut verified)
            .map_err(|e| e.to_string())?;
        if verified.digest != digest {
            return Err(format!(
                "the bundle under {} is {}, not that bundle",
                namespace::bundle_chunks(digest),
                verified.digest
            ));
        }
        Ok(verified)
    }

    /// Installs and prepares `verified` (read from the file `staged`, which moves into the
    /// store; `None` for a bundle the store holds already); for a rollback, only if it is a
    /// bundle of `plugin`.
    pub(crate) fn update(
        &self,
        verified: VerifiedBundle,
        staged: Option<&std::path::Path>,
        reply: &Replier,
        received: Instant,
        admit: Admit,
        plugin: Option<&str>,
    ) -> Result<Change, Unfinished> {
        self.trust
            .keyring_in_force(self.store.keyring())
            .map_err(Unfinished::Failed)?;
        if plugin.is_some_and(|p| p != verified.manifest.name) {
            return Err(Unfinished::Failed(format!(
                "bundle {} is a bundle of `{}`, not of `{}`",
                verified.digest,
                verified.manifest.name,
                plugin.unwrap_or_default()
            )));
        }
        reply.send("verified", json!({ "bundle": describe(&verified) }));
        let plugin = verified.manifest.name.clone();
        let fresh = self
            .store
            .admission(&verified, admit)
            .map_err(|e| Unfinished::Failed(e.to_string()))?;
        if !fresh {
            // The same bundle again changes nothing, and that is not an error.
            let note = format!(
                "{} is already the running bundle of `{plugin}`",
                verified.digest
            );
            reply.send("done", json!({ "unchanged": note.clone() }));
            return Err(Unfinished::Answered(note));
        }
        let overrides = self
            .store
            .active(&plugin)
            .map(|(_, s)| s)
            .unwrap_or_default();
        let compiled = self.compile(&verified, &overrides).map(Arc::new);
        // Only an update is gated: a rollback an operator asks for goes back to what ran.
        let evaluation = match (&compiled, admit) {
            (Ok(candidate), Admit::Update) => self.gate(&verified, candidate, reply)?,
            _ => None,
        };
        let installed = match staged {
            Some(staged) => self.store.install_staged(&verified, staged, admit),
            None => self.store.reinstate(&verified, admit),
        };
        installed.map_err(|e| Unfinished::Failed(e.to_string()))?;
        reply.send("staged", json!({ "digest": verified.digest }));
        if let Some(evaluation) = &evaluation
            && let Err(e) = self.store.save_evaluation(&verified.digest, evaluation)
        {
            tracing::warn!("the gate's results of {plugin} are not kept: {e}");
        }
        let started = compiled
            .and_then(|plugin| self.start(plugin, &verified, evaluation, true, reply, received));
        match started {
            Ok(change) => Ok(change),
            Err(reason) => {
                // The new version never ran: the store goes back to what runs.
                let back = self
                    .store
                    .rollback(&plugin)
                    .map(|b| describe(&b))
                    .or_else(|_| {
                        // A first install has nothing to go back to: it is uninstalled.
                        self.store
                            .remove(&plugin)
                            .map(|()| json!("nothing: it was new, and is uninstalled"))
                    });
                reply.send(
                    "rolled-back",
                    json!({ "reason": reason, "running": back.unwrap_or_else(|e| json!(e.to_string())) }),
                );
                Err(Unfinished::Answered(format!(
                    "the new version was rolled back: {reason}"
                )))
            }
        }
    }

    /// Compiles `bundle` and runs its `init`, with its settings: the gateway file's, then
    /// `overrides`.
    fn prepare(
        &self,
        bundle: &VerifiedBundle,
        overrides: &BTreeMap<String, String>,
        probation: bool,
        reply: &Replier,
        received: Instant,
    ) -> Result<Change, String> {
        let plugin = Arc::new(self.compile(bundle, overrides)?);
        let evaluation = self.store.evaluation(&bundle.digest);
        self.start(plugin, bundle, evaluation, probation, reply, received)
    }

    /// `bundle` compiled (or taken from the cache) with its settings: the gateway file's,
    /// then `overrides`.
    fn compile(
        &self,
        bundle: &VerifiedBundle,
        overrides: &BTreeMap<String, String>,
    ) -> Result<CompiledPlugin, String> {
        let mut settings = self.config.settings_for(&bundle.manifest.name);
        settings.extend(overrides.clone());
        self.compiler
            .plugin(bundle, &settings)
            .map_err(|e| e.to_string())
    }

    /// Starts `plugin`, compiled from `bundle`, and runs its `init`: the change that puts it
    /// live, its gate's results (if it was gated) in its status entry.
    fn start(
        &self,
        plugin: Arc<CompiledPlugin>,
        bundle: &VerifiedBundle,
        evaluation: Option<Value>,
        probation: bool,
        reply: &Replier,
        received: Instant,
    ) -> Result<Change, String> {
        self.metrics.instrument(&plugin);
        let mut worker = Worker::new(plugin, self.config.restart.policy());
        worker
            .start()
            .map_err(|e| format!("the new version failed to start: {e}"))?;
        let mut entry = describe(bundle);
        if let Some(e) = entry.as_object_mut() {
            e.insert("state".into(), json!("running"));
            if let Some(evaluation) = evaluation {
                e.insert("evaluation".into(), evaluation);
            }
        }
        Ok(Change::Live {
            worker: Box::new(worker),
            entry,
            probation,
            reply: reply.clone(),
            received,
        })
    }
}

/// A bundle as status entries and replies show it.
pub fn describe(bundle: &VerifiedBundle) -> Value {
    json!({
        "name": bundle.manifest.name,
        "version": bundle.manifest.version.to_string(),
        "release": bundle.manifest.release,
        "digest": bundle.digest,
        "signed": true,
    })
}

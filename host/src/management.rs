//! Management over MQTT: signed commands in, progress replies out, plugin changes prepared.
//!
//! The gateway task hands each message on `edgewise/<gateway>/cmd` to the [`Manager`]'s
//! thread, where [`CommandLog::check`] refuses, with a reason, what is retained, malformed,
//! forged, for another gateway, expired, or carries a sequence number already used. It records
//! the new high-water mark on disk before anything is done, and answers a QoS 1 duplicate of an
//! accepted command with its last reply instead of running it twice.
//!
//! The [`Manager`] then carries out accepted commands, one at a time: it verifies and
//! stages bundles in the store, compiles the new version and runs its `init` (all before
//! anything changes for the running plugin), and sends the gateway task a [`Change`] to apply.
//! The swap itself happens on the plugin's thread, between two messages (see `gateway`).
//! Replies go to `edgewise/<gateway>/reply/<id>`: `received`, `verified`, `staged`, `live`,
//! `rolled-back`, `failed`, `refused`, or `done` with the result.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use edgewise_signing::command::{Action, Command, DesiredState, safe_id, untrusted_id};
use edgewise_signing::{Keyring, VerifiedBundle, namespace};
use rumqttc::QoS;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::mqtt::{Link, Response};
use crate::plugin::CompiledPlugin;
use crate::runtime::Runtime;
use crate::store::{Installed, Store, StoreError, write_atomically};
use crate::worker::Worker;

/// How many accepted commands are remembered for answering duplicates.
const REMEMBERED: usize = 64;

/// Replies to one command, and remembers the last one for duplicates.
#[derive(Clone)]
pub struct Replier {
    link: Arc<Link>,
    topic: String,
    id: String,
    last: Arc<Mutex<Value>>,
    /// An MQTT 5 request's response topic and correlation data, answered as well.
    response: Option<Response>,
}

impl Replier {
    /// Replies as `id` on `edgewise/<gateway>/reply/<id>`.
    pub fn new(link: Arc<Link>, gateway: &str, id: &str) -> Self {
        Self {
            link,
            topic: namespace::reply(gateway, id),
            id: id.to_owned(),
            last: Arc::default(),
            response: None,
        }
    }

    /// Publishes `{"id", "state", ...extra}` on the command's reply topic, at QoS 1.
    pub fn send(&self, state: &str, extra: Value) {
        let mut reply = json!({ "id": self.id, "state": state });
        if let (Some(reply), Value::Object(extra)) = (reply.as_object_mut(), extra) {
            reply.extend(extra);
        }
        tracing::info!(command = self.id, state, "{reply}");
        let (client, _) = self.link.client();
        if let Err(e) = client.try_publish(&self.topic, QoS::AtLeastOnce, false, reply.to_string())
        {
            tracing::warn!(command = self.id, "reply not sent: {e}");
        }
        if let Some(response) = &self.response
            && let Err(e) = client.try_respond(response, reply.to_string().into_bytes())
        {
            tracing::warn!(command = self.id, "response not sent: {e}");
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = reply;
    }

    /// The command's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// What the gateway knows of the commands it was sent.
pub struct CommandLog {
    path: PathBuf,
    gateway: String,
    response_prefix: String,
    keyring: Keyring,
    high_water: u64,
    recent: VecDeque<(String, u64, Arc<Mutex<Value>>)>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LogFile {
    high_water: u64,
}

/// The outcome of checking one command message.
pub enum Checked {
    /// Refused, and answered: nothing else to do.
    Refused,
    /// A duplicate of an accepted command, answered again.
    Duplicate,
    /// Accepted: run it.
    Accepted(Box<Command>, Replier),
}

impl CommandLog {
    /// The log kept in `path` (created on first use), for gateway `gateway`, answering MQTT 5
    /// requests of verified commands on response topics under `response_prefix`.
    pub fn open(
        path: PathBuf,
        gateway: &str,
        response_prefix: &str,
        keyring: Keyring,
    ) -> Result<Self, StoreError> {
        let high_water = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<LogFile>(&bytes)
                    .map_err(|e| StoreError::State {
                        path: path.clone(),
                        problem: e.to_string(),
                    })?
                    .high_water
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Ok(Self {
            path,
            gateway: gateway.to_owned(),
            response_prefix: response_prefix.to_owned(),
            keyring,
            high_water,
            recent: VecDeque::new(),
        })
    }

    /// Checks one message from the command topic, answering refusals and duplicates itself.
    ///
    /// Until the command's signature is verified, anyone may have sent it: its refusal goes
    /// only to the gateway's own reply topic, never to a response topic the sender named
    /// (which would make the gateway publish wherever an attacker likes, under its identity).
    pub fn check(
        &mut self,
        payload: &[u8],
        retained: bool,
        response: Option<Response>,
        link: &Arc<Link>,
        now_ms: u64,
    ) -> Checked {
        let replier = |id: &str, response: Option<Response>| Replier {
            link: link.clone(),
            topic: namespace::reply(&self.gateway, id),
            id: id.to_owned(),
            last: Arc::default(),
            response,
        };
        let refuse_unverified = |id: Option<String>, reason: String| {
            let id = id.unwrap_or_else(|| "invalid".into());
            tracing::warn!(command = id, "command refused: {reason}");
            replier(&id, None).send("refused", json!({ "reason": reason }));
            Checked::Refused
        };
        if retained {
            return refuse_unverified(
                untrusted_id(payload),
                "a retained message is not a command (it would run again at every connection)"
                    .into(),
            );
        }
        let (command, signers) = match Command::verify(payload, &self.keyring) {
            Ok(verified) => verified,
            Err(e) => return refuse_unverified(untrusted_id(payload), e.to_string()),
        };
        if !safe_id(&command.id) {
            return refuse_unverified(
                None,
                "the command id must be 1-64 of letters, digits, `-`, `_` and `.`".into(),
            );
        }
        // The response topic is not signed: even a verified command's may be an attacker's
        // (a replay with the property changed), so it is honoured only under the prefix.
        let response = response.filter(|r| {
            let allowed = r.topic.starts_with(&self.response_prefix)
                && edgewise_signing::topic::validate_name(&r.topic).is_ok();
            if !allowed {
                tracing::warn!(
                    command = command.id,
                    topic = r.topic,
                    "response topic ignored: not under `response-prefix` {}",
                    self.response_prefix
                );
            }
            allowed
        });
        let refuse = |id: Option<String>, reason: String| {
            let id = id.unwrap_or_else(|| "invalid".into());
            tracing::warn!(command = id, "command refused: {reason}");
            replier(&id, response.clone()).send("refused", json!({ "reason": reason }));
            Checked::Refused
        };
        let id = Some(command.id.clone());
        if command.gateway != self.gateway {
            return refuse(
                id,
                format!(
                    "the command is for gateway `{}`, this is `{}`",
                    command.gateway, self.gateway
                ),
            );
        }
        if let Some((_, _, last)) = self
            .recent
            .iter()
            .find(|(i, seq, _)| *i == command.id && *seq == command.seq)
        {
            let last = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
            tracing::info!(
                command = command.id,
                "duplicate of an accepted command: answered again"
            );
            let (client, _) = link.client();
            let topic = namespace::reply(&self.gateway, &command.id);
            let _ = client.try_publish(&topic, QoS::AtLeastOnce, false, last.to_string());
            if let Some(response) = &response {
                let _ = client.try_respond(response, last.to_string().into_bytes());
            }
            return Checked::Duplicate;
        }
        if now_ms > command.expires_at_ms {
            return refuse(
                id,
                format!(
                    "expired at {} ms, {} ms ago",
                    command.expires_at_ms,
                    now_ms - command.expires_at_ms
                ),
            );
        }
        if command.seq <= self.high_water {
            return refuse(
                id,
                format!(
                    "sequence number {} already used (this gateway is at {})",
                    command.seq, self.high_water
                ),
            );
        }
        // The high-water mark is on disk before anything is done.
        let file = serde_json::to_vec(&LogFile {
            high_water: command.seq,
        })
        .unwrap_or_default();
        if let Err(e) = write_atomically(&self.path, &file) {
            return refuse(id, format!("cannot record the sequence number: {e}"));
        }
        self.high_water = command.seq;
        let reply = replier(&command.id, response);
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent
            .push_back((command.id.clone(), command.seq, reply.last.clone()));
        reply.send(
            "received",
            json!({ "action": command.action.name(), "signed-by": signers }),
        );
        Checked::Accepted(Box::new(command), reply)
    }
}

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
    /// Subscribe to more topics (bundles a fleet roll-out needs).
    Subscribe(Vec<String>),
    /// The fleet roll-out's progress, for the status.
    Fleet(Value),
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
    /// A bundle arrived on `edgewise/bundles/<digest>`.
    Bundle(String, Vec<u8>),
    /// A plugin thread went back to the old version during probation; make the store agree.
    RolledBack {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
        /// The update's replies.
        reply: Replier,
    },
}

/// Carries out commands that change plugins, on its own thread.
pub struct Manager {
    runtime: Arc<Runtime>,
    store: Store,
    commands: CommandLog,
    config: Config,
    metrics: Arc<Metrics>,
    changes: UnboundedSender<Change>,
    link: Arc<Link>,
    /// A fleet roll-out waiting for bundles.
    rollout: Option<Rollout>,
    /// `update` commands waiting for their bundle, by digest.
    awaiting: BTreeMap<String, (Replier, Instant)>,
}

/// A desired state being applied: the bundles still awaited.
struct Rollout {
    desired: DesiredState,
    waiting: BTreeSet<String>,
    reply: Replier,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct FleetFile {
    applied_version: u64,
}

impl Manager {
    /// A manager over `store`, checking commands with `commands`.
    pub fn new(
        runtime: Arc<Runtime>,
        store: Store,
        commands: CommandLog,
        config: Config,
        metrics: Arc<Metrics>,
        changes: UnboundedSender<Change>,
        link: Arc<Link>,
    ) -> Self {
        Self {
            runtime,
            store,
            commands,
            config,
            metrics,
            changes,
            link,
            rollout: None,
            awaiting: BTreeMap::new(),
        }
    }

    /// Runs requests until the channel closes.
    pub fn serve(mut self, requests: std::sync::mpsc::Receiver<Request>) {
        for request in requests {
            match request {
                Request::Command {
                    payload,
                    retained,
                    response,
                    received,
                } => {
                    let now_ms = crate::gateway::now_ms();
                    if let Checked::Accepted(command, reply) = self
                        .commands
                        .check(&payload, retained, response, &self.link, now_ms)
                    {
                        self.run(*command, reply, received);
                    }
                }
                Request::Desired(payload) => self.desired(&payload),
                Request::Bundle(digest, bytes) => self.bundle(&digest, &bytes),
                Request::RolledBack {
                    plugin,
                    reason,
                    reply,
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
        }
    }

    fn run(&mut self, command: Command, reply: Replier, received: Instant) {
        let change = match command.action {
            Action::Update {
                bundle_base64: Some(bundle_base64),
                digest: None,
            } => match self.update(&bundle_base64, &reply, received) {
                Ok(change) => Ok(change),
                // Already answered: rolled back.
                Err(None) => return,
                Err(Some(reason)) => Err(reason),
            },
            Action::Update {
                bundle_base64: None,
                digest: Some(digest),
            } => {
                let topic = namespace::bundle(&digest);
                reply.send("waiting", json!({ "for": topic }));
                self.awaiting.insert(digest, (reply.clone(), received));
                Ok(Change::Subscribe(vec![topic]))
            }
            Action::Update { .. } => Err("give one of `bundle-base64` and `digest`".into()),
            Action::Config { plugin, settings } => {
                let settings = settings
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect();
                self.store
                    .set_settings(&plugin, &settings)
                    .map_err(|e| e.to_string())
                    .and_then(|_| self.store.active(&plugin).map_err(|e| e.to_string()))
                    .and_then(|(bundle, overrides)| {
                        self.prepare(&bundle, &overrides, false, &reply, received)
                    })
            }
            Action::Rollback { plugin } => self
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

    /// Verify, stage, compile, `init`: everything before the switch. `Err(None)` means the
    /// outcome was already answered.
    fn update(
        &self,
        bundle_base64: &str,
        reply: &Replier,
        received: Instant,
    ) -> Result<Change, Option<String>> {
        let bytes = BASE64
            .decode(bundle_base64)
            .map_err(|e| format!("bundle-base64: {e}"))?;
        self.update_bytes(&bytes, reply, received)
    }

    fn update_bytes(
        &self,
        bytes: &[u8],
        reply: &Replier,
        received: Instant,
    ) -> Result<Change, Option<String>> {
        let origin = PathBuf::from(format!("command {}", reply.id()));
        let verified = edgewise_signing::Bundle::verify(bytes, self.store.keyring(), &origin)
            .map_err(|e| e.to_string())?;
        reply.send("verified", json!({ "bundle": describe(&verified) }));
        let plugin = verified.manifest.name.clone();
        match self
            .store
            .install(bytes, &origin)
            .map_err(|e| e.to_string())?
        {
            Installed::AlreadyActive { .. } => {
                // The same bundle again changes nothing, and that is not an error.
                let note = format!(
                    "{} is already the running bundle of `{plugin}`",
                    verified.digest
                );
                reply.send("done", json!({ "unchanged": note }));
                return Err(None);
            }
            Installed::Activated { .. } => {
                reply.send("staged", json!({ "digest": verified.digest }))
            }
        }
        let overrides = self
            .store
            .active(&plugin)
            .map(|(_, s)| s)
            .unwrap_or_default();
        match self.prepare(&verified, &overrides, true, reply, received) {
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
                Err(None)
            }
        }
    }

    /// Compiles `bundle` with its settings and runs its `init`.
    fn prepare(
        &self,
        bundle: &VerifiedBundle,
        overrides: &BTreeMap<String, String>,
        probation: bool,
        reply: &Replier,
        received: Instant,
    ) -> Result<Change, String> {
        let name = bundle.manifest.name.clone();
        let mut settings = self.config.settings_for(&name);
        settings.extend(overrides.clone());
        let cache = self.config.store.join("cache");
        let plugin = CompiledPlugin::from_bundle(&self.runtime, bundle, &settings, Some(&cache))
            .map_err(|e| e.to_string())?;
        self.metrics.instrument(&plugin);
        let mut worker = Worker::new(Arc::new(plugin), self.config.restart.policy());
        worker
            .start()
            .map_err(|e| format!("the new version failed to start: {e}"))?;
        let mut entry = describe(bundle);
        if let Some(e) = entry.as_object_mut() {
            e.insert("state".into(), json!("running"));
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

impl Manager {
    fn fleet_path(&self) -> PathBuf {
        self.store.root().join("fleet.json")
    }

    fn applied_version(&self) -> u64 {
        std::fs::read(self.fleet_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<FleetFile>(&b).ok())
            .unwrap_or_default()
            .applied_version
    }

    fn report(&self, desired: Option<&DesiredState>, state: &str, error: Option<String>) {
        let mut fleet = json!({
            "group": self.config.group,
            "version": desired.map(|d| d.version),
            "state": state,
        });
        if let (Some(f), Some(error)) = (fleet.as_object_mut(), error) {
            tracing::warn!("fleet: {error}");
            f.insert("error".into(), json!(error));
        }
        let _ = self.changes.send(Change::Fleet(fleet));
    }

    /// A desired state arrived: install what is missing (asking for its bundles), swap what
    /// differs, remove what is not listed. What cannot be applied leaves the plugins as they
    /// were, and the status says why.
    fn desired(&mut self, payload: &[u8]) {
        if payload.is_empty() {
            return; // a cleared retained message
        }
        let desired = match DesiredState::verify(payload, self.store.keyring()) {
            Ok(d) => d,
            Err(e) => return self.report(None, "refused", Some(e.to_string())),
        };
        if Some(&desired.group) != self.config.group.as_ref() {
            let error = format!("desired state for group `{}`", desired.group);
            return self.report(Some(&desired), "refused", Some(error));
        }
        let applied = self.applied_version();
        if desired.version < applied {
            let error = format!(
                "version {} is older than version {applied} applied here",
                desired.version
            );
            return self.report(Some(&desired), "refused", Some(error));
        }
        let installed = match self.store.list() {
            Ok(list) => list,
            Err(e) => return self.report(Some(&desired), "failed", Some(e.to_string())),
        };
        let id = format!("fleet-{}", desired.version);
        let reply = Replier::new(self.link.clone(), &self.config.gateway_id, &id);
        for (name, _, _) in installed
            .iter()
            .filter(|(n, _, _)| !desired.plugins.contains_key(n))
        {
            match self.store.remove(name) {
                Ok(()) => {
                    let _ = self.changes.send(Change::Removed {
                        plugin: name.clone(),
                        reply: reply.clone(),
                    });
                }
                Err(e) => return self.report(Some(&desired), "failed", Some(e.to_string())),
            }
        }
        let waiting: BTreeSet<String> = desired
            .plugins
            .iter()
            .filter(|(name, digest)| !installed.iter().any(|(n, d, _)| n == *name && d == *digest))
            .map(|(_, digest)| digest.clone())
            .collect();
        let topics = waiting.iter().map(|d| namespace::bundle(d)).collect();
        self.rollout = Some(Rollout {
            desired: desired.clone(),
            waiting,
            reply,
        });
        self.report(Some(&desired), "applying", None);
        let _ = self.changes.send(Change::Subscribe(topics));
        self.finish_if_done();
    }

    /// A bundle an `update` by digest or a roll-out may be waiting for.
    fn bundle(&mut self, digest: &str, bytes: &[u8]) {
        if !bytes.is_empty()
            && let Some((reply, received)) = self.awaiting.remove(digest)
        {
            let actual = edgewise_signing::Bundle::parse(bytes).map(|b| b.digest());
            if actual.as_deref().ok() != Some(digest) {
                let reason = format!("the bundle on edgewise/bundles/{digest} is not that bundle");
                return reply.send("failed", json!({ "reason": reason }));
            }
            match self.update_bytes(bytes, &reply, received) {
                Ok(change) => {
                    let _ = self.changes.send(change);
                }
                Err(Some(reason)) => reply.send("failed", json!({ "reason": reason })),
                Err(None) => {}
            }
        }
        let Some(rollout) = self.rollout.as_ref() else {
            return;
        };
        if bytes.is_empty() || !rollout.waiting.contains(digest) {
            return;
        }
        let desired = rollout.desired.clone();
        let reply = rollout.reply.clone();
        let actual = edgewise_signing::Bundle::parse(bytes).map(|b| b.digest());
        if actual.as_deref().ok() != Some(digest) {
            let error = format!("the bundle on edgewise/bundles/{digest} is not that bundle");
            return self.report(Some(&desired), "failed", Some(error));
        }
        match self.update_bytes(bytes, &reply, Instant::now()) {
            Ok(change) => {
                let _ = self.changes.send(change);
                if let Some(r) = self.rollout.as_mut() {
                    r.waiting.remove(digest);
                }
                self.finish_if_done();
            }
            Err(reason) => {
                let error = reason.unwrap_or_else(|| "the new version was rolled back".into());
                self.rollout = None;
                self.report(Some(&desired), "failed", Some(error));
            }
        }
    }

    fn finish_if_done(&mut self) {
        let Some(rollout) = self.rollout.take_if(|r| r.waiting.is_empty()) else {
            return;
        };
        let file = serde_json::to_vec(&FleetFile {
            applied_version: rollout.desired.version,
        })
        .unwrap_or_default();
        match write_atomically(&self.fleet_path(), &file) {
            Ok(()) => self.report(Some(&rollout.desired), "converged", None),
            Err(e) => self.report(Some(&rollout.desired), "failed", Some(e.to_string())),
        }
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

//! `edgewise ctl <gateway> <action>` and `edgewise push <bundle> --gateway <id>`: an operator's
//! signed commands over MQTT, with the gateway's replies printed as they come.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use edgewise_signing::bundle::{self, DEFAULT_MAX_BYTES};
use edgewise_signing::command::{Action, Canary, Command, DesiredState, ShadowTrial};
use edgewise_signing::manifest::Setting;
use edgewise_signing::{SecretKey, namespace};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::clock::now_ms;

/// How long `ctl` waits for a gateway's retained status before saying there is no such
/// gateway.
const UNKNOWN_GATEWAY_AFTER: Duration = Duration::from_secs(5);

/// Where and as whom to send commands.
#[derive(clap::Args)]
pub struct Connection {
    /// The broker: mqtt://host[:port].
    #[arg(long, global = true, default_value = "mqtt://127.0.0.1:1883")]
    pub(crate) broker: String,
    /// User name for the broker.
    #[arg(long, global = true)]
    username: Option<String>,
    /// Password for the broker (prefer EDGEWISE_BROKER_PASSWORD).
    #[arg(
        long,
        global = true,
        env = "EDGEWISE_BROKER_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// The operator key (PKCS#8 PEM) that signs the command.
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// Seconds to wait for the outcome; the command expires then too.
    #[arg(long, global = true, default_value_t = 60)]
    timeout: u64,
    /// With mqtts://: the CA certificates (PEM) to trust.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// For mutual TLS: this client's certificate chain (PEM), with --client-key-file.
    #[arg(long, global = true, requires = "client_key_file")]
    client_cert_file: Option<PathBuf>,
    /// For mutual TLS: the client certificate's private key (PEM).
    #[arg(long, global = true, requires = "client_cert_file")]
    client_key_file: Option<PathBuf>,
}

/// Send a signed command to a gateway and print its replies.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  edgewise ctl line-7 list --key ops.key --broker mqtt://broker:1883\n  edgewise ctl line-7 stop threshold --key ops.key\n  edgewise ctl line-7 rollback threshold --key ops.key\n\nExit status: 0 on `done` or `live`, 1 on `failed`, `refused` or `rolled-back`, or when no answer comes within --timeout."
)]
pub struct CtlArgs {
    /// The gateway's id.
    gateway: String,
    #[command(subcommand)]
    action: CtlAction,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Subcommand)]
enum CtlAction {
    /// The plugins, versions and states.
    List,
    /// The gateway's status document.
    Status,
    /// Start a stopped plugin.
    Start {
        /// The plugin's name, as `list` shows it.
        plugin: String,
    },
    /// Stop a plugin (it stays installed).
    Stop {
        /// The plugin's name, as `list` shows it.
        plugin: String,
    },
    /// Uninstall a plugin.
    Remove {
        /// The plugin's name, as `list` shows it.
        plugin: String,
    },
    /// Go back to a plugin's last-known-good bundle, or to the bundle `--to` names (in the
    /// gateway's store, or retained on its topic by `edgewise push --rollback`).
    Rollback {
        /// The plugin's name, as `list` shows it.
        plugin: String,
        /// The digest of the bundle to go back to.
        #[arg(long)]
        to: Option<String>,
    },
    /// Promote a plugin's shadow (`push --shadow`) now: it replaces the live version.
    Promote {
        /// The plugin.
        plugin: String,
    },
    /// Drop a plugin's shadow: the live version goes on unchanged.
    Abandon {
        /// The plugin.
        plugin: String,
    },
    /// Change a plugin's settings (a hot swap with the new values). Keys must be settings the
    /// plugin's manifest declares; if the plugin does not start with the new values, nothing
    /// changes.
    #[command(
        after_help = "Examples:\n  edgewise ctl gw-1 config threshold --set limit=75 --set hysteresis=1.5 --key operator.key\n  edgewise ctl gw-1 config threshold --unset limit --key operator.key"
    )]
    Config {
        /// The plugin.
        plugin: String,
        /// A setting to change, as KEY=VALUE; repeatable.
        #[arg(
            long = "set",
            value_name = "KEY=VALUE",
            required_unless_present = "unset"
        )]
        settings: Vec<String>,
        /// A setting to put back to the gateway's or the manifest's value; repeatable.
        #[arg(long, value_name = "KEY")]
        unset: Vec<String>,
    },
}

/// Install or update a plugin on a gateway (a hot swap when it runs already), or on every
/// gateway of a fleet group (through its retained desired state).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  edgewise push threshold-0.2.0.ewb --gateway line-7 --key ops.key --broker mqtt://broker:1883\n  edgewise push threshold-0.2.0.ewb --group line --key ops.key\n  edgewise push threshold-0.1.0.ewb --gateway line-7 --rollback --key ops.key\n  edgewise push vibration-fault-0.2.0.ewb --gateway line-7 --shadow --shadow-messages 500 --key ops.key\n  edgewise push vibration-fault-0.2.0.ewb --group line --canary 10% --bake 600 --key ops.key"
)]
pub struct PushArgs {
    /// The signed bundle.
    bundle: PathBuf,
    /// The gateway's id.
    #[arg(long, required_unless_present = "group", conflicts_with = "group")]
    gateway: Option<String>,
    /// The fleet group.
    #[arg(long)]
    group: Option<String>,
    /// Roll the plugin back to this bundle, one signed as a rollback (`edgewise pack
    /// --rollback`): uploads it by digest and sends a rollback command naming it. A rollback
    /// bundle goes in no other way.
    #[arg(long, conflicts_with = "group")]
    rollback: bool,
    /// With --group: days the new desired state is valid. Gateways refuse it once expired, and
    /// report `stale` when the newest they have is older than their freshness window, so push
    /// again within both.
    #[arg(long, default_value_t = 30, requires = "group")]
    valid_days: u64,
    /// With --group: roll out to these gateways first, a count (`1`) or a share (`25%`) of
    /// the group, chosen deterministically; the rest follow once every canary has run it
    /// healthy for --bake seconds. A failing canary halts the roll-out.
    #[arg(long, requires = "group", value_parser = parse_canary)]
    canary: Option<CanaryShare>,
    /// With --canary: seconds every canary must stay healthy before the rest follow.
    #[arg(long, default_value_t = 300, requires = "canary")]
    bake: u64,
    /// Run the new version in shadow beside the live one: same messages, outputs compared and
    /// not published; it replaces the live one only if they agree (docs/evaluation.md). With
    /// --group, on every gateway of the group that runs the plugin (a new install goes in
    /// directly).
    #[arg(long, conflicts_with = "rollback")]
    shadow: bool,
    /// With --shadow: messages to compare before judging.
    #[arg(long, default_value_t = 200, requires = "shadow")]
    shadow_messages: u64,
    /// With --shadow: the longest the trial lasts, in seconds.
    #[arg(long, default_value_t = 600, requires = "shadow")]
    shadow_seconds: u64,
    /// With --shadow: the share of messages both versions must agree on.
    #[arg(long, default_value_t = 0.95, requires = "shadow")]
    min_agreement: f64,
    /// With --shadow: wait for `ctl promote` (or `abandon`) instead of promoting a passed trial.
    #[arg(long, requires = "shadow")]
    no_promote: bool,
    /// With --shadow: publish the candidate's outputs under edgewise/<gateway>/shadow/<plugin>/.
    #[arg(long, requires = "shadow")]
    shadow_publish: bool,
    #[command(flatten)]
    connection: Connection,
}

impl Connection {
    /// How long to wait for a gateway's answer.
    pub(crate) fn timeout(&self) -> u64 {
        self.timeout
    }
}

pub fn ctl(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let action = match args.action {
        CtlAction::List => Action::List,
        CtlAction::Status => Action::Status,
        CtlAction::Start { plugin } => Action::Start { plugin },
        CtlAction::Stop { plugin } => Action::Stop { plugin },
        CtlAction::Remove { plugin } => Action::Remove { plugin },
        CtlAction::Rollback { plugin, to } => Action::Rollback { plugin, digest: to },
        CtlAction::Promote { plugin } => Action::Promote { plugin },
        CtlAction::Abandon { plugin } => Action::Abandon { plugin },
        CtlAction::Config {
            plugin,
            settings,
            unset,
        } => {
            let mut parsed = BTreeMap::new();
            for pair in settings {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("`{pair}`: expected KEY=VALUE"))?;
                parsed.insert(k.to_owned(), Setting::String(v.to_owned()));
            }
            Action::Config {
                plugin,
                settings: parsed,
                unset,
            }
        }
    };
    send(&args.gateway, action, &args.connection)
}

pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let bytes = bundle::read_capped(&args.bundle, DEFAULT_MAX_BYTES)?;
    let shadow = args.shadow.then_some(ShadowTrial {
        messages: args.shadow_messages,
        max_seconds: args.shadow_seconds,
        min_agreement: args.min_agreement,
        promote: !args.no_promote,
        publish: args.shadow_publish,
    });
    if let Some(group) = &args.group {
        let rollout = Rollout {
            valid_days: args.valid_days,
            canary: args.canary.map(|share| (share, args.bake)),
            shadow,
        };
        return push_group(bytes, group, rollout, &args.connection);
    }
    let gateway = args.gateway.context("--gateway or --group")?;
    let action = if args.rollback {
        let parsed = edgewise_signing::Bundle::parse(&bytes)?;
        let digest = parsed.digest();
        let text = String::from_utf8(parsed.manifest).context("manifest is not UTF-8")?;
        let plugin = edgewise_signing::Manifest::parse(&text, &args.bundle)?.name;
        upload_bundle(&args.connection, &digest, bytes)?;
        Action::Rollback {
            plugin,
            digest: Some(digest),
        }
    } else {
        let digest = edgewise_signing::Bundle::parse(&bytes)?.digest();
        upload_bundle(&args.connection, &digest, bytes)?;
        Action::Update { digest, shadow }
    };
    send(&gateway, action, &args.connection)
}

/// Signs `action` for `gateway`, publishes it, and prints replies until the outcome.
fn send(gateway: &str, action: Action, connection: &Connection) -> anyhow::Result<ExitCode> {
    let key = operator_key(connection)?;
    let now = now_ms();
    // The sequence number is the clock in milliseconds: it grows without any state here, and a
    // gateway that already saw a higher one says so.
    let command = Command {
        id: format!("c-{now}-{}", std::process::id()),
        gateway: gateway.to_owned(),
        seq: now,
        issued_at_ms: now,
        expires_at_ms: now + connection.timeout * 1000,
        action,
    };
    let signed = command.sign(&key);
    let runtime = current_thread_runtime()?;
    let timeout = Duration::from_secs(connection.timeout);
    runtime.block_on(async move {
        let (client, mut eventloop) = client(connection, "edgewise-ctl")?;
        let reply_topic = namespace::reply(gateway, &command.id);
        // The gateway's retained status says it exists (and whether it is online): without
        // one, the id is wrong or the gateway never came up on this broker, and waiting the
        // whole timeout for a reply would only hide that.
        let status_topic = namespace::status(gateway);
        client
            .subscribe_many([&reply_topic, &status_topic].map(|topic| {
                rumqttc::SubscribeFilter::new(topic.clone(), QoS::AtLeastOnce)
            }))
            .await?;
        let (mut known, mut told_offline) = (false, false);
        let unknown_after = tokio::time::sleep(UNKNOWN_GATEWAY_AFTER);
        tokio::pin!(unknown_after);
        let outcome = tokio::time::timeout(timeout, async {
            loop {
                let event = tokio::select! {
                    event = eventloop.poll() => event,
                    () = &mut unknown_after, if !known => bail!(
                        "no gateway `{gateway}` on {}: nothing is retained on {status_topic} (check the id; `edgewise fleet status` lists the gateways it sees)",
                        connection.broker
                    ),
                };
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == status_topic => {
                        known = true;
                        let status: serde_json::Value =
                            serde_json::from_slice(&p.payload).unwrap_or_default();
                        if status["state"] == "offline" && !std::mem::replace(&mut told_offline, true) {
                            eprintln!(
                                "{gateway} is offline ({}): the command waits for it until it expires in {} s",
                                status["reason"].as_str().unwrap_or("no reason given"),
                                timeout.as_secs()
                            );
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        client
                            .publish(
                                namespace::command(gateway),
                                QoS::AtLeastOnce,
                                false,
                                signed.clone(),
                            )
                            .await?;
                        eprintln!(
                            "sent {} `{}` to {gateway}",
                            command.id,
                            command.action.name()
                        );
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == reply_topic => {
                        let text = String::from_utf8_lossy(&p.payload).into_owned();
                        println!("{text}");
                        let state = serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .and_then(|v| v.get("state")?.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        match state.as_str() {
                            "live" | "done" | "ready" => return Ok(true),
                            "rolled-back" | "failed" | "refused" | "abandoned" => return Ok(false),
                            _ => {}
                        }
                    }
                    Ok(_) => {}
                    Err(e) => bail!("broker {}: {e}", connection.broker),
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(true)) => Ok(ExitCode::SUCCESS),
            Ok(Ok(false)) => Ok(ExitCode::FAILURE),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("no outcome from {gateway} within {} s", timeout.as_secs()),
        }
    })
}

/// Host, port and whether to speak TLS, from mqtt://host[:port] or mqtts://host[:port].
fn broker_address(url: &str) -> anyhow::Result<(String, u16, bool)> {
    let (rest, tls) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => bail!("`{url}`: expected mqtt://host[:port] or mqtts://host[:port]"),
    };
    let default_port = if tls { 8883 } else { 1883 };
    Ok(match rest.trim_end_matches('/').rsplit_once(':') {
        Some((host, port)) => (
            host.to_owned(),
            port.parse().with_context(|| format!("port in `{url}`"))?,
            tls,
        ),
        None => (rest.to_owned(), default_port, tls),
    })
}

/// Uploads `bundle` (retained, in chunks under `edgewise/bundles/<digest>`) and a new desired state for
/// `group` that runs it, keeping the group's other plugins.
/// How a bundle is rolled out to a group.
struct Rollout {
    /// Days the desired state is valid.
    valid_days: u64,
    /// Its canaries, and their bake time in seconds.
    canary: Option<(CanaryShare, u64)>,
    /// A shadow trial first, where the plugin runs.
    shadow: Option<ShadowTrial>,
}

fn push_group(
    bundle_bytes: Vec<u8>,
    group: &str,
    rollout: Rollout,
    connection: &Connection,
) -> anyhow::Result<ExitCode> {
    let parsed = edgewise_signing::Bundle::parse(&bundle_bytes)?;
    let text = String::from_utf8(parsed.manifest.clone()).context("manifest is not UTF-8")?;
    let manifest =
        edgewise_signing::Manifest::parse(&text, std::path::Path::new("bundle manifest"))?;
    let digest = parsed.digest();
    let canary = match rollout.canary {
        None => None,
        Some((share, bake_s)) => {
            let members = super::fleet::members(connection, group, 2)?;
            if members.is_empty() {
                bail!(
                    "group {group}: no gateway has a status on the broker to choose canaries from"
                );
            }
            let gateways = choose_canaries(&members, share, &digest);
            println!(
                "group {group}: canaries {} of {} gateways; the rest follow after {bake_s} s healthy",
                gateways.join(", "),
                members.len()
            );
            Some(Canary { gateways, bake_s })
        }
    };
    let added = Added {
        plugin: manifest.name.clone(),
        digest: digest.clone(),
        bundle: bundle_bytes,
        canary,
        shadow: rollout.shadow,
    };
    let desired = publish_desired(connection, group, rollout.valid_days, Some(added))?;
    println!(
        "group {group}: desired state version {} now runs {} {} (bundle {digest}); `edgewise fleet status --group {group}` shows the roll-out",
        desired.version, manifest.name, manifest.version
    );
    Ok(ExitCode::SUCCESS)
}

/// How many of a group go first in a canary roll-out.
#[derive(Debug, Clone, Copy)]
pub enum CanaryShare {
    /// This many gateways.
    Count(usize),
    /// This percentage of the group (rounded up, at least one).
    Percent(f64),
}

fn parse_canary(text: &str) -> Result<CanaryShare, String> {
    let share = match text.strip_suffix('%') {
        Some(p) => p
            .parse::<f64>()
            .ok()
            .filter(|p| *p > 0.0 && *p <= 100.0)
            .map(CanaryShare::Percent),
        None => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .map(CanaryShare::Count),
    };
    share.ok_or_else(|| format!("`{text}`: expected a count (1) or a share (25%) of the group"))
}

/// The canaries among `members`: the first of them ordered by the SHA-256 of the bundle
/// digest and their id, so the choice is the same on every run for one roll-out, and another
/// roll-out picks others.
fn choose_canaries(members: &[String], share: CanaryShare, digest: &str) -> Vec<String> {
    use sha2::{Digest as _, Sha256};
    let count = match share {
        CanaryShare::Count(n) => n,
        CanaryShare::Percent(p) => ((p / 100.0) * members.len() as f64).ceil() as usize,
    }
    .clamp(1, members.len());
    let mut ranked: Vec<(Vec<u8>, &String)> = members
        .iter()
        .map(|id| (Sha256::digest(format!("{digest}/{id}")).to_vec(), id))
        .collect();
    ranked.sort();
    let mut chosen: Vec<String> = ranked
        .into_iter()
        .take(count)
        .map(|(_, id)| id.clone())
        .collect();
    chosen.sort();
    chosen
}

/// A plugin's bundle put into a group's desired state.
pub(crate) struct Added {
    plugin: String,
    digest: String,
    bundle: Vec<u8>,
    /// The roll-out's canaries (none: every gateway at once).
    canary: Option<Canary>,
    /// The plugin's shadow trial, if it is to be tried in shadow first.
    shadow: Option<ShadowTrial>,
}

/// Publishes a new desired state for `group`, retained: the current one re-signed with a new
/// version, issue time and expiry (`valid_days`), with `added` put in, its bundle retained on
/// its topic first. Without `added` the group must have a desired state, and its canaries and
/// shadow trials stay what they were (a refresh of a halted roll-out must not release it to
/// the whole group).
pub(crate) fn publish_desired(
    connection: &Connection,
    group: &str,
    valid_days: u64,
    added: Option<Added>,
) -> anyhow::Result<DesiredState> {
    let key = operator_key(connection)?;
    let runtime = current_thread_runtime()?;
    let desired_topic = namespace::desired(group);
    runtime.block_on(async move {
        let (client, mut eventloop) = client(connection, "edgewise-push")?;
        client.subscribe(&desired_topic, QoS::AtLeastOnce).await?;
        // The current desired state is retained: it comes right after the subscription, if any.
        let mut current: Option<DesiredState> = None;
        let mut subscribed = false;
        let settle = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                () = &mut settle, if subscribed => break,
                event = eventloop.poll() => match event? {
                    Event::Incoming(Packet::SubAck(_)) => subscribed = true,
                    Event::Incoming(Packet::Publish(p)) if p.topic == desired_topic => {
                        current = DesiredState::read_untrusted(&p.payload);
                        break;
                    }
                    _ => {}
                },
            }
        }
        if current.is_none() && added.is_none() {
            bail!("group {group} has no desired state to refresh");
        }
        let now = now_ms();
        let mut plugins = current.as_ref().map(|d| d.plugins.clone()).unwrap_or_default();
        // A version is at most its document's issue time (gateways refuse more), so the clock
        // is the version: a group's desired state ahead of this machine's clock means one clock
        // is wrong.
        if let Some(ahead) = current.as_ref().filter(|d| d.version >= now) {
            bail!(
                "the desired state of group {group} has version {}, not behind this machine's clock ({now} ms): check the clocks",
                ahead.version
            );
        }
        let mut shadow = current.as_ref().map(|d| d.shadow.clone()).unwrap_or_default();
        let canary = match added {
            Some(added) => {
                upload_chunks(&client, &mut eventloop, &added.digest, added.bundle).await?;
                shadow.remove(&added.plugin);
                if let Some(trial) = added.shadow {
                    shadow.insert(added.plugin.clone(), trial);
                }
                plugins.insert(added.plugin, added.digest);
                added.canary
            }
            None => current.as_ref().and_then(|d| d.canary.clone()),
        };
        let desired = DesiredState {
            group: group.to_owned(),
            version: now,
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(valid_days.saturating_mul(86_400_000)),
            plugins,
            canary,
            shadow,
        };
        client
            .publish(&desired_topic, QoS::AtLeastOnce, true, desired.sign(&key))
            .await?;
        let (mut acked, to_ack) = (0, 1);
        while acked < to_ack {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
                acked += 1;
            }
        }
        Ok(desired)
    })
}

/// Publishes `payload` retained on `topic`; returns when the broker has it.
pub(crate) fn publish_retained(
    connection: &Connection,
    topic: &str,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    let runtime = current_thread_runtime()?;
    runtime.block_on(async move {
        let (client, mut eventloop) = client(connection, "edgewise-upload")?;
        client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await?;
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
                return Ok(());
            }
        }
    })
}

/// Uploads bundle `bytes` (of digest `digest`) retained, in chunks under
/// `edgewise/bundles/<digest>`; returns when the broker has every chunk.
pub(crate) fn upload_bundle(
    connection: &Connection,
    digest: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<()> {
    let runtime = current_thread_runtime()?;
    runtime.block_on(async move {
        let (client, mut eventloop) = client(connection, "edgewise-upload")?;
        upload_chunks(&client, &mut eventloop, digest, bytes).await
    })
}

/// Publishes the chunks of bundle `bytes` retained while polling `eventloop` for their
/// acknowledgements; returns when the broker has acknowledged them all.
async fn upload_chunks(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    digest: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<()> {
    let bytes = bytes::Bytes::from(bytes);
    let count = u32::try_from(namespace::bundle_chunk_count(bytes.len() as u64))
        .context("bundle too large")?;
    let (publisher, digest) = (client.clone(), digest.to_owned());
    let sending = tokio::spawn(async move {
        for index in 0..count {
            let start = index as usize * namespace::BUNDLE_CHUNK_BYTES;
            let end = (start + namespace::BUNDLE_CHUNK_BYTES).min(bytes.len());
            let topic = namespace::bundle_chunk(&digest, index, count);
            let chunk = bytes.slice(start..end);
            publisher
                .publish_bytes(topic, QoS::AtLeastOnce, true, chunk)
                .await?;
        }
        Ok::<(), rumqttc::ClientError>(())
    });
    let mut acked = 0;
    while acked < count {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
            acked += 1;
        }
    }
    sending.await??;
    Ok(())
}

fn operator_key(connection: &Connection) -> anyhow::Result<SecretKey> {
    let key_file = connection.key.as_deref().context("--key is required")?;
    let pem = std::fs::read_to_string(key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    SecretKey::from_pem(&pem).with_context(|| key_file.display().to_string())
}

/// A runtime on this thread for one exchange with the broker.
pub(crate) fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn client(
    connection: &Connection,
    prefix: &str,
) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop)> {
    let (host, port, tls) = broker_address(&connection.broker)?;
    let id = format!("{prefix}-{}-{}", now_ms(), std::process::id());
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(512 << 20, 512 << 20);
    if let (Some(u), Some(p)) = (&connection.username, &connection.password) {
        options.set_credentials(u, p);
    }
    if tls {
        let client_cert = connection
            .client_cert_file
            .as_deref()
            .zip(connection.client_key_file.as_deref());
        let tls = crate::mqtt::tls_client_config(connection.ca_file.as_deref(), client_cert, "--")
            .map_err(anyhow::Error::msg)?;
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    Ok(AsyncClient::new(options, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("gw-{i}")).collect()
    }

    #[test]
    fn canaries_are_a_count_or_a_share_chosen_the_same_way_each_time() {
        let members = ids(10);
        let one = choose_canaries(&members, CanaryShare::Count(1), "d1");
        assert_eq!(one.len(), 1);
        assert_eq!(one, choose_canaries(&members, CanaryShare::Count(1), "d1"));
        assert_eq!(
            choose_canaries(&members, CanaryShare::Percent(25.0), "d1").len(),
            3
        );
        assert_eq!(
            choose_canaries(&members, CanaryShare::Count(50), "d1").len(),
            10
        );
        // Another roll-out spreads the risk over other gateways.
        let picks: std::collections::BTreeSet<Vec<String>> = (0..8)
            .map(|i| choose_canaries(&members, CanaryShare::Count(1), &format!("d{i}")))
            .collect();
        assert!(picks.len() > 1, "{picks:?}");
    }

    #[test]
    fn a_canary_share_reads_as_a_count_or_a_percentage() {
        assert!(matches!(parse_canary("2"), Ok(CanaryShare::Count(2))));
        assert!(matches!(parse_canary("25%"), Ok(CanaryShare::Percent(p)) if p == 25.0));
        for bad in ["0", "0%", "150%", "some", "-1"] {
            assert!(parse_canary(bad).is_err(), "{bad}");
        }
    }
}

//! `edgewise keyring sign | apply | push | reset`: changing whom a gateway trusts, and the
//! root's way back for a gateway whose clock was wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use anyhow::{Context, bail};
use edgewise_signing::command::TrustReset;
use edgewise_signing::envelope::Envelope;
use edgewise_signing::keyring::rfc3339;
use edgewise_signing::{Keyring, PayloadType, SecretKey, namespace};

use rumqttc::{Event, Packet, QoS};

use super::ctl::{Connection, client, current_thread_runtime, publish_retained};
use crate::clock::now_ms;
use crate::config::Config;
use crate::management::store::write_atomically;

/// Change the trusted keys: sign a new keyring, apply a signed one on a gateway, or send it to
/// gateways over MQTT.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Sign a new keyring (the current version plus one, with `expires`) with root keys: a
    /// threshold of the current root and, in a root rotation, of the new one.
    Sign {
        /// The new keyring (TOML).
        keyring: PathBuf,
        /// A private key to sign with; repeat for each signer.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Where to write the signed update (JSON envelope).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Replace a gateway's keyring by a signed update, on the gateway, if its current keyring
    /// accepts it (the same rules as an update over MQTT).
    Apply {
        /// The signed update.
        update: PathBuf,
        /// The gateway's configuration (for its keyring).
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Publish a signed update, retained, for every gateway of a fleet group or for one
    /// gateway; each applies it if its current keyring accepts it.
    Push {
        /// The signed update.
        update: PathBuf,
        /// The gateway's id.
        #[arg(long, required_unless_present = "group", conflicts_with = "group")]
        gateway: Option<String>,
        /// The fleet group.
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Reset a gateway's command and desired-state counters and its time floor to this
    /// machine's clock, signed by root keys: for a gateway whose clock was wrong (set ahead, it
    /// took documents by it, and now refuses everything issued today). Reads the nonce the
    /// gateway shows in its status; the reset works once.
    Reset {
        /// The gateway's id.
        #[arg(long)]
        gateway: String,
        /// A root private key to sign with; repeat up to the root threshold.
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        #[command(flatten)]
        connection: Connection,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Sign {
            keyring,
            keys,
            output,
        } => {
            let text = std::fs::read_to_string(&keyring)
                .with_context(|| format!("reading {}", keyring.display()))?;
            let parsed = Keyring::parse(&text, &keyring)?;
            let keys = read_keys(&keys)?;
            let envelope = Envelope::sign(
                PayloadType::Keyring,
                text.into_bytes(),
                &keys.iter().collect::<Vec<_>>(),
            );
            std::fs::write(&output, envelope.to_json(PayloadType::Keyring))
                .with_context(|| format!("writing {}", output.display()))?;
            let ids: Vec<String> = keys.iter().map(|k| k.public().id()).collect();
            println!(
                "signed keyring version {} (expires {}) with {} into {}",
                parsed.version,
                parsed.expires_at_ms.map_or("never".into(), rfc3339),
                ids.join(", "),
                output.display()
            );
        }
        Command::Apply { update, config } => {
            let config = Config::from_file(&config)?;
            let path = config
                .keyring
                .context("the gateway has no `keyring` configured")?;
            let current = Keyring::from_file(&path)?;
            let envelope = read_update(&update)?;
            let (accepted, text) = current
                .accept_update(&envelope, &update, now_ms())
                .with_context(|| format!("{} refused", update.display()))?;
            write_atomically(&path, text.as_bytes())?;
            println!(
                "keyring {} is now version {} ({} keys, {} revoked); a running gateway applies it at its next start",
                path.display(),
                accepted.version,
                accepted.keys.len(),
                accepted.keys.iter().filter(|k| k.revoked).count()
            );
        }
        Command::Push {
            update,
            gateway,
            group,
            connection,
        } => {
            let envelope = read_update(&update)?;
            // Checked here only as far as it can be without the gateway's keyring: a keyring
            // that does not parse is never sent.
            let text = std::str::from_utf8(&envelope.payload)
                .context("the keyring in the update is not UTF-8")?;
            let parsed = Keyring::parse(text, &update)?;
            let topic = match (&group, &gateway) {
                (Some(group), _) => namespace::group_keyring(group),
                (None, Some(gateway)) => namespace::keyring(gateway),
                (None, None) => anyhow::bail!("give --gateway or --group"),
            };
            publish_retained(
                &connection,
                &topic,
                envelope.to_json(PayloadType::Keyring).into_bytes(),
            )?;
            println!(
                "keyring version {} published, retained, on {topic}: each gateway applies it if its current root signed it, and says so in its status",
                parsed.version
            );
        }
        Command::Reset {
            gateway,
            root_keys,
            connection,
        } => return reset(&gateway, &read_keys(&root_keys)?, &connection),
    }
    Ok(ExitCode::SUCCESS)
}

fn read_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<SecretKey>> {
    paths
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            SecretKey::from_pem(&pem).with_context(|| path.display().to_string())
        })
        .collect()
}

/// Reads `gateway`'s reset nonce from its retained status, sends it a reset to this machine's
/// clock signed by `keys`, and prints the gateway's answer.
fn reset(gateway: &str, keys: &[SecretKey], connection: &Connection) -> anyhow::Result<ExitCode> {
    let status_topic = namespace::status(gateway);
    let reply_topic = namespace::reply(gateway, "trust-reset");
    let runtime = current_thread_runtime()?;
    runtime.block_on(async move {
        let (client, mut eventloop) = client(connection, "edgewise-trust-reset")?;
        client.subscribe(&reply_topic, QoS::AtLeastOnce).await?;
        client.subscribe(&status_topic, QoS::AtLeastOnce).await?;
        let deadline = tokio::time::sleep(Duration::from_secs(connection.timeout()));
        tokio::pin!(deadline);
        let mut sent = false;
        loop {
            let event = tokio::select! {
                () = &mut deadline => bail!("no answer from gateway {gateway} within the timeout"),
                event = eventloop.poll() => event?,
            };
            let Event::Incoming(Packet::Publish(p)) = event else {
                continue;
            };
            if p.topic == status_topic && !sent {
                let status: serde_json::Value = serde_json::from_slice(&p.payload)
                    .with_context(|| format!("the status on {status_topic} is not JSON"))?;
                let Some(nonce) = status["trust"]["reset-nonce"].as_str() else {
                    bail!("gateway {gateway} shows no `trust.reset-nonce` in its status (not managed, or too old)");
                };
                let now = now_ms();
                let reset = TrustReset {
                    gateway: gateway.to_owned(),
                    nonce: nonce.to_owned(),
                    // Commands signed before now are spent; `ctl` numbers by the clock.
                    command_seq: now,
                    desired_version: 0,
                    desired_issued_at_ms: 0,
                    time_floor_ms: now,
                };
                let signed = reset.sign(&keys.iter().collect::<Vec<_>>());
                let topic = namespace::trust_reset(gateway);
                client.publish(topic, QoS::AtLeastOnce, false, signed).await?;
                sent = true;
            } else if p.topic == reply_topic && sent {
                let text = String::from_utf8_lossy(&p.payload);
                println!("{text}");
                let done = serde_json::from_slice::<serde_json::Value>(&p.payload)
                    .is_ok_and(|r| r["state"] == "done");
                return Ok(if done { ExitCode::SUCCESS } else { ExitCode::FAILURE });
            }
        }
    })
}

fn read_update(path: &std::path::Path) -> anyhow::Result<Envelope> {
    let json =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Envelope::from_json(&json, PayloadType::Keyring).with_context(|| path.display().to_string())
}

//! `edgewise keyring sign | apply | push`: changing whom a gateway trusts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use edgewise_signing::envelope::Envelope;
use edgewise_signing::keyring::rfc3339;
use edgewise_signing::{Keyring, PayloadType, SecretKey, namespace};

use super::ctl::{Connection, publish_retained};
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
            let keys = keys
                .iter()
                .map(|path| {
                    let pem = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    SecretKey::from_pem(&pem).with_context(|| path.display().to_string())
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
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
    }
    Ok(ExitCode::SUCCESS)
}

fn read_update(path: &std::path::Path) -> anyhow::Result<Envelope> {
    let json =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Envelope::from_json(&json, PayloadType::Keyring).with_context(|| path.display().to_string())
}

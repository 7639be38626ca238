//! `edgewise keyring sign | apply`: changing whom a gateway trusts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use edgewise_signing::envelope::Envelope;
use edgewise_signing::{Keyring, PayloadType, SecretKey};

use crate::config::Config;
use crate::management::store::write_atomically;

/// Change the trusted keys: sign a new keyring, or apply a signed one to a gateway.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Sign a new keyring (a higher `version`) with current keys and every key it adds.
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
    /// Replace a gateway's keyring by a signed update, if its current keyring accepts it.
    Apply {
        /// The signed update.
        update: PathBuf,
        /// The gateway's configuration (for its keyring).
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
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
                "signed keyring version {} with {} into {}",
                parsed.version,
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
            let json = std::fs::read_to_string(&update)
                .with_context(|| format!("reading {}", update.display()))?;
            let envelope = Envelope::from_json(&json, PayloadType::Keyring)
                .with_context(|| update.display().to_string())?;
            let text = String::from_utf8(envelope.payload)
                .context("the keyring in the update is not UTF-8")?;
            let accepted = current
                .accept_update(&text, &envelope.signatures, &update)
                .with_context(|| format!("{} refused", update.display()))?;
            write_atomically(&path, text.as_bytes())?;
            println!(
                "keyring {} is now version {} ({} keys, {} revoked); it applies from the next gateway start",
                path.display(),
                accepted.version,
                accepted.keys.len(),
                accepted.keys.iter().filter(|k| k.revoked).count()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `edgewise list` and `edgewise status`: what a gateway's store holds, read from disk, with or
//! without the gateway running (for a box whose broker is away, or a gateway that will not
//! start). The running gateway's own view is its retained status (`edgewise ctl <id> status`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use edgewise_signing::Keyring;
use edgewise_signing::keyring::rfc3339;
use serde_json::{Value, json};

use crate::config::Config;
use crate::gateway::journal::Journal;
use crate::management::store::{Inventory, Store};

/// The plugins installed in a gateway's store, read from disk.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  edgewise list --config /etc/edgewise/gateway.toml\n  edgewise list --json | jq .version"
)]
pub struct ListArgs {
    /// The gateway's configuration (for its store and keyring).
    #[arg(long, short, default_value = "gateway.toml")]
    config: PathBuf,
    /// One JSON object a line instead of a table.
    #[arg(long)]
    json: bool,
}

/// A gateway's state from its files: plugins, keyring, trust counters, the journal's backlog.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  edgewise status --config /etc/edgewise/gateway.toml")]
pub struct StatusArgs {
    /// The gateway's configuration.
    #[arg(long, short, default_value = "gateway.toml")]
    config: PathBuf,
}

fn open(config: &Config, origin: &std::path::Path) -> anyhow::Result<(Store, Keyring)> {
    let keyring_path = config.keyring.as_deref().with_context(|| {
        format!(
            "{}: no `keyring` configured: no store to read",
            origin.display()
        )
    })?;
    let keyring = Keyring::from_file(keyring_path)?;
    let store = Store::open(&config.store, keyring.clone(), config.max_bundle_bytes())?;
    Ok((store, keyring))
}

pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_file(&args.config)?;
    let (store, _) = open(&config, &args.config)?;
    let plugins = store.inventory()?;
    // Written, not printed: `| head` ends the output, not the process with a panic.
    let mut out = std::io::stdout().lock();
    if args.json {
        for plugin in &plugins {
            writeln!(out, "{}", serde_json::to_string(plugin)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<20} {:<10} {:>7}  {:<8} {:<14} problem",
        "plugin", "version", "release", "state", "digest"
    )?;
    for p in &plugins {
        writeln!(
            out,
            "{:<20} {:<10} {:>7}  {:<8} {:<14} {}",
            p.name,
            p.version.as_deref().unwrap_or("?"),
            p.release.map_or("?".to_owned(), |r| r.to_string()),
            if p.stopped { "stopped" } else { "enabled" },
            &p.digest[..p.digest.len().min(12)],
            p.problem.as_deref().unwrap_or("")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_file(&args.config)?;
    let (store, keyring) = open(&config, &args.config)?;
    let plugins: Vec<Inventory> = store.inventory()?;
    let trust_file = config.store.join("trust.json");
    let trust: Value = std::fs::read(&trust_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    // The journal is the running gateway's (redb locks it): then its status has the figures.
    let journal = match Journal::open(&config.journal_path(), config.journal.max_bytes(), true) {
        Ok((journal, recovered)) => json!({
            "waiting": recovered.backlogs.iter().map(|(p, b)| (p.clone(), b.len())).collect::<std::collections::BTreeMap<_, _>>(),
            "outputs-waiting": recovered.outbox.len(),
            "bytes": journal.bytes(),
        }),
        Err(e) => {
            json!({ "unreadable": format!("{e} (a running gateway holds it: see its retained status)") })
        }
    };
    let document = json!({
        "gateway": config.gateway_id,
        "group": config.group,
        "store": config.store,
        "plugins": plugins,
        "keyring": {
            "version": keyring.version,
            "expires": keyring.expires_at_ms.map(rfc3339),
            "keys": keyring.keys.len(),
            "revoked": keyring.keys.iter().filter(|k| k.revoked).count(),
        },
        "trust": trust,
        "journal": journal,
        "store-bytes": crate::management::store::bytes_on_disk(&config.store),
    });
    writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(&document)?
    )?;
    Ok(ExitCode::SUCCESS)
}

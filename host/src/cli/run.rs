//! `edgewise run --config gateway.toml`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::Logging;
use crate::config::Config;
use crate::gateway;

/// Run the gateway: connect to the broker, feed the plugins, publish what they produce.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  edgewise run --config /etc/edgewise/gateway.toml\n  EDGEWISE_LOG=debug edgewise run --allow-unsigned     # development: plain plugin folders"
)]
pub struct Args {
    /// The gateway configuration (see docs/configuration.md).
    #[arg(long, short, default_value = "gateway.toml")]
    config: PathBuf,
    /// Development only: also run the UNSIGNED plugin directories under the config's `plugins`.
    #[arg(long)]
    allow_unsigned: bool,
}

pub fn run(args: Args, logging: &Logging) -> anyhow::Result<ExitCode> {
    let text = Config::read_text(&args.config)?;
    let config = Config::parse(&text, &args.config)?;
    logging.configure(config.log.as_deref(), config.log_format);
    // One thread for the async side (the MQTT event loop, metrics): plugins run on their own
    // threads, and a second async worker only added wake-ups between the two (measured: the
    // pass-through benchmark spent most of its time switching threads).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let options = gateway::Options {
        allow_unsigned: args.allow_unsigned,
    };
    let outcome = runtime.block_on(async {
        let gateway = gateway::Gateway::start(config, options).await?;
        let reloads = reload_on_hangup(&args.config, text, gateway.reloader(), logging);
        tokio::select! {
            outcome = gateway.run(shutdown_signal()) => outcome,
            () = reloads => Ok(()),
        }
    });
    // Plugin threads still stuck in a call are not waited for: leaving `main` ends them, and
    // the messages they held stay unacknowledged for the broker to deliver again.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    outcome?;
    Ok(ExitCode::SUCCESS)
}

/// On each SIGHUP (`systemctl reload edgewise`), reads the config file again and applies what
/// a running gateway can: the log filter and format, and the plugins' `[settings]` (see
/// `management::settings`). A file that does not parse changes nothing; keys only a restart
/// applies are named. Never completes (unless SIGHUP cannot be watched, at once).
async fn reload_on_hangup(
    path: &Path,
    mut applied: String,
    reloader: gateway::Reloader,
    logging: &Logging,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP, so no reload: {e}");
            return std::future::pending().await;
        }
    };
    while hangups.recv().await.is_some() {
        let reread = Config::read_text(path).and_then(|text| {
            let config = Config::parse(&text, path)?;
            Ok((text, config))
        });
        let (text, config) = match reread {
            Ok(reread) => reread,
            Err(e) => {
                tracing::error!("reload refused, nothing changed: {e}");
                continue;
            }
        };
        let later = Config::needs_restart(&applied, &text);
        if !later.is_empty() {
            tracing::warn!(
                keys = ?later,
                "reload: these changed in {} and apply at the next start only",
                path.display()
            );
        }
        tracing::info!(config = %path.display(), "reloading plugin settings and logging");
        logging.configure(config.log.as_deref(), config.log_format);
        reloader.reload(config);
        applied = text;
    }
    std::future::pending().await
}

/// Completes on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown requested");
}

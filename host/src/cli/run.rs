//! `edgewise run --config gateway.toml`.

use std::path::PathBuf;
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
    let config = Config::from_file(&args.config)?;
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
        gateway::Gateway::start(config, options)
            .await?
            .run(shutdown_signal())
            .await
    });
    // Plugin threads still stuck in a call are not waited for: leaving `main` ends them, and
    // the messages they held stay unacknowledged for the broker to deliver again.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    outcome?;
    Ok(ExitCode::SUCCESS)
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

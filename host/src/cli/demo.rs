//! `edgewise demo [--plugins DIR] [--seconds N]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// Run the demo: an embedded broker, the gateway with the example plugins, simulated sensors.
#[derive(clap::Args)]
#[command(
    after_help = "Examples (from the repository's root, after scripts/build-plugins):\n  edgewise demo\n  edgewise demo --seconds 30 --plugins ~/edgewise/plugins"
)]
pub struct Args {
    /// The directory of built plugin directories.
    #[arg(long, default_value = "plugins")]
    plugins: PathBuf,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let seconds = args.seconds;
    if !args.plugins.join("threshold").join("plugin.toml").is_file() {
        anyhow::bail!(
            "{} holds no built example plugins (threshold, ...): run the demo from the repository's root after `scripts/build-plugins`, or give --plugins <the repository>/plugins",
            args.plugins.display()
        );
    }
    runtime.block_on(crate::demo::run(&args.plugins, async move {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => super::shutdown_signal().await,
        }
    }))?;
    Ok(ExitCode::SUCCESS)
}

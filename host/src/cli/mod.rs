//! The `edgewise` command line: argument parsing, logging set-up, exit codes.
//!
//! One file per subcommand. This is the only place `anyhow` is used: library errors get their
//! context here and every error becomes exit code 1, printed once with its causes.

mod demo;
mod replay;
mod run;

pub(crate) use run::shutdown_signal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The log filter when `EDGEWISE_LOG` is not set. wasmtime-wasi-nn logs every error it hands a
/// plugin at error level without saying which plugin; the worker and the backends log those
/// with the plugin or model named, so its own lines are left out; so are those of the demo's
/// embedded broker, which reports every disconnect as an error.
const DEFAULT_LOG: &str = "info,wasmtime_wasi_nn=off,rumqttd=off";

/// Edgewise: a WebAssembly plugin host for IoT edge gateways.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::Args),
    Demo(demo::Args),
    Replay(replay::Args),
}

/// Parses arguments, runs the subcommand, and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("EDGEWISE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Replay(args) => replay::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

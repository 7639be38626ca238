//! The `edgewise` command line: argument parsing, logging set-up, exit codes.
//!
//! One file per subcommand. This is the only place `anyhow` is used: library errors get their
//! context here and every error becomes exit code 1, printed once with its causes.

mod bundle;
mod ctl;
mod demo;
mod keygen;
mod keyring;
mod replay;
mod run;

pub(crate) use run::shutdown_signal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

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
    Keygen(keygen::Args),
    Pack(bundle::PackArgs),
    Verify(bundle::VerifyArgs),
    Inspect(bundle::InspectArgs),
    Install(bundle::InstallArgs),
    #[command(subcommand)]
    Keyring(keyring::Command),
    Ctl(ctl::CtlArgs),
    Push(ctl::PushArgs),
    #[command(subcommand)]
    Fleet(ctl::FleetCommand),
}

/// Parses arguments, runs the subcommand, and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = Logging::init();
    let result = match cli.command {
        Command::Run(args) => run::run(args, &logging),
        Command::Demo(args) => demo::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Pack(args) => bundle::pack(args),
        Command::Verify(args) => bundle::verify(args),
        Command::Inspect(args) => bundle::inspect(args),
        Command::Install(args) => bundle::install(args),
        Command::Keyring(command) => keyring::run(command),
        Command::Ctl(args) => ctl::ctl(args),
        Command::Push(args) => ctl::push(args),
        Command::Fleet(command) => ctl::fleet(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter: `EDGEWISE_LOG` if set, else the config file's `log` once it is read, else
/// [`DEFAULT_LOG`].
pub(crate) struct Logging {
    from_env: bool,
    filter: reload::Handle<EnvFilter, Registry>,
}

impl Logging {
    fn init() -> Self {
        let from_env = EnvFilter::try_from_env("EDGEWISE_LOG").ok();
        let from_env_set = from_env.is_some();
        let (filter, handle) =
            reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG)));
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
        Self {
            from_env: from_env_set,
            filter: handle,
        }
    }

    /// Switches to the config file's filter (already validated), unless `EDGEWISE_LOG` is set.
    pub(crate) fn configure(&self, filter: Option<&str>) {
        if let (false, Some(filter)) = (self.from_env, filter)
            && let Ok(filter) = EnvFilter::try_new(filter)
            && let Err(e) = self.filter.reload(filter)
        {
            tracing::warn!("cannot apply the configured log filter: {e}");
        }
    }
}

//! The `edgewise` command line: argument parsing, logging set-up, exit codes.
//!
//! One file per subcommand. This is the only place `anyhow` is used: library errors get their
//! context here and every error becomes exit code 1, printed once with its causes (each said
//! once), and a hint where the cause is a permission.

mod author;
mod bundle;
mod ctl;
mod demo;
mod eval;
mod fleet;
mod inventory;
mod keygen;
mod keyring;
mod replay;
mod run;

pub(crate) use run::shutdown_signal;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::LogFormat;

/// The log filter when `EDGEWISE_LOG` is not set. wasmtime-wasi-nn logs every error it hands a
/// plugin at error level without saying which plugin; the worker and the backends log those
/// with the plugin or model named, so its own lines are left out; so are those of the demo's
/// embedded broker, which reports every disconnect as an error.
const DEFAULT_LOG: &str = "info,wasmtime_wasi_nn=off,rumqttd=off";

/// Edgewise: a WebAssembly plugin host for IoT edge gateways.
#[derive(Parser)]
#[command(name = "edgewise", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::Args),
    Demo(demo::Args),
    Replay(replay::Args),
    Eval(eval::Args),
    New(author::NewArgs),
    Build(author::BuildArgs),
    Keygen(keygen::Args),
    Pack(bundle::PackArgs),
    Verify(bundle::VerifyArgs),
    Inspect(bundle::InspectArgs),
    Install(bundle::InstallArgs),
    List(inventory::ListArgs),
    Status(inventory::StatusArgs),
    /// Sign, apply, publish or reset a gateway's keyring.
    #[command(
        subcommand,
        after_help = "Examples:\n  edgewise keyring sign keyring-v2.toml --key root-a.key --key root-b.key -o keyring-v2.json\n  edgewise keyring push keyring-v2.json --group line --key ops.key\n  edgewise keyring apply keyring-v2.json --config /etc/edgewise/gateway.toml"
    )]
    Keyring(keyring::Command),
    Ctl(ctl::CtlArgs),
    Push(ctl::PushArgs),
    /// A fleet group's desired state and the statuses of its gateways.
    #[command(
        subcommand,
        after_help = "Examples:\n  edgewise fleet status --group line --broker mqtt://broker:1883\n  edgewise fleet refresh --group line --key ops.key"
    )]
    Fleet(fleet::FleetCommand),
}

/// Parses arguments, runs the subcommand, and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = match Logging::init() {
        Ok(logging) => logging,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run(args) => run::run(args, &logging),
        Command::Demo(args) => demo::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Eval(args) => eval::run(args),
        Command::New(args) => author::new(args),
        Command::Build(args) => author::build(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Pack(args) => bundle::pack(args),
        Command::Verify(args) => bundle::verify(args),
        Command::Inspect(args) => bundle::inspect(args),
        Command::Install(args) => bundle::install(args),
        Command::List(args) => inventory::list(args),
        Command::Status(args) => inventory::status(args),
        Command::Keyring(command) => keyring::run(command),
        Command::Ctl(args) => ctl::ctl(args),
        Command::Push(args) => ctl::push(args),
        Command::Fleet(command) => fleet::fleet(command),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`edgewise inspect b.ewb | head`): done.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            if err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            }) {
                eprintln!(
                    "hint: check the owner and mode of the file named above: edgewise runs as the user that owns its store and configuration"
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: many errors name their cause in
/// their own text as well as giving it as their source.
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The subscriber under the output layer: the registry and the (reloadable) filter.
type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// Where and how log lines are written: text or JSON, to stderr.
type Output = Box<dyn Layer<Filtered> + Send + Sync>;

/// The log filter and format: `EDGEWISE_LOG` and `EDGEWISE_LOG_FORMAT` if set, else the
/// config file's `log` and `log-format` once it is read, else [`DEFAULT_LOG`] as text.
pub(crate) struct Logging {
    filter_from_env: bool,
    format_from_env: bool,
    filter: reload::Handle<EnvFilter, Registry>,
    output: reload::Handle<Output, Filtered>,
}

impl Logging {
    /// Logs to standard error, in colour only when that is a terminal (never into a file, a
    /// pipe or the journal) and `NO_COLOR` is not set. An `EDGEWISE_LOG` that is not a valid
    /// filter, or an `EDGEWISE_LOG_FORMAT` other than `text` or `json`, is an error, not a
    /// silent fallback.
    fn init() -> Result<Self, String> {
        let from_env = match std::env::var("EDGEWISE_LOG") {
            Ok(text) => Some(EnvFilter::try_new(&text).map_err(|e| {
                format!("EDGEWISE_LOG=`{text}` is not a log filter ({e}); for example `info,edgewise_host=debug`")
            })?),
            Err(_) => None,
        };
        let format = match std::env::var("EDGEWISE_LOG_FORMAT").as_deref() {
            Ok("text") => Some(LogFormat::Text),
            Ok("json") => Some(LogFormat::Json),
            Ok(other) => {
                return Err(format!(
                    "EDGEWISE_LOG_FORMAT=`{other}`: expected `text` or `json`"
                ));
            }
            Err(_) => None,
        };
        let filter_from_env = from_env.is_some();
        let (filter, filter_handle) =
            reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG)));
        let (output, output_handle) = reload::Layer::new(output(format.unwrap_or_default()));
        tracing_subscriber::registry()
            .with(filter)
            .with(output)
            .init();
        Ok(Self {
            filter_from_env,
            format_from_env: format.is_some(),
            filter: filter_handle,
            output: output_handle,
        })
    }

    /// Switches to the config file's filter (already validated) and format, unless the
    /// environment set them; at start and at each reload.
    pub(crate) fn configure(&self, filter: Option<&str>, format: LogFormat) {
        // No `log` key is the default filter (a reload that removes the key goes back to it).
        let filter = filter.unwrap_or(DEFAULT_LOG);
        if !self.filter_from_env
            && let Ok(filter) = EnvFilter::try_new(filter)
            && let Err(e) = self.filter.reload(filter)
        {
            tracing::warn!("cannot apply the configured log filter: {e}");
        }
        if !self.format_from_env
            && let Err(e) = self.output.reload(output(format))
        {
            tracing::warn!("cannot apply the configured log format: {e}");
        }
    }
}

fn output(format: LogFormat) -> Output {
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour)
                .boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_is_described_and_every_command_shows_an_example() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, undescribed: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if !["help", "version"].contains(&arg.get_id().as_str()) && arg.get_help().is_none()
                {
                    undescribed.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &format!("{path} {}", sub.get_name()), undescribed);
            }
        }
        let cli = Cli::command();
        let mut undescribed = Vec::new();
        walk(&cli, "edgewise", &mut undescribed);
        assert!(
            undescribed.is_empty(),
            "arguments without help: {undescribed:?}"
        );
        let without: Vec<&str> = cli
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .filter(|c| {
                !c.get_after_help()
                    .is_some_and(|h| h.to_string().contains("Example"))
            })
            .map(|c| c.get_name())
            .collect();
        assert!(
            without.is_empty(),
            "commands without an example: {without:?}"
        );
    }

    #[test]
    fn a_cause_an_error_already_names_is_not_said_twice() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let store = crate::management::store::StoreError::Io {
            path: "/var/lib/edgewise/state.json".into(),
            source: io,
        };
        let err = anyhow::Error::new(store).context("installing");
        let text = describe(&err);
        assert_eq!(text.matches("permission denied").count(), 1, "{text}");
        assert!(
            text.starts_with("installing: store: /var/lib/edgewise/state.json"),
            "{text}"
        );
    }
}

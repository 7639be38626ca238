//! `edgewise replay <plugin-dir> [messages.jsonl]`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::replay::replay;
use crate::runtime::plugin::CompiledPlugin;
use crate::runtime::{Runtime, default_caps};
use crate::worker::Worker;
use crate::worker::supervisor::RestartPolicy;

/// Run one plugin over a JSON Lines file of messages and print what it publishes, no broker.
///
/// Every message is tried; the exit status is 1 if any line could not be read or any message
/// failed (a trap, a timeout, an error the plugin returned), so replay can gate a CI job.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  edgewise replay plugins/threshold messages.jsonl\n  echo '{\"topic\":\"sensors/oven/reading\",\"payload\":{\"value\":91}}' | edgewise replay plugins/threshold --set limit=90"
)]
pub struct Args {
    /// The plugin directory (holding plugin.toml, the component and the models).
    plugin: PathBuf,
    /// JSON Lines of messages: {"topic": "...", "payload": ...}; `-` or nothing reads stdin.
    messages: Option<PathBuf>,
    /// Override a setting from the manifest's [settings], as KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

pub(super) fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    Ok((key.to_owned(), value.to_owned()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(default_caps(), 16)?;
    let settings: BTreeMap<_, _> = args.settings.into_iter().collect();
    let plugin = CompiledPlugin::load(&runtime, &args.plugin, &settings)
        .with_context(|| format!("loading plugin {}", args.plugin.display()))?;
    let mut worker = Worker::new(Arc::new(plugin), RestartPolicy::default());
    worker
        .start()
        .map_err(|failure| anyhow::anyhow!("plugin `{}`: {failure}", worker.plugin().name()))?;

    let stdout = io::stdout();
    let mut out = stdout.lock();
    // The messages alone, not loading and compiling: what a plugin costs per message.
    let started = std::time::Instant::now();
    let malformed = match args.messages.filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            replay(
                &mut worker,
                BufReader::new(file),
                &path.display().to_string(),
                &mut out,
            )?
        }
        None => replay(&mut worker, io::stdin().lock(), "<stdin>", &mut out)?,
    };
    let replay_ms = started.elapsed().as_secs_f64() * 1e3;
    let stats = worker.stats();
    tracing::info!(
        messages = stats.handled + stats.failed,
        replay_ms = format!("{replay_ms:.1}"),
        handled = stats.handled,
        failed = stats.failed,
        published = stats.published,
        traps = stats.traps,
        starts = stats.starts,
        "replay finished"
    );
    if malformed > 0 {
        bail!("{malformed} input line(s) could not be read (see above)");
    }
    // Every message was tried; a failed one is still a failed run, so that `replay` can gate
    // an author's CI.
    if stats.failed > 0 {
        bail!(
            "{} of {} messages failed (see above; each would be a dead letter on a gateway)",
            stats.failed,
            stats.handled + stats.failed
        );
    }
    Ok(ExitCode::SUCCESS)
}

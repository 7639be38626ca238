//! `edgewise eval <plugin dir | bundle> [--data FILE] [--against X] [--json]`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use edgewise_signing::bundle::DEFAULT_MAX_BYTES;
use edgewise_signing::evaluate::{Evaluate, TaskKind};
use edgewise_signing::{Bundle, Keyring, Manifest};

use crate::evaluate::{Evaluation, Report, Sample, read_samples};
use crate::runtime::Runtime;
use crate::runtime::plugin::CompiledPlugin;

/// Run a plugin over its evaluation set and print its metrics; exit 1 if a gate fails.
///
/// The set is the one the manifest's `[evaluate]` table names (or `--data`). Prints accuracy,
/// per-label precision, recall, F1 and ROC AUC, a confusion matrix (classification), segment
/// coverage and false time (segments), errors (regression), latency and peak memory. The
/// gateway runs the same evaluation before an update goes live.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  edgewise eval plugins/vibration-fault\n  edgewise eval vibration-fault-0.2.0.ewb --keyring keyring.toml --against vibration-fault-0.1.0.ewb\n  edgewise eval plugins/vibration-fault --data more.jsonl --json"
)]
pub struct Args {
    /// A plugin directory (with plugin.toml), or a bundle (.ewb).
    plugin: PathBuf,
    /// Evaluate on this JSON Lines file instead of the set the plugin ships.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// A second plugin (directory or bundle) run on the same set: printed side by side, and
    /// the baseline of `running` in the gates.
    #[arg(long, value_name = "PLUGIN")]
    against: Option<PathBuf>,
    /// The keyring that bundles must verify against (evaluating a bundle runs its code).
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Print the evaluation as JSON (for CI).
    #[arg(long)]
    json: bool,
    /// Override a setting of the evaluated plugin, as KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = super::replay::parse_setting)]
    settings: Vec<(String, String)>,
}

/// A plugin loaded for evaluation, with the evaluation set it ships.
struct Loaded {
    plugin: CompiledPlugin,
    /// Each data file's name and text.
    data: Vec<(String, String)>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(crate::runtime::default_caps(), 16)?;
    let keyring = args
        .keyring
        .as_deref()
        .map(|path| Keyring::from_file(path).with_context(|| path.display().to_string()))
        .transpose()?;
    let settings: BTreeMap<_, _> = args.settings.into_iter().collect();
    let candidate = load(&runtime, &args.plugin, keyring.as_ref(), &settings)?;
    let spec = candidate.plugin.manifest().evaluate.clone().with_context(|| {
        format!(
            "{} has no [evaluate] table: nothing says how to read its outputs (see docs/evaluation.md)",
            args.plugin.display()
        )
    })?;
    let data = match &args.data {
        Some(path) => vec![(
            path.display().to_string(),
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        )],
        None => candidate.data,
    };
    let mut samples: Vec<Sample> = Vec::new();
    for (source, text) in &data {
        samples.extend(read_samples(text, source)?);
    }
    let baseline = args
        .against
        .as_deref()
        .map(|path| load(&runtime, path, keyring.as_ref(), &BTreeMap::new()))
        .transpose()?
        .map(|b| Arc::new(b.plugin));
    let evaluation = Evaluation::run(Arc::new(candidate.plugin), baseline, &spec, &samples, None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
    } else {
        let sources: Vec<&str> = data.iter().map(|(s, _)| s.as_str()).collect();
        print!("{}", render(&evaluation, &spec, &sources.join(", ")));
    }
    if !evaluation.verdict.passed {
        bail!("evaluation gate failed: {}", evaluation.verdict.failures());
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads a plugin directory, or a bundle verified against `keyring`, with its data files.
fn load(
    runtime: &Runtime,
    path: &Path,
    keyring: Option<&Keyring>,
    settings: &BTreeMap<String, String>,
) -> anyhow::Result<Loaded> {
    let context = || format!("loading plugin {}", path.display());
    if path.is_dir() {
        let manifest = Manifest::from_file(&path.join("plugin.toml")).with_context(context)?;
        let data = data_files(&manifest.evaluate, |file| {
            std::fs::read(path.join(file)).with_context(|| format!("reading {}", file.display()))
        })?;
        let plugin = CompiledPlugin::from_manifest(runtime, path, manifest, settings)
            .with_context(context)?;
        return Ok(Loaded { plugin, data });
    }
    let Some(keyring) = keyring else {
        bail!(
            "{} is a bundle: evaluating it runs its code, so give --keyring to verify it first",
            path.display()
        );
    };
    let verified = Bundle::verify_file(path, DEFAULT_MAX_BYTES, keyring).with_context(context)?;
    let data = data_files(&verified.manifest.evaluate, |file| Ok(verified.file(file)?))?;
    let plugin =
        CompiledPlugin::from_bundle(runtime, &verified, settings, None).with_context(context)?;
    Ok(Loaded { plugin, data })
}

fn data_files(
    spec: &Option<Evaluate>,
    read: impl Fn(&Path) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Vec<(String, String)>> {
    let files = spec.iter().flat_map(|e| &e.data);
    files
        .map(|file| {
            let text = String::from_utf8(read(file)?)
                .with_context(|| format!("{} is not UTF-8 text", file.display()))?;
            Ok((file.display().to_string(), text))
        })
        .collect()
}

/// The evaluation in words and tables.
fn render(e: &Evaluation, spec: &Evaluate, sources: &str) -> String {
    let r = &e.report;
    let mut out = String::new();
    let what = match spec.kind {
        TaskKind::Segments => "labelled segments",
        TaskKind::Classification | TaskKind::Detection | TaskKind::Regression => "labelled samples",
    };
    let _ = writeln!(
        out,
        "{} {}: {} {what} from {sources} in {:.0} ms",
        r.plugin,
        r.version,
        value(r, "samples"),
        r.elapsed_ms
    );
    if let Some(b) = &e.baseline {
        let _ = writeln!(out, "against {} {}", b.plugin, b.version);
    }
    if let Some(confusion) = &r.confusion {
        let _ = writeln!(
            out,
            "\n{:<16}{:>10}{:>10}{:>10}{:>10}",
            "label", "precision", "recall", "f1", "auc"
        );
        for class in confusion.classes() {
            let cell = |name: &str| {
                r.metrics
                    .get(&format!("{name}[{class}]"))
                    .map_or("-".to_owned(), |v| format!("{v:.4}"))
            };
            let _ = writeln!(
                out,
                "{class:<16}{:>10}{:>10}{:>10}{:>10}",
                cell("precision"),
                cell("recall"),
                cell("f1"),
                cell("auc")
            );
        }
        let _ = writeln!(out, "\nconfusion (rows: expected, columns: predicted)");
        let width = confusion
            .labels
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(6)
            + 2;
        let _ = write!(out, "{:width$}", "");
        for label in &confusion.labels {
            let _ = write!(out, "{label:>width$}");
        }
        let _ = writeln!(out);
        for (label, row) in confusion.labels.iter().zip(&confusion.counts) {
            let _ = write!(out, "{label:<width$}");
            for count in row {
                let _ = write!(out, "{count:>width$}");
            }
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(out);
    let names = summary_metrics(spec, r);
    match &e.baseline {
        None => {
            for name in names {
                let _ = writeln!(out, "{name:<20}{:>12}", value(r, &name));
            }
        }
        Some(b) => {
            let _ = writeln!(
                out,
                "{:<20}{:>12}{:>12}{:>12}",
                "metric", "this", "against", "change"
            );
            for name in names {
                let change = match (r.metrics.get(&name), b.metrics.get(&name)) {
                    (Some(x), Some(y)) => format!("{:+.4}", x - y),
                    _ => "-".into(),
                };
                let _ = writeln!(
                    out,
                    "{name:<20}{:>12}{:>12}{change:>12}",
                    value(r, &name),
                    value(b, &name)
                );
            }
        }
    }
    if !e.verdict.gates.is_empty() {
        let _ = writeln!(out, "\ngates:");
        for g in &e.verdict.gates {
            let verdict = if g.passed { "pass" } else { "FAIL" };
            let got = g.value.map_or("-".into(), number);
            let note = g
                .note
                .as_deref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {verdict}  {:<36} got {got}{note}", g.gate);
        }
    }
    out
}

/// The headline metrics, the per-label ones left to the table above.
fn summary_metrics(spec: &Evaluate, r: &Report) -> Vec<String> {
    spec.kind
        .metrics()
        .iter()
        .chain(edgewise_signing::evaluate::COMMON_METRICS.iter())
        .filter(|m| r.metrics.contains_key(**m))
        .map(|m| (*m).to_owned())
        .collect()
}

fn value(r: &Report, name: &str) -> String {
    r.metrics.get(name).copied().map_or("-".into(), number)
}

/// A count as a whole number, any other value to four decimals.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

//! The bundle commands: `pack` (author), `verify` and `inspect` (anyone), `install` (operator).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use edgewise_signing::bundle::{self, DEFAULT_MAX_BYTES, EXTENSION};
use edgewise_signing::encryption::GatewayPublicKey;
use edgewise_signing::{Bundle, Keyring, Manifest, SecretKey};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::management::store::{Admit, Installed, Store};

/// Pack a plugin directory into a signed bundle.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  edgewise pack plugins/threshold --key release.key              # threshold-0.1.0.ewb\n  edgewise pack plugins/threshold --key release.key --rollback -o threshold-back.ewb\n  edgewise pack plugins/plate-reader --key release.key --encrypt-for gate-1.x25519.pub --encrypt-for LWm3...="
)]
pub struct PackArgs {
    /// The plugin directory (with plugin.toml).
    dir: PathBuf,
    /// The release key (PKCS#8 PEM, as `edgewise keygen` writes it).
    #[arg(long)]
    key: PathBuf,
    /// Where to write the bundle (default: <name>-<version>.ewb here).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Sign it as a rollback: gateways accept it over a higher release.
    #[arg(long)]
    rollback: bool,
    /// Encrypt the model files for these gateways only: a public key (base64, as `edgewise
    /// keygen --gateway` prints and a gateway's status shows), or a file of them, one per line
    /// (`#` starts a comment; `edgewise fleet keys` writes one). Repeatable. The bundle still
    /// verifies anywhere; only these gateways can install it.
    #[arg(long, value_name = "KEY|FILE")]
    encrypt_for: Vec<String>,
}

/// The gateway public keys given to --encrypt-for: a key, or a file of keys.
fn gateway_keys(given: &str) -> anyhow::Result<Vec<GatewayPublicKey>> {
    if !Path::new(given).is_file() {
        return Ok(vec![
            given
                .parse()
                .with_context(|| format!("--encrypt-for {given}"))?,
        ]);
    }
    let text = std::fs::read_to_string(given).with_context(|| format!("reading {given}"))?;
    let keys = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i, line.split('#').next().unwrap_or_default().trim()))
        .filter(|(_, key)| !key.is_empty())
        .map(|(i, key)| {
            key.parse()
                .with_context(|| format!("{given} line {}", i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if keys.is_empty() {
        anyhow::bail!("--encrypt-for {given}: the file holds no key");
    }
    Ok(keys)
}

/// Check a bundle's signature and files against a keyring.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  edgewise verify threshold-0.1.0.ewb --keyring keyring.toml")]
pub struct VerifyArgs {
    /// The bundle.
    bundle: PathBuf,
    /// The keyring to trust.
    #[arg(long)]
    keyring: PathBuf,
}

/// Show a bundle's manifest, files, digests and signers, without trusting it.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  edgewise inspect threshold-0.1.0.ewb | head")]
pub struct InspectArgs {
    /// The bundle.
    bundle: PathBuf,
}

/// Install a bundle into a gateway's store (verified with the gateway's keyring).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  sudo -u edgewise edgewise install threshold-0.1.0.ewb --config /etc/edgewise/gateway.toml\n\nA running gateway takes it at its next start; `edgewise push` hot-swaps it instead."
)]
pub struct InstallArgs {
    /// The bundle.
    bundle: PathBuf,
    /// The gateway's configuration (for its store and keyring).
    #[arg(long, short, default_value = "gateway.toml")]
    config: PathBuf,
    /// Install a bundle signed as a rollback (`pack --rollback`) to an older release: the
    /// operator at the gateway asks for exactly this bundle.
    #[arg(long)]
    allow_rollback: bool,
}

pub fn pack(args: PackArgs) -> anyhow::Result<ExitCode> {
    let pem = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let key = SecretKey::from_pem(&pem).with_context(|| args.key.display().to_string())?;
    let manifest = Manifest::from_file(&args.dir.join("plugin.toml"))?;
    let total: u64 = std::iter::once(&manifest.component)
        .chain(manifest.models.iter().map(|m| &m.file))
        .filter_map(|f| std::fs::metadata(args.dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("hashing {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let options = bundle::PackOptions {
        rollback: args.rollback,
        encrypt_for: args
            .encrypt_for
            .iter()
            .map(|k| gateway_keys(k))
            .collect::<anyhow::Result<Vec<_>>>()?
            .concat(),
    };
    let packed = bundle::pack_with(&args.dir, &key, &options, &mut |done| {
        bar.set_position(done)
    });
    bar.finish_and_clear();
    let packed = packed?;
    let output = args.output.unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}-{}.{EXTENSION}",
            manifest.name, manifest.version
        ))
    });
    let bytes = packed.to_bytes();
    std::fs::write(&output, &bytes).with_context(|| format!("writing {}", output.display()))?;
    let encrypted = match options.encrypt_for.len() {
        0 => String::new(),
        n => format!(
            ", models encrypted for {n} gateway(s) ({})",
            options
                .encrypt_for
                .iter()
                .map(|k| k.id())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    println!(
        "packed {} {} (release {}{}{encrypted}) into {}: {} bytes, {} files, digest {}, signed by key {}",
        manifest.name,
        manifest.version,
        manifest.release.unwrap_or_default(),
        if args.rollback { ", rollback" } else { "" },
        output.display(),
        bytes.len(),
        packed.files.len(),
        packed.digest(),
        key.public().id()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let keyring = Keyring::from_file(&args.keyring)?;
    let verified = Bundle::verify_file(&args.bundle, DEFAULT_MAX_BYTES, &keyring)
        .with_context(|| format!("{} refused", args.bundle.display()))?;
    let signers: Vec<String> = verified.signers.iter().map(|k| k.id()).collect();
    println!(
        "OK {}: {} {} release {}, {} files, signed by {}, digest {}",
        args.bundle.display(),
        verified.manifest.name,
        verified.manifest.version,
        verified.manifest.release.unwrap_or_default(),
        verified.file_names().count(),
        signers.join(", "),
        verified.digest
    );
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let bytes = bundle::read_capped(&args.bundle, DEFAULT_MAX_BYTES)?;
    let parsed = Bundle::parse(&bytes).with_context(|| args.bundle.display().to_string())?;
    // Written, not printed: a reader that stops early (`| head`) is an error to return, not a
    // panic (the caller treats a broken pipe as the end).
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "bundle {} (NOT verified: use `edgewise verify`)",
        args.bundle.display()
    )?;
    writeln!(out, "digest {} (SHA-256 of the manifest)", parsed.digest())?;
    for s in &parsed.signatures {
        writeln!(out, "signature by key {} ({})", s.key.id(), s.key)?;
    }
    writeln!(out, "files:")?;
    for (path, content) in &parsed.files {
        writeln!(
            out,
            "  {path}  {} bytes  sha256 {}",
            content.len(),
            bundle::sha256_hex(content)
        )?;
    }
    let manifest_text = String::from_utf8_lossy(&parsed.manifest);
    if let Ok(manifest) = Manifest::parse(&manifest_text, &args.bundle) {
        writeln!(out, "{}", settings_table(&manifest))?;
    }
    writeln!(out, "manifest:\n{manifest_text}")?;
    Ok(ExitCode::SUCCESS)
}

/// The settings a plugin declares: name, what it accepts, default, description.
fn settings_table(manifest: &Manifest) -> String {
    if manifest.settings.is_empty() {
        return "settings: none".into();
    }
    let mut table = String::from("settings:");
    for (key, decl) in &manifest.settings {
        table.push_str(&format!(
            "\n  {key:<20} {:<28} default {:<10} {}",
            decl.accepts(),
            decl.default_value().to_string(),
            decl.description()
        ));
    }
    table
}

pub fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_file(&args.config)?;
    let keyring_path = config
        .keyring
        .as_deref()
        .with_context(|| format!("{}: no `keyring` configured", args.config.display()))?;
    let keyring = Keyring::from_file(keyring_path)?;
    let store = Store::open(&config.store, keyring, config.max_bundle_bytes())?;
    let bytes = edgewise_signing::bundle::read_capped(&args.bundle, config.max_bundle_bytes())?;
    let digest = edgewise_signing::Bundle::parse(&bytes)
        .map(|b| b.digest())
        .with_context(|| args.bundle.display().to_string())?;
    let admit = match args.allow_rollback {
        true => Admit::Rollback(&digest),
        false => Admit::Update,
    };
    match store
        .install(&bytes, &args.bundle, admit)
        .with_context(|| format!("{} not installed", args.bundle.display()))?
    {
        Installed::Activated {
            plugin,
            version,
            release,
            digest,
        } => println!(
            "installed {plugin} {version} (release {release}, digest {digest}) in {}; it runs from the next gateway start",
            display(&config.store)
        ),
        Installed::AlreadyActive { plugin, digest } => {
            println!("{plugin}: this bundle ({digest}) is already installed; nothing changed")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

//! `edgewise keygen <name>`: a new ed25519 signing key pair; `edgewise keygen --gateway`: the
//! gateway's X25519 key pair, which decrypts the models of bundles encrypted for it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use edgewise_signing::SecretKey;
use edgewise_signing::encryption::GatewaySecretKey;

use crate::config::Config;
use crate::management::store::GATEWAY_KEY_FILE;

/// Make a key pair: <name>.key (private, PKCS#8 PEM, mode 0600) and <name>.pub (public,
/// base64); or, with --gateway, the gateway's decryption key in its store.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  edgewise keygen release                   # release.key, release.pub\n  edgewise keygen keys/ops-anna --role operator\n  edgewise keygen --gateway --config /etc/edgewise/gateway.toml   # <store>/gateway.x25519"
)]
pub struct Args {
    /// Path prefix of the two files, e.g. `keys/release-2026`.
    #[arg(required_unless_present = "gateway")]
    name: Option<PathBuf>,
    /// The role to suggest in the printed keyring entry: release or operator.
    #[arg(long, default_value = "release")]
    role: String,
    /// Make this gateway's X25519 decryption key instead: private in the store
    /// (`gateway.x25519`, mode 0600), public in `gateway.x25519.pub` beside it and in the
    /// gateway's status. Authors encrypt bundles for it with `pack --encrypt-for`.
    #[arg(long, conflicts_with = "name")]
    gateway: bool,
    /// With --gateway: the gateway's configuration, for its store.
    #[arg(long, short, default_value = "gateway.toml", requires = "gateway")]
    config: PathBuf,
    /// With --gateway: the store directory itself, instead of the configuration's.
    #[arg(long, requires = "gateway")]
    store: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.gateway {
        let store = match args.store {
            Some(store) => store,
            None => Config::from_file(&args.config)?.store,
        };
        return gateway_key(&store);
    }
    let name = args.name.context("give the key's name")?;
    let key = SecretKey::generate()?;
    let private = name.with_extension("key");
    let public = name.with_extension("pub");
    write_private(&private, key.to_pem()?.as_bytes())?;
    std::fs::write(&public, format!("{}\n", key.public()))
        .with_context(|| format!("writing {}", public.display()))?;
    let label = name
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!(
        "wrote {} (private, keep it safe) and {}; key id {}\n\nkeyring entry:\n\n[[keys]]\nname = \"{label}\"\nrole = \"{}\"\npublic-key = \"{}\"",
        private.display(),
        public.display(),
        key.public().id(),
        args.role,
        key.public()
    );
    Ok(ExitCode::SUCCESS)
}

fn gateway_key(store: &Path) -> anyhow::Result<ExitCode> {
    crate::durable_file::create_private_dir(store)
        .with_context(|| format!("creating {}", store.display()))?;
    let key = GatewaySecretKey::generate()?;
    let private = store.join(GATEWAY_KEY_FILE);
    let public = store.join(format!("{GATEWAY_KEY_FILE}.pub"));
    write_private(&private, key.to_text().as_bytes())?;
    std::fs::write(&public, format!("{}\n", key.public()))
        .with_context(|| format!("writing {}", public.display()))?;
    println!(
        "wrote {} (private: the gateway decrypts with it; it must not leave this machine) and {}; key id {}\n\nencrypt a bundle for this gateway with:\n\n  edgewise pack <dir> --key release.key --encrypt-for {}",
        private.display(),
        public.display(),
        key.public().id(),
        key.public()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes a new private key file, readable by its owner only; never over an existing one.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    file.open(path)
        .and_then(|mut f| f.write_all(bytes).map(|()| f))
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {} (it must not exist yet)", path.display()))
}

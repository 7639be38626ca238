//! `edgewise keygen <name>`: a new ed25519 key pair.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use edgewise_signing::SecretKey;

/// Make a key pair: <name>.key (private, PKCS#8 PEM, mode 0600) and <name>.pub (public, base64).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  edgewise keygen release                   # release.key, release.pub\n  edgewise keygen keys/ops-anna --role operator"
)]
pub struct Args {
    /// Path prefix of the two files, e.g. `keys/release-2026`.
    name: PathBuf,
    /// The role to suggest in the printed keyring entry: release or operator.
    #[arg(long, default_value = "release")]
    role: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = SecretKey::generate()?;
    let private = args.name.with_extension("key");
    let public = args.name.with_extension("pub");
    let pem = key.to_pem()?;
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    file.open(&private)
        .and_then(|mut f| f.write_all(pem.as_bytes()).map(|()| f))
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {} (it must not exist yet)", private.display()))?;
    std::fs::write(&public, format!("{}\n", key.public()))
        .with_context(|| format!("writing {}", public.display()))?;
    let label = args
        .name
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

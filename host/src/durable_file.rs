//! Files written so that a crash or a power loss leaves the old version or the new one, never
//! a torn mix: the store's state and bundles, the command log, the fleet file, the compiled
//! cache, keyrings.
//!
//! Errors are `std::io::Error`; the caller names the file in its own error.
//!
//! A file or directory made here takes the owner of the directory it is in, when that differs
//! and the process may change it (root): `sudo edgewise install` into the store of a gateway
//! that runs as its own user must not leave files that user cannot replace.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename over, fsync
/// of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = directory_of(path);
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    take_owner_of(dir, path);
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Copies the file `from` to `path` atomically, streaming it (the file is never in memory
/// whole).
pub fn copy_atomically(from: &Path, path: &Path) -> std::io::Result<()> {
    let dir = directory_of(path);
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::copy(&mut std::fs::File::open(from)?, temp.as_file_mut())?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    take_owner_of(dir, path);
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Moves the file `from` to `path` on the same file system, durably: its content is synced
/// first, then the rename and the directory.
pub fn move_atomically(from: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::File::open(from)?.sync_all()?;
    std::fs::rename(from, path)?;
    let dir = directory_of(path);
    take_owner_of(dir, path);
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// The directory `path` is in: `.` for a bare file name, whose parent is the empty path
/// (which cannot be opened to sync).
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Gives `path` the owner of `dir` if they differ. Only root may; anyone else keeps the file
/// as theirs (they could write it, so the directory lets them), and that is no error.
fn take_owner_of(dir: &Path, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(d), Ok(p)) = (std::fs::metadata(dir), std::fs::metadata(path))
            && (d.uid(), d.gid()) != (p.uid(), p.gid())
        {
            let _ = std::os::unix::fs::chown(path, Some(d.uid()), Some(d.gid()));
        }
    }
}

/// Creates `dir` (and its parents) readable by its owner only (0700), owned like its parent.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let existed = dir.is_dir();
    std::fs::create_dir_all(dir)?;
    if !existed {
        take_owner_of(directory_of(dir), dir);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_is_written_in_the_current_directory() {
        assert_eq!(directory_of(Path::new("keyring.toml")), Path::new("."));
        assert_eq!(
            directory_of(Path::new("/etc/edgewise/keyring.toml")),
            Path::new("/etc/edgewise")
        );
    }
}

//! Bundles arriving in chunks (`edgewise/bundles/<digest>/<index>/<count>`), assembled in the
//! store's `incoming/` directory.
//!
//! Each chunk is written where it belongs as it arrives (a broker may send retained chunks in
//! any order, and again after a reconnect), without fsync, so a bundle of any size costs the
//! gateway one chunk of memory at a time and its thread a page-cache write per chunk. When the
//! last chunk is in, the file is handed to the management thread, which verifies it where it
//! lies and moves it into the store (or deletes it). Nothing here is trusted: a chunk only has
//! to be the size its place says; whether the whole is the bundle named is for verification.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use edgewise_signing::bundle::is_sha256_hex;
use edgewise_signing::namespace::{BUNDLE_CHUNK_BYTES, bundle_chunk_count};

/// Bundles assembled at once; one more drops the one that has waited longest.
const MAX_ASSEMBLING: usize = 4;

/// What a chunk came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembly {
    /// More chunks are needed.
    Waiting,
    /// That was the last: the bundle is in this file.
    Ready(PathBuf),
}

/// Why a chunk was refused (the bundle's assembly, if any, goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The digest is not a digest.
    #[error("`{0}` is not a bundle digest (64 lowercase hex digits)")]
    Digest(String),
    /// More chunks than a bundle under the cap needs.
    #[error("{count} chunks of {BUNDLE_CHUNK_BYTES} bytes is over this gateway's `max-bundle-mib`")]
    TooLarge {
        /// Chunks announced.
        count: u32,
    },
    /// A chunk is not the size its place says.
    #[error(
        "chunk {index} of {count} has {size} bytes: every chunk but the last has {BUNDLE_CHUNK_BYTES}, the last 1 to {BUNDLE_CHUNK_BYTES}"
    )]
    Size {
        /// Its index.
        index: u32,
        /// The count.
        count: u32,
        /// Its size.
        size: usize,
    },
    /// The file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// One bundle being assembled.
struct Part {
    file: std::fs::File,
    path: PathBuf,
    have: Vec<bool>,
    missing: usize,
    /// Its place in the order assemblies started, to drop the oldest.
    started: u64,
}

/// The bundles being assembled, by digest.
pub struct Incoming {
    dir: PathBuf,
    max_chunks: u64,
    parts: BTreeMap<String, Part>,
    started: u64,
}

impl Incoming {
    /// Assembles in `dir` (emptied now: what an earlier process left is incomplete or
    /// unverified) bundles of at most `max_bytes`.
    pub fn new(dir: &Path, max_bytes: u64) -> Self {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Self {
            dir: dir.to_owned(),
            max_chunks: bundle_chunk_count(max_bytes),
            parts: BTreeMap::new(),
            started: 0,
        }
    }

    /// Takes chunk `index` of `count` of bundle `digest`.
    pub fn chunk(
        &mut self,
        digest: &str,
        index: u32,
        count: u32,
        bytes: &[u8],
    ) -> Result<Assembly, ChunkError> {
        if !is_sha256_hex(digest) {
            return Err(ChunkError::Digest(digest.to_owned()));
        }
        if u64::from(count) > self.max_chunks {
            return Err(ChunkError::TooLarge { count });
        }
        let last = index.checked_add(1) == Some(count);
        let fits = match last {
            true => (1..=BUNDLE_CHUNK_BYTES).contains(&bytes.len()),
            false => bytes.len() == BUNDLE_CHUNK_BYTES && index < count,
        };
        if !fits {
            return Err(ChunkError::Size {
                index,
                count,
                size: bytes.len(),
            });
        }
        // A new upload of the same digest in another number of chunks starts over.
        if self
            .parts
            .get(digest)
            .is_some_and(|p| p.have.len() != count as usize)
        {
            self.drop_part(digest);
        }
        if !self.parts.contains_key(digest) {
            self.start(digest, count)?;
        }
        let Some(part) = self.parts.get_mut(digest) else {
            return Ok(Assembly::Waiting);
        };
        let io = |source| ChunkError::Io {
            path: part.path.clone(),
            source,
        };
        let offset = u64::from(index) * BUNDLE_CHUNK_BYTES as u64;
        part.file.write_all_at(bytes, offset).map_err(io)?;
        if last {
            part.file.set_len(offset + bytes.len() as u64).map_err(io)?;
        }
        if !std::mem::replace(&mut part.have[index as usize], true) {
            part.missing -= 1;
        }
        if part.missing > 0 {
            return Ok(Assembly::Waiting);
        }
        let done = self.parts.remove(digest).map(|p| p.path);
        Ok(done.map_or(Assembly::Waiting, Assembly::Ready))
    }

    fn start(&mut self, digest: &str, count: u32) -> Result<(), ChunkError> {
        if self.parts.len() >= MAX_ASSEMBLING
            && let Some(oldest) = self
                .parts
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(d, _)| d.clone())
        {
            tracing::warn!(
                digest = oldest,
                "dropped an incomplete bundle: {MAX_ASSEMBLING} others were being assembled"
            );
            self.drop_part(&oldest);
        }
        self.started += 1;
        // A name of its own: the file of an earlier upload of this digest may still be
        // being verified.
        let path = self.dir.join(format!("{digest}.{}.part", self.started));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| ChunkError::Io {
                path: path.clone(),
                source,
            })?;
        self.parts.insert(
            digest.to_owned(),
            Part {
                file,
                path,
                have: vec![false; count as usize],
                missing: count as usize,
                started: self.started,
            },
        );
        Ok(())
    }

    fn drop_part(&mut self, digest: &str) {
        if let Some(part) = self.parts.remove(digest) {
            let _ = std::fs::remove_file(part.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn bundle_of(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i % 251) as u8).collect()
    }

    fn chunks(bytes: &[u8]) -> Vec<&[u8]> {
        bytes.chunks(BUNDLE_CHUNK_BYTES).collect()
    }

    #[test]
    fn chunks_in_any_order_and_twice_assemble_the_bundle() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut incoming = Incoming::new(dir.path(), 64 << 20);
        let bytes = bundle_of(3 * BUNDLE_CHUNK_BYTES + 17);
        let parts = chunks(&bytes);
        let count = parts.len() as u32;
        for index in [3, 0, 0, 2] {
            let got = incoming.chunk(DIGEST, index, count, parts[index as usize]);
            assert_eq!(got.expect("chunk taken"), Assembly::Waiting);
        }
        let Ok(Assembly::Ready(path)) = incoming.chunk(DIGEST, 1, count, parts[1]) else {
            panic!("the last missing chunk completes the bundle");
        };
        assert_eq!(std::fs::read(path).expect("assembled file"), bytes);
    }

    #[test]
    fn a_chunk_of_the_wrong_size_or_a_bundle_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut incoming = Incoming::new(dir.path(), 1 << 20);
        let short = vec![0u8; 10];
        let full = vec![0u8; BUNDLE_CHUNK_BYTES];
        assert!(matches!(
            incoming.chunk(DIGEST, 0, 2, &short),
            Err(ChunkError::Size { .. })
        ));
        assert!(matches!(
            incoming.chunk(DIGEST, 1, 2, &[]),
            Err(ChunkError::Size { .. })
        ));
        assert!(matches!(
            incoming.chunk(DIGEST, 0, 5, &full),
            Err(ChunkError::TooLarge { count: 5 })
        ));
        assert!(matches!(
            incoming.chunk("#", 0, 1, &short),
            Err(ChunkError::Digest(_))
        ));
        let none: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert!(none.is_empty(), "nothing written for refused chunks");
    }

    #[test]
    fn a_new_upload_in_another_chunk_count_starts_over_and_too_many_drop_the_oldest() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut incoming = Incoming::new(dir.path(), 64 << 20);
        let full = vec![1u8; BUNDLE_CHUNK_BYTES];
        incoming.chunk(DIGEST, 0, 3, &full).expect("chunk taken");
        let again = incoming.chunk(DIGEST, 0, 2, &full).expect("chunk taken");
        assert_eq!(again, Assembly::Waiting);
        let Ok(Assembly::Ready(path)) = incoming.chunk(DIGEST, 1, 2, b"end") else {
            panic!("two chunks of the new upload complete it");
        };
        assert_eq!(
            std::fs::metadata(path).expect("file").len(),
            BUNDLE_CHUNK_BYTES as u64 + 3
        );
        for n in 0..=MAX_ASSEMBLING {
            let digest = format!("{n:064x}");
            incoming.chunk(&digest, 0, 2, &full).expect("chunk taken");
        }
        assert_eq!(incoming.parts.len(), MAX_ASSEMBLING);
        assert!(!incoming.parts.contains_key(&format!("{:064x}", 0)));
    }
}

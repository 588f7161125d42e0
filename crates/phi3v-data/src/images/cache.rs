//! The on-disk image cache: one file per URL, named by the URL's SHA-256.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::DataError;

/// A folder of downloaded images keyed by URL.
///
/// The file of a URL is `<dir>/<first two hex digits>/<sha256 of the URL in hex>` (the
/// two-digit shard keeps folders small for catalogues of many thousands of images). Files are
/// written under a temporary name in the same folder and renamed into place
/// ([`phi3v_io::write_atomic`], the toolkit's one atomic write), so a file that exists is
/// complete: an interrupted run never leaves a truncated image that a later run
/// would take for a cached one, and concurrent runs sharing a cache do not see each other's
/// partial writes.
#[derive(Debug, Clone)]
pub struct ImageCache {
    dir: PathBuf,
}

impl ImageCache {
    /// A cache in `dir`, created if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, DataError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| DataError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache key of a URL: the hex SHA-256 of its text.
    pub fn key(url: &str) -> String {
        let digest = Sha256::digest(url.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Where the image of `url` is (or would be) stored.
    pub fn path(&self, url: &str) -> PathBuf {
        let key = Self::key(url);
        self.dir.join(&key[..2]).join(key)
    }

    /// The cached file of `url`, if it has been downloaded (a non-empty file).
    pub fn get(&self, url: &str) -> Option<PathBuf> {
        let path = self.path(url);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() > 0 => Some(path),
            _ => None,
        }
    }

    /// Stores the bytes of `url` atomically (a temporary file beside it, synced, then
    /// renamed into place; removed if anything fails) and returns the path.
    pub fn put(&self, url: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.path(url);
        let shard = path.parent().expect("cache paths have a shard folder");
        std::fs::create_dir_all(shard)?;
        phi3v_io::write_atomic(&path, |tmp| std::fs::write(tmp, bytes))?;
        Ok(path)
    }
}

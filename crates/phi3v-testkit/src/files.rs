//! Snapshots of files on disk, for the tests that check a refused command left its inputs
//! byte-identical.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every file under `path` (recursively) with its bytes, keyed by its path relative to
/// `path`; a file stands for itself (key `""`), and a missing path gives an empty map.
pub fn snapshot(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, path: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(root, &entry.unwrap().path(), out);
            }
        } else if path.exists() {
            let key = path.strip_prefix(root).unwrap().to_path_buf();
            out.insert(key, std::fs::read(path).unwrap());
        }
    }
    let mut out = BTreeMap::new();
    walk(path, path, &mut out);
    out
}

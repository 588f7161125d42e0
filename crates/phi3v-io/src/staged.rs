//! Output folders written beside their destination and swapped in whole.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::atomic::parent_or_dot;
use crate::OutputError;

/// An output folder under construction: everything is written into a hidden sibling of the
/// destination, which [`StagedDir::commit`] renames into place.
///
/// So a command that fails half-way leaves the destination as it was (the sibling is removed
/// when the `StagedDir` is dropped), and a replaced folder keeps nothing of its old contents:
/// a merge into a folder that held a sharded checkpoint does not leave the stale index beside
/// the new single file, and a regenerated sample catalogue does not leave old images behind.
#[derive(Debug)]
pub struct StagedDir {
    destination: PathBuf,
    staging: TempDir,
}

impl StagedDir {
    /// Starts an output folder at `destination`, given on the command line as `flag` (named
    /// in errors).
    ///
    /// # Errors
    /// - [`OutputError::NotEmpty`] when `destination` is a folder with something in it and
    ///   `overwrite` is false;
    /// - [`OutputError::NotAFolder`] when a file is in the way (never replaced: a file where a
    ///   folder is expected is more likely a typo than an old output);
    /// - [`OutputError::Io`] when the sibling cannot be created.
    pub fn new(destination: &Path, flag: &str, overwrite: bool) -> Result<Self, OutputError> {
        check_replaceable(destination, flag, overwrite)?;
        // Absolute and free of `.` and `..`, so that `--out .` names a folder with a parent.
        let destination = &crate::overlap::resolve(destination)?;
        if destination.parent().is_none() {
            return Err(OutputError::NotAFolder {
                flag: flag.to_string(),
                path: destination.clone(),
            });
        }
        let parent = parent_or_dot(destination);
        fs::create_dir_all(parent).map_err(|e| OutputError::io(parent, e))?;
        let staging = tempfile::Builder::new()
            .prefix(&hidden_name(destination, "staging"))
            .tempdir_in(parent)
            .map_err(|e| OutputError::io(parent, e))?;
        Ok(Self {
            destination: destination.to_path_buf(),
            staging,
        })
    }

    /// The folder to write into.
    pub fn path(&self) -> &Path {
        self.staging.path()
    }

    /// Where the folder will be once committed.
    pub fn destination(&self) -> &Path {
        &self.destination
    }

    /// Moves the written folder to its destination, replacing what was there, and returns the
    /// destination.
    ///
    /// The old folder is first renamed aside and deleted only once the new one is in place; if
    /// the second rename fails, the old folder is put back.
    pub fn commit(self) -> Result<PathBuf, OutputError> {
        let staging = self.staging.keep();
        let destination = self.destination;
        let parent = parent_or_dot(&destination);
        let aside = if is_present(&destination)? {
            let aside = tempfile::Builder::new()
                .prefix(&hidden_name(&destination, "replaced"))
                .tempdir_in(parent)
                .map_err(|e| OutputError::io(parent, e))?
                .keep();
            // `rename` replaces an empty folder on Unix; the fresh one made above only
            // reserved a unique name.
            fs::remove_dir(&aside).map_err(|e| OutputError::io(&aside, e))?;
            fs::rename(&destination, &aside).map_err(|e| OutputError::io(&destination, e))?;
            Some(aside)
        } else {
            None
        };
        if let Err(e) = fs::rename(&staging, &destination) {
            if let Some(aside) = &aside {
                let _ = fs::rename(aside, &destination);
            }
            let _ = fs::remove_dir_all(&staging);
            return Err(OutputError::io(&destination, e));
        }
        if let Some(aside) = aside {
            fs::remove_dir_all(&aside).map_err(|e| OutputError::io(&aside, e))?;
        }
        Ok(destination)
    }
}

/// Refuses a destination that holds something, unless `overwrite`; see [`StagedDir::new`].
/// Commands that write into a folder in place (a training run) use it on its own.
pub fn check_replaceable(
    destination: &Path,
    flag: &str,
    overwrite: bool,
) -> Result<(), OutputError> {
    match fs::metadata(destination) {
        Ok(meta) if !meta.is_dir() => Err(OutputError::NotAFolder {
            flag: flag.to_string(),
            path: destination.to_path_buf(),
        }),
        Ok(_) => {
            let entries = list_entries(destination)?;
            if entries.is_empty() || overwrite {
                Ok(())
            } else {
                Err(OutputError::NotEmpty {
                    flag: flag.to_string(),
                    path: destination.to_path_buf(),
                    entries: describe(&entries),
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(OutputError::io(destination, e)),
    }
}

fn is_present(path: &Path) -> Result<bool, OutputError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(OutputError::io(path, e)),
    }
}

/// The sorted names in `dir`.
fn list_entries(dir: &Path) -> Result<Vec<String>, OutputError> {
    let mut names = fs::read_dir(dir)
        .map_err(|e| OutputError::io(dir, e))?
        .map(|entry| {
            entry
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| OutputError::io(dir, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(names)
}

/// "a, b and 3 more" for an error message.
fn describe(names: &[String]) -> String {
    const SHOWN: usize = 3;
    let shown = names[..names.len().min(SHOWN)].join(", ");
    match names.len() {
        n if n <= SHOWN => shown,
        n => format!("{shown} and {} more", n - SHOWN),
    }
}

/// `.{name}.{what}-`: the prefix of a hidden sibling of `path`.
fn hidden_name(path: &Path, what: &str) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_string());
    format!(".{name}.{what}-")
}

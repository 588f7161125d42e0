//! Whole-file replacement through a temporary sibling that is renamed over the target.

use std::fs::{self, File, Permissions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use tempfile::NamedTempFile;

use crate::OutputError;

/// Writes `path` through `write`, which fills the temporary sibling it is given, then renames
/// that sibling over `path`. When `write` fails the temporary file is removed and `path` is
/// left as it was.
///
/// The new file keeps the permissions of the file it replaces; a new file gets the
/// permissions a plain `std::fs::write` would give it (`0666` less the umask on Unix), not the
/// owner-only mode of a temporary file, since adapters, reports and merged models are meant to
/// be shared.
///
/// `E` is the caller's error type, so that `write` can fail with its own errors; I/O failures
/// of the temporary file and the rename arrive as [`OutputError`].
pub fn write_atomic<E: From<OutputError>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temporary_sibling(path)?;
    write(tmp.path())?;
    // `write` may have replaced the file by path (e.g. a serializer that creates its
    // output), so the permissions are set on whatever is at the temporary path now.
    set_final_permissions(path, tmp.path())?;
    sync(tmp.path())?;
    tmp.persist(path)
        .map_err(|e| OutputError::io(path, e.error))?;
    Ok(())
}

/// Replaces `path` with what `write` writes to a buffered writer; [`write_atomic`] for
/// writers that stream (reports, metric logs).
pub fn replace_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> Result<(), OutputError> {
    write_atomic(path, |tmp| {
        let file = File::create(tmp).map_err(|e| OutputError::io(tmp, e))?;
        let mut out = BufWriter::new(&file);
        write(&mut out)
            .and_then(|()| out.flush())
            .map_err(|e| OutputError::io(tmp, e))
    })
}

/// A uniquely named, hidden temporary file beside `path` (the same folder keeps the rename on
/// one file system), removed if dropped before it is persisted.
fn temporary_sibling(path: &Path) -> Result<NamedTempFile, OutputError> {
    let dir = parent_or_dot(path);
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| OutputError::io(dir, e))
}

/// The folder of `path`, `.` for a bare file name.
pub(crate) fn parent_or_dot(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn set_final_permissions(target: &Path, tmp: &Path) -> Result<(), OutputError> {
    let permissions = match fs::metadata(target) {
        Ok(old) if old.is_file() => old.permissions(),
        Ok(_) => new_file_permissions(tmp)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => new_file_permissions(tmp)?,
        Err(e) => return Err(OutputError::io(target, e)),
    };
    fs::set_permissions(tmp, permissions).map_err(|e| OutputError::io(tmp, e))
}

/// Flushes the file's data to disk before the rename makes it visible, so that a power loss
/// cannot leave a renamed but empty file.
fn sync(path: &Path) -> Result<(), OutputError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| OutputError::io(path, e))
}

#[cfg(unix)]
fn new_file_permissions(_: &Path) -> Result<Permissions, OutputError> {
    use std::os::unix::fs::PermissionsExt;
    Ok(Permissions::from_mode(0o666 & !umask()))
}

#[cfg(not(unix))]
fn new_file_permissions(tmp: &Path) -> Result<Permissions, OutputError> {
    fs::metadata(tmp)
        .map(|m| m.permissions())
        .map_err(|e| OutputError::io(tmp, e))
}

/// The process's umask, read without changing it for longer than a probe file's creation:
/// the mode a freshly created file gets is `0666 & !umask`.
#[cfg(unix)]
fn umask() -> u32 {
    use std::os::unix::fs::PermissionsExt;
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        // Creating a file with mode 0666 applies the umask; the result reveals it.
        let probe = tempfile::tempdir().and_then(|dir| {
            let meta = File::create(dir.path().join("probe"))?.metadata()?;
            Ok(!meta.permissions().mode() & 0o666)
        });
        probe.unwrap_or(0o022)
    })
}

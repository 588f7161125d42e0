//! Whole-file replacement, for the files a run rewrites rather than appends to.

use std::fs::{self, File, Permissions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use tempfile::NamedTempFile;

/// Replaces `path` with what `write` writes, through a temporary file in the same directory
/// that is then renamed over it: a reader (a browser refreshing the report, a run resuming
/// after a crash) sees the old file or the new one, never half of one.
///
/// The new file keeps the permissions of the one it replaces; a new file gets `rw-r--r--` on
/// Unix, like a file created under the usual umask, rather than the owner-only mode of a
/// temporary file, since reports are meant to be shared.
pub(crate) fn replace_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let tmp = NamedTempFile::new_in(dir)?;
    let mut out = BufWriter::new(tmp.as_file());
    write(&mut out)?;
    out.flush()?;
    drop(out);
    let permissions = match fs::metadata(path) {
        Ok(old) => old.permissions(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => new_file_permissions(tmp.as_file())?,
        Err(e) => return Err(e),
    };
    tmp.as_file().set_permissions(permissions)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(unix)]
fn new_file_permissions(_: &File) -> io::Result<Permissions> {
    use std::os::unix::fs::PermissionsExt;
    Ok(Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn new_file_permissions(file: &File) -> io::Result<Permissions> {
    Ok(file.metadata()?.permissions())
}

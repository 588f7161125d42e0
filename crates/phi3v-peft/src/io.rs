//! File helpers of the exports and the merge: atomic writes, JSON files, and tensors as
//! plain `Vec<f32>` on their way to a safetensors file.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use phi3v_nn::weights::save_f32;

use crate::error::PeftError;

/// Named f32 tensors: name to `(shape, values)`.
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Writes `path` through `write` on a temporary sibling, then renames it over `path`: a
/// reader (or a resumed run after a kill) sees the old file or the new one, never half of
/// one. When `write` fails the temporary file is removed and `path` is left as it was.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), PeftError>,
) -> Result<(), PeftError> {
    // A sibling, so that the rename stays on one file system.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // A temporary file is created private (0600); the file it becomes should get the
    // permissions any new file gets (0666 less the umask), as `std::fs::write` gives.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder
        .tempfile_in(dir)
        .map_err(|e| PeftError::io(dir, e))?;
    write(tmp.path())?;
    tmp.persist(path)
        .map_err(|e| PeftError::io(path, e.error))?;
    Ok(())
}

/// Reads a JSON file into `T`, naming the file in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PeftError> {
    let text = std::fs::read_to_string(path).map_err(|e| PeftError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| PeftError::io(path, e))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), PeftError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| PeftError::io(path, e))?;
    write_atomic(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| PeftError::io(tmp, e))
    })
}

/// Writes f32 tensors to a safetensors file atomically.
pub fn save_tensors(path: &Path, tensors: &TensorMap) -> Result<(), PeftError> {
    write_atomic(path, |tmp| {
        save_f32(tmp, tensors, None).map_err(|e| PeftError::io(tmp, e))
    })
}

/// A tensor's shape and f32 values.
pub fn to_vec<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let shape = tensor.dims().to_vec();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 tensor data");
    (shape, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The temporary file is private while it is written; the file it becomes is not.
    #[cfg(unix)]
    #[test]
    fn atomic_writes_get_the_permissions_of_a_plain_write() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("plain.json");
        std::fs::write(&plain, "{}").unwrap();
        let atomic = tmp.path().join("atomic.json");
        write_json(&atomic, &serde_json::json!({})).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&atomic), mode(&plain));
    }
}

//! Small file helpers shared by checkpoints, exports and the run directory: atomic writes
//! and tensors to and from plain `Vec<f32>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use phi3v_nn::weights::save_f32;

use crate::error::LoraError;

/// Named f32 tensors: name to `(shape, values)`.
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The temporary sibling a file is written to before it is renamed into place.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `path` through `write` on a temporary sibling, then renames it over `path`: a
/// reader (or a resumed run after a kill) sees the old file or the new one, never half of one.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), LoraError>,
) -> Result<(), LoraError> {
    let tmp = temp_path(path);
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| LoraError::io(path, e))
}

/// Writes text atomically.
pub fn write_text_atomic(path: &Path, text: &str) -> Result<(), LoraError> {
    write_atomic(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| LoraError::io(tmp, e))
    })
}

/// Writes f32 tensors to a safetensors file atomically.
pub fn save_tensors(path: &Path, tensors: &TensorMap) -> Result<(), LoraError> {
    write_atomic(path, |tmp| {
        save_f32(tmp, tensors, None).map_err(|e| LoraError::io(tmp, e))
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

/// A `[numel]` tensor from f32 values.
pub fn from_vec<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// Reads a JSON file into `T`, naming the file in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, LoraError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoraError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| LoraError::io(path, e))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), LoraError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| LoraError::io(path, e))?;
    write_text_atomic(path, &text)
}

//! Errors of the adapter crate, each naming what is at fault: the setting, the file, the
//! tensor.

use std::path::PathBuf;

/// What can go wrong while planning, exporting, importing or merging adapters.
#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    /// A plan or an adapter config that cannot work (names the setting, and the file when
    /// there is one).
    #[error("configuration: {0}")]
    Config(String),
    /// A key of a settings file (`adapter_config.json`) whose value cannot work.
    #[error("{path}: `{key}` {message}")]
    Setting {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// A file that cannot be read or written.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// A tensor with an unexpected name, shape or type.
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    /// A safetensors file that cannot be read (each names the file, and the tensor where
    /// there is one).
    #[error(transparent)]
    Weights(#[from] phi3v_nn::WeightsError),
    /// An output that would clobber an input or a non-empty folder, or a failed write.
    #[error(transparent)]
    Output(#[from] phi3v_io::OutputError),
}

impl PeftError {
    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        PeftError::File {
            path: path.into(),
            message: err.to_string(),
        }
    }

    /// Key `key` of the settings file `path` is at fault.
    pub fn setting(
        path: impl Into<PathBuf>,
        key: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> Self {
        PeftError::Setting {
            path: path.into(),
            key: key.into(),
            message: message.to_string(),
        }
    }

    /// A fault of tensor `tensor` in file `path`.
    pub fn tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> Self {
        PeftError::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            message: message.to_string(),
        }
    }
}

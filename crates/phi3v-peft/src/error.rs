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
}

impl PeftError {
    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        PeftError::File {
            path: path.into(),
            message: err.to_string(),
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

//! Errors of the trainer, each naming what is at fault (file, tensor, step, setting).

use std::path::PathBuf;

/// What can go wrong while fine-tuning.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting that cannot work (names the setting).
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
    /// The loss became NaN or infinite; the run stopped and kept its last good checkpoint.
    #[error("non-finite loss {loss} at step {step}: the run stopped; its last good checkpoint is {checkpoint}")]
    NonFinite {
        step: u64,
        loss: f64,
        checkpoint: String,
    },
    #[error(transparent)]
    Model(#[from] phi3v::Phi3VError),
    #[error(transparent)]
    Data(#[from] phi3v_data::DataError),
    #[error(transparent)]
    Processor(#[from] phi3v::processor::ProcessorError),
    #[error(transparent)]
    Adapter(#[from] phi3v_peft::PeftError),
}

impl TrainError {
    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        TrainError::File {
            path: path.into(),
            message: err.to_string(),
        }
    }
}

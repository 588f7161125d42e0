//! Errors of the trainer, each naming what is at fault (file, tensor, step, setting).

use std::path::PathBuf;

/// What can go wrong while fine-tuning.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting that cannot work (names the setting, its flag and its value).
    #[error("configuration: {0}")]
    Config(String),
    /// The run folder cannot take this job: it holds another run (and `--resume` was not
    /// given), or the run it holds was made from other data, another model or other
    /// settings (and `--force` was not given), or none of its checkpoints is intact.
    #[error("run folder {dir}: {message}")]
    RunDir { dir: PathBuf, message: String },
    /// A split has no example to train on or evaluate (says how many rows and products
    /// there were and what the split did with them).
    #[error("{0}")]
    EmptySplit(String),
    /// A task file that cannot describe a task (names the file and the key at fault).
    #[error("task file {path}: {message}")]
    TaskFile { path: PathBuf, message: String },
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
    /// The loss became NaN or infinite; the run stopped. `checkpoint` is the newest
    /// checkpoint that passed verification when it stopped (what `--resume` would continue
    /// from), or says there is none.
    #[error("non-finite loss or gradient norm ({loss}) at step {step}: the run stopped; its newest intact checkpoint is {checkpoint}")]
    NonFinite {
        step: u64,
        loss: f64,
        checkpoint: String,
    },
    /// An output that would clobber an input or a non-empty folder.
    #[error(transparent)]
    Output(#[from] phi3v_io::OutputError),
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

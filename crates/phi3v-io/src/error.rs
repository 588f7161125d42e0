//! What can stop a write, each naming the path and, where a user gave it, the flag.

use std::path::PathBuf;

/// Why an output was not written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file or folder that cannot be read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An output that would overwrite or mix with one of the command's inputs.
    #[error(
        "{output_flag} {} {relation} {input_flag} {}: writing there could destroy an input; \
         choose an output outside the inputs",
        output.display(),
        input.display()
    )]
    Overlaps {
        output_flag: String,
        output: PathBuf,
        /// "is", "contains" or "is inside".
        relation: &'static str,
        input_flag: String,
        input: PathBuf,
    },
    /// A non-empty output folder, replaced only on request.
    #[error(
        "{flag} {} already holds {entries}: pass --overwrite to replace its contents, or choose \
         another folder",
        path.display()
    )]
    NotEmpty {
        flag: String,
        path: PathBuf,
        /// A short description of what is there, e.g. "config.json, model.safetensors and 3 more".
        entries: String,
    },
    /// An output folder whose path is taken by a file.
    #[error("{flag} {} is a file, not a folder", path.display())]
    NotAFolder { flag: String, path: PathBuf },
}

impl OutputError {
    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OutputError::Io {
            path: path.into(),
            source,
        }
    }
}

/// For callers that speak `std::io`: the kind of the underlying failure is kept, and the
/// message still names the path.
impl From<OutputError> for std::io::Error {
    fn from(e: OutputError) -> Self {
        let kind = match &e {
            OutputError::Io { source, .. } => source.kind(),
            OutputError::NotEmpty { .. } | OutputError::Overlaps { .. } => {
                std::io::ErrorKind::AlreadyExists
            }
            OutputError::NotAFolder { .. } => std::io::ErrorKind::NotADirectory,
        };
        std::io::Error::new(kind, e.to_string())
    }
}

//! Errors of the facade.

/// What can go wrong while loading or running Phi-3-V.
#[derive(Debug, thiserror::Error)]
pub enum Phi3VError {
    #[error("invalid config: {0}")]
    Config(String),
    /// A local path (or a name that looks like one) that does not exist. Never sent to the
    /// hub, whose "download failed" would hide the typo.
    #[error("no such model dir: {}", path.display())]
    NoSuchModelDir { path: std::path::PathBuf },
    /// A path that exists but cannot be a model dir: a file, or a folder lacking files a
    /// model needs (listed all at once).
    #[error("{} is not a model dir: {reason}", path.display())]
    NotAModelDir {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Weights(#[from] phi3v_nn::WeightsError),
    /// The model will not fit the host's free memory; refused before any tensor is read.
    #[error("{source}{hint}")]
    OutOfMemory {
        source: phi3v_nn::memory::OutOfMemory,
        /// What would make it fit, when something would (`; a bf16 base needs ...`).
        hint: String,
    },
    #[error(transparent)]
    Decoder(#[from] phi3_decoder::DecoderError),
    #[error(transparent)]
    Vision(#[from] phi3v_vision::VisionError),
    #[error(transparent)]
    Processor(#[from] phi3v_processor::ProcessorError),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("{0}")]
    Other(String),
}

//! Errors of the facade.

/// What can go wrong while loading or running Phi-3-V.
#[derive(Debug, thiserror::Error)]
pub enum Phi3VError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    Weights(#[from] phi3v_nn::WeightsError),
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

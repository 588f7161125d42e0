//! Errors of the decoder crate.

use phi3v_nn::WeightsError;

/// What can go wrong while configuring, loading or running the decoder.
#[derive(Debug, thiserror::Error)]
pub enum DecoderError {
    /// A `config.json` that is unreadable or describes an unsupported model.
    #[error("invalid decoder config: {0}")]
    Config(String),
    /// Weights that lack a tensor, has a wrong shape or an unreadable dtype.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Inputs whose shapes or values do not fit the model.
    #[error("invalid decoder input: {0}")]
    Input(String),
}

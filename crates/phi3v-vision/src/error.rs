//! Errors of the vision crate.

use phi3v_nn::WeightsError;

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("invalid vision config: {0}")]
    Config(String),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("invalid vision input: {0}")]
    Input(String),
}

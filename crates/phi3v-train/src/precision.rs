//! How much memory the frozen base and the backward pass take: the base's storage dtype
//! and activation recomputation.
//!
//! A frozen base does not need f32: its weights never change, so bf16 halves the model's
//! memory (8.4 GB instead of 16.8 GB for Phi-3-V) at the cost of bf16 rounding in the base
//! products. The adapters, their gradients and optimizer state, the norms and the
//! activations stay f32, as PEFT keeps its adapters in f32 over a bf16 base.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The storage dtype of the frozen base's large matrices (linear weights, token embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseDtype {
    /// The backend's float type (f32): exact, and the fastest on CPUs without bf16 units.
    #[default]
    F32,
    /// bf16; an error on a backend that cannot compute in bf16.
    Bf16,
    /// bf16 where the backend supports it, f32 elsewhere.
    Auto,
}

impl std::str::FromStr for BaseDtype {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown base dtype `{other}` (expected one of {:?})",
                Self::NAMES
            )),
        }
    }
}

impl BaseDtype {
    /// Every dtype, by the name [`FromStr`](std::str::FromStr) reads.
    pub const NAMES: [&'static str; 3] = ["f32", "bf16", "auto"];

    /// The matrix dtype to load the base with on `device` (`None`: the backend's float
    /// type).
    ///
    /// # Errors
    /// [`BaseDtype::Bf16`] on a backend without general bf16 support (wgpu has none: WGSL
    /// has no bf16 type).
    pub fn resolve<B: Backend>(self, device: &B::Device) -> Result<Option<FloatDType>, TrainError> {
        let supported = B::supports_dtype(device, DType::BF16);
        match self {
            BaseDtype::F32 => Ok(None),
            BaseDtype::Auto if !supported => Ok(None),
            BaseDtype::Bf16 | BaseDtype::Auto if supported => Ok(Some(FloatDType::BF16)),
            _ => Err(TrainError::Config(format!(
                "base dtype bf16: backend {} does not support bf16 on {device:?}; \
                 use f32 (or auto, which falls back to f32)",
                B::name(device)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flex computes in bf16, so `auto` picks it there; `f32` never casts.
    #[test]
    fn resolves_against_the_backend() {
        type Flex = burn::backend::Flex;
        let device = Default::default();
        assert_eq!(BaseDtype::F32.resolve::<Flex>(&device).unwrap(), None);
        assert_eq!(
            BaseDtype::Auto.resolve::<Flex>(&device).unwrap(),
            Some(FloatDType::BF16)
        );
        assert_eq!(
            BaseDtype::Bf16.resolve::<Flex>(&device).unwrap(),
            Some(FloatDType::BF16)
        );
    }
}

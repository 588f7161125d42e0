//! The dtype a frozen base is held in.
//!
//! A frozen base does not need f32: its weights never change, so bf16 halves the model's
//! memory (8.3 GB instead of 16.6 GB for Phi-3-V) at the cost of bf16 rounding of the
//! weights. The products still accumulate in f32 ([`MixedMatmul`](crate::MixedMatmul)),
//! and the adapters, norms and activations stay f32, as PEFT keeps its adapters in f32
//! over a bf16 base. Every command that loads a model takes this choice.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType};
use serde::{Deserialize, Serialize};

/// The storage dtype of the frozen base's large matrices (linear weights, token embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseDtype {
    /// The backend's float type (f32): exact weights, twice the memory.
    #[default]
    F32,
    /// bf16; an error on a backend that cannot hold bf16.
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
    /// has no bf16 type), as a message naming the backend.
    pub fn resolve<B: Backend>(self, device: &B::Device) -> Result<Option<FloatDType>, String> {
        let supported = B::supports_dtype(device, DType::BF16);
        match self {
            BaseDtype::F32 => Ok(None),
            BaseDtype::Auto if !supported => Ok(None),
            BaseDtype::Bf16 | BaseDtype::Auto if supported => Ok(Some(FloatDType::BF16)),
            _ => Err(format!(
                "base dtype bf16: backend {} does not support bf16 on {device:?}; \
                 use f32 (or auto, which falls back to f32)",
                B::name(device)
            )),
        }
    }
}

/// The name a resolved matrix dtype is shown by (`bf16`, `f32`).
pub fn dtype_name(matrix_dtype: Option<FloatDType>) -> &'static str {
    match matrix_dtype {
        None | Some(FloatDType::F32) => "f32",
        Some(FloatDType::BF16) => "bf16",
        Some(FloatDType::F16) => "f16",
        Some(_) => "f64",
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    /// flex holds bf16, so `auto` picks it there; `f32` never casts.
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
        assert!("q4".parse::<BaseDtype>().unwrap_err().contains("q4"));
    }
}

//! The dtype a frozen base is held in.
//!
//! A frozen base does not need f32: its weights never change, so bf16 halves the model's
//! memory (8.3 GB instead of 16.6 GB for Phi-3-V) at the cost of bf16 rounding of the
//! weights. The products still accumulate in f32 ([`MixedMatmul`](crate::MixedMatmul)),
//! and the adapters, norms and activations stay f32, as PEFT keeps its adapters in f32
//! over a bf16 base. Every command that loads a model takes this choice.
//!
//! QLoRA goes further: `q8` and `q4` hold the linear weights of the decoder, the vision
//! tower and the projection in burn's block quantization (one f32 scale per 32 values), and
//! every product dequantizes its own weight on the fly. The token embedding and `lm_head`
//! stay bf16: they are 8% of the parameters, and rounding them to 4 bits would shift every
//! logit.

use burn::tensor::backend::Backend;
use burn::tensor::quantization::{QuantLevel, QuantParam, QuantScheme, QuantValue};
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
    /// Linear weights in 8-bit symmetric blocks of [`QUANT_BLOCK`] values, the rest as
    /// [`BaseDtype::Auto`].
    Q8,
    /// Linear weights in 4-bit symmetric blocks of [`QUANT_BLOCK`] values, the rest as
    /// [`BaseDtype::Auto`].
    Q4,
}

/// The arithmetic of the products with a frozen base's weights (every linear layer whose
/// weight takes no gradient, and `lm_head`).
///
/// `F32` multiplies f32 activations by the weights as they are stored: the reference's
/// arithmetic, whatever the base dtype. `Bf16` rounds the activations (and an f32 weight)
/// to bf16 and sums the products in f32, as PyTorch's bf16 autocast does: on a CPU with
/// AVX512-BF16, or a GPU's bf16 units, that runs at twice f32's rate, and every product's
/// inputs lose the bits below bf16's 8-bit mantissa. Attention, norms, adapters and the
/// loss stay f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductDtype {
    #[default]
    F32,
    Bf16,
}

impl ProductDtype {
    /// Every choice, by the name [`FromStr`](std::str::FromStr) reads.
    pub const NAMES: [&'static str; 2] = ["f32", "bf16"];

    /// How the output and the flags name it: `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            ProductDtype::F32 => "f32",
            ProductDtype::Bf16 => "bf16",
        }
    }

    /// Refuses bf16 products over a quantized base: its blocks are dequantized to f32
    /// tiles inside the product, and rounding them to bf16 as well would only lose bits.
    pub fn check_base(self, base: BaseDtype) -> Result<(), String> {
        match (self, base) {
            (ProductDtype::Bf16, BaseDtype::Q8 | BaseDtype::Q4) => Err(format!(
                "--product-dtype bf16 needs a float base (f32, bf16 or auto), not {}: a \
                 quantized base's products dequantize to f32",
                base.name()
            )),
            _ => Ok(()),
        }
    }

    /// How the load message says the products run.
    pub fn describe(self) -> &'static str {
        match self {
            ProductDtype::F32 => "products in f32",
            ProductDtype::Bf16 => "products in bf16, accumulated in f32",
        }
    }
}

impl std::str::FromStr for ProductDtype {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        [Self::F32, Self::Bf16]
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown product dtype `{name}` (expected one of {:?})",
                    Self::NAMES
                )
            })
    }
}

/// Values per quantization block, each block with its own f32 scale: the block size of
/// llama.cpp's Q4_0 and Q8_0, small enough that one outlier costs only its 31 neighbours
/// their precision.
pub const QUANT_BLOCK: u8 = 32;

/// What a [`BaseDtype`] resolves to on a backend: how the loader stores each large matrix.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BaseStorage {
    /// Dtype of the large float matrices (the token embedding, `lm_head`, and every linear
    /// weight when the base is not quantized); `None` is the backend's float type.
    pub matrix_dtype: Option<FloatDType>,
    /// The scheme of the quantized linear weights, when the base is quantized.
    pub quantization: Option<QuantScheme>,
}

impl From<Option<FloatDType>> for BaseStorage {
    fn from(matrix_dtype: Option<FloatDType>) -> Self {
        Self {
            matrix_dtype,
            quantization: None,
        }
    }
}

impl BaseStorage {
    /// How the output names the storage: `bf16`, `f32`, `q4 + bf16` (quantized linears,
    /// then the dtype of the embedding and head).
    pub fn name(&self) -> String {
        let matrices = dtype_name(self.matrix_dtype);
        match self.quantization {
            None => matrices.to_string(),
            Some(scheme) => format!("{} + {matrices}", quantization_name(&scheme)),
        }
    }
}

/// `q4` or `q8`, the name [`BaseDtype`] reads for `scheme`.
fn quantization_name(scheme: &QuantScheme) -> &'static str {
    match scheme.value.size_bits() {
        4 => "q4",
        8 => "q8",
        _ => "quantized",
    }
}

/// The block scheme of a quantized base: symmetric values of `value`'s width in blocks of
/// [`QUANT_BLOCK`], f32 scales, with 4-bit values packed eight per `u32` as burn packs them
/// (the CubeCL backends quantize into that layout; on flex the loader packs what burn-flex's
/// quantizer unpacks, see [`MixedMatmul::quantize_frozen`](crate::MixedMatmul::quantize_frozen)).
fn block_scheme(value: QuantValue) -> QuantScheme {
    QuantScheme::default()
        .with_value(value)
        .with_level(QuantLevel::block([QUANT_BLOCK]))
        .with_param(QuantParam::F32)
}

impl std::str::FromStr for BaseDtype {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        [Self::F32, Self::Bf16, Self::Auto, Self::Q8, Self::Q4]
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown base dtype `{name}` (expected one of {:?})",
                    Self::NAMES
                )
            })
    }
}

impl BaseDtype {
    /// Every dtype, by the name [`FromStr`](std::str::FromStr) reads.
    pub const NAMES: [&'static str; 5] = ["f32", "bf16", "auto", "q8", "q4"];

    /// The name the command line gives it (`--base-dtype q4`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Auto => "auto",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
        }
    }

    /// How to load the base on `device`: the matrix dtype (`None`: the backend's float type)
    /// and, for `q8` and `q4`, the quantization scheme of the linear weights.
    ///
    /// # Errors
    /// [`BaseDtype::Bf16`] on a backend without general bf16 support (wgpu has none: WGSL
    /// has no bf16 type), as a message naming the backend.
    pub fn resolve<B: Backend>(self, device: &B::Device) -> Result<BaseStorage, String> {
        let supported = B::supports_dtype(device, DType::BF16);
        let bf16_if_supported = supported.then_some(FloatDType::BF16);
        match self {
            BaseDtype::F32 => Ok(BaseStorage::default()),
            BaseDtype::Auto => Ok(bf16_if_supported.into()),
            BaseDtype::Bf16 if supported => Ok(Some(FloatDType::BF16).into()),
            BaseDtype::Q8 | BaseDtype::Q4 => Ok(BaseStorage {
                matrix_dtype: bf16_if_supported,
                quantization: Some(block_scheme(if self == BaseDtype::Q8 {
                    QuantValue::Q8S
                } else {
                    QuantValue::Q4S
                })),
            }),
            BaseDtype::Bf16 => Err(format!(
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
        let matrices = |d: BaseDtype| d.resolve::<Flex>(&device).unwrap().matrix_dtype;
        assert_eq!(matrices(BaseDtype::F32), None);
        assert_eq!(matrices(BaseDtype::Auto), Some(FloatDType::BF16));
        assert_eq!(matrices(BaseDtype::Bf16), Some(FloatDType::BF16));
        assert!("q3".parse::<BaseDtype>().unwrap_err().contains("q3"));
    }

    /// `q4` and `q8` quantize the linears in blocks and keep the rest bf16; the others
    /// quantize nothing.
    #[test]
    fn quantized_bases_name_their_scheme() {
        type Flex = burn::backend::Flex;
        let device = Default::default();
        for name in BaseDtype::NAMES {
            let storage = name
                .parse::<BaseDtype>()
                .unwrap()
                .resolve::<Flex>(&device)
                .unwrap();
            let bits = storage.quantization.map(|s| s.value.size_bits());
            match name {
                "q4" => assert_eq!((bits, storage.name().as_str()), (Some(4), "q4 + bf16")),
                "q8" => assert_eq!((bits, storage.name().as_str()), (Some(8), "q8 + bf16")),
                _ => assert_eq!(bits, None, "{name}"),
            }
            if let Some(scheme) = storage.quantization {
                assert_eq!(scheme.level, QuantLevel::block([QUANT_BLOCK]));
            }
        }
    }
}

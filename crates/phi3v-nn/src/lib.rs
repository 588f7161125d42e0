//! Building blocks shared by the Phi-3-V crates.
//!
//! The decoder (`phi3-decoder`) and the vision tower (`phi3v-vision`) both need to read
//! Hugging Face safetensors weights, both are made of linear projections, and both
//! run attention. Those pieces live here, once, so that a change to one of them (a
//! faster attention kernel, an adapter on every linear layer) reaches both models.
//!
//! Blocks name their tensors through a scoped [`WeightsView`] (`vb.pp("self_attn")`), so one
//! constructor per block loads weights, initialises a random model, or records the
//! weights' tensor list, and every [`Linear`] knows its Hugging Face module name.

pub mod attention;
pub mod base_dtype;
pub mod heap;
pub mod linear;
pub mod lora;
pub mod memory;
pub mod mixed;
pub mod named;
pub mod view;
pub mod weights;

pub use attention::{
    attention, causal_mask, naive_attention, AttentionBackend, AttentionKernel, AttentionMask,
};
pub use base_dtype::{BaseDtype, BaseStorage, ProductDtype};
pub use linear::Linear;
pub use lora::{LoraAdapter, LoraConfig, LoraInit};
pub use mixed::MixedMatmul;
pub use named::NamedLinears;
pub use view::{Init, Recorder, TensorSpec, WeightsView};
pub use weights::{Weights, WeightsError};

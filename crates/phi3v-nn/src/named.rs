//! A walk over every linear layer of a model under its Hugging Face module name.
//!
//! LoRA targets are chosen by module name (`qkv_proj`, `img_projection.0`, ...), adapters
//! are exported under the names PEFT uses, and merging folds an adapter into the checkpoint
//! tensor of the same name. All three need to reach each [`Linear`] together with the name
//! the checkpoint gives it, which burn's field paths do not provide (`img_projection_0` vs
//! `img_projection.0`). Each model type says once, next to its fields, what its layers are
//! called.

use burn::tensor::backend::Backend;

use crate::linear::Linear;

/// Implemented by every module that holds linear layers.
pub trait NamedLinears<B: Backend> {
    /// Calls `f` with the full module name (`prefix` + the layer's own path, for example
    /// `model.layers.3.self_attn.qkv_proj`) and the layer, for every linear layer.
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>));
}

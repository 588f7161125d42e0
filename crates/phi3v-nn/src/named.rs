//! A walk over every linear layer of a model under its Hugging Face module name.
//!
//! LoRA targets are chosen by module name (`qkv_proj`, `img_projection.0`, ...), adapters
//! are exported under the names PEFT uses, and merging folds an adapter into the base weights'
//! tensor of the same name. All three need to reach each [`Linear`] together with the name
//! the weights give it, which burn's field paths do not provide (`img_projection_0` vs
//! `img_projection.0`). Each [`Linear`] keeps the path of the [`crate::WeightsView`] it was
//! built from, so the walk spells no names: a model's implementation only visits its fields,
//! in a fixed order.
//!
//! The order is part of the contract: fresh LoRA `A` matrices are drawn from the backend's
//! generator in walk order, so changing it changes every seeded run.

use burn::tensor::backend::Backend;

use crate::linear::Linear;
use crate::ProductDtype;

/// Implemented by every module that holds linear layers.
pub trait NamedLinears<B: Backend> {
    /// Calls `f` with the full module name (`prefix` + the name the layer was built under,
    /// for example `model.layers.3.self_attn.qkv_proj`) and the layer, for every linear
    /// layer. `prefix` is normally empty; it places the names under an outer module.
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>));

    /// Makes every linear layer multiply its frozen weight in `products` (see
    /// [`ProductDtype`]).
    fn set_products(&mut self, products: ProductDtype) {
        self.for_each_linear("", &mut |_, linear| linear.set_products(products));
    }
}

impl<B: Backend> NamedLinears<B> for Linear<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        let name = format!("{prefix}{}", self.name());
        f(&name, self);
    }
}

/// Layers in index order.
impl<B: Backend, T: NamedLinears<B>> NamedLinears<B> for Vec<T> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        for item in self {
            item.for_each_linear(prefix, f);
        }
    }
}

/// An absent part (a text-only model's vision path) has no layers.
impl<B: Backend, T: NamedLinears<B>> NamedLinears<B> for Option<T> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        if let Some(item) = self {
            item.for_each_linear(prefix, f);
        }
    }
}

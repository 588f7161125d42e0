//! The trainable tensors of a model, by name.
//!
//! Training touches few tensors: the adapter factors, plus the weights of layers trained
//! in full. The optimizer, the checkpoints and the gradient-norm clip all address them by
//! a stable name (`model.layers.0.self_attn.qkv_proj.lora_A`), not by burn's random
//! parameter ids, so a resumed run finds its optimizer state again.
//!
//! Tensors are handled flattened (`[numel]`) so one code path serves matrices and vectors.

use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use phi3v_nn::NamedLinears;

use phi3v_peft::targets::matches_any;

/// A mutable handle on one trainable parameter.
pub enum ParamSlot<'a, B: Backend> {
    Matrix(&'a mut Param<Tensor<B, 2>>),
    Vector(&'a mut Param<Tensor<B, 1>>),
}

impl<B: Backend> ParamSlot<'_, B> {
    /// The parameter's shape.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            ParamSlot::Matrix(p) => p.dims().to_vec(),
            ParamSlot::Vector(p) => p.dims().to_vec(),
        }
    }

    /// The value, flattened to `[numel]`.
    pub fn flat(&self) -> Tensor<B, 1> {
        match self {
            ParamSlot::Matrix(p) => p.val().flatten(0, 1),
            ParamSlot::Vector(p) => p.val(),
        }
    }

    /// Replaces the value with `flat` (`[numel]`) reshaped to the parameter's shape, as a
    /// new leaf of the graph, keeping the parameter's id and its gradient requirement.
    pub fn set_flat(&mut self, flat: Tensor<B, 1>) {
        match self {
            ParamSlot::Matrix(p) => {
                let [r, c] = p.dims();
                let t = flat
                    .reshape([r, c])
                    .detach()
                    .set_require_grad(p.is_require_grad());
                **p = Param::initialized(p.id, t);
            }
            ParamSlot::Vector(p) => {
                let t = flat.detach().set_require_grad(p.is_require_grad());
                **p = Param::initialized(p.id, t);
            }
        }
    }
}

impl<B: AutodiffBackend> ParamSlot<'_, B> {
    /// The parameter's gradient, flattened, if the backward pass reached it.
    pub fn grad_flat(&self, grads: &B::Gradients) -> Option<Tensor<B::InnerBackend, 1>> {
        match self {
            ParamSlot::Matrix(p) => p.val().grad(grads).map(|g| g.flatten(0, 1)),
            ParamSlot::Vector(p) => p.val().grad(grads),
        }
    }

    /// Sets the value from the inner backend.
    pub fn set_flat_inner(&mut self, flat: Tensor<B::InnerBackend, 1>) {
        self.set_flat(Tensor::from_inner(flat));
    }
}

/// Calls `f` for every trainable tensor of `model`: `{layer}.lora_A` and `{layer}.lora_B`
/// of every adapter (burn layout, `[in, r]` and `[r, out]`), and `{layer}.weight`
/// (`[in, out]`) and `{layer}.bias` of the layers selected by `full`.
pub fn for_each_trainable<B: Backend, M: NamedLinears<B>>(
    model: &mut M,
    full: &[String],
    f: &mut dyn FnMut(&str, ParamSlot<'_, B>),
) {
    model.for_each_linear("", &mut |name, linear| {
        if let Some(lora) = &mut linear.lora {
            f(
                &format!("{name}.lora_A"),
                ParamSlot::Matrix(&mut lora.lora_a),
            );
            f(
                &format!("{name}.lora_B"),
                ParamSlot::Matrix(&mut lora.lora_b),
            );
        }
        if matches_any(name, full) {
            f(
                &format!("{name}.weight"),
                ParamSlot::Matrix(&mut linear.weight),
            );
            if let Some(bias) = &mut linear.bias {
                f(&format!("{name}.bias"), ParamSlot::Vector(bias));
            }
        }
    });
}

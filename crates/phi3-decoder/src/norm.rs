//! Root-mean-square layer normalisation, as Phi-3 uses before attention, before the MLP
//! and at the end of the stack.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use phi3v_nn::{Init, WeightsError, WeightsView};

/// `x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    #[module(skip)]
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// The norm's `weight` (`[hidden]`) under `vb`; one in a random model.
    pub fn new(
        vb: WeightsView<'_>,
        hidden: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        Ok(Self {
            weight: vb.tensor("weight", [hidden], Init::Ones, device)?,
            eps,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - returns `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [_, _, hidden] = x.dims();
        let variance = x.clone().square().mean_dim(2);
        let normed = x * variance.add_scalar(self.eps).sqrt().recip();
        normed * self.weight.val().reshape([1, 1, hidden])
    }
}

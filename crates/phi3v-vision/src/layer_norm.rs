//! LayerNorm with weight and bias, as CLIP uses it.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use phi3v_nn::{Init, WeightsError, WeightsView};

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension (biased variance).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    #[module(skip)]
    eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// `weight` and `bias` (`[dim]`) under `vb`; one and zero in a random model.
    pub fn new(
        vb: WeightsView<'_>,
        dim: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        Ok(Self {
            weight: vb.tensor("weight", [dim], Init::Ones, device)?,
            bias: vb.tensor("bias", [dim], Init::Zeros, device)?,
            eps,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, seq, dim]`
    /// - returns `[batch, seq, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [_, _, dim] = x.dims();
        let (var, mean) = x.clone().var_mean_bias(2);
        let normed = (x - mean) / var.add_scalar(self.eps).sqrt();
        normed * self.weight.val().reshape([1, 1, dim]) + self.bias.val().reshape([1, 1, dim])
    }
}

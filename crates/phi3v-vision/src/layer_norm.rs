//! LayerNorm with weight and bias, as CLIP uses it.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use phi3v_nn::{Weights, WeightsError};

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension (biased variance).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    #[module(skip)]
    eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub fn new(dim: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([dim], device)),
            bias: Param::from_tensor(Tensor::zeros([dim], device)),
            eps,
        }
    }

    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        Ok(Self {
            weight: Param::from_tensor(weights.tensor(
                &format!("{prefix}.weight"),
                [dim],
                device,
            )?),
            bias: Param::from_tensor(weights.tensor(&format!("{prefix}.bias"), [dim], device)?),
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

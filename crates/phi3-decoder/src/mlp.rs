//! The gated feed-forward block, with gate and up projections fused in one matrix as the
//! checkpoint stores them (`gate_up_proj`).

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use phi3v_nn::{Linear, NamedLinears, Weights, WeightsError};

/// `down_proj(up * silu(gate))`, where `[gate, up] = gate_up_proj(x)`.
#[derive(Module, Debug)]
pub struct Phi3Mlp<B: Backend> {
    /// `[hidden, 2 * intermediate]`: the first half of the outputs is the gate.
    pub gate_up_proj: Linear<B>,
    /// `[intermediate, hidden]`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> Phi3Mlp<B> {
    pub fn random(hidden: usize, intermediate: usize, std: f64, device: &B::Device) -> Self {
        Self {
            gate_up_proj: Linear::random(hidden, 2 * intermediate, false, std, device),
            down_proj: Linear::random(intermediate, hidden, false, std, device),
        }
    }

    /// Loads `{prefix}.gate_up_proj.weight` and `{prefix}.down_proj.weight`.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        Ok(Self {
            gate_up_proj: Linear::load(
                weights,
                &format!("{prefix}.gate_up_proj"),
                hidden,
                2 * intermediate,
                false,
                device,
            )?,
            down_proj: Linear::load(
                weights,
                &format!("{prefix}.down_proj"),
                intermediate,
                hidden,
                false,
                device,
            )?,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - returns `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate_up = self.gate_up_proj.forward(x);
        let [b, s, two_i] = gate_up.dims();
        let i = two_i / 2;
        let gate = gate_up.clone().slice([0..b, 0..s, 0..i]);
        let up = gate_up.slice([0..b, 0..s, i..two_i]);
        self.down_proj.forward(up * silu(gate))
    }
}

impl<B: Backend> NamedLinears<B> for Phi3Mlp<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        f(&format!("{prefix}gate_up_proj"), &mut self.gate_up_proj);
        f(&format!("{prefix}down_proj"), &mut self.down_proj);
    }
}

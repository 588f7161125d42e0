//! The gated feed-forward block, with gate and up projections fused in one matrix as the
//! weights store them (`gate_up_proj`).

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use phi3v_nn::{Linear, MixedMatmul, NamedLinears, WeightsError, WeightsView};

/// `down_proj(up * silu(gate))`, where `[gate, up] = gate_up_proj(x)`.
#[derive(Module, Debug)]
pub struct Phi3Mlp<B: Backend> {
    /// `[hidden, 2 * intermediate]`: the first half of the outputs is the gate.
    pub gate_up_proj: Linear<B>,
    /// `[intermediate, hidden]`.
    pub down_proj: Linear<B>,
}

impl<B: MixedMatmul> Phi3Mlp<B> {
    /// `gate_up_proj` and `down_proj` under `vb`.
    pub fn new(
        vb: WeightsView<'_>,
        hidden: usize,
        intermediate: usize,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        Ok(Self {
            gate_up_proj: Linear::new(
                vb.pp("gate_up_proj"),
                hidden,
                2 * intermediate,
                false,
                device,
            )?,
            down_proj: Linear::new(vb.pp("down_proj"), intermediate, hidden, false, device)?,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - returns `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3>
    where
        B: MixedMatmul,
    {
        // Gate and up from their own columns, so that both are contiguous for the
        // element-wise product (see `Linear::forward_split`).
        let i = self.gate_up_proj.dims().1 / 2;
        let [gate, up] = self.gate_up_proj.forward_split(x, [i, i]);
        self.down_proj.forward(up * silu(gate))
    }
}

impl<B: Backend> NamedLinears<B> for Phi3Mlp<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        self.gate_up_proj.for_each_linear(prefix, f);
        self.down_proj.for_each_linear(prefix, f);
    }
}

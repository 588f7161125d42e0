//! One pre-norm decoder layer.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use phi3v_nn::{
    AttentionBackend, AttentionMask, Linear, MixedMatmul, NamedLinears, WeightsError, WeightsView,
};

use crate::attention::Phi3Attention;
use crate::cache::KvCache;
use crate::config::Phi3Config;
use crate::mlp::Phi3Mlp;
use crate::norm::RmsNorm;
use crate::rope::RotaryTables;

/// `h = x + attn(norm1(x)); out = h + mlp(norm2(h))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub self_attn: Phi3Attention<B>,
    pub mlp: Phi3Mlp<B>,
    pub input_layernorm: RmsNorm<B>,
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: MixedMatmul> DecoderLayer<B> {
    /// `self_attn`, `mlp`, `input_layernorm` and `post_attention_layernorm` under `vb`.
    pub fn new(
        vb: WeightsView<'_>,
        config: &Phi3Config,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let (hidden, eps) = (config.hidden_size, config.rms_norm_eps);
        Ok(Self {
            self_attn: Phi3Attention::new(vb.pp("self_attn"), config, device)?,
            mlp: Phi3Mlp::new(vb.pp("mlp"), hidden, config.intermediate_size, device)?,
            input_layernorm: RmsNorm::new(vb.pp("input_layernorm"), hidden, eps, device)?,
            post_attention_layernorm: RmsNorm::new(
                vb.pp("post_attention_layernorm"),
                hidden,
                eps,
                device,
            )?,
        })
    }
}

impl<B: AttentionBackend> DecoderLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`; `rotary`: the tables for these `seq` positions
    /// - `mask`: the rules for `seq` queries over `past + seq` keys
    /// - returns `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rotary: &RotaryTables<B>,
        mask: &AttentionMask<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rotary, mask, cache);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

impl<B: Backend> NamedLinears<B> for DecoderLayer<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        self.self_attn.for_each_linear(prefix, f);
        self.mlp.for_each_linear(prefix, f);
    }
}

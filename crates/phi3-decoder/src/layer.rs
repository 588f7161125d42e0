//! One pre-norm decoder layer.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use phi3v_nn::{AttentionBackend, AttentionMask, NamedLinears, Weights, WeightsError};

use crate::attention::Phi3Attention;
use crate::cache::KvCache;
use crate::config::Phi3Config;
use crate::mlp::Phi3Mlp;
use crate::norm::RmsNorm;

/// `h = x + attn(norm1(x)); out = h + mlp(norm2(h))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub self_attn: Phi3Attention<B>,
    pub mlp: Phi3Mlp<B>,
    pub input_layernorm: RmsNorm<B>,
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> DecoderLayer<B> {
    pub fn random(config: &Phi3Config, std: f64, device: &B::Device) -> Self {
        Self {
            self_attn: Phi3Attention::random(config, std, device),
            mlp: Phi3Mlp::random(config.hidden_size, config.intermediate_size, std, device),
            input_layernorm: RmsNorm::new(config.hidden_size, config.rms_norm_eps, device),
            post_attention_layernorm: RmsNorm::new(config.hidden_size, config.rms_norm_eps, device),
        }
    }

    /// Loads `{prefix}.self_attn.*`, `{prefix}.mlp.*` and both norms.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &Phi3Config,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let norm = |name: &str| {
            RmsNorm::load(
                weights,
                &format!("{prefix}.{name}.weight"),
                config.hidden_size,
                config.rms_norm_eps,
                device,
            )
        };
        Ok(Self {
            self_attn: Phi3Attention::load(
                weights,
                &format!("{prefix}.self_attn"),
                config,
                device,
            )?,
            mlp: Phi3Mlp::load(
                weights,
                &format!("{prefix}.mlp"),
                config.hidden_size,
                config.intermediate_size,
                device,
            )?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
        })
    }
}

impl<B: AttentionBackend> DecoderLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`
    /// - `mask`: the rules for `seq` queries over `past + seq` keys
    /// - returns `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: Tensor<B, 4>,
        sin: Tensor<B, 4>,
        mask: &AttentionMask<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), cos, sin, mask, cache);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

impl<B: Backend> NamedLinears<B> for DecoderLayer<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut phi3v_nn::Linear<B>)) {
        self.self_attn
            .for_each_linear(&format!("{prefix}self_attn."), f);
        self.mlp.for_each_linear(&format!("{prefix}mlp."), f);
    }
}

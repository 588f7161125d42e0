//! Phi-3 self-attention with the fused `qkv_proj`.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use phi3v_nn::{attention, AttentionBackend, AttentionKernel, AttentionMask};
use phi3v_nn::{Linear, MixedMatmul, NamedLinears, WeightsError, WeightsView};

use crate::cache::KvCache;
use crate::config::Phi3Config;
use crate::rope::RotaryTables;

/// Multi-head (or grouped-query) attention with rotary positions.
#[derive(Module, Debug)]
pub struct Phi3Attention<B: Backend> {
    /// `[hidden, (heads + 2 * kv_heads) * head_dim]`: q, then k, then v.
    pub qkv_proj: Linear<B>,
    /// `[heads * head_dim, hidden]`.
    pub o_proj: Linear<B>,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    kv_heads: usize,
    #[module(skip)]
    head_dim: usize,
    /// Which attention implementation runs; by default the naive path for short
    /// sequences and the memory-efficient one for long ones (see [`AttentionKernel`]).
    #[module(skip)]
    kernel: AttentionKernel,
}

impl<B: MixedMatmul> Phi3Attention<B> {
    /// `qkv_proj` and `o_proj` under `vb`.
    pub fn new(
        vb: WeightsView<'_>,
        config: &Phi3Config,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let (hidden, heads_dim) = (
            config.hidden_size,
            config.num_attention_heads * config.head_dim(),
        );
        Ok(Self {
            qkv_proj: Linear::new(vb.pp("qkv_proj"), hidden, config.qkv_dim(), false, device)?,
            o_proj: Linear::new(vb.pp("o_proj"), heads_dim, hidden, false, device)?,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim(),
            kernel: AttentionKernel::default(),
        })
    }

    /// The attention implementation this layer runs.
    pub fn kernel(&self) -> AttentionKernel {
        self.kernel
    }

    /// Chooses the attention implementation (see [`AttentionKernel`]).
    pub fn set_kernel(&mut self, kernel: AttentionKernel) {
        self.kernel = kernel;
    }
}

impl<B: AttentionBackend> Phi3Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `rotary`: the tables for these `seq` positions (`[batch, seq, heads, head_dim]`)
    /// - `mask`: the rules for `seq` queries over `past + seq` keys; its padding, if any,
    ///   is `[batch, past + seq]`
    /// - returns `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rotary: &RotaryTables<B>,
        mask: &AttentionMask<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        // q, k and v each from their own columns of `qkv_proj`, so that each is contiguous
        // for the rotation (see `Linear::forward_split`).
        let [q, k, v] = self.qkv_proj.forward_split(x, [h * d, kvh * d, kvh * d]);
        let heads = |t: Tensor<B, 3>, n: usize| t.reshape([b, s, n, d]);
        let q = rotary.apply(heads(q, h)).swap_dims(1, 2);
        let k = rotary.apply(heads(k, kvh)).swap_dims(1, 2);
        let v = heads(v, kvh).swap_dims(1, 2);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let (k, v) = (repeat_kv(k, h / kvh), repeat_kv(v, h / kvh));
        let scale = 1.0 / (d as f64).sqrt();
        let out = attention(q, k, v, mask, scale, self.kernel);
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, s, h * d]))
    }
}

/// Repeats each key/value head `n` times so grouped-query attention can use the plain
/// multi-head kernel.
///
/// # Shapes
/// - `x`: `[batch, kv_heads, seq, head_dim]`
/// - returns `[batch, kv_heads * n, seq, head_dim]`
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n: usize) -> Tensor<B, 4> {
    if n == 1 {
        return x;
    }
    let [b, kvh, s, d] = x.dims();
    x.reshape([b, kvh, 1, s, d])
        .expand([b, kvh, n, s, d])
        .reshape([b, kvh * n, s, d])
}

impl<B: Backend> NamedLinears<B> for Phi3Attention<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        self.qkv_proj.for_each_linear(prefix, f);
        self.o_proj.for_each_linear(prefix, f);
    }
}

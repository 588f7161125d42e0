//! The Phi-3 decoder stack: embedding, layers, final norm and an untied `lm_head`.
//!
//! The model takes token ids or ready-made input embeddings: Phi-3-V writes projected
//! image features into the embedding sequence before the decoder runs, so the embedding
//! step is exposed on its own ([`Phi3Model::embed`]).

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};

use phi3v_nn::{
    AttentionBackend, AttentionKernel, AttentionMask, Linear, MixedMatmul, NamedLinears, Weights,
    WeightsView,
};

use crate::cache::KvCache;
use crate::config::Phi3Config;
use crate::error::DecoderError;
use crate::layer::DecoderLayer;
use crate::norm::RmsNorm;
use crate::rope::{LongRope, RotaryTables};

/// Optional inputs of a forward pass.
#[derive(Debug)]
pub struct ForwardOptions<'a, B: Backend> {
    /// `[batch, past + seq]`, 1 for real tokens and 0 for padding (Hugging Face's
    /// `attention_mask`). It must cover the cached positions too.
    pub attention_mask: Option<Tensor<B, 2, Int>>,
    /// `[batch, seq]` position ids; by default `past..past + seq` for every row, as the
    /// reference's plain forward does (also with left padding).
    pub position_ids: Option<Tensor<B, 2, Int>>,
    /// The cache to read past keys from and append this step's keys to.
    pub cache: Option<&'a mut KvCache<B>>,
}

impl<B: Backend> Default for ForwardOptions<'_, B> {
    fn default() -> Self {
        Self {
            attention_mask: None,
            position_ids: None,
            cache: None,
        }
    }
}

/// A Phi-3 causal language model.
#[derive(Module, Debug)]
pub struct Phi3Model<B: Backend> {
    /// `[vocab, hidden]`.
    pub embed_tokens: Param<Tensor<B, 2>>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// `[hidden, vocab]`.
    pub lm_head: Linear<B>,
    #[module(skip)]
    rope: LongRope,
    #[module(skip)]
    config: Phi3Config,
}

impl<B: MixedMatmul> Phi3Model<B> {
    /// The decoder under `vb`, named as the reference names it: `model.embed_tokens.weight`,
    /// `model.layers.{i}.…`, `model.norm.weight` and `lm_head.weight` (at the root of the
    /// weights, so `vb` is normally a root view). Weights with tied embeddings and
    /// no `lm_head.weight` reuses the embedding.
    ///
    /// The construction order (embedding, final norm, `lm_head`, then the layers) is the
    /// order in which a [`phi3v_nn::Recorder`] lists the tensors, and so the order in which
    /// the test kit draws random weights' values: keep it.
    pub fn new(
        vb: WeightsView<'_>,
        config: &Phi3Config,
        device: &B::Device,
    ) -> Result<Self, DecoderError> {
        config.validate()?;
        let (v, h) = (config.vocab_size, config.hidden_size);
        let model = vb.pp("model");
        let embed_tokens = model.pp("embed_tokens").matrix("weight", [v, h], device)?;
        let norm = RmsNorm::new(model.pp("norm"), h, config.rms_norm_eps, device)?;
        let head = vb.pp("lm_head");
        let lm_head = if head.contains("weight") || !config.tie_word_embeddings {
            Linear::new(head, h, v, false, device)?
        } else {
            Linear::from_tensors(embed_tokens.val().transpose(), None).with_name(head.path())
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(model.pp("layers").pp(i), config, device))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope: LongRope::new(config),
            config: config.clone(),
        })
    }

    /// A randomly initialised model (weights `N(0, std^2)`, unit norms), for tests,
    /// examples and benchmarks.
    pub fn random(config: &Phi3Config, std: f64, device: &B::Device) -> Result<Self, DecoderError> {
        Self::new(WeightsView::random(std), config, device)
    }

    /// Loads the decoder from opened weights (see [`Phi3Model::new`]).
    pub fn load(
        weights: &Weights,
        config: &Phi3Config,
        device: &B::Device,
    ) -> Result<Self, DecoderError> {
        Self::new(WeightsView::load(weights), config, device)
    }

    /// Loads `config.json` and the safetensors weights of a Hugging Face model dir.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Self, DecoderError> {
        let dir = dir.as_ref();
        let config = Phi3Config::from_file(dir.join("config.json"))?;
        let weights = Weights::open(dir)?;
        Self::load(&weights, &config, device)
    }

    pub fn config(&self) -> &Phi3Config {
        &self.config
    }

    /// Runs every layer's attention with `kernel`: [`AttentionKernel::Naive`] for the
    /// reference arithmetic, [`AttentionKernel::MemoryEfficient`] for long contexts and
    /// training (memory linear in the sequence length), or `Auto` (the default) to pick
    /// by sequence length.
    pub fn with_attention_kernel(mut self, kernel: AttentionKernel) -> Self {
        for layer in &mut self.layers {
            layer.self_attn.set_kernel(kernel);
        }
        self
    }

    /// Looks up token embeddings, in the activations' dtype (the norms' dtype, which may
    /// differ from a bf16 table's).
    ///
    /// # Shapes
    /// - `ids`: `[batch, seq]`, each in `0..vocab`
    /// - returns `[batch, seq, hidden]`
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = burn::tensor::module::embedding(self.embed_tokens.val(), ids);
        let dtype = self.norm.weight.dtype();
        if x.dtype() == dtype {
            x
        } else {
            x.cast(FloatDType::from(dtype))
        }
    }

    /// Logits from final hidden states.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`
    /// - returns `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3>
    where
        B: MixedMatmul,
    {
        self.lm_head.forward(hidden)
    }

    /// An empty KV cache for this model's layers, grown by doubling as it fills (see
    /// [`KvCache`]); prefer [`Phi3Model::new_cache_with_capacity`] when the final length
    /// is known.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.layers.len())
    }

    /// An empty KV cache for this model's layers with room for `max_len` positions
    /// (prompt plus new tokens), allocated once on the first forward so that decoding
    /// never reallocates it.
    pub fn new_cache_with_capacity(&self, max_len: usize) -> KvCache<B> {
        KvCache::with_capacity(self.layers.len(), max_len)
    }
}

/// What every layer of one forward pass shares: the rotary tables and the attention mask.
#[derive(Debug, Clone)]
pub struct LayerContext<B: Backend> {
    /// The rotary tables of the `seq` positions.
    pub rotary: RotaryTables<B>,
    /// The rules for `seq` queries over `past + seq` keys.
    pub mask: AttentionMask<B>,
}

impl<B: AttentionBackend> Phi3Model<B> {
    /// The rotary tables and mask for `seq` new positions after `past` cached ones.
    ///
    /// # Shapes
    /// - `attention_mask`: `[batch, past + seq]`, 1 for real tokens
    /// - `position_ids`: `[batch, seq]`
    pub fn layer_context(
        &self,
        [batch, seq]: [usize; 2],
        past: usize,
        attention_mask: Option<Tensor<B, 2, Int>>,
        position_ids: Option<Tensor<B, 2, Int>>,
        device: &B::Device,
    ) -> LayerContext<B> {
        let (positions, max_position) = match position_ids {
            Some(p) => {
                let max = p.clone().max().into_scalar();
                let max: i64 = burn::tensor::ElementConversion::elem(max);
                (p, max.max(0) as usize)
            }
            None => (
                Tensor::<B, 1, Int>::arange(past as i64..(past + seq) as i64, device)
                    .reshape([1, seq])
                    .expand([batch, seq]),
                past + seq - 1,
            ),
        };
        let rotary = self
            .rope
            .tables(positions, max_position, self.config.num_attention_heads);
        // The mask as rules, generated tile by tile by the memory-efficient kernel: a dense
        // `[seq, past + seq]` mask would be 16 GiB of booleans at 128K tokens.
        let padding = attention_mask.map(|m| m.equal_elem(0));
        let mask = AttentionMask::causal(past)
            .with_sliding_window(self.config.sliding_window)
            .with_padding(padding);
        LayerContext { rotary, mask }
    }

    /// Runs the layers and the final norm over input embeddings.
    ///
    /// # Shapes
    /// - `embeds`: `[batch, seq, hidden]`
    /// - returns `[batch, seq, hidden]` (after the final norm)
    pub fn forward_hidden(
        &self,
        embeds: Tensor<B, 3>,
        options: ForwardOptions<'_, B>,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = embeds.dims();
        let ForwardOptions {
            attention_mask,
            position_ids,
            mut cache,
        } = options;
        let past = cache.as_ref().map_or(0, |c| c.len());
        let ctx = self.layer_context(
            [batch, seq],
            past,
            attention_mask,
            position_ids,
            &embeds.device(),
        );
        let mut x = embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(x, &ctx.rotary, &ctx.mask, layer_cache);
        }
        self.norm.forward(x)
    }

    /// Token ids to logits.
    ///
    /// # Shapes
    /// - `ids`: `[batch, seq]`
    /// - returns `[batch, seq, vocab]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>, options: ForwardOptions<'_, B>) -> Tensor<B, 3> {
        self.logits(self.forward_hidden(self.embed(ids), options))
    }
}

/// The layers in order, then `lm_head`.
impl<B: Backend> NamedLinears<B> for Phi3Model<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        self.layers.for_each_linear(prefix, f);
        self.lm_head.for_each_linear(prefix, f);
    }
}

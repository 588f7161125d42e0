//! The CLIP ViT vision tower, up to the layer whose output Phi-3-V uses.
//!
//! Phi-3-V reads the output of the second-to-last encoder layer (`hidden_states[-2]`), so
//! the last layer and `post_layernorm` are neither loaded nor computed.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use phi3v_nn::{
    attention, AttentionBackend, AttentionKernel, AttentionMask, Init, Linear, MixedMatmul,
    NamedLinears, Recorder, Weights, WeightsError, WeightsView,
};

use crate::config::{Activation, ClipVisionConfig};
use crate::embedding::{EMBEDDING_PATH, IMG_PROCESSOR};
use crate::layer_norm::LayerNorm;

/// Patch, class and position embeddings.
#[derive(Module, Debug)]
pub struct ClipEmbeddings<B: Backend> {
    /// `[hidden]`.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// The stride-`patch` convolution as a matrix: `[channels * patch * patch, hidden]`,
    /// rows in the convolution weight's `(channel, y, x)` order.
    pub patch_embedding: Param<Tensor<B, 2>>,
    /// `[num_positions, hidden]`.
    pub position_embedding: Param<Tensor<B, 2>>,
    #[module(skip)]
    patch: usize,
}

impl<B: MixedMatmul> ClipEmbeddings<B> {
    /// `class_embedding`, `patch_embedding.weight` (a `[hidden, channels, patch, patch]`
    /// convolution, held as a matrix) and `position_embedding.weight` under `vb`.
    pub fn new(
        vb: WeightsView<'_>,
        c: &ClipVisionConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let (h, p, ch) = (c.hidden_size, c.patch_size, c.num_channels);
        Ok(Self {
            class_embedding: vb.tensor("class_embedding", [h], Init::Normal, device)?,
            patch_embedding: vb.pp("patch_embedding").tensor_mapped(
                "weight",
                [h, ch, p, p],
                [ch * p * p, h],
                Init::Normal,
                |conv| conv.reshape([h, ch * p * p]).transpose(),
                device,
            )?,
            position_embedding: vb.pp("position_embedding").tensor(
                "weight",
                [c.num_positions(), h],
                Init::Normal,
                device,
            )?,
            patch: p,
        })
    }

    /// # Shapes
    /// - `pixels`: `[n, channels, size, size]`
    /// - returns `[n, 1 + (size / patch)^2, hidden]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, ch, size, _] = pixels.dims();
        let (p, g) = (self.patch, size / self.patch);
        // A stride-p, p x p convolution is a matrix product over non-overlapping patches.
        let patches = pixels
            .reshape([n, ch, g, p, g, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n * g * g, ch * p * p]);
        let hidden = self.class_embedding.dims()[0];
        let patches = patches
            .matmul(self.patch_embedding.val())
            .reshape([n, g * g, hidden]);
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, hidden])
            .expand([n, 1, hidden]);
        let x = Tensor::cat(vec![class, patches], 1);
        x + self.position_embedding.val().unsqueeze_dim(0)
    }
}

/// One pre-norm encoder layer: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    pub layer_norm1: LayerNorm<B>,
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub layer_norm2: LayerNorm<B>,
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    activation: Activation,
    /// Which attention implementation runs; `Auto` by default (naive at CLIP's 577
    /// positions, the memory-efficient kernel for very large towers).
    #[module(skip)]
    pub kernel: AttentionKernel,
}

impl<B: MixedMatmul> ClipEncoderLayer<B> {
    /// `layer_norm1`, `self_attn.{q,k,v,out}_proj`, `layer_norm2` and `mlp.fc{1,2}` under
    /// `vb`, every projection with a bias.
    pub fn new(
        vb: WeightsView<'_>,
        c: &ClipVisionConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let (attn, mlp) = (vb.pp("self_attn"), vb.pp("mlp"));
        Ok(Self {
            layer_norm1: LayerNorm::new(vb.pp("layer_norm1"), h, eps, device)?,
            q_proj: Linear::new(attn.pp("q_proj"), h, h, true, device)?,
            k_proj: Linear::new(attn.pp("k_proj"), h, h, true, device)?,
            v_proj: Linear::new(attn.pp("v_proj"), h, h, true, device)?,
            out_proj: Linear::new(attn.pp("out_proj"), h, h, true, device)?,
            layer_norm2: LayerNorm::new(vb.pp("layer_norm2"), h, eps, device)?,
            fc1: Linear::new(mlp.pp("fc1"), h, i, true, device)?,
            fc2: Linear::new(mlp.pp("fc2"), i, h, true, device)?,
            heads: c.num_attention_heads,
            activation: c.hidden_act,
            kernel: AttentionKernel::default(),
        })
    }
}

impl<B: AttentionBackend> ClipEncoderLayer<B> {
    /// # Shapes
    /// - `x`: `[n, seq, hidden]`
    /// - returns `[n, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, s, h] = x.dims();
        let d = h / self.heads;
        let y = self.layer_norm1.forward(x.clone());
        let heads = |t: Tensor<B, 3>| t.reshape([n, s, self.heads, d]).swap_dims(1, 2);
        let attn = attention(
            heads(self.q_proj.forward(y.clone())),
            heads(self.k_proj.forward(y.clone())),
            heads(self.v_proj.forward(y)),
            &AttentionMask::none(),
            1.0 / (d as f64).sqrt(),
            self.kernel,
        );
        let x = x + self
            .out_proj
            .forward(attn.swap_dims(1, 2).reshape([n, s, h]));
        let y = self.fc1.forward(self.layer_norm2.forward(x.clone()));
        let y = match self.activation {
            Activation::QuickGelu => y.clone() * sigmoid(y.mul_scalar(1.702)),
            Activation::Gelu => gelu(y),
        };
        x + self.fc2.forward(y)
    }
}

/// The tower up to its second-to-last layer.
#[derive(Module, Debug)]
pub struct ClipVisionTower<B: Backend> {
    pub embeddings: ClipEmbeddings<B>,
    pub pre_layrnorm: LayerNorm<B>,
    /// The first `num_hidden_layers - 1` layers.
    pub layers: Vec<ClipEncoderLayer<B>>,
    #[module(skip)]
    config: ClipVisionConfig,
}

/// The field under which transformers' `CLIPVisionModel` holds the tower.
pub const VISION_MODEL: &str = "vision_model";

impl<B: MixedMatmul> ClipVisionTower<B> {
    /// The tower under `vb`: `embeddings.*`, `pre_layrnorm.*` and the first
    /// `num_hidden_layers - 1` of `encoder.layers.{i}.*`. The weights' last layer and
    /// `post_layernorm` are only recorded (see [`WeightsView::unused`]), after
    /// `pre_layrnorm` and after the other layers, as the weights list them.
    pub fn new(
        vb: WeightsView<'_>,
        config: &ClipVisionConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let embeddings = ClipEmbeddings::new(vb.pp("embeddings"), config, device)?;
        let pre_layrnorm = LayerNorm::new(vb.pp("pre_layrnorm"), h, eps, device)?;
        if let Some(unused) = vb.unused() {
            LayerNorm::<B>::new(unused.pp("post_layernorm"), h, eps, device)?;
        }
        let encoder_layers = vb.pp("encoder").pp("layers");
        let last = config.num_hidden_layers - 1;
        let layers = (0..last)
            .map(|i| ClipEncoderLayer::new(encoder_layers.pp(i), config, device))
            .collect::<Result<_, _>>()?;
        if let Some(unused) = encoder_layers.unused() {
            ClipEncoderLayer::<B>::new(unused.pp(last), config, device)?;
        }
        Ok(Self {
            embeddings,
            pre_layrnorm,
            layers,
            config: config.clone(),
        })
    }

    /// A randomly initialised tower (see [`WeightsView::random`]).
    pub fn random(
        config: &ClipVisionConfig,
        std: f64,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        Self::new(WeightsView::random(std), config, device)
    }

    /// Loads the tower from wherever the weights hold it, trying, most specific first:
    /// inside Phi-3-V weights (`model.vision_embed_tokens.img_processor.vision_model`),
    /// CLIP weights (`vision_model`), and transformers 5's unprefixed layout. A place
    /// qualifies when the weights hold the tower's first tensor under it.
    pub fn load_detect(
        weights: &Weights,
        config: &ClipVisionConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let recorder = Recorder::new();
        Self::new(WeightsView::record(&recorder), config, device)?;
        let first = recorder.into_specs().swap_remove(0).name;
        let root = WeightsView::load(weights);
        let in_phi3v = root.pp(EMBEDDING_PATH).pp(IMG_PROCESSOR).pp(VISION_MODEL);
        let in_clip = root.pp(VISION_MODEL);
        let vb = [in_phi3v, in_clip.clone(), root]
            .into_iter()
            .find(|vb| vb.contains(&first))
            .unwrap_or(in_clip);
        Self::new(vb, config, device)
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// Chooses the attention implementation of every layer.
    pub fn with_attention_kernel(mut self, kernel: AttentionKernel) -> Self {
        for layer in &mut self.layers {
            layer.kernel = kernel;
        }
        self
    }
}

impl<B: AttentionBackend> ClipVisionTower<B> {
    /// Patch features of the second-to-last layer, class token dropped.
    ///
    /// # Shapes
    /// - `pixels`: `[n, channels, image_size, image_size]`
    /// - returns `[n, (image_size / patch)^2, hidden]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        self.forward_visiting(pixels, |_, _| {})
    }

    /// [`Self::forward`], showing `visit` each encoder layer's input with the layer's
    /// index, then the last layer's output with index `layers.len()`. Activation
    /// recomputation keeps these hidden states (computed without a graph) to rerun the
    /// tower layer by layer in its backward pass, so both paths share this one loop.
    ///
    /// # Shapes
    /// - `pixels`: `[n, channels, image_size, image_size]`
    /// - each visited state: `[n, 1 + (image_size / patch)^2, hidden]`
    /// - returns `[n, (image_size / patch)^2, hidden]`
    pub fn forward_visiting(
        &self,
        pixels: Tensor<B, 4>,
        mut visit: impl FnMut(usize, &Tensor<B, 3>),
    ) -> Tensor<B, 3> {
        let mut x = self.embed_patches(pixels);
        for (i, layer) in self.layers.iter().enumerate() {
            visit(i, &x);
            x = layer.forward(x);
        }
        visit(self.layers.len(), &x);
        self.select_features(x)
    }

    /// The encoder's input: patch, class and position embeddings, then `pre_layrnorm`.
    /// Public so that a caller can run the tower piecewise (layer by layer).
    ///
    /// # Shapes
    /// - `pixels`: `[n, channels, image_size, image_size]`
    /// - returns `[n, 1 + (image_size / patch)^2, hidden]`
    pub fn embed_patches(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        self.pre_layrnorm.forward(self.embeddings.forward(pixels))
    }

    /// The features Phi-3-V reads from the output of the last layer held (the weights'
    /// second-to-last): the patch tokens, class token dropped. No norm follows, as the
    /// reference reads `hidden_states[-2]` before `post_layernorm`.
    ///
    /// # Shapes
    /// - `hidden`: `[n, 1 + grid^2, hidden]`
    /// - returns `[n, grid^2, hidden]`
    pub fn select_features(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, s, h] = hidden.dims();
        hidden.slice([0..n, 1..s, 0..h])
    }
}

/// Attention's q, k, v and out projections, then the MLP's two.
impl<B: Backend> NamedLinears<B> for ClipEncoderLayer<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        for linear in [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.out_proj,
            &mut self.fc1,
            &mut self.fc2,
        ] {
            linear.for_each_linear(prefix, f);
        }
    }
}

/// The layers in order.
impl<B: Backend> NamedLinears<B> for ClipVisionTower<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        self.layers.for_each_linear(prefix, f);
    }
}

//! The CLIP ViT vision tower, up to the layer whose output Phi-3-V uses.
//!
//! Phi-3-V reads the output of the second-to-last encoder layer (`hidden_states[-2]`), so
//! the last layer and `post_layernorm` are neither loaded nor computed.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use phi3v_nn::{
    attention, AttentionBackend, AttentionKernel, AttentionMask, Linear, NamedLinears, Weights,
    WeightsError,
};

use crate::config::{Activation, ClipVisionConfig};
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

impl<B: Backend> ClipEmbeddings<B> {
    fn random(c: &ClipVisionConfig, std: f64, device: &B::Device) -> Self {
        let k = c.num_channels * c.patch_size * c.patch_size;
        let normal = Distribution::Normal(0.0, std);
        Self {
            class_embedding: Param::from_tensor(Tensor::random([c.hidden_size], normal, device)),
            patch_embedding: Param::from_tensor(Tensor::random([k, c.hidden_size], normal, device)),
            position_embedding: Param::from_tensor(Tensor::random(
                [c.num_positions(), c.hidden_size],
                normal,
                device,
            )),
            patch: c.patch_size,
        }
    }

    fn load(
        weights: &Weights,
        prefix: &str,
        c: &ClipVisionConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let (h, p, ch) = (c.hidden_size, c.patch_size, c.num_channels);
        let conv = weights.tensor::<B, 4>(
            &format!("{prefix}.patch_embedding.weight"),
            [h, ch, p, p],
            device,
        )?;
        Ok(Self {
            class_embedding: Param::from_tensor(weights.tensor(
                &format!("{prefix}.class_embedding"),
                [h],
                device,
            )?),
            patch_embedding: Param::from_tensor(conv.reshape([h, ch * p * p]).transpose()),
            position_embedding: Param::from_tensor(weights.tensor(
                &format!("{prefix}.position_embedding.weight"),
                [c.num_positions(), h],
                device,
            )?),
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

impl<B: Backend> ClipEncoderLayer<B> {
    fn random(c: &ClipVisionConfig, std: f64, device: &B::Device) -> Self {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Self {
            layer_norm1: LayerNorm::new(h, c.layer_norm_eps, device),
            q_proj: Linear::random(h, h, true, std, device),
            k_proj: Linear::random(h, h, true, std, device),
            v_proj: Linear::random(h, h, true, std, device),
            out_proj: Linear::random(h, h, true, std, device),
            layer_norm2: LayerNorm::new(h, c.layer_norm_eps, device),
            fc1: Linear::random(h, i, true, std, device),
            fc2: Linear::random(i, h, true, std, device),
            heads: c.num_attention_heads,
            activation: c.hidden_act,
            kernel: AttentionKernel::default(),
        }
    }

    fn load(
        weights: &Weights,
        prefix: &str,
        c: &ClipVisionConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let lin = |name: &str, d_in, d_out| {
            Linear::load(
                weights,
                &format!("{prefix}.{name}"),
                d_in,
                d_out,
                true,
                device,
            )
        };
        Ok(Self {
            layer_norm1: LayerNorm::load(
                weights,
                &format!("{prefix}.layer_norm1"),
                h,
                eps,
                device,
            )?,
            q_proj: lin("self_attn.q_proj", h, h)?,
            k_proj: lin("self_attn.k_proj", h, h)?,
            v_proj: lin("self_attn.v_proj", h, h)?,
            out_proj: lin("self_attn.out_proj", h, h)?,
            layer_norm2: LayerNorm::load(
                weights,
                &format!("{prefix}.layer_norm2"),
                h,
                eps,
                device,
            )?,
            fc1: lin("mlp.fc1", h, i)?,
            fc2: lin("mlp.fc2", i, h)?,
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

/// Tensor-name prefixes under which a CLIP vision tower is found, most specific first:
/// inside a Phi-3-V checkpoint, a CLIP checkpoint, and transformers 5's unprefixed layout.
pub const CLIP_PREFIXES: [&str; 3] = [
    "model.vision_embed_tokens.img_processor.vision_model.",
    "vision_model.",
    "",
];

impl<B: Backend> ClipVisionTower<B> {
    pub fn random(config: &ClipVisionConfig, std: f64, device: &B::Device) -> Self {
        Self {
            embeddings: ClipEmbeddings::random(config, std, device),
            pre_layrnorm: LayerNorm::new(config.hidden_size, config.layer_norm_eps, device),
            layers: (0..config.num_hidden_layers - 1)
                .map(|_| ClipEncoderLayer::random(config, std, device))
                .collect(),
            config: config.clone(),
        }
    }

    /// Loads the tower from tensors under `prefix` (for example `vision_model.`).
    pub fn load(
        weights: &Weights,
        prefix: &str,
        config: &ClipVisionConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        Ok(Self {
            embeddings: ClipEmbeddings::load(
                weights,
                &format!("{prefix}embeddings"),
                config,
                device,
            )?,
            pre_layrnorm: LayerNorm::load(
                weights,
                &format!("{prefix}pre_layrnorm"),
                config.hidden_size,
                config.layer_norm_eps,
                device,
            )?,
            layers: (0..config.num_hidden_layers - 1)
                .map(|i| {
                    ClipEncoderLayer::load(
                        weights,
                        &format!("{prefix}encoder.layers.{i}"),
                        config,
                        device,
                    )
                })
                .collect::<Result<_, _>>()?,
            config: config.clone(),
        })
    }

    /// Loads the tower from whichever of [`CLIP_PREFIXES`] the checkpoint uses.
    pub fn load_detect(
        weights: &Weights,
        config: &ClipVisionConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let prefix = CLIP_PREFIXES
            .iter()
            .find(|p| weights.contains(&format!("{p}embeddings.class_embedding")))
            .copied()
            .unwrap_or(CLIP_PREFIXES[1]);
        Self::load(weights, prefix, config, device)
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
        let mut x = self.pre_layrnorm.forward(self.embeddings.forward(pixels));
        for layer in &self.layers {
            x = layer.forward(x);
        }
        let [n, s, h] = x.dims();
        x.slice([0..n, 1..s, 0..h])
    }
}

impl<B: Backend> NamedLinears<B> for ClipEncoderLayer<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        f(&format!("{prefix}self_attn.q_proj"), &mut self.q_proj);
        f(&format!("{prefix}self_attn.k_proj"), &mut self.k_proj);
        f(&format!("{prefix}self_attn.v_proj"), &mut self.v_proj);
        f(&format!("{prefix}self_attn.out_proj"), &mut self.out_proj);
        f(&format!("{prefix}mlp.fc1"), &mut self.fc1);
        f(&format!("{prefix}mlp.fc2"), &mut self.fc2);
    }
}

/// `prefix` is where the tower sits, for example `vision_model.`; the layers follow as
/// `encoder.layers.{i}.*`.
impl<B: Backend> NamedLinears<B> for ClipVisionTower<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.for_each_linear(&format!("{prefix}encoder.layers.{i}."), f);
        }
    }
}

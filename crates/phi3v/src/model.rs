//! Phi-3-V assembled: the decoder reads projected image features in place of the
//! `<|image_N|>` placeholder ids.
//!
//! The reference processor turns `<|image_k|>` into as many copies of `-k` as that image
//! has tokens. The model embeds the other ids, computes every image's tokens with the
//! vision path, and writes them over the placeholder positions in text order (batch row
//! by batch row). A text-only batch, and every cached decode step, skips the vision tower.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use phi3_decoder::{ForwardOptions, LossTargets, Phi3Model};
use phi3v_nn::{AttentionBackend, Linear, MixedMatmul, NamedLinears, WeightsView};
use phi3v_vision::{ImageEmbedding, VisionError};

use crate::config::Phi3VConfig;
use crate::error::Phi3VError;
use crate::inputs::InputIds;

/// Module path of the image embedding in the released weights
/// (`model.vision_embed_tokens`); the decoder's tensors sit at the root (`model.layers.*`,
/// `lm_head`).
pub const VISION_PATH: &str = phi3v_vision::EMBEDDING_PATH;

/// The images of a batch, as the vision path consumes them.
#[derive(Debug, Clone)]
pub struct ImageInput<B: Backend> {
    /// Only the real tiles, image after image in text order: for each image its global
    /// view, then its `h * w` crops row-major. `[tiles, 3, crop, crop]`.
    pub tiles: Tensor<B, 4>,
    /// `(h, w)` crop grid of each image.
    pub grids: Vec<(usize, usize)>,
}

/// Phi-3-Vision: the image embedding (`model.vision_embed_tokens`) and the decoder.
#[derive(Module, Debug)]
pub struct Phi3V<B: Backend> {
    pub decoder: Phi3Model<B>,
    /// `None` for a text-only model.
    pub vision_embed_tokens: Option<ImageEmbedding<B>>,
}

impl<B: MixedMatmul> Phi3V<B> {
    /// The model under `vb` (a root view): the decoder's tensors, and the image embedding
    /// under [`VISION_PATH`] unless the config is text-only. Loads, initialises or records
    /// as `vb` does (see [`WeightsView`]).
    pub fn new(
        vb: WeightsView<'_>,
        config: &Phi3VConfig,
        device: &B::Device,
    ) -> Result<Self, Phi3VError> {
        let decoder = Phi3Model::new(vb.clone(), &config.text, device)?;
        let vision_embed_tokens = match &config.vision {
            Some(v) => Some(ImageEmbedding::new(
                vb.pp(VISION_PATH),
                &v.clip,
                config.text.hidden_size,
                device,
            )?),
            None => None,
        };
        Ok(Self {
            decoder,
            vision_embed_tokens,
        })
    }
}

impl<B: AttentionBackend> Phi3V<B> {
    /// Input embeddings with image features written over the placeholder positions.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`; image `k`'s tokens are `-k`
    /// - returns `[batch, seq, hidden]`
    pub fn embed(
        &self,
        input_ids: impl Into<InputIds<B>>,
        images: Option<&ImageInput<B>>,
    ) -> Result<Tensor<B, 3>, Phi3VError> {
        self.embed_with(input_ids, images, |vision, images| {
            vision.forward(images.tiles.clone(), &images.grids)
        })
    }

    /// [`Self::embed`] with the image tokens computed by `image_tokens` (called only when
    /// the input has placeholders, with the vision path and the images). Activation
    /// recomputation passes a closure that keeps the tower's hidden states, or one that
    /// reruns only the part after the tower; the placeholder checks and the scatter stay
    /// in one place.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`; image `k`'s tokens are `-k`
    /// - `image_tokens` returns per image `[tokens, hidden]`, in text order
    /// - returns `[batch, seq, hidden]`
    pub fn embed_with(
        &self,
        input_ids: impl Into<InputIds<B>>,
        images: Option<&ImageInput<B>>,
        image_tokens: impl FnOnce(
            &ImageEmbedding<B>,
            &ImageInput<B>,
        ) -> Result<Vec<Tensor<B, 2>>, VisionError>,
    ) -> Result<Tensor<B, 3>, Phi3VError> {
        let input_ids = input_ids.into();
        let ids = input_ids.to_host()?;
        let input_ids = input_ids.tensor;
        let [batch, seq] = input_ids.dims();
        let placeholders: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id < 0)
            .map(|(i, _)| i)
            .collect();
        let text = self.decoder.embed(input_ids.clamp_min(0));
        if placeholders.is_empty() {
            return Ok(text);
        }
        let (vision, images) = match (&self.vision_embed_tokens, images) {
            (Some(v), Some(i)) => (v, i),
            (None, _) => {
                return Err(Phi3VError::Input(
                    "the input has image placeholders but the model has no vision path".into(),
                ))
            }
            (_, None) => {
                return Err(Phi3VError::Input(format!(
                    "the input has {} image placeholder tokens but no images were given",
                    placeholders.len()
                )))
            }
        };
        let features = Tensor::cat(image_tokens(vision, images)?, 0);
        let [count, hidden] = features.dims();
        if count != placeholders.len() {
            return Err(Phi3VError::Input(format!(
                "the images give {count} tokens but the input has {} placeholder positions",
                placeholders.len()
            )));
        }
        // One gather over [text rows ++ image rows] writes the features in text order and
        // keeps the operation differentiable for both sources.
        let flat = batch * seq;
        let mut index: Vec<i64> = (0..flat as i64).collect();
        for (k, &p) in placeholders.iter().enumerate() {
            index[p] = (flat + k) as i64;
        }
        let device = features.device();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [flat]), &device);
        let combined = Tensor::cat(vec![text.reshape([flat, hidden]), features], 0);
        Ok(combined.select(0, index).reshape([batch, seq, hidden]))
    }

    /// Final hidden states.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - returns `[batch, seq, hidden]`
    pub fn forward_hidden(
        &self,
        input_ids: impl Into<InputIds<B>>,
        images: Option<&ImageInput<B>>,
        options: ForwardOptions<'_, B>,
    ) -> Result<Tensor<B, 3>, Phi3VError> {
        let embeds = self.embed(input_ids, images)?;
        Ok(self.decoder.forward_hidden(embeds, options))
    }

    /// Logits.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - returns `[batch, seq, vocab]`
    pub fn forward(
        &self,
        input_ids: impl Into<InputIds<B>>,
        images: Option<&ImageInput<B>>,
        options: ForwardOptions<'_, B>,
    ) -> Result<Tensor<B, 3>, Phi3VError> {
        Ok(self
            .decoder
            .logits(self.forward_hidden(input_ids, images, options)?))
    }

    /// Mean shifted cross-entropy over labels that are not -100, with `lm_head` run only
    /// where a label counts ([`Phi3Model::head_loss`]).
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, seq]`, and `targets` built from
    ///   `[batch, seq]` labels
    /// - returns `[1]`
    pub fn loss(
        &self,
        input_ids: impl Into<InputIds<B>>,
        images: Option<&ImageInput<B>>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        targets: &LossTargets<B>,
    ) -> Result<Tensor<B, 1>, Phi3VError> {
        let hidden = self.forward_hidden(
            input_ids,
            images,
            ForwardOptions {
                attention_mask,
                ..Default::default()
            },
        )?;
        Ok(self.decoder.head_loss(hidden, targets))
    }
}

/// The decoder's layers and `lm_head`, then the vision path's (the order LoRA draws its
/// fresh `A` matrices in).
impl<B: Backend> NamedLinears<B> for Phi3V<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        self.decoder.for_each_linear(prefix, f);
        self.vision_embed_tokens.for_each_linear(prefix, f);
    }
}

//! From pixels to decoder-ready image tokens: the CLIP tower, the 2x2 merge, the crop
//! grid with its separators, and the MLP projection.
//!
//! For an image cut into `h x w` crops, with `g = image_size / patch / 2` merged tokens
//! per crop side, the token order is (`hd_transform_order = sub_glb`):
//! 1. the crops' merged grids laid out as one `(h g) x (w g)` grid, row-major, each row
//!    followed by `sub_GN`: `h g (w g + 1)` tokens;
//! 2. `glb_GN`: 1 token;
//! 3. the global view's `g x g` grid, each row followed by `sub_GN`: `g (g + 1)` tokens.

use burn::module::{Module, Param};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use phi3v_nn::{AttentionBackend, Init, Linear, MixedMatmul, NamedLinears, WeightsView};

use crate::clip::{ClipVisionTower, VISION_MODEL};
use crate::config::ClipVisionConfig;
use crate::error::VisionError;

/// Tokens an image of `h x w` crops becomes, with `g` merged tokens per crop side:
/// `(h w + 1) g^2 + 1 + (h + 1) g`. With the released sizes (`g = 12`), 4 x 4 crops give
/// 2509 tokens and 1 x 1 gives 313.
pub fn image_token_count(h: usize, w: usize, g: usize) -> usize {
    (h * w + 1) * g * g + 1 + (h + 1) * g
}

/// Where the released Phi-3-V weights put the image embedding.
pub const EMBEDDING_PATH: &str = "model.vision_embed_tokens";
/// Where the image embedding holds its CLIP model (transformers' `CLIPVisionModel`).
pub const IMG_PROCESSOR: &str = "img_processor";
/// Module path of the projection MLP under the embedding (`img_projection.0`, `.2`).
pub const IMG_PROJECTION: &str = "img_projection";

/// The Phi-3-V image embedding (`model.vision_embed_tokens`).
#[derive(Module, Debug)]
pub struct ImageEmbedding<B: Backend> {
    pub img_processor: ClipVisionTower<B>,
    /// `img_projection.0`: `[4 C, hidden]`.
    pub img_projection_0: Linear<B>,
    /// `img_projection.2`: `[hidden, hidden]`.
    pub img_projection_2: Linear<B>,
    /// The separator between the crop grid and the global view, `[4 C]`.
    pub glb_gn: Param<Tensor<B, 1>>,
    /// The separator after every grid row, `[4 C]`.
    pub sub_gn: Param<Tensor<B, 1>>,
}

impl<B: MixedMatmul> ImageEmbedding<B> {
    /// The embedding under `vb` (normally [`EMBEDDING_PATH`]), projecting to
    /// `hidden` (the decoder's width): the tower under `img_processor.vision_model`, the
    /// separators `glb_GN` (`[1, 1, 4C]` in the weights) and `sub_GN` (`[1, 1, 1, 4C]`),
    /// and `img_projection.{0,2}`.
    ///
    /// The construction order (tower, separators, projection) is the order in which a
    /// [`phi3v_nn::Recorder`] lists the tensors, and so the order in which the test kit
    /// draws random weights' values: keep it.
    pub fn new(
        vb: WeightsView<'_>,
        clip: &ClipVisionConfig,
        hidden: usize,
        device: &B::Device,
    ) -> Result<Self, VisionError> {
        clip.validate()?;
        let c4 = 4 * clip.hidden_size;
        let img_processor =
            ClipVisionTower::new(vb.pp(IMG_PROCESSOR).pp(VISION_MODEL), clip, device)?;
        let glb_gn = vb.tensor_mapped(
            "glb_GN",
            [1, 1, c4],
            [c4],
            Init::Normal,
            |t| t.reshape([c4]),
            device,
        )?;
        let sub_gn = vb.tensor_mapped(
            "sub_GN",
            [1, 1, 1, c4],
            [c4],
            Init::Normal,
            |t| t.reshape([c4]),
            device,
        )?;
        let projection = vb.pp(IMG_PROJECTION);
        Ok(Self {
            img_processor,
            img_projection_0: Linear::new(projection.pp(0), c4, hidden, true, device)?,
            img_projection_2: Linear::new(projection.pp(2), hidden, hidden, true, device)?,
            glb_gn,
            sub_gn,
        })
    }

    /// A randomly initialised embedding (see [`WeightsView::random`]).
    pub fn random(
        clip: &ClipVisionConfig,
        hidden: usize,
        std: f64,
        device: &B::Device,
    ) -> Result<Self, VisionError> {
        Self::new(WeightsView::random(std), clip, hidden, device)
    }

    /// Merged tokens per crop side (`image_size / patch / 2`).
    pub fn merged_side(&self) -> usize {
        self.img_processor.config().grid() / 2
    }
}

impl<B: AttentionBackend> ImageEmbedding<B> {
    /// Image tokens, one tensor per image, in text order.
    ///
    /// Only real tiles are passed: for each image its global view, then its `h * w` crops
    /// row-major (padding tiles are never computed). Images may have different grids.
    ///
    /// # Shapes
    /// - `tiles`: `[sum over images of (1 + h w), channels, image_size, image_size]`
    /// - `grids`: `(h, w)` per image
    /// - returns per image `[image_token_count(h, w, g), hidden]`
    pub fn forward(
        &self,
        tiles: Tensor<B, 4>,
        grids: &[(usize, usize)],
    ) -> Result<Vec<Tensor<B, 2>>, VisionError> {
        self.forward_visiting(tiles, grids, |_, _| {})
    }

    /// [`Self::forward`], showing `visit` the tower's hidden states as
    /// [`ClipVisionTower::forward_visiting`] does (each layer's input, then the last
    /// layer's output), for activation recomputation.
    ///
    /// # Shapes
    /// - `tiles`: `[sum over images of (1 + h w), channels, image_size, image_size]`
    /// - each visited state: `[tiles, 1 + grid^2, C]`
    /// - returns per image `[image_token_count(h, w, g), hidden]`
    pub fn forward_visiting(
        &self,
        tiles: Tensor<B, 4>,
        grids: &[(usize, usize)],
        visit: impl FnMut(usize, &Tensor<B, 3>),
    ) -> Result<Vec<Tensor<B, 2>>, VisionError> {
        self.check_tiles(&tiles, grids)?;
        let features = self.img_processor.forward_visiting(tiles, visit);
        Ok(self.tokens_from_features(features, grids))
    }

    /// Checks that `tiles` holds exactly the real tiles of `grids`, at the tower's size.
    ///
    /// # Shapes
    /// - `tiles`: `[sum over images of (1 + h w), channels, image_size, image_size]`
    pub fn check_tiles(
        &self,
        tiles: &Tensor<B, 4>,
        grids: &[(usize, usize)],
    ) -> Result<(), VisionError> {
        let [n, _, size, _] = tiles.dims();
        let expected: usize = grids.iter().map(|(h, w)| 1 + h * w).sum();
        let config = self.img_processor.config();
        if n != expected || size != config.image_size {
            return Err(VisionError::Input(format!(
                "got {n} tiles of {size}px for grids {grids:?}, expected {expected} tiles of {}px",
                config.image_size
            )));
        }
        Ok(())
    }

    /// Everything after the tower: the 2x2 merge, the crop grid with its separators and
    /// the projection. Separate from [`Self::forward`] so that activation recomputation
    /// can rerun it as one segment from the tower's saved output.
    ///
    /// # Shapes
    /// - `features`: `[tiles, grid^2, C]`, the tower's output for the tiles of `grids`
    /// - `grids`: `(h, w)` per image
    /// - returns per image `[image_token_count(h, w, g), hidden]`
    pub fn tokens_from_features(
        &self,
        features: Tensor<B, 3>,
        grids: &[(usize, usize)],
    ) -> Vec<Tensor<B, 2>> {
        let merged = merge_2x2(features);
        let [_, g, _, c4] = merged.dims();
        let mut sequences = Vec::with_capacity(grids.len());
        let mut offset = 0;
        for &(h, w) in grids {
            let global = merged
                .clone()
                .slice([offset..offset + 1, 0..g, 0..g, 0..c4])
                .reshape([g, g, c4]);
            let crops = merged
                .clone()
                .slice([offset + 1..offset + 1 + h * w, 0..g, 0..g, 0..c4])
                .reshape([h, w, g, g, c4])
                .permute([0, 2, 1, 3, 4])
                .reshape([h * g, w * g, c4]);
            offset += 1 + h * w;
            sequences.push(Tensor::cat(
                vec![
                    self.with_row_separators(crops),
                    self.glb_gn.val().reshape([1, c4]),
                    self.with_row_separators(global),
                ],
                0,
            ));
        }
        let lengths: Vec<usize> = sequences.iter().map(|s| s.dims()[0]).collect();
        let projected = self.project(Tensor::cat(sequences, 0));
        let hidden = projected.dims()[1];
        let mut start = 0;
        lengths
            .into_iter()
            .map(|len| {
                let piece = projected.clone().slice([start..start + len, 0..hidden]);
                start += len;
                piece
            })
            .collect()
    }

    /// Appends `sub_GN` to every row of a grid.
    ///
    /// # Shapes
    /// - `grid`: `[rows, cols, 4C]`
    /// - returns `[rows * (cols + 1), 4C]`
    fn with_row_separators(&self, grid: Tensor<B, 3>) -> Tensor<B, 2> {
        let [rows, cols, c4] = grid.dims();
        let sep = self.sub_gn.val().reshape([1, 1, c4]).expand([rows, 1, c4]);
        Tensor::cat(vec![grid, sep], 1).reshape([rows * (cols + 1), c4])
    }

    /// # Shapes
    /// - `tokens`: `[n, 4C]`
    /// - returns `[n, hidden]`
    pub fn project(&self, tokens: Tensor<B, 2>) -> Tensor<B, 2> {
        self.img_projection_2
            .forward(gelu(self.img_projection_0.forward(tokens)))
    }
}

/// Merges each 2 x 2 block of patch features into one token of 4x the width; the channel
/// block `2 dy + dx` holds patch `(2 i + dy, 2 j + dx)`.
///
/// # Shapes
/// - `features`: `[n, side^2, C]`
/// - returns `[n, side / 2, side / 2, 4C]`
pub fn merge_2x2<B: Backend>(features: Tensor<B, 3>) -> Tensor<B, 4> {
    let [n, len, c] = features.dims();
    let side = (len as f64).sqrt() as usize;
    let half = side / 2;
    features
        .reshape([n, half, 2, half, 2, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([n, half, half, 4 * c])
}

/// The tower's layers, then the projection's two.
impl<B: Backend> NamedLinears<B> for ImageEmbedding<B> {
    fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear<B>)) {
        self.img_processor.for_each_linear(prefix, f);
        self.img_projection_0.for_each_linear(prefix, f);
        self.img_projection_2.for_each_linear(prefix, f);
    }
}

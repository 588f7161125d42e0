//! The processor's CPU output as tensors on a device: the one place where token ids, masks,
//! labels and image tiles are uploaded, for inference ([`Processor`](phi3v_processor::Processor)
//! gives a [`Batch`] of one prompt) and training (collated [`Batch`]es) alike.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use phi3_decoder::LossTargets;
use phi3v_processor::batch::Batch;

use crate::error::Phi3VError;
use crate::model::ImageInput;

/// The tensors of a [`Batch`].
#[derive(Debug, Clone)]
pub struct BatchTensors<B: Backend> {
    /// `[batch, seq]` ids with image placeholders (`-k` for image `k` of the row).
    pub input_ids: Tensor<B, 2, Int>,
    /// `[batch, seq]`: 1 on real positions, 0 on padding.
    pub attention_mask: Tensor<B, 2, Int>,
    /// Training batches only: where the loss is taken, built from the labels on the host
    /// (`-100` where none is taken), so the loss never reads the batch back.
    pub loss_targets: Option<LossTargets<B>>,
    /// The real tiles of every image of the batch; `None` without images.
    pub images: Option<ImageInput<B>>,
    /// Label positions that count in the loss.
    pub target_tokens: usize,
    /// Every non-padding position.
    pub tokens: usize,
}

impl<B: Backend> BatchTensors<B> {
    /// Uploads `batch` to `device`.
    ///
    /// # Errors
    /// [`Phi3VError::Input`] if the batch's tiles do not match its crop grids (never the case
    /// for a batch the processor collated).
    pub fn new(batch: &Batch, device: &B::Device) -> Result<Self, Phi3VError> {
        let shape = batch.ids_shape();
        let int2 =
            |v: &[i64]| Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), shape), device);
        let images = match batch.num_tiles {
            0 => None,
            _ => Some(ImageInput::from_tiles(
                batch.pixel_values.clone(),
                batch.tile_size,
                batch.image_grids.clone(),
                device,
            )?),
        };
        Ok(Self {
            input_ids: int2(&batch.input_ids),
            attention_mask: int2(&batch.attention_mask),
            loss_targets: batch
                .labels
                .as_deref()
                .map(|labels| LossTargets::new(labels, shape, device)),
            images,
            target_tokens: batch
                .labels
                .as_ref()
                .map_or(0, |l| l.iter().filter(|&&x| x >= 0).count()),
            tokens: batch.attention_mask.iter().filter(|&&m| m > 0).count(),
        })
    }
}

impl<B: Backend> ImageInput<B> {
    /// Uploads the real tiles of some images, image after image: `pixel_values` is
    /// `[tiles, 3, tile_size, tile_size]` row-major, and image `i` owns `h * w + 1` tiles
    /// (its global view, then its crops row-major) for `grids[i] = (h, w)`.
    ///
    /// # Errors
    /// [`Phi3VError::Input`] if the buffer does not hold exactly the tiles the grids need.
    pub fn from_tiles(
        pixel_values: Vec<f32>,
        tile_size: usize,
        grids: Vec<(usize, usize)>,
        device: &B::Device,
    ) -> Result<Self, Phi3VError> {
        let tiles: usize = grids.iter().map(|&(h, w)| h * w + 1).sum();
        let tile_len = 3 * tile_size * tile_size;
        if tile_len == 0 || pixel_values.len() != tiles * tile_len {
            return Err(Phi3VError::Input(format!(
                "{} pixel values do not hold the {tiles} tiles of 3x{tile_size}x{tile_size} that \
                 the crop grids {grids:?} need",
                pixel_values.len()
            )));
        }
        let tiles = Tensor::from_data(
            TensorData::new(pixel_values, [tiles, 3, tile_size, tile_size]),
            device,
        );
        Ok(Self { tiles, grids })
    }
}

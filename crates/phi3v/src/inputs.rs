//! The processor's CPU output as tensors on a device: the one place where token ids, masks,
//! labels and image tiles are uploaded, for inference ([`Processor`](phi3v_processor::Processor)
//! gives a [`Batch`] of one prompt) and training (collated [`Batch`]es) alike.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use phi3_decoder::LossTargets;
use phi3v_processor::batch::Batch;

use crate::error::Phi3VError;
use crate::model::ImageInput;

/// Token ids, `[batch, seq]`, image `k`'s placeholders `-k`, with their host copy when the
/// caller has one.
///
/// The model finds the image placeholders on the host. With the host copy it reads nothing
/// back from the device; from a bare tensor (`From<Tensor>`) it reads the ids back once,
/// which on a GPU waits for all queued work. [`BatchTensors`] keeps the copy, so a
/// training step never waits there.
#[derive(Clone, Debug)]
pub struct InputIds<B: Backend> {
    /// `[batch, seq]`.
    pub tensor: Tensor<B, 2, Int>,
    /// The same, row-major, when the caller has it.
    host: Option<Arc<Vec<i64>>>,
}

impl<B: Backend> InputIds<B> {
    /// Uploads `ids` (row-major `[batch, seq]`) and keeps them on the host.
    pub fn from_host(ids: Vec<i64>, [batch, seq]: [usize; 2], device: &B::Device) -> Self {
        assert_eq!(
            ids.len(),
            batch * seq,
            "{} ids for [{batch}, {seq}]",
            ids.len()
        );
        let tensor = Tensor::from_data(TensorData::new(ids.clone(), [batch, seq]), device);
        Self {
            tensor,
            host: Some(Arc::new(ids)),
        }
    }

    /// The ids on the host, row-major: the kept copy, or read back from the device.
    ///
    /// # Errors
    /// [`Phi3VError::Input`] if the tensor cannot be read as integers.
    pub fn to_host(&self) -> Result<Arc<Vec<i64>>, Phi3VError> {
        match &self.host {
            Some(host) => Ok(host.clone()),
            None => self
                .tensor
                .to_data()
                .convert::<i64>()
                .to_vec()
                .map(Arc::new)
                .map_err(|e| Phi3VError::Input(format!("input ids: {e:?}"))),
        }
    }

    /// Whether the ids are kept on the host (so that nothing is read back).
    pub fn on_host(&self) -> bool {
        self.host.is_some()
    }

    /// The same ids as another backend's tensor (the autodiff backend's inner one, say),
    /// sharing the host copy.
    pub fn map<B2: Backend>(
        self,
        f: impl FnOnce(Tensor<B, 2, Int>) -> Tensor<B2, 2, Int>,
    ) -> InputIds<B2> {
        InputIds {
            tensor: f(self.tensor),
            host: self.host,
        }
    }
}

impl<B: Backend> From<Tensor<B, 2, Int>> for InputIds<B> {
    fn from(tensor: Tensor<B, 2, Int>) -> Self {
        Self { tensor, host: None }
    }
}

/// The tensors of a [`Batch`].
#[derive(Debug, Clone)]
pub struct BatchTensors<B: Backend> {
    /// `[batch, seq]` ids with image placeholders (`-k` for image `k` of the row), kept on
    /// the host too.
    pub input_ids: InputIds<B>,
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
            input_ids: InputIds::from_host(batch.input_ids.clone(), shape, device),
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    /// Ids built on the host keep their copy through the autodiff backend's inner one, and
    /// agree with what the device holds; bare tensors are read back to the same values.
    #[test]
    fn host_ids_are_kept_and_agree_with_the_device() {
        let device = Default::default();
        let ids = vec![5, -1, -1, 7, 0, 3];
        let kept = InputIds::<Autodiff<Flex>>::from_host(ids.clone(), [2, 3], &device);
        assert!(kept.on_host());
        let inner = kept.clone().map(|t| t.inner());
        assert!(inner.on_host());
        assert_eq!(*inner.to_host().unwrap(), ids);
        let on_device: Vec<i64> = kept.tensor.to_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(on_device, ids);

        let bare = InputIds::<Flex>::from(inner.tensor);
        assert!(!bare.on_host());
        assert_eq!(*bare.to_host().unwrap(), ids);
    }
}

//! Collation: examples and their processed images into one padded batch.
//!
//! Plain `Vec` buffers in row-major order with documented shapes, so that a model crate uploads
//! them to any backend (this crate has no tensor dependency).
//!
//! # Shapes
//!
//! With `B` samples, `T` the longest sample, `I` images in the batch, `N` real tiles in the
//! batch and `S` the crop size (336):
//!
//! | field | shape | content |
//! |---|---|---|
//! | `input_ids` | `[B, T]` | token ids, image placeholders `-k`, pad [`PAD_ID`] |
//! | `attention_mask` | `[B, T]` | 1 on real positions (placeholders included), 0 on padding |
//! | `position_ids` | `[B, T]` | `cumsum(attention_mask) - 1`, 1 on padding |
//! | `labels` | `[B, T]` | training only: the example's labels, [`IGNORE_INDEX`] on padding |
//! | `pixel_values` | `[N, 3, S, S]` | per image: global view, then its `h * w` crops row-major |
//! | `image_grids` | `[I]` of `(h, w)` | crops per image: it owns `h * w + 1` tiles |
//! | `image_sizes` | `[I]` of `[H, W]` | the padded HD size, `[h * S, w * S]` (the reference's `image_sizes`) |
//! | `num_img_tokens` | `[I]` | placeholders per image |
//! | `images_per_sample` | `[B]` | images of each sample |
//!
//! Images are in sample order, and within a sample in image-id order (`<|image_1|>` first).
//!
//! # Why these choices
//!
//! - Padding side: training pads on the right (labels stay aligned with their tokens, and the
//!   pad positions are masked out of attention and loss); generation pads on the left so that
//!   every prompt ends at the last column and the first generated token of every row is
//!   appended at the same position.
//! - `position_ids` follow the reference `generate()` (`attention_mask.cumsum(-1) - 1`, padding
//!   set to 1): left-padded rows then start at position 0 at their first real token. For
//!   right padding this equals `0..T` on the real tokens, what the reference forward uses.
//! - Only real tiles are kept: the reference pads every image to `num_crops + 1` tiles and the
//!   model drops the all-zero ones again using `image_sizes`; keeping only the `h * w + 1` real
//!   tiles saves the vision tower up to 16 of 17 crops for small images.
//! - The reference model fills placeholder positions in text order with the image features
//!   in image order; for prompts whose tags appear in increasing order (the usual case, and
//!   the Burberry prompt) that is the same as filling `-k` with image `k`.

use std::ops::Range;

use crate::image_processor::ProcessedImage;
use crate::sample::{GenerationExample, TrainingExample, IGNORE_INDEX};
use crate::tokenize::PAD_ID;
use crate::ProcessorError;

/// Which side of a shorter sample gets the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Pad after the tokens (training).
    Right,
    /// Pad before the tokens (generation).
    Left,
}

/// One sample to collate, borrowed: its ids, its labels for training, its processed images
/// (image `k` is tag `<|image_{k+1}|>`).
#[derive(Debug, Clone, Copy)]
pub struct SampleRef<'a> {
    /// `[len]` input ids with image placeholders.
    pub input_ids: &'a [i64],
    /// `[len]` labels, for training.
    pub labels: Option<&'a [i64]>,
    /// The sample's images.
    pub images: &'a [ProcessedImage],
}

impl<'a> SampleRef<'a> {
    /// A training sample.
    pub fn training(example: &'a TrainingExample, images: &'a [ProcessedImage]) -> Self {
        Self {
            input_ids: &example.input_ids,
            labels: Some(&example.labels),
            images,
        }
    }

    /// A generation sample (no labels).
    pub fn generation(example: &'a GenerationExample, images: &'a [ProcessedImage]) -> Self {
        Self {
            input_ids: &example.input_ids,
            labels: None,
            images,
        }
    }
}

/// A padded batch. See the module docs for the shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `B`.
    pub batch_size: usize,
    /// `T`, the longest sample.
    pub seq_len: usize,
    /// The side padding went to.
    pub padding: Padding,
    /// `[B, T]` ids, [`PAD_ID`] on padding.
    pub input_ids: Vec<i64>,
    /// `[B, T]` 1 = attend, 0 = padding.
    pub attention_mask: Vec<i64>,
    /// `[B, T]` positions, `cumsum(attention_mask) - 1`, 1 on padding.
    pub position_ids: Vec<i64>,
    /// `[B, T]` labels with [`IGNORE_INDEX`] on padding (training batches only).
    pub labels: Option<Vec<i64>>,
    /// `[num_tiles, 3, tile_size, tile_size]`, the real tiles of all images.
    pub pixel_values: Vec<f32>,
    /// Number of tiles in `pixel_values`: the sum of `h * w + 1` over the images.
    pub num_tiles: usize,
    /// `S`, the side of a tile (0 if the batch has no image).
    pub tile_size: usize,
    /// `[I]` crop grid `(h, w)` of each image.
    pub image_grids: Vec<(usize, usize)>,
    /// `[I]` padded HD size `[H, W]` of each image.
    pub image_sizes: Vec<[usize; 2]>,
    /// `[I]` placeholders per image.
    pub num_img_tokens: Vec<usize>,
    /// `[B]` images of each sample.
    pub images_per_sample: Vec<usize>,
}

impl Batch {
    /// `[B, T]`, the shape of the token-level fields.
    pub fn ids_shape(&self) -> [usize; 2] {
        [self.batch_size, self.seq_len]
    }

    /// `[N, 3, S, S]`, the shape of `pixel_values`.
    pub fn pixel_values_shape(&self) -> [usize; 4] {
        [self.num_tiles, 3, self.tile_size, self.tile_size]
    }

    /// Row `b` of `input_ids` (`[T]`).
    pub fn input_ids_row(&self, b: usize) -> &[i64] {
        &self.input_ids[b * self.seq_len..(b + 1) * self.seq_len]
    }

    /// The tiles of each image in `pixel_values`: image `i` owns tiles `ranges[i]` (its global
    /// view first).
    pub fn tile_ranges(&self) -> Vec<Range<usize>> {
        let mut start = 0;
        self.image_grids
            .iter()
            .map(|&(h, w)| {
                let r = start..start + h * w + 1;
                start = r.end;
                r
            })
            .collect()
    }

    /// The images of sample `b`, as indices into the per-image fields.
    pub fn sample_images(&self, b: usize) -> Range<usize> {
        let start: usize = self.images_per_sample[..b].iter().sum();
        start..start + self.images_per_sample[b]
    }
}

/// Collates training samples: right padding, labels required.
///
/// # Errors
/// As [`collate`]; also [`ProcessorError::InvalidSample`] for a sample without labels.
pub fn collate_training(samples: &[SampleRef<'_>]) -> Result<Batch, ProcessorError> {
    if let Some(b) = samples.iter().position(|s| s.labels.is_none()) {
        return Err(ProcessorError::InvalidSample {
            sample: b,
            reason: "a training sample needs labels".into(),
        });
    }
    collate(samples, Padding::Right, PAD_ID)
}

/// Collates generation prompts: left padding, no labels.
///
/// # Errors
/// As [`collate`].
pub fn collate_generation(samples: &[SampleRef<'_>]) -> Result<Batch, ProcessorError> {
    let unlabeled: Vec<SampleRef<'_>> = samples
        .iter()
        .map(|s| SampleRef { labels: None, ..*s })
        .collect();
    collate(&unlabeled, Padding::Left, PAD_ID)
}

/// Pads `samples` to the longest one and gathers their images.
///
/// Labels are collated if every sample has them (and must then be absent from all or present
/// in all).
///
/// # Errors
/// - [`ProcessorError::EmptyBatch`] for no samples;
/// - [`ProcessorError::InvalidSample`] naming the sample: empty ids, labels of another length,
///   labels on some samples only, placeholders that do not match its images (a run of `-k`
///   must have `images[k-1].num_tokens` positions and every image must be used), or a tile
///   size different from the rest of the batch.
pub fn collate(
    samples: &[SampleRef<'_>],
    padding: Padding,
    pad_id: i64,
) -> Result<Batch, ProcessorError> {
    if samples.is_empty() {
        return Err(ProcessorError::EmptyBatch);
    }
    let with_labels = samples[0].labels.is_some();
    let mut tile_shape: Option<[usize; 3]> = None;
    for (b, s) in samples.iter().enumerate() {
        let invalid = |reason: String| ProcessorError::InvalidSample { sample: b, reason };
        if s.input_ids.is_empty() {
            return Err(invalid("no input ids".into()));
        }
        match s.labels {
            Some(labels) if labels.len() != s.input_ids.len() => {
                return Err(invalid(format!(
                    "{} labels for {} input ids",
                    labels.len(),
                    s.input_ids.len()
                )))
            }
            Some(_) if !with_labels => {
                return Err(invalid("has labels but sample 0 has none".into()))
            }
            None if with_labels => return Err(invalid("has no labels but sample 0 has".into())),
            _ => {}
        }
        check_placeholders(s.input_ids, s.images).map_err(invalid)?;
        for (i, im) in s.images.iter().enumerate() {
            let shape = [im.shape[1], im.shape[2], im.shape[3]];
            match tile_shape {
                None => tile_shape = Some(shape),
                Some(t) if t != shape => {
                    return Err(invalid(format!(
                        "image {} has tiles {shape:?}, other images {t:?}",
                        i + 1
                    )))
                }
                _ => {}
            }
        }
    }

    let batch_size = samples.len();
    let seq_len = samples.iter().map(|s| s.input_ids.len()).max().unwrap_or(0);
    let mut input_ids = vec![pad_id; batch_size * seq_len];
    let mut attention_mask = vec![0_i64; batch_size * seq_len];
    let mut labels = with_labels.then(|| vec![IGNORE_INDEX; batch_size * seq_len]);
    for (b, s) in samples.iter().enumerate() {
        let len = s.input_ids.len();
        let start = b * seq_len
            + match padding {
                Padding::Right => 0,
                Padding::Left => seq_len - len,
            };
        input_ids[start..start + len].copy_from_slice(s.input_ids);
        attention_mask[start..start + len].fill(1);
        if let (Some(out), Some(l)) = (labels.as_mut(), s.labels) {
            out[start..start + len].copy_from_slice(l);
        }
    }
    let position_ids = position_ids(&attention_mask, seq_len);

    let images: Vec<&ProcessedImage> = samples.iter().flat_map(|s| s.images).collect();
    let num_tiles: usize = images.iter().map(|im| im.num_real_tiles()).sum();
    let tile_size = tile_shape.map_or(0, |t| t[1]);
    let tile_len = tile_shape.map_or(0, |t| t.iter().product());
    let mut pixel_values = Vec::with_capacity(num_tiles * tile_len);
    for im in &images {
        pixel_values.extend_from_slice(&im.pixel_values[..im.num_real_tiles() * tile_len]);
    }

    Ok(Batch {
        batch_size,
        seq_len,
        padding,
        input_ids,
        attention_mask,
        position_ids,
        labels,
        pixel_values,
        num_tiles,
        tile_size,
        image_grids: images.iter().map(|im| im.crops).collect(),
        image_sizes: images.iter().map(|im| im.image_size).collect(),
        num_img_tokens: images.iter().map(|im| im.num_tokens).collect(),
        images_per_sample: samples.iter().map(|s| s.images.len()).collect(),
    })
}

/// `cumsum(mask) - 1` per row, 1 where the mask is 0 (the reference `generate()`).
fn position_ids(mask: &[i64], seq_len: usize) -> Vec<i64> {
    let mut out = vec![1_i64; mask.len()];
    if seq_len == 0 {
        return out;
    }
    for (row, out_row) in mask.chunks(seq_len).zip(out.chunks_mut(seq_len)) {
        let mut sum = 0;
        for (&m, p) in row.iter().zip(out_row) {
            sum += m;
            if m != 0 {
                *p = sum - 1;
            }
        }
    }
    out
}

/// Each maximal run of `-k` must be `images[k-1].num_tokens` long, and every image used.
fn check_placeholders(ids: &[i64], images: &[ProcessedImage]) -> Result<(), String> {
    let mut used = vec![false; images.len()];
    let mut i = 0;
    while i < ids.len() {
        let id = ids[i];
        if id >= 0 {
            i += 1;
            continue;
        }
        let run = ids[i..].iter().take_while(|&&x| x == id).count();
        let k = id.unsigned_abs() as usize;
        let Some(image) = images.get(k - 1) else {
            return Err(format!(
                "placeholder {id} at position {i} but the sample has {} image(s)",
                images.len()
            ));
        };
        if run != image.num_tokens {
            return Err(format!(
                "{run} placeholders {id} at position {i}, but image {k} has {} tokens",
                image.num_tokens
            ));
        }
        used[k - 1] = true;
        i += run;
    }
    if let Some(k) = used.iter().position(|&u| !u) {
        return Err(format!("image {} has no placeholders in the ids", k + 1));
    }
    Ok(())
}

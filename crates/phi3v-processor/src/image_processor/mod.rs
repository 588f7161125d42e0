//! The Phi-3-Vision image processor ("HD transform") on the CPU, faithful to the Python
//! reference (`image_processing_phi3_v.py` of the model's Hugging Face remote code).
//!
//! # Algorithm, per image
//!
//! 0. Decode the file as PIL does ([`load_image`] / [`decode_image`]: libjpeg-turbo's pixels
//!    for JPEG, damaged files and decompression bombs refused; see the `decode` and `jpeg`
//!    modules).
//! 1. Convert to 8-bit RGB like PIL's `convert("RGB")` ([`to_rgb8`]; alpha is dropped, not
//!    composited).
//! 2. Portrait images (`width < height`) are transposed, processed, and transposed back
//!    (here without moving pixels: see [`HdPlan`] and the `hd` module).
//! 3. `ratio = w / h`; the largest `scale` with `scale * ceil(scale / ratio) <= num_crops`;
//!    `new_w = scale * S`, `new_h = int(new_w / ratio)` (`S` = crop size, 336).
//! 4. Resize to `new_w x new_h` with PIL's antialiased bilinear filter on `u8`
//!    ([`resize_bilinear_rgb8`], bit-exact).
//! 5. Pad with white rows to a multiple of `S`: `top = (target - new_h) / 2`, the rest below.
//! 6. Normalise: `(v / 255 - mean[c]) / std[c]` in `f32` (CLIP mean/std), CHW.
//! 7. Global view: bicubic (`A = -0.75`, `align_corners=False`, no antialias) resize of the
//!    normalised HD tensor to `S x S`, as `torch.nn.functional.interpolate`.
//! 8. Crops: row-major `S x S` tiles of the normalised HD tensor.
//! 9. `pixel_values = [global, crop_0, .., crop_{n-1}]`, zero-padded to `num_crops + 1` tiles.
//!
//! The number of image tokens for `h x w` crops is `(h*w + 1) * T + 1 + (h + 1) * sqrt(T)`
//! with `T = (S / patch / 2)^2` tokens per crop (144 for the released model: 2509 tokens for
//! 4x4 crops, 313 for 1x1).
//!
//! # Parity with the reference
//!
//! Checked by `tests/image_processor.rs` against fixtures written by
//! `scripts/make_processor_fixtures.py` (PIL + PyTorch): the padded `u8` HD image is identical
//! (every byte, for 8 images x `num_crops` 1, 4, 16), the normalisation table is identical, so
//! the crops are identical, and the global view is bit-identical too (measured max error 0 on
//! every fixture; the tests allow 1e-5 so that fixtures written by another PyTorch build,
//! which may round the bicubic sums differently, still pass). The bilinear resize alone is
//! also checked byte for byte on random sizes.
//!
//! Decoding matches too: JPEG files are decoded with libjpeg-turbo's algorithms (islow IDCT,
//! fancy upsampling), like PIL, so their pixels are PIL's byte for byte
//! (`tests/jpeg_fidelity.rs`, 17 fixtures: 4:2:0, 4:2:2, 4:4:4, 4:4:0, 4:1:1, progressive,
//! restart markers, RGB, gray, Adobe CMYK, odd sizes, arithmetic coding). The `image` crate's
//! decoder (zune-jpeg), used before, gave 63% of the pixels of those fixtures identical, up to
//! 14 levels off, and refused arithmetic coding. PNG and the other lossless formats decode
//! identically either way; see [`to_rgb8`] for the pixel formats.
//!
//! # Example
//!
//! ```
//! use phi3v_processor::image_processor::{ImageProcessor, ProcessorConfig};
//!
//! let processor = ImageProcessor::new(ProcessorConfig::default()).unwrap();
//! let image = image::RgbImage::from_pixel(800, 1000, image::Rgb([10, 120, 240]));
//! let out = processor.process_rgb(&image).unwrap();
//! assert_eq!(out.image_size, [1344, 1344]);
//! assert_eq!(out.crops, (4, 4));
//! assert_eq!(out.num_tokens, 2509);
//! assert_eq!(out.shape, [17, 3, 336, 336]);
//! assert_eq!(out.pixel_values.len(), 17 * 3 * 336 * 336);
//! ```

#![warn(missing_docs)]

mod bicubic;
mod convert;
mod decode;
mod hd;
mod jpeg;
mod resize;

use std::path::Path;

use image::{DynamicImage, RgbImage};
use rayon::prelude::*;

pub use convert::to_rgb8;
pub use decode::{
    decode_image, decode_image_with_limits, load_image, load_image_with_limits, read_image_file,
    DecodeLimits, MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS, PIL_MAX_IMAGE_PIXELS,
};
pub use hd::HdPlan;
pub use resize::resize_bilinear_rgb8;

use crate::ProcessorError;

/// CLIP's per-channel mean (`OPENAI_CLIP_MEAN`), the released model's `image_mean`.
// The reference's literals digit for digit, rounded to f32 like torch does.
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// CLIP's per-channel standard deviation (`OPENAI_CLIP_STD`), the released model's `image_std`.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Settings of the image processor.
///
/// A model dir gives them from its `preprocessor_config.json` ([`crate::PreprocessorConfig`]:
/// `num_crops`, `image_mean`, `image_std`) and its vision tower (crop and patch size), see
/// [`ProcessorConfig::from_preprocessor`]; so a model dir configures the processor the way it
/// configures the Python one.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// Maximum number of crops per image (the reference's `num_crops` / `hd_num`). The output
    /// always has `num_crops + 1` tiles. The released model uses 16 for single-image input
    /// (4 is common for multi-image prompts).
    pub num_crops: usize,
    /// Side of a crop and of the global view in pixels: 336 for CLIP ViT-L/14-336; tiny test
    /// models use 56.
    pub crop_size: usize,
    /// Patch size of the vision tower (14). Only used to count image tokens.
    pub patch_size: usize,
    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub image_std: [f32; 3],
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            num_crops: 16,
            crop_size: 336,
            patch_size: 14,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
        }
    }
}

impl ProcessorConfig {
    /// Checks that the sizes fit together: positive crop count, and a crop size that is a
    /// multiple of twice the patch size (the 2x2 merge needs an even patch grid).
    ///
    /// # Errors
    /// [`ProcessorError::InvalidConfig`] naming the offending values.
    pub fn validate(&self) -> Result<(), ProcessorError> {
        if !(1..=MAX_NUM_CROPS).contains(&self.num_crops) {
            return Err(ProcessorError::InvalidConfig(format!(
                "num_crops (--num-crops) must be between 1 and {MAX_NUM_CROPS}, got {}",
                self.num_crops
            )));
        }
        if self.patch_size == 0
            || self.crop_size == 0
            || !self.crop_size.is_multiple_of(2 * self.patch_size)
        {
            return Err(ProcessorError::InvalidConfig(format!(
                "crop_size ({}) must be a positive multiple of 2 * patch_size ({})",
                self.crop_size, self.patch_size
            )));
        }
        if self.image_std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err(ProcessorError::InvalidConfig(format!(
                "image_std {:?} must be finite and non-zero",
                self.image_std
            )));
        }
        Ok(())
    }

    /// Side of the merged token grid of one crop: `crop_size / patch_size / 2` (12 for 336/14).
    pub fn tokens_per_side(&self) -> usize {
        self.crop_size / self.patch_size / 2
    }

    /// Image tokens per crop after the 2x2 merge: `tokens_per_side^2` (144 for 336/14).
    pub fn tokens_per_crop(&self) -> usize {
        self.tokens_per_side() * self.tokens_per_side()
    }

    /// Image tokens for an image of `h_crops x w_crops` crops:
    /// `(h*w + 1) * T + 1 + (h + 1) * sqrt(T)` (sub-image grid with a separator per row, the
    /// global/sub separator, the global view with a separator per row).
    pub fn num_image_tokens(&self, h_crops: usize, w_crops: usize) -> usize {
        let t = self.tokens_per_crop();
        (h_crops * w_crops + 1) * t + 1 + (h_crops + 1) * self.tokens_per_side()
    }

    /// Shape of one image's `pixel_values`: `[num_crops + 1, 3, crop_size, crop_size]`.
    pub fn pixel_values_shape(&self) -> [usize; 4] {
        [self.num_crops + 1, 3, self.crop_size, self.crop_size]
    }

    /// Plans the HD transform of a `width x height` image without touching pixels.
    ///
    /// # Errors
    /// See [`HdPlan::new`].
    pub fn plan(&self, width: usize, height: usize) -> Result<HdPlan, ProcessorError> {
        HdPlan::new(width, height, self.num_crops, self.crop_size)
    }

    /// Image tokens for a `width x height` image (the reference's
    /// `calc_num_image_tokens_from_image_size`), without decoding it.
    ///
    /// # Errors
    /// See [`HdPlan::new`].
    pub fn num_image_tokens_for_size(
        &self,
        width: usize,
        height: usize,
    ) -> Result<usize, ProcessorError> {
        let plan = self.plan(width, height)?;
        Ok(self.num_image_tokens(plan.crops.0, plan.crops.1))
    }
}

/// The processor's output for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// Normalised tiles, laid out `[num_crops + 1, 3, S, S]` (see [`Self::shape`]): the global
    /// view, then the `h * w` crops in row-major order, then all-zero padding tiles.
    pub pixel_values: Vec<f32>,
    /// `[num_crops + 1, 3, S, S]`, the shape of `pixel_values`.
    pub shape: [usize; 4],
    /// `[H_pad, W_pad]`: the padded HD size in pixels (the reference's `image_sizes` entry),
    /// which tells the model how many of the tiles are real.
    pub image_size: [usize; 2],
    /// `(h, w)` = `(H_pad / S, W_pad / S)` crops.
    pub crops: (usize, usize),
    /// Image tokens this image occupies in the prompt.
    pub num_tokens: usize,
}

impl ProcessedImage {
    /// Number of real tiles (global view + crops); the rest of `pixel_values` is zeros.
    pub fn num_real_tiles(&self) -> usize {
        self.crops.0 * self.crops.1 + 1
    }

    /// The `i`-th tile `[3, S, S]` (0 is the global view).
    ///
    /// # Panics
    /// If `i >= num_crops + 1`.
    pub fn tile(&self, i: usize) -> &[f32] {
        let len = self.shape[1] * self.shape[2] * self.shape[3];
        &self.pixel_values[i * len..(i + 1) * len]
    }
}

/// Stacks processed images into one `[N, num_crops + 1, 3, S, S]` buffer, the batch layout
/// the vision tower takes. Returns the buffer and its shape.
///
/// # Panics
/// If the images were processed with different configurations (different tile shapes).
pub fn stack_pixel_values(images: &[ProcessedImage]) -> (Vec<f32>, [usize; 5]) {
    let Some(first) = images.first() else {
        return (Vec::new(), [0, 0, 3, 0, 0]);
    };
    let s = first.shape;
    let mut out = Vec::with_capacity(images.len() * first.pixel_values.len());
    for im in images {
        assert_eq!(
            im.shape, s,
            "images processed with different configurations"
        );
        out.extend_from_slice(&im.pixel_values);
    }
    (out, [images.len(), s[0], s[1], s[2], s[3]])
}

/// The most crops [`ProcessorConfig::validate`] accepts. The released model uses 16 (about
/// 2,600 image tokens for one image); 64 crops are about 9,500 tokens and a 2,688 x 2,688
/// pixel canvas for a square image. Far larger values only serve to exhaust memory (the canvas grows
/// with the crop count), so they are refused rather than attempted.
pub const MAX_NUM_CROPS: usize = 64;

/// The Phi-3-Vision image processor: a validated [`ProcessorConfig`] plus its precomputed
/// normalisation table. Cheap to share across threads (`&self` methods only).
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    config: ProcessorConfig,
    lut: Box<[[f32; 256]; 3]>,
}

impl ImageProcessor {
    /// Validates the configuration and precomputes the normalisation table.
    ///
    /// # Errors
    /// [`ProcessorError::InvalidConfig`], see [`ProcessorConfig::validate`].
    pub fn new(config: ProcessorConfig) -> Result<Self, ProcessorError> {
        config.validate()?;
        let mut lut = Box::new([[0f32; 256]; 3]);
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, x) in table.iter_mut().enumerate() {
                // ToTensor: `.to(float32).div(255)`; Normalize: `.sub_(mean).div_(std)`.
                *x = (v as f32 / 255.0 - config.image_mean[c]) / config.image_std[c];
            }
        }
        Ok(Self { config, lut })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    /// `table[c][v]`: the normalised `f32` value of byte `v` in channel `c`. Every crop value is
    /// an entry of this table, which is why matching it matches the crops exactly.
    pub fn normalization_table(&self) -> &[[f32; 256]; 3] {
        &self.lut
    }

    /// The 8-bit stage of the HD transform: the resized, white-padded RGB image of size
    /// `[H_pad, W_pad]` that the reference normalises (its `HD_transform` output).
    ///
    /// # Errors
    /// See [`HdPlan::new`].
    pub fn hd_image(&self, image: &RgbImage) -> Result<RgbImage, ProcessorError> {
        let plan = self
            .config
            .plan(image.width() as usize, image.height() as usize)?;
        Ok(hd::hd_image_u8(image, &plan))
    }

    /// Processes any decoded image: converts it to RGB like PIL, then [`Self::process_rgb`].
    ///
    /// # Errors
    /// Unsupported pixel formats, empty or degenerate images (the error names the dimensions).
    pub fn process(&self, image: &DynamicImage) -> Result<ProcessedImage, ProcessorError> {
        self.process_rgb(&to_rgb8(image)?)
    }

    /// Processes an 8-bit RGB image into `pixel_values` `[num_crops + 1, 3, S, S]`.
    ///
    /// # Errors
    /// Empty or degenerate (extremely elongated) images; see [`HdPlan::new`].
    pub fn process_rgb(&self, image: &RgbImage) -> Result<ProcessedImage, ProcessorError> {
        let plan = self
            .config
            .plan(image.width() as usize, image.height() as usize)?;
        let hd = hd::hd_image_u8(image, &plan);
        Ok(self.finish(&hd, &plan))
    }

    /// Processes a packed RGB buffer (`width * height * 3` bytes, row-major), for callers
    /// that decode images themselves.
    ///
    /// # Errors
    /// [`ProcessorError::BufferSize`] if the buffer does not match the dimensions, then as
    /// [`Self::process_rgb`].
    pub fn process_rgb_bytes(
        &self,
        rgb: Vec<u8>,
        width: usize,
        height: usize,
    ) -> Result<ProcessedImage, ProcessorError> {
        let expected = width * height * 3;
        if rgb.len() != expected {
            return Err(ProcessorError::BufferSize {
                width,
                height,
                expected,
                actual: rgb.len(),
            });
        }
        let image = RgbImage::from_raw(width as u32, height as u32, rgb)
            .ok_or(ProcessorError::EmptyImage { width, height })?;
        self.process_rgb(&image)
    }

    /// Loads and processes an image file.
    ///
    /// # Errors
    /// Any error, wrapped in [`ProcessorError::InFile`] naming the file (or, for read and decode
    /// errors, [`ProcessorError::Io`] / [`ProcessorError::FileTooLarge`] /
    /// [`ProcessorError::ImageDecode`], which name it already).
    pub fn process_path(&self, path: impl AsRef<Path>) -> Result<ProcessedImage, ProcessorError> {
        let path = path.as_ref();
        let image = load_image(path)?;
        self.process(&image).map_err(|e| ProcessorError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Processes many images in parallel on the current rayon pool (wrap the call in
    /// `pool.install(..)` to choose the threads). Output order follows input order.
    ///
    /// # Errors
    /// The first failing image, wrapped in [`ProcessorError::InBatch`] with its index.
    pub fn process_batch(
        &self,
        images: &[DynamicImage],
    ) -> Result<Vec<ProcessedImage>, ProcessorError> {
        images
            .par_iter()
            .enumerate()
            .map(|(index, im)| {
                self.process(im).map_err(|e| ProcessorError::InBatch {
                    index,
                    source: Box::new(e),
                })
            })
            .collect()
    }

    /// Loads and processes many image files in parallel on the current rayon pool. Output
    /// order follows input order.
    ///
    /// # Errors
    /// The first failing file, with its path (see [`Self::process_path`]).
    pub fn process_paths<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
    ) -> Result<Vec<ProcessedImage>, ProcessorError> {
        paths.par_iter().map(|p| self.process_path(p)).collect()
    }

    /// Normalises the `u8` HD image into tiles: global view, crops, zero padding.
    fn finish(&self, hd: &RgbImage, plan: &HdPlan) -> ProcessedImage {
        let s = self.config.crop_size;
        let shape = self.config.pixel_values_shape();
        let tile_len = 3 * s * s;
        let total: usize = shape.iter().product();
        let (w, h) = (hd.width() as usize, hd.height() as usize);
        let raw = hd.as_raw();

        // Filled in order (global, crops, padding) so that only the padding is zero-filled.
        let mut pixel_values = Vec::with_capacity(total);
        pixel_values.resize(tile_len, 0.0);
        bicubic::global_view(raw, w, h, &self.lut, s, &mut pixel_values);

        let (rows, cols) = plan.crops;
        for ty in 0..rows {
            for tx in 0..cols {
                for (c, lut) in self.lut.iter().enumerate() {
                    for y in 0..s {
                        let start = ((ty * s + y) * w + tx * s) * 3;
                        let src = &raw[start..start + 3 * s];
                        pixel_values.extend(src.chunks_exact(3).map(|px| lut[px[c] as usize]));
                    }
                }
            }
        }
        pixel_values.resize(total, 0.0);

        ProcessedImage {
            pixel_values,
            shape,
            image_size: plan.image_size,
            crops: plan.crops,
            num_tokens: self.config.num_image_tokens(rows, cols),
        }
    }
}

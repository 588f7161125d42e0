//! [`Processor`]: a prompt and its images to model inputs, in one call.
//!
//! This is the reference's `Phi3VProcessor.__call__(text, images)`: every image through the HD
//! transform, the text tokenized with `<|image_N|>` expanded to that image's placeholders, and
//! the images' real tiles packed as the vision tower takes them. The output is a
//! [`Batch`] of one prompt, the same type the training and evaluation batches are, so one
//! conversion to tensors serves inference and training alike.

use std::path::Path;

use image::DynamicImage;

use crate::batch::{collate_generation, Batch, SampleRef};
use crate::image_processor::{ImageProcessor, ProcessedImage, ProcessorConfig};
use crate::tokenize::Phi3Tokenizer;
use crate::ProcessorError;

/// The input processor of one model: its tokenizer, and its image processor (none for a
/// text-only model).
#[derive(Debug, Clone)]
pub struct Processor {
    tokenizer: Phi3Tokenizer,
    images: Option<ImageProcessor>,
}

impl Processor {
    /// A processor from its parts; `images` is `None` for a text-only model.
    pub fn new(tokenizer: Phi3Tokenizer, images: Option<ImageProcessor>) -> Self {
        Self { tokenizer, images }
    }

    /// The tokenizer (for decoding generated ids, or building labelled examples with
    /// [`crate::sample`]).
    pub fn tokenizer(&self) -> &Phi3Tokenizer {
        &self.tokenizer
    }

    /// The image processor; `None` for a text-only model.
    pub fn image_processor(&self) -> Option<&ImageProcessor> {
        self.images.as_ref()
    }

    /// The image processor's settings; `None` for a text-only model.
    pub fn image_config(&self) -> Option<&ProcessorConfig> {
        self.images.as_ref().map(ImageProcessor::config)
    }

    /// Model inputs of a prompt whose `<|image_N|>` tags refer to `images[N - 1]`, processed
    /// already (by [`Self::image_processor`]).
    ///
    /// Returns a batch of one prompt, without padding (see [`crate::batch`] for the shapes):
    /// `input_ids` `[1, len]` with image `k`'s placeholders `-k`, `pixel_values`
    /// `[tiles, 3, S, S]` holding only the real tiles (each image's global view, then its
    /// crops row-major), `image_grids` the `(h, w)` crops of each image.
    ///
    /// # Errors
    /// The tags and the images do not match ([`ProcessorError::ImageTag`],
    /// [`ProcessorError::ImageCountMismatch`]); [`ProcessorError::Tokenizer`].
    pub fn inputs(&self, text: &str, images: &[ProcessedImage]) -> Result<Batch, ProcessorError> {
        let counts: Vec<usize> = images.iter().map(|p| p.num_tokens).collect();
        let input_ids = self.tokenizer.encode_prompt(text, &counts)?;
        collate_generation(&[SampleRef {
            input_ids: &input_ids,
            labels: None,
            images,
        }])
    }

    /// [`Self::inputs`] of decoded images, processed in parallel.
    ///
    /// # Errors
    /// [`ProcessorError::NoImageProcessor`] for images given to a text-only model; the image
    /// processor's errors (naming the image); as [`Self::inputs`].
    pub fn process(&self, text: &str, images: &[DynamicImage]) -> Result<Batch, ProcessorError> {
        let processed = match images {
            [] => Vec::new(),
            _ => self
                .image_processor_for(images.len())?
                .process_batch(images)?,
        };
        self.inputs(text, &processed)
    }

    /// [`Self::inputs`] of image files, loaded and processed in parallel.
    ///
    /// # Errors
    /// As [`Self::process`]; read and decode errors name the file.
    pub fn process_paths<P: AsRef<Path> + Sync>(
        &self,
        text: &str,
        paths: &[P],
    ) -> Result<Batch, ProcessorError> {
        let processed = match paths {
            [] => Vec::new(),
            _ => self
                .image_processor_for(paths.len())?
                .process_paths(paths)?,
        };
        self.inputs(text, &processed)
    }

    fn image_processor_for(&self, images: usize) -> Result<&ImageProcessor, ProcessorError> {
        self.images
            .as_ref()
            .ok_or(ProcessorError::NoImageProcessor { images })
    }
}

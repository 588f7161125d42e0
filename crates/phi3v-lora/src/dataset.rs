//! The fine-tuning task's data: catalogue items turned into training examples, generation
//! prompts and truths, and batches of them turned into tensors.
//!
//! Token counts come from the image sizes alone (the HD plan), so every example is
//! tokenized up front without decoding an image. Pixels are processed when a batch needs
//! them, and kept in memory when the whole set fits in [`IMAGE_CACHE_BUDGET`] (the sample
//! catalogue does; 3,000 full-size Burberry images at 17 crops would not).

use std::collections::HashMap;
use std::sync::Mutex;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use phi3v::data::batch::{collate_generation, collate_training, Batch, SampleRef};
use phi3v::data::catalogue::{CatalogueItem, Product};
use phi3v::data::image_processor::{ImageProcessor, ProcessedImage};
use phi3v::data::prompt::PromptTemplate;
use phi3v::data::sample::{
    generation_example, training_example, GenerationExample, TrainingExample,
};
use phi3v::data::tokenize::Phi3Tokenizer;
use phi3v::data::DataError;
use phi3v::ImageInput;

use crate::answer::Truth;
use crate::error::LoraError;

/// Bytes of processed pixels kept in memory at most.
pub const IMAGE_CACHE_BUDGET: usize = 2 << 30;

/// One usable item: what is trained, what is prompted, what is true.
#[derive(Debug, Clone)]
pub struct TaskItem {
    pub catalogue: CatalogueItem,
    pub example: TrainingExample,
    pub prompt: GenerationExample,
    pub truth: Truth,
}

impl TaskItem {
    pub fn product(&self) -> &Product {
        &self.catalogue.product
    }
}

/// An item that could not become an example, and why (it is skipped, not fatal).
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedItem {
    pub row: usize,
    pub reason: String,
}

/// A set of task items with the tokenizer and processor that made them.
pub struct TaskData {
    pub items: Vec<TaskItem>,
    processor: ImageProcessor,
    cache: Option<Mutex<HashMap<usize, ProcessedImage>>>,
}

/// Tensors of one batch.
#[derive(Debug, Clone)]
pub struct BatchTensors<B: Backend> {
    /// `[batch, seq]` ids with image placeholders.
    pub input_ids: Tensor<B, 2, Int>,
    /// `[batch, seq]`.
    pub attention_mask: Tensor<B, 2, Int>,
    /// `[batch, seq]`, training batches only.
    pub labels: Option<Tensor<B, 2, Int>>,
    pub images: Option<ImageInput<B>>,
    /// Label positions that count in the loss.
    pub target_tokens: usize,
    /// Every non-padding position.
    pub tokens: usize,
}

impl TaskData {
    /// Builds the examples of `items`, skipping (and returning) those that fail: a prompt
    /// longer than `max_len`, an image whose size the HD transform refuses.
    pub fn new(
        items: Vec<CatalogueItem>,
        tokenizer: &Phi3Tokenizer,
        processor: ImageProcessor,
        template: &PromptTemplate,
        max_len: Option<usize>,
    ) -> (Self, Vec<SkippedItem>) {
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        let bytes_per_image = processor
            .config()
            .pixel_values_shape()
            .iter()
            .product::<usize>()
            * 4;
        for item in items {
            let row = item.row;
            match build_item(item, tokenizer, &processor, template, max_len) {
                Ok(i) => out.push(i),
                Err(e) => skipped.push(SkippedItem {
                    row,
                    reason: e.to_string(),
                }),
            }
        }
        let cache = (out.len() * bytes_per_image <= IMAGE_CACHE_BUDGET).then(Default::default);
        (
            Self {
                items: out,
                processor,
                cache,
            },
            skipped,
        )
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn truths(&self) -> Vec<Truth> {
        self.items.iter().map(|i| i.truth.clone()).collect()
    }

    /// The processed image of item `index` (from the cache when there is one).
    pub fn image(&self, index: usize) -> Result<ProcessedImage, LoraError> {
        if let Some(cache) = &self.cache {
            if let Some(hit) = cache.lock().expect("image cache lock").get(&index) {
                return Ok(hit.clone());
            }
        }
        let item = &self.items[index];
        let decoded = item
            .catalogue
            .image
            .decode()
            .map_err(|e| in_row(item.catalogue.row, e))?;
        let processed = self
            .processor
            .process(&decoded)
            .map_err(|e| in_row(item.catalogue.row, e))?;
        if let Some(cache) = &self.cache {
            cache
                .lock()
                .expect("image cache lock")
                .insert(index, processed.clone());
        }
        Ok(processed)
    }

    /// A right-padded training batch of the items at `indices`.
    pub fn training_batch<B: Backend>(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> Result<BatchTensors<B>, LoraError> {
        self.batch(
            indices,
            device,
            |item, image| SampleRef::training(&item.example, image),
            collate_training,
        )
    }

    /// A left-padded generation batch of the items at `indices`.
    pub fn generation_batch<B: Backend>(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> Result<BatchTensors<B>, LoraError> {
        self.batch(
            indices,
            device,
            |item, image| SampleRef::generation(&item.prompt, image),
            collate_generation,
        )
    }

    /// Collates the items at `indices`, each as `sample` makes it, with `collate`.
    fn batch<B: Backend>(
        &self,
        indices: &[usize],
        device: &B::Device,
        sample: impl for<'s> Fn(&'s TaskItem, &'s [ProcessedImage]) -> SampleRef<'s>,
        collate: fn(&[SampleRef<'_>]) -> Result<Batch, DataError>,
    ) -> Result<BatchTensors<B>, LoraError> {
        let images: Vec<ProcessedImage> = indices
            .iter()
            .map(|&i| self.image(i))
            .collect::<Result<_, _>>()?;
        let samples: Vec<SampleRef<'_>> = indices
            .iter()
            .zip(&images)
            .map(|(&i, img)| sample(&self.items[i], std::slice::from_ref(img)))
            .collect();
        Ok(to_tensors(&collate(&samples)?, device))
    }
}

fn in_row(row: usize, e: DataError) -> LoraError {
    LoraError::Config(format!("catalogue row {row}: {e}"))
}

fn build_item(
    catalogue: CatalogueItem,
    tokenizer: &Phi3Tokenizer,
    processor: &ImageProcessor,
    template: &PromptTemplate,
    max_len: Option<usize>,
) -> Result<TaskItem, LoraError> {
    let row = format!("row {}", catalogue.row);
    let (w, h) = (
        catalogue.image.width as usize,
        catalogue.image.height as usize,
    );
    let tokens = processor.config().num_image_tokens_for_size(w, h)?;
    let rendered = template.render(&catalogue.product)?;
    let example = training_example(tokenizer, &row, &rendered, &[tokens], max_len)?;
    let prompt = generation_example(tokenizer, &row, &rendered.prompt, &[tokens], max_len)?;
    let p = &catalogue.product;
    let truth = Truth {
        title: p.title.clone(),
        category: p.category3_code.clone(),
        price: p.full_price,
    };
    Ok(TaskItem {
        catalogue,
        example,
        prompt,
        truth,
    })
}

/// Uploads a collated batch.
pub fn to_tensors<B: Backend>(batch: &Batch, device: &B::Device) -> BatchTensors<B> {
    let (b, t) = (batch.batch_size, batch.seq_len);
    let int2 =
        |v: &[i64]| Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), [b, t]), device);
    let images = (batch.num_tiles > 0).then(|| {
        let s = batch.tile_size;
        ImageInput {
            tiles: Tensor::from_data(
                TensorData::new(batch.pixel_values.clone(), [batch.num_tiles, 3, s, s]),
                device,
            ),
            grids: batch.image_grids.clone(),
        }
    });
    BatchTensors {
        input_ids: int2(&batch.input_ids),
        attention_mask: int2(&batch.attention_mask),
        labels: batch.labels.as_deref().map(int2),
        images,
        target_tokens: batch
            .labels
            .as_ref()
            .map_or(0, |l| l.iter().filter(|&&x| x >= 0).count()),
        tokens: batch.attention_mask.iter().filter(|&&m| m > 0).count(),
    }
}

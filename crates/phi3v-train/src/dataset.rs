//! A task's data: its items turned into training examples, generation prompts and truths,
//! and batches of them turned into tensors.
//!
//! Token counts come from the image sizes alone (the HD plan), so every example is
//! tokenized up front without decoding an image. Pixels are processed when a batch needs
//! them, and kept in memory when the whole set fits in [`IMAGE_CACHE_BUDGET`] (the sample
//! catalogue does; 3,000 full-size Burberry images at 17 crops would not).

use std::collections::HashMap;
use std::sync::Mutex;

use burn::tensor::backend::Backend;
use phi3v::processor::batch::{collate_generation, collate_training, Batch, SampleRef};
use phi3v::processor::image_processor::{ImageProcessor, ProcessedImage};
use phi3v::processor::sample::{
    generation_example, training_example, GenerationExample, TrainingExample,
};
use phi3v::processor::tokenize::Phi3Tokenizer;
use phi3v::processor::ProcessorError;
use phi3v::BatchTensors;

use crate::error::TrainError;
use crate::task::{Task, TaskItem};

/// Bytes of processed pixels kept in memory at most.
pub const IMAGE_CACHE_BUDGET: usize = 2 << 30;

/// One usable item: what is trained, what is prompted, what is true.
#[derive(Debug, Clone)]
pub struct Example<T: Task> {
    pub item: T::Item,
    pub example: TrainingExample,
    pub prompt: GenerationExample,
    pub truth: T::Truth,
}

/// An item that could not become an example, and why (it is skipped, not fatal).
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedItem {
    /// Position of the item in the list given to [`TaskData::new`], so that a caller can
    /// find its source row (a catalogue's drop report needs the row and product code).
    pub index: usize,
    /// Where the item came from (`catalogue row 12`).
    pub origin: String,
    pub reason: SkipReason,
}

/// Why an item was skipped.
#[derive(Debug, Clone, PartialEq)]
pub enum SkipReason {
    /// The training example is longer than the token budget. Skipped rather than cut (see
    /// [`phi3v::processor::sample`]): one huge example (a 100 KB title) would otherwise
    /// exhaust memory in the middle of training.
    OverBudget {
        /// Tokens of the example.
        tokens: usize,
        /// Image placeholder positions among them.
        image_tokens: usize,
        /// The budget.
        max_tokens: usize,
    },
    /// Anything else that keeps the item from becoming an example: an image the HD
    /// transform refuses (too elongated), a prompt that does not render.
    Unusable(String),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::OverBudget {
                tokens,
                image_tokens,
                max_tokens,
            } => write!(
                f,
                "{tokens} tokens ({image_tokens} of them image placeholders) exceed the token \
                 budget of {max_tokens} (--max-tokens)"
            ),
            SkipReason::Unusable(message) => f.write_str(message),
        }
    }
}

impl std::fmt::Display for SkippedItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}

/// A set of task items with the tokenizer and processor that made them.
pub struct TaskData<T: Task> {
    pub items: Vec<Example<T>>,
    processor: ImageProcessor,
    /// Processed images by (item, image of the item).
    cache: Option<Mutex<HashMap<(usize, usize), ProcessedImage>>>,
}

impl<T: Task> TaskData<T> {
    /// Builds the examples of `items`, skipping (and returning) those that fail: an example
    /// longer than `max_tokens` (image placeholders, prompt and answer), an image whose size
    /// the HD transform refuses.
    pub fn new(
        task: &T,
        items: Vec<T::Item>,
        tokenizer: &Phi3Tokenizer,
        processor: ImageProcessor,
        max_tokens: Option<usize>,
    ) -> (Self, Vec<SkippedItem>) {
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        let bytes_per_image = processor
            .config()
            .pixel_values_shape()
            .iter()
            .product::<usize>()
            * 4;
        for (index, item) in items.into_iter().enumerate() {
            let origin = item.origin();
            match build_example(task, item, tokenizer, &processor, max_tokens) {
                Ok(i) => out.push(i),
                Err(e) => skipped.push(SkippedItem {
                    index,
                    origin,
                    reason: skip_reason(e),
                }),
            }
        }
        let images: usize = out.iter().map(|e| e.item.images().len()).sum();
        let cache = (images * bytes_per_image <= IMAGE_CACHE_BUDGET).then(Default::default);
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

    pub fn truths(&self) -> Vec<T::Truth> {
        self.items.iter().map(|i| i.truth.clone()).collect()
    }

    /// The processed images of item `index`, `<|image_1|>` first (from the cache when there
    /// is one).
    pub fn images(&self, index: usize) -> Result<Vec<ProcessedImage>, TrainError> {
        let item = &self.items[index].item;
        (0..item.images().len())
            .map(|k| self.image(index, k))
            .collect()
    }

    /// Image `k` of item `index`.
    fn image(&self, index: usize, k: usize) -> Result<ProcessedImage, TrainError> {
        if let Some(cache) = &self.cache {
            if let Some(hit) = cache.lock().expect("image cache lock").get(&(index, k)) {
                return Ok(hit.clone());
            }
        }
        let item = &self.items[index].item;
        let decoded = item.images()[k].decode().map_err(|e| at(item, e))?;
        let processed = self.processor.process(&decoded).map_err(|e| at(item, e))?;
        if let Some(cache) = &self.cache {
            cache
                .lock()
                .expect("image cache lock")
                .insert((index, k), processed.clone());
        }
        Ok(processed)
    }

    /// A right-padded training batch of the items at `indices`.
    pub fn training_batch<B: Backend>(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> Result<BatchTensors<B>, TrainError> {
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
    ) -> Result<BatchTensors<B>, TrainError> {
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
        sample: impl for<'s> Fn(&'s Example<T>, &'s [ProcessedImage]) -> SampleRef<'s>,
        collate: fn(&[SampleRef<'_>]) -> Result<Batch, ProcessorError>,
    ) -> Result<BatchTensors<B>, TrainError> {
        let images: Vec<Vec<ProcessedImage>> = indices
            .iter()
            .map(|&i| self.images(i))
            .collect::<Result<_, _>>()?;
        let samples: Vec<SampleRef<'_>> = indices
            .iter()
            .zip(&images)
            .map(|(&i, images)| sample(&self.items[i], images))
            .collect();
        Ok(BatchTensors::new(&collate(&samples)?, device)?)
    }
}

fn at(item: &impl TaskItem, e: impl std::fmt::Display) -> TrainError {
    TrainError::Config(format!("{}: {e}", item.origin()))
}

/// The budget overrun that the processor reports as [`ProcessorError::SampleTooLong`] as
/// its own reason (with the numbers, for the drop report); anything else as its message.
fn skip_reason(error: TrainError) -> SkipReason {
    match error {
        TrainError::Processor(ProcessorError::SampleTooLong {
            len,
            max_len,
            image_tokens,
            ..
        }) => SkipReason::OverBudget {
            tokens: len,
            image_tokens,
            max_tokens: max_len,
        },
        other => SkipReason::Unusable(other.to_string()),
    }
}

fn build_example<T: Task>(
    task: &T,
    item: T::Item,
    tokenizer: &Phi3Tokenizer,
    processor: &ImageProcessor,
    max_tokens: Option<usize>,
) -> Result<Example<T>, TrainError> {
    let origin = item.origin();
    let tokens: Vec<usize> = item
        .images()
        .iter()
        .map(|image| {
            let (w, h) = (image.width as usize, image.height as usize);
            processor.config().num_image_tokens_for_size(w, h)
        })
        .collect::<Result<_, _>>()?;
    let rendered = task.render(&item)?;
    let example = training_example(tokenizer, &origin, &rendered, &tokens, max_tokens)?;
    let prompt = generation_example(tokenizer, &origin, &rendered.prompt, &tokens, max_tokens)?;
    let truth = task.truth(&item);
    Ok(Example {
        item,
        example,
        prompt,
        truth,
    })
}

//! What every model command needs: the resolved folder, the tokenizer, the image
//! processor and the model on a device, plus turning a prompt and images into inputs.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use phi3v::data::image_processor::ImageProcessor;
use phi3v::data::tokenize::Phi3Tokenizer;
use phi3v::{ImageInput, ModelDir, Phi3V, Phi3VError};

/// A loaded model with its tokenizer and processor.
pub struct Session<B: Backend> {
    pub model: Phi3V<B>,
    pub tokenizer: Phi3Tokenizer,
    pub processor: Option<ImageProcessor>,
    pub device: B::Device,
}

/// Token ids (with image placeholders) and the images they refer to.
pub struct Inputs<B: Backend> {
    pub ids: Vec<i64>,
    pub images: Option<ImageInput<B>>,
}

impl<B: Backend> Session<B> {
    pub fn load(model: &str, device: B::Device) -> Result<Self, Phi3VError> {
        let dir = ModelDir::resolve(model)?;
        let config = dir.config()?;
        let tokenizer = Phi3Tokenizer::from_file(dir.tokenizer_path())?;
        let processor = match &config.vision {
            Some(_) => Some(ImageProcessor::new(dir.processor_config(&config)?)?),
            None => None,
        };
        let model = dir.load_model::<B>(&device)?;
        Ok(Self {
            model,
            tokenizer,
            processor,
            device,
        })
    }

    /// Tokenizes `text` as the reference processor does; `<|image_N|>` refers to
    /// `images[N - 1]`.
    pub fn inputs(&self, text: &str, images: &[PathBuf]) -> Result<Inputs<B>, Phi3VError> {
        if images.is_empty() {
            return Ok(Inputs {
                ids: self.tokenizer.encode_prompt(text, &[])?,
                images: None,
            });
        }
        let processor = self.processor.as_ref().ok_or_else(|| {
            Phi3VError::Input("this model is text-only: it takes no --image".into())
        })?;
        let processed = processor.process_paths(images)?;
        let counts: Vec<usize> = processed.iter().map(|p| p.num_tokens).collect();
        let ids = self.tokenizer.encode_prompt(text, &counts)?;
        let [_, channels, size, _] = processed[0].shape;
        let mut tiles = Vec::new();
        let mut grids = Vec::new();
        for p in &processed {
            for t in 0..p.num_real_tiles() {
                tiles.extend_from_slice(p.tile(t));
            }
            grids.push(p.crops);
        }
        let count = tiles.len() / (channels * size * size);
        let tiles = Tensor::from_data(
            TensorData::new(tiles, [count, channels, size, size]),
            &self.device,
        );
        Ok(Inputs {
            ids,
            images: Some(ImageInput { tiles, grids }),
        })
    }
}

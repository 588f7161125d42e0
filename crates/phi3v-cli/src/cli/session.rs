//! What every model command needs: the resolved folder, the input processor and the model on
//! a device, plus turning a prompt and images into inputs.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use phi3v::nn::{memory, BaseDtype, MixedMatmul, NamedLinears, ProductDtype};
use phi3v::processor::Processor;
use phi3v::{BatchTensors, ModelDir, Phi3V, Phi3VError};

/// A loaded model with its input processor.
pub struct Session<B: Backend> {
    pub model: Phi3V<B>,
    pub processor: Processor,
    pub device: B::Device,
}

/// Token ids (with image placeholders) and their tensors.
pub struct Inputs<B: Backend> {
    /// `[len]`, the prompt's ids.
    pub ids: Vec<i64>,
    /// `input_ids` `[1, len]` and the images' tiles.
    pub tensors: BatchTensors<B>,
}

impl<B: MixedMatmul> Session<B> {
    /// Loads the model with its base held as `base_dtype` says and multiplied as
    /// `products` says, and says on stderr what that resolved to and what it holds.
    pub fn load(
        model: &str,
        device: B::Device,
        base_dtype: BaseDtype,
        products: ProductDtype,
    ) -> Result<Self, Phi3VError> {
        products.check_base(base_dtype).map_err(Phi3VError::Input)?;
        let dir = ModelDir::resolve(model)?;
        let config = dir.config()?;
        let processor = dir.processor(&config)?;
        let (mut model, storage) = dir.load_model_as::<B>(&device, base_dtype)?;
        model.set_products(products);
        eprintln!(
            "weights: {} resident, matrices in {} ({})",
            memory::gb(memory::resident_bytes(&model)),
            storage.name(),
            products.describe(),
        );
        Ok(Self {
            model,
            processor,
            device,
        })
    }

    /// Tokenizes `text` as the reference processor does; `<|image_N|>` refers to
    /// `images[N - 1]`.
    pub fn inputs(&self, text: &str, images: &[PathBuf]) -> Result<Inputs<B>, Phi3VError> {
        let batch = self.processor.process_paths(text, images)?;
        let tensors = BatchTensors::new(&batch, &self.device)?;
        Ok(Inputs {
            ids: batch.input_ids,
            tensors,
        })
    }
}

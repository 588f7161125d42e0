//! # phi3v
//!
//! Phi-3-Vision-128K-Instruct in Rust, generic over burn's `Backend`: the facade that
//! users depend on. It assembles the parts (the `phi3-decoder`, `phi3v-vision` and
//! `phi3v-processor` crates, re-exported here), loads model dirs laid out as Hugging Face
//! lays them out, and generates text conditioned on images. It does not depend on the
//! dataset builder (`phi3v-data`): inference compiles no parquet, arrow or CSV, and an HTTP
//! client only with the `hub` feature.
//!
//! - [`Phi3V`]: embeds token ids, runs the vision path on the batch's images, writes the
//!   image tokens over the `<|image_N|>` placeholders and runs the decoder.
//! - [`ModelDir`]: `config.json` (`phi3_v` or plain `phi3`, typed as [`ConfigJson`]),
//!   `preprocessor_config.json` ([`processor::PreprocessorConfig`]), `tokenizer.json`,
//!   safetensors single or sharded, checked to be all there before use; model ids through
//!   the local hub cache (`hub` feature), never a mistyped local path.
//! - [`inputs`]: the processor's output ([`processor::Processor`] for one prompt, collated
//!   batches for training) as tensors.

pub mod config;
pub mod error;
pub mod generate;
pub mod inputs;
pub mod model;
pub mod model_dir;

pub use config::{ConfigJson, Phi3VConfig, VisionSettings};
pub use error::Phi3VError;
pub use generate::{generate, generate_batch};
pub use inputs::{BatchTensors, InputIds};
pub use model::{ImageInput, Phi3V};
pub use model_dir::{load_model, ModelDir};

pub use phi3_decoder as decoder;
pub use phi3v_nn as nn;
pub use phi3v_processor as processor;
pub use phi3v_vision as vision;

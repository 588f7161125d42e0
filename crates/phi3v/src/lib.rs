//! # phi3v
//!
//! Phi-3-Vision-128K-Instruct in Rust, generic over burn's `Backend`: the facade that
//! users depend on. It assembles the parts (the `phi3-decoder`, `phi3v-vision` and
//! `phi3v-data` crates, re-exported here), loads checkpoint folders laid out as Hugging
//! Face lays them out, and generates text conditioned on images.
//!
//! - [`Phi3V`]: embeds token ids, runs the vision path on the batch's images, writes the
//!   image tokens over the `<|image_N|>` placeholders and runs the decoder.
//! - [`ModelDir`]: `config.json` (`phi3_v` or plain `phi3`), `preprocessor_config.json`,
//!   `tokenizer.json`, safetensors single or sharded; model ids through the local hub
//!   cache.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod generate;
pub mod model;

pub use checkpoint::{load_model, ModelDir};
pub use config::{Phi3VConfig, VisionSettings};
pub use error::Phi3VError;
pub use generate::{generate, generate_batch};
pub use model::{ImageInput, Phi3V};

pub use phi3_decoder as decoder;
pub use phi3v_data as data;
pub use phi3v_nn as nn;
pub use phi3v_vision as vision;

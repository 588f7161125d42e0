//! # phi3-decoder
//!
//! The Phi-3 decoder with LongRoPE ("su") scaling to 128K context, generic over burn's
//! `Backend`. It is the language model of Phi-3-Vision-128K-Instruct and runs plain
//! Phi-3 text models (such as Phi-3-mini-128k) on its own.
//!
//! - [`Phi3Config`] reads a Hugging Face `config.json` (all three rotary spellings) and
//!   has a preset for the released model ([`Phi3Config::phi3_vision_128k`]).
//! - [`Phi3Model`] loads single-file or sharded safetensors weights with the
//!   reference's tensor names, takes token ids or input embeddings, and returns logits;
//!   [`Phi3Model::loss`] is the shifted cross-entropy with ignore index -100, and
//!   [`Phi3Model::head_loss`] the same from hidden states, with `lm_head` run only where a
//!   label counts.
//! - [`KvCache`], [`TokenDecoder`] and [`generate`] decode incrementally.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use phi3_decoder::{generate, GenerateOptions, Phi3Model};
//!
//! let device = Default::default();
//! let model = Phi3Model::<Flex>::from_pretrained("Phi-3-mini-128k-instruct", &device).unwrap();
//! let tokens = generate(&model, &[1, 32010, 13], &GenerateOptions::default(), |_| {});
//! ```
//!
//! Every forward is checked against transformers' `Phi3ForCausalLM` on random tiny
//! model dirs (see `scripts/make_decoder_fixtures.py` and `tests/reference_parity.rs`).

pub mod attention;
pub mod cache;
pub mod config;
pub mod decoding;
pub mod error;
pub mod generate;
pub mod layer;
pub mod loss;
pub mod mlp;
pub mod model;
pub mod norm;
pub mod rope;

pub use cache::KvCache;
pub use config::{Phi3Config, Phi3ConfigJson, RopeScaling};
pub use decoding::{DecodingConfig, TokenDecoder};
pub use error::DecoderError;
pub use generate::{
    generate, generate_from_embeds, generate_from_embeds_chunked, GenerateOptions, PREFILL_CHUNK,
};
pub use loss::{LossTargets, IGNORE_INDEX};
pub use model::{ForwardOptions, LayerContext, Phi3Model};
pub use rope::RotaryTables;

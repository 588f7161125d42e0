//! # phi3v-vision
//!
//! The vision path of Phi-3-Vision, generic over burn's `Backend`:
//! - [`ClipVisionTower`]: a CLIP ViT (ViT-L/14-336 in the released model, any size from a
//!   [`ClipVisionConfig`]) whose features come from the second-to-last layer, class token
//!   dropped;
//! - [`ImageEmbedding`]: the 2x2 merge, the row-major crop grid with `sub_GN` row
//!   separators and the `glb_GN` separator, and the `img_projection` MLP, producing the
//!   tokens the decoder reads in place of `<|image_N|>` placeholders.
//!
//! Preprocessing (the HD transform) needs no tensor backend and lives in `phi3v-data`.
//! Loading accepts the reference's names (`model.vision_embed_tokens.*`) and plain CLIP
//! weights (`vision_model.*`, or unprefixed as transformers 5 writes them). Parity with
//! transformers' `CLIPVisionModel` and a Python rendering of the reference glue is tested
//! in `tests/reference_parity.rs` (fixtures from `scripts/make_vision_fixtures.py`).

pub mod clip;
pub mod config;
pub mod embedding;
pub mod error;
pub mod layer_norm;

pub use clip::{ClipVisionTower, VISION_MODEL};
pub use config::{Activation, ClipVisionConfig};
pub use embedding::{
    image_token_count, merge_2x2, ImageEmbedding, EMBEDDING_PATH, IMG_PROCESSOR, IMG_PROJECTION,
};
pub use error::VisionError;

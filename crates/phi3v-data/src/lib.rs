//! # phi3v-data
//!
//! The dataset builder of the Phi-3-Vision toolkit: catalogue readers, image sources, sample
//! data, prompts, tokenization, labels and batches; and the CPU image processor that turns an
//! image into the tensors the vision tower expects.
//!
//! The crate needs no tensor backend: everything here is plain Rust on the CPU, producing flat
//! `Vec<f32>` buffers with documented shapes that a model crate uploads to its device.
//!
//! ## Modules
//!
//! - [`image_processor`]: the Phi-3-Vision "HD transform" (PIL-exact bilinear resize, white
//!   padding to multiples of the crop size, CLIP normalisation, bicubic global view, crops),
//!   matching the Python reference bit for bit on the `u8` stage and to float rounding on the
//!   `f32` stage. See its module docs for the algorithm and the measured parity.
//! - [`catalogue`]: product catalogues (parquet streamed by record batch, CSV, JSONL) with a
//!   column mapping (Burberry's by default), Hugging Face image structs, and
//!   [`Catalogue::load`](catalogue::Catalogue::load): checked rows with fetched, decoded images.
//! - [`images`]: image downloads (bounded thread pool, timeout, retries, redirect limit, rustls)
//!   into an atomic on-disk cache keyed by URL, and the decoding check.
//! - [`report`]: every dropped row with its index, product code and [`report::DropReason`];
//!   JSON file and one-line summary.
//! - [`split`]: deterministic, seeded train/validation split by product code.
//! - [`sample_data`]: the sample-catalogue generator (Burberry schema, procedural product
//!   photos, optional injected faults); the `phi3v sample-data` command runs it.
//! - [`prompt`]: `{field}` templates (Burberry's by default), the chat format, and Python's
//!   float `repr` for prices.
//! - [`tokenize`]: the Phi-3 `tokenizer.json` and the reference processor's prompt encoding
//!   (chunks with BOS, `<|image_N|>` as `-N` placeholders, checked image ids).
//! - [`sample`]: training examples (prompt masked with -100, answer + `<|end|>` +
//!   `<|endoftext|>` trained, as the Phi-3 Cookbook does) and generation prompts; over-long
//!   samples are reported, never truncated.
//! - [`batch`]: padding (right for training, left for generation), masks, positions, and the
//!   real image tiles as one `[tiles, 3, S, S]` buffer.
//! - [`error`]: [`DataError`], the crate's error type.
//!
//! ## Example
//!
//! ```no_run
//! use phi3v_data::image_processor::{ImageProcessor, ProcessorConfig};
//!
//! let processor = ImageProcessor::new(ProcessorConfig::default())?;
//! let out = processor.process_path("photo.jpg")?;
//! // [num_crops + 1, 3, 336, 336] = [17, 3, 336, 336]
//! assert_eq!(out.shape, [17, 3, 336, 336]);
//! println!("{} image tokens for a {:?} HD image", out.num_tokens, out.image_size);
//! # Ok::<(), phi3v_data::DataError>(())
//! ```

pub mod batch;
pub mod catalogue;
pub mod error;
pub mod image_processor;
pub mod images;
mod json_file;
pub mod prompt;
pub mod report;
pub mod sample;
pub mod sample_data;
pub mod split;
pub mod tokenize;

pub use error::DataError;

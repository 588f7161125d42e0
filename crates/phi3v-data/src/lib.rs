//! # phi3v-data
//!
//! The dataset builder of the Phi-3-Vision toolkit: catalogue readers, image sources, drop
//! reports, splits and the sample-data generator. Turning a row into model inputs (prompt,
//! tokenization, labels, batches, the HD image transform) is the input processor's job, in
//! `phi3v-processor`, which this crate builds on (never the reverse), so that inference
//! never compiles parquet, arrow, CSV or an HTTP client.
//!
//! The crate needs no tensor backend: everything here is plain Rust on the CPU.
//!
//! ## Modules
//!
//! - [`catalogue`]: product catalogues (parquet streamed by record batch, CSV, JSONL) with a
//!   column mapping (Burberry's by default), Hugging Face image structs, and
//!   [`Catalogue::load`](catalogue::Catalogue::load): checked rows with fetched, decoded images.
//!   A catalogue may come from anywhere, so outlandish rows (prices out of
//!   [`LoadOptions`](catalogue::LoadOptions), empty categories, cells of the wrong type, image
//!   paths outside the catalogue's folder) are dropped and reported, and what one file can
//!   make the loader read is bounded. A [`catalogue::Product`] fills prompt templates
//!   ([`phi3v_processor::prompt::Fields`]). With a
//!   [`RecordLayout`](catalogue::RecordLayout) (a task file's columns), rows are read as
//!   [`Record`](catalogue::Record)s of any named columns instead.
//! - [`conversations`]: conversation datasets (JSON lines of `{messages, images}`, the form
//!   ms-swift and LLaMA-Factory accept): multi-turn, multi-image records checked, their
//!   `<image>` tags numbered as Phi-3-V's `<|image_N|>`, bad records dropped and reported by
//!   line as catalogue rows are.
//! - [`images`]: image downloads (bounded thread pool, timeout, retries, redirect limit, rustls)
//!   into an atomic on-disk cache keyed by URL, one size limit for every image read, the one
//!   entry point for an image a user names
//!   ([`ImageFetcher::fetch_one`](images::ImageFetcher::fetch_one)), and the decoding check.
//! - [`report`]: every dropped row with its index, product code and [`report::DropReason`];
//!   JSON file and one-line summary.
//! - [`split`]: deterministic, seeded train/validation split by product code.
//! - [`sample_data`]: the sample-catalogue generator (the Burberry schema with optional
//!   injected faults, or the furniture preset's other columns; procedural photos), written as
//!   a whole folder that replaces an existing one only on request; the `phi3v sample-data`
//!   command runs it.
//! - [`error`]: [`DataError`], the crate's error type (processor errors convert into it).

pub mod catalogue;
pub mod conversations;
pub mod error;
pub mod images;
mod json_file;
pub mod report;
pub mod sample_data;
pub mod split;

pub use error::DataError;

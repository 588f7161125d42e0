//! The crate's integration tests, one binary (docs/architecture.md, "A test").

mod common;

mod catalogue;
mod fuzz_catalogue;
mod hostile_rows;
mod image_decoding;
mod images;
mod records;
mod sample_data;

//! The crate's integration tests, one binary (docs/architecture.md, "A test").

mod batch;
mod fuzz_image_decode;
mod image_processor;
mod jpeg_fidelity;
mod processor;
mod tokenize;

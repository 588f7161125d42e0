//! The crate's integration tests, one binary (docs/architecture.md, "A test").

mod attention_kernels;
mod fuzz_weights;
mod lora;

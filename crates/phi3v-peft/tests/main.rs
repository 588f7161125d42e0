//! The crate's integration tests, one binary (docs/architecture.md, "A test").

mod common;

mod adapters;
mod checks;
mod fuzz_adapter;

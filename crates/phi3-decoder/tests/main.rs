//! The crate's integration tests, one binary (docs/architecture.md, "A test").

mod kv_cache;
mod loading_errors;
mod reference_parity;

//! The crate's integration tests, one binary (docs/architecture.md, "A test").

mod bf16_resident;
mod loading_errors;
mod model_dir_checks;
mod named_linears;
mod reference_parity;

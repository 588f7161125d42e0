//! The crate's integration tests, one binary (docs/architecture.md, "A test").

mod bf16_resident;
mod presets;
mod tiny;

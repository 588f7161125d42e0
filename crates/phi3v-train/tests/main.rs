//! The crate's integration tests, one binary (docs/architecture.md, "A test").

mod common;

mod checkpoint_integrity;
mod gradient_parity;
mod run_safety;
mod task_files;
mod vision_recompute;

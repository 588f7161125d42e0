//! The crate's integration tests, one binary (docs/architecture.md, "A test").

mod cli;
mod hostile;
mod train;

//! The `phi3v` command's subcommands.

pub mod generate;
pub mod images;
pub mod logits;
pub mod sample;
pub mod session;
pub mod train;

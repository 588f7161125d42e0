//! How the toolkit writes without losing data.
//!
//! Every command that writes goes through this crate, so the same three rules hold
//! everywhere:
//!
//! - [`atomic`]: a file is replaced whole. A reader (a browser refreshing a report, a run
//!   resuming after `kill -9`) sees the old file or the new one, never half of one.
//! - [`staged`]: an output folder is written beside its destination and swapped in whole.
//!   An existing non-empty folder is replaced only when the user asked for it
//!   (`--overwrite`), and then nothing of its old contents (stale shards, a stale index,
//!   old images) survives next to the new ones.
//! - [`overlap`]: a command's outputs never are, contain, or sit inside its inputs, so no
//!   `--out` can clobber the model, adapter or catalogue it reads.
//!
//! Depends on nothing of the toolkit, so the data, adapter, tracking and training crates
//! all share it.

pub mod atomic;
mod error;
pub mod overlap;
pub mod staged;

pub use atomic::{replace_file, write_atomic};
pub use error::OutputError;
pub use overlap::{check_disjoint, Role};
pub use staged::{check_replaceable, StagedDir};

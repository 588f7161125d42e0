//! # phi3v-testkit
//!
//! What the tests, benches and the tiny-model preset of the Phi-3-V crates share, kept out
//! of the runtime crates (`publish = false`):
//!
//! - [`close`]: the closeness checks of the parity and kernel tests (worst absolute
//!   difference, with its index, against a tolerance each test states), on slices and (with
//!   the feature `tensor`) on burn tensors. No model dependency, so the crates below `phi3v`
//!   take the kit with `default-features = false` and no dependency cycle arises.
//! - [`TinySpec`] (feature `writer`, on by default): a random Phi-3-V written as a model dir
//!   in the released layout, its tensor list taken from the models' own naming, at the
//!   sizes of [`Preset`] (`tiny`, `wide`, `full`), streamed to disk by [`stream`].

pub mod close;
pub mod files;
#[cfg(feature = "fuzz")]
pub mod mutate;
#[cfg(feature = "writer")]
pub mod stream;
#[cfg(feature = "writer")]
pub mod tiny;

#[cfg(feature = "tensor")]
pub use close::{assert_close, tensor_max_diff, values};
pub use close::{max_diff, max_diff_at};
#[cfg(feature = "writer")]
pub use stream::StorageDtype;
#[cfg(feature = "writer")]
pub use tiny::{Draws, Preset, TinyError, TinySpec, Written};

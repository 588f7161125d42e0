//! The backend the examples and benches run on, chosen by cargo feature.
//!
//! Library crates stay generic over `B: Backend`; only binaries pick one. With several
//! features enabled the most capable wins: `cuda`, then `wgpu`, then `flex`.

#[cfg(feature = "cuda")]
pub type Selected = burn::backend::Cuda;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type Selected = burn::backend::Wgpu;
#[cfg(all(not(feature = "wgpu"), not(feature = "cuda")))]
pub type Selected = burn::backend::Flex;

/// The selected backend with automatic differentiation, for training.
pub type SelectedAutodiff = burn::backend::Autodiff<Selected>;

/// Name of the selected backend, for logs and reports.
pub const NAME: &str = if cfg!(feature = "cuda") {
    "cuda"
} else if cfg!(feature = "wgpu") {
    "wgpu"
} else {
    "flex"
};

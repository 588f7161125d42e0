//! The one place that turns `--backend` into a burn backend type.
//!
//! Every command that runs a model is generic over the backend; [`with_backend!`] picks
//! the type the user named, or says which cargo feature would compile it in.

use clap::ValueEnum;

/// The tensor backends a build may carry, each behind the cargo feature of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// CPU (pure Rust).
    Flex,
    /// GPU through wgpu (Vulkan, Metal, DX12); needs the `wgpu` feature.
    Wgpu,
    /// NVIDIA GPU through CUDA; needs the `cuda` feature.
    Cuda,
}

/// Evaluates `$body` with `$B` bound to the backend `$choice` names, or returns
/// `Err($error(message))` saying which cargo feature it needs.
#[macro_export]
macro_rules! with_backend {
    ($choice:expr, $error:expr, $B:ident => $body:expr) => {
        match $choice {
            $crate::backend::BackendChoice::Flex => {
                type $B = burn::backend::Flex;
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::backend::BackendChoice::Wgpu => {
                type $B = burn::backend::Wgpu;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::backend::BackendChoice::Cuda => {
                type $B = burn::backend::Cuda;
                $body
            }
            #[allow(unreachable_patterns)]
            other => Err($error(format!(
                "--backend {other:?} is not compiled in: rebuild with `--features {}`",
                format!("{other:?}").to_lowercase()
            ))),
        }
    };
}

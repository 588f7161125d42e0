//! The `phi3v` command's subcommands.

/// Evaluates `$body` with `$B` bound to the backend `$choice` names, or returns
/// `Err($error(message))` saying which cargo feature it needs.
#[macro_export]
macro_rules! with_backend {
    ($choice:expr, $error:expr, $B:ident => $body:expr) => {
        match $choice {
            $crate::BackendChoice::Flex => {
                type $B = burn::backend::Flex;
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::BackendChoice::Wgpu => {
                type $B = burn::backend::Wgpu;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::BackendChoice::Cuda => {
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

pub mod generate;
pub mod logits;
pub mod sample;
pub mod session;
pub mod train;

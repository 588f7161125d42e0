//! Scaled dot-product attention.
//!
//! - [`naive_attention`] is the reference path: it materialises the `[q, k]` score
//!   matrix, exactly as the Python reference's eager attention does, including its
//!   treatment of fully masked rows (see [`MASK_VALUE`]).
//! - The memory-efficient kernel ([`AttentionBackend::memory_efficient_attention`])
//!   tiles over queries and keys with an online softmax and, under autodiff, has its own
//!   backward that recomputes the tiles, so neither pass holds a `[q, k]` tensor: at 16K
//!   tokens and 32 heads the naive scores alone are 32 GiB per layer in f32. It matches
//!   the naive path to float rounding, fully masked rows included.
//! - [`attention`] picks one of them by [`AttentionKernel`]; masks are described by
//!   [`AttentionMask`] (causal with a cache offset, sliding window, key padding) and
//!   generated tile by tile.

mod backend;
mod backward;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube;
mod mask;
mod naive;
mod tiled;

use burn::tensor::Tensor;

pub use backend::{AttentionBackend, AttentionResiduals};
pub use backward::{autodiff_backward_runs, backward as tiled_backward};
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use cube::{flash_backward, flash_forward, MAX_HEAD_DIM};
pub use mask::{causal_mask, AttentionMask};
pub use naive::{naive_attention, MASK_VALUE};
pub use tiled::{forward as tiled_forward, TiledOptions, EMPTY_ROW_LSE};

/// Default queries per tile of the memory-efficient kernel.
pub const DEFAULT_BLOCK_Q: usize = 256;
/// Default keys per tile of the memory-efficient kernel.
pub const DEFAULT_BLOCK_K: usize = 512;
/// Default key count above which [`AttentionKernel::Auto`] leaves the naive path.
pub const DEFAULT_AUTO_THRESHOLD: usize = 1024;

/// Which attention implementation to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// [`naive_attention`] with the dense mask: `O(q_len * k_len)` memory; the reference.
    Naive,
    /// The tiled kernel with the given tile sizes: `O(q_len + k_len)` memory.
    MemoryEfficient { block_q: usize, block_k: usize },
    /// The naive path up to `threshold` keys (where it is cheap, and bit-for-bit the
    /// reference's arithmetic), the memory-efficient one with default tiles above.
    Auto { threshold: usize },
}

impl Default for AttentionKernel {
    fn default() -> Self {
        Self::Auto {
            threshold: DEFAULT_AUTO_THRESHOLD,
        }
    }
}

impl AttentionKernel {
    /// The memory-efficient kernel with the default tile sizes.
    pub const fn memory_efficient() -> Self {
        Self::MemoryEfficient {
            block_q: DEFAULT_BLOCK_Q,
            block_k: DEFAULT_BLOCK_K,
        }
    }

    /// The kernel that runs for `k_len` keys: `Naive` or `MemoryEfficient`, never `Auto`.
    pub fn resolve(self, k_len: usize) -> Self {
        match self {
            Self::Auto { threshold } if k_len > threshold => Self::memory_efficient(),
            Self::Auto { .. } => Self::Naive,
            kernel => kernel,
        }
    }
}

/// Scaled dot-product attention, `softmax(q k^T * scale, masked) v`, by the chosen kernel.
///
/// Grouped-query attention is the caller's business: repeat the key/value heads first.
///
/// # Shapes
/// - `q`: `[batch, heads, q_len, head_dim]`
/// - `k`, `v`: `[batch, heads, k_len, head_dim]`
/// - `mask`'s padding, if any: `[batch or 1, k_len]`
/// - returns `[batch, heads, q_len, head_dim]`
pub fn attention<B: AttentionBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &AttentionMask<B>,
    scale: f64,
    kernel: AttentionKernel,
) -> Tensor<B, 4> {
    let [batch, _, q_len, _] = q.dims();
    let k_len = k.dims()[2];
    mask.check(batch, k_len);
    match kernel.resolve(k_len) {
        AttentionKernel::MemoryEfficient { block_q, block_k } => B::memory_efficient_attention(
            q,
            k,
            v,
            mask,
            TiledOptions {
                scale,
                block_q,
                block_k,
            },
        ),
        _ => {
            let dense = mask.dense(q_len, k_len, &q.device());
            naive_attention(q, k, v, dense, scale)
        }
    }
}

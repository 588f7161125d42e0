//! Which backends run the memory-efficient kernel, and how.
//!
//! [`AttentionBackend`] is the extension point: its provided methods run the tiled
//! kernel through ordinary tensor ops, so a plain backend opts in with an empty impl,
//! and a backend with a fused kernel (a CubeCL flash attention, say) can override them.
//! The autodiff backend overrides the forward to record the whole attention as one node
//! whose backward is the tiled backward, instead of recording every op of every tile.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::mixed::MixedMatmul;

use super::backward::{backward, MemoryEfficientAttentionBackward, SavedState};
use super::mask::AttentionMask;
use super::tiled::{forward, TiledOptions};

/// What the backward of the memory-efficient kernel needs: the inputs, the output and
/// the per-row log-sum-exp of the scores.
#[derive(Clone, Debug)]
pub struct AttentionResiduals<B: Backend> {
    /// `[batch, heads, q_len, head_dim]`.
    pub q: Tensor<B, 4>,
    /// `[batch, heads, k_len, head_dim]`.
    pub k: Tensor<B, 4>,
    /// `[batch, heads, k_len, head_dim]`.
    pub v: Tensor<B, 4>,
    /// `[batch, heads, q_len, head_dim]`.
    pub out: Tensor<B, 4>,
    /// `[batch, heads, q_len, 1]`, [`EMPTY_ROW_LSE`](super::EMPTY_ROW_LSE) for rows
    /// that see no key.
    pub lse: Tensor<B, 4>,
}

/// A backend that can run memory-efficient attention.
///
/// Every method has a default that works on any backend through tensor ops; implement
/// the trait with an empty body to opt a backend in (see the impls below), and override
/// a method only to plug in a fused kernel.
///
/// Its supertrait [`MixedMatmul`] is the other kernel the models need (the product with a
/// bf16 frozen base), so that one bound, `B: AttentionBackend`, carries every kernel a
/// forward pass uses.
pub trait AttentionBackend: MixedMatmul {
    /// Memory-efficient attention: `softmax(q k^T * scale, masked) v` without ever
    /// holding the `[q_len, k_len]` scores.
    ///
    /// # Shapes
    /// - `q`: `[batch, heads, q_len, head_dim]`
    /// - `k`, `v`: `[batch, heads, k_len, head_dim]`
    /// - returns `[batch, heads, q_len, head_dim]`
    fn memory_efficient_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        mask: &AttentionMask<Self>,
        options: TiledOptions,
    ) -> Tensor<Self, 4> {
        Self::memory_efficient_attention_forward(q, k, v, mask, options).0
    }

    /// The forward with the per-row log-sum-exp that the backward needs.
    ///
    /// # Shapes
    /// - `q`: `[batch, heads, q_len, head_dim]`
    /// - `k`, `v`: `[batch, heads, k_len, head_dim]`
    /// - returns the output `[batch, heads, q_len, head_dim]` and the log-sum-exp
    ///   `[batch, heads, q_len, 1]`
    fn memory_efficient_attention_forward(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        mask: &AttentionMask<Self>,
        options: TiledOptions,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        forward(q, k, v, mask, options)
    }

    /// The gradients of `q`, `k` and `v` from the gradient of the output, recomputed
    /// tile by tile.
    ///
    /// # Shapes
    /// - `grad`: `[batch, heads, q_len, head_dim]`
    /// - returns `[dq, dk, dv]`, shaped like `q`, `k`, `v`
    fn memory_efficient_attention_backward(
        saved: AttentionResiduals<Self>,
        grad: Tensor<Self, 4>,
        mask: &AttentionMask<Self>,
        options: TiledOptions,
    ) -> [Tensor<Self, 4>; 3] {
        backward(saved, grad, mask, options)
    }
}

/// Opts plain backends in to the tensor-op kernel.
macro_rules! tiled_attention_backend {
    ($($backend:ty),* $(,)?) => {
        $(impl AttentionBackend for $backend {})*
    };
}

#[cfg(feature = "flex")]
tiled_attention_backend!(burn::backend::Flex);
#[cfg(feature = "ndarray")]
tiled_attention_backend!(burn::backend::NdArray);
#[cfg(feature = "wgpu")]
tiled_attention_backend!(burn::backend::Wgpu);
#[cfg(feature = "cuda")]
tiled_attention_backend!(burn::backend::Cuda);

/// Under autodiff the attention is one node with the tiled backward: the inner backend
/// runs the forward (keeping only the output and the log-sum-exp) and, later, the
/// backward.
impl<B: AttentionBackend, C: CheckpointStrategy> AttentionBackend for Autodiff<B, C> {
    fn memory_efficient_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        mask: &AttentionMask<Self>,
        options: TiledOptions,
    ) -> Tensor<Self, 4> {
        let [q, k, v] = [q, k, v].map(|t| t.into_primitive().tensor());
        let inner = |t: &burn::tensor::ops::FloatTensor<Self>| {
            Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t.primitive.clone()))
        };
        let inner_mask =
            mask.map_padding(|p| Tensor::<B, 2, _>::from_primitive(p.into_primitive()));
        let prep = MemoryEfficientAttentionBackward
            .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful();
        let out = match prep {
            OpsKind::Tracked(mut prep) => {
                let (out, lse) = B::memory_efficient_attention_forward(
                    inner(&q),
                    inner(&k),
                    inner(&v),
                    &inner_mask,
                    options,
                );
                let inputs = [
                    prep.checkpoint(&q),
                    prep.checkpoint(&k),
                    prep.checkpoint(&v),
                ];
                let state = SavedState {
                    inputs,
                    out: out.clone(),
                    lse,
                    mask: inner_mask,
                    options,
                };
                prep.finish(state, out.into_primitive().tensor())
            }
            OpsKind::UnTracked(prep) => {
                let out = B::memory_efficient_attention(
                    inner(&q),
                    inner(&k),
                    inner(&v),
                    &inner_mask,
                    options,
                );
                prep.finish(out.into_primitive().tensor())
            }
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

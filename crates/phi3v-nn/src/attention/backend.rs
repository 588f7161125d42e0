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

/// Opts the CubeCL backends in, with fused kernels throughout:
/// - inference runs burn's fused attention kernel wherever the mask can be said to it
///   ([`fused_mask`]), and our fused forward ([`super::cube`]) otherwise;
/// - training runs our fused forward, which also saves the log-sum-exp, and our fused
///   backward. burn's kernel has no backward, and under autodiff burn decomposes it into
///   separate matmuls and a softmax over the whole score matrix.
///
/// What the fused kernels do not take ([`super::cube::takes`]: head dimensions above
/// [`super::cube::MAX_HEAD_DIM`], values wider than keys; neither occurs in Phi-3-V) keeps
/// the tiled kernel of tensor ops.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
macro_rules! fused_attention_backend {
    ($($backend:ty),* $(,)?) => {
        $(impl AttentionBackend for $backend {
            fn memory_efficient_attention(
                q: Tensor<Self, 4>,
                k: Tensor<Self, 4>,
                v: Tensor<Self, 4>,
                mask: &AttentionMask<Self>,
                options: TiledOptions,
            ) -> Tensor<Self, 4> {
                match fused_mask(&q, &k, mask, &options) {
                    Some((dense, is_causal)) => fused_attention(q, k, v, mask, dense, is_causal),
                    None => Self::memory_efficient_attention_forward(q, k, v, mask, options).0,
                }
            }

            fn memory_efficient_attention_forward(
                q: Tensor<Self, 4>,
                k: Tensor<Self, 4>,
                v: Tensor<Self, 4>,
                mask: &AttentionMask<Self>,
                options: TiledOptions,
            ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
                if !super::cube::takes(&q, &k, &v) {
                    return forward(q, k, v, mask, options);
                }
                super::cube::flash_forward(q, k, v, mask, options)
            }

            fn memory_efficient_attention_backward(
                saved: AttentionResiduals<Self>,
                grad: Tensor<Self, 4>,
                mask: &AttentionMask<Self>,
                options: TiledOptions,
            ) -> [Tensor<Self, 4>; 3] {
                if !super::cube::takes(&saved.q, &saved.k, &saved.v) {
                    return backward(saved, grad, mask, options);
                }
                super::cube::flash_backward(saved, grad, mask, options)
            }
        })*
    };
}

#[cfg(feature = "wgpu")]
fused_attention_backend!(burn::backend::Wgpu);
#[cfg(feature = "cuda")]
fused_attention_backend!(burn::backend::Cuda);

/// burn's fused attention (`burn::tensor::module::attention`) with the mask [`fused_mask`]
/// made, and the rows that see no key given the tiled kernel's answer, the mean of the
/// values (the reference's, whose masked scores are a finite minimum): burn's kernel gives
/// them zeros.
///
/// # Shapes
/// - `q`: `[batch, heads, q_len, head_dim]`
/// - `k`, `v`: `[batch, heads, k_len, head_dim]`
/// - returns `[batch, heads, q_len, head_dim]`
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn fused_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &AttentionMask<B>,
    dense: Option<Tensor<B, 4, burn::tensor::Bool>>,
    is_causal: bool,
) -> Tensor<B, 4> {
    let (n, m) = (q.dims()[2], k.dims()[2]);
    let empty_rows = mask
        .fully_masked_rows(n, m, &q.device())
        .map(|rows| (rows, v.clone().mean_dim(2)));
    let out = burn::tensor::module::attention(
        q,
        k,
        v,
        dense,
        None,
        burn::tensor::ops::AttentionModuleOptions {
            // Unset: burn's CubeCL kernel takes an explicit scale as a reason to fall back
            // to its unfused path.
            scale: None,
            softcap: None,
            is_causal,
        },
    );
    match empty_rows {
        Some((rows, mean_v)) => super::tiled::empty_rows_as_mean(out, &rows, &(0..n), &mean_v),
        None => out,
    }
}

/// `mask` as burn's fused attention takes it, for queries `q` over keys `k`: a boolean mask
/// (`true` where hidden) of the padding keys, expanded to `[batch, heads, q_len, k_len]`,
/// and whether the mask is causal. `None` when burn's kernel cannot say the same:
/// - the scale is not `1 / sqrt(head_dim)` (the only one it applies unasked);
/// - the mask is causal after cached keys and more than one query (burn aligns causality
///   to the first key; one query after the cache sees every key, so it needs no causality);
/// - a sliding window hides some key.
///
/// # Shapes
/// - `q`: `[batch, heads, q_len, head_dim]`, `k`: `[batch, heads, k_len, head_dim]`
#[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]
pub(crate) fn fused_mask<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    mask: &AttentionMask<B>,
    options: &TiledOptions,
) -> Option<(Option<Tensor<B, 4, burn::tensor::Bool>>, bool)> {
    let [batch, heads, q_len, head_dim] = q.dims();
    let k_len = k.dims()[2];
    let default_scale = 1.0 / (head_dim as f64).sqrt();
    if (options.scale - default_scale).abs() > 1e-12 * default_scale {
        return None;
    }
    let past_len = mask.past_len();
    let is_causal = match (mask.is_causal(), past_len, q_len) {
        (false, _, _) => false,
        (true, 0, _) if q_len == k_len => true,
        (true, _, 1) if past_len + 1 == k_len => false,
        _ => return None,
    };
    // The farthest key a query sees lies `past_len + q_len - 1` behind it (causal), or
    // `k_len - 1` (not causal).
    let reach = if mask.is_causal() {
        past_len + q_len - 1
    } else {
        k_len - 1
    };
    if mask.sliding_window().is_some_and(|w| reach >= w) {
        return None;
    }
    let dense = mask.padding().map(|padding| {
        padding
            .clone()
            .reshape([batch, 1, 1, k_len])
            .expand([batch, heads, q_len, k_len])
    });
    Some((dense, is_causal))
}

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

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Bool;

    /// Which masks burn's fused kernel is given, and which stay with the tiled kernel.
    #[test]
    fn only_masks_burns_kernel_can_say_are_fused() {
        let device = Default::default();
        let qk = |q_len: usize, k_len: usize| {
            (
                Tensor::<Flex, 4>::zeros([2, 3, q_len, 8], &device),
                Tensor::<Flex, 4>::zeros([2, 3, k_len, 8], &device),
            )
        };
        let options = |scale: f64| TiledOptions {
            scale,
            block_q: 4,
            block_k: 4,
        };
        let default = options(1.0 / 8f64.sqrt());
        let fused = |q_len, k_len, mask: AttentionMask<Flex>, options: &TiledOptions| {
            let (q, k) = qk(q_len, k_len);
            fused_mask(&q, &k, &mask, options)
                .map(|(dense, causal)| (dense.map(|d| d.dims()), causal))
        };
        // A prefill: causal from the first key.
        assert_eq!(
            fused(6, 6, AttentionMask::causal(0), &default),
            Some((None, true))
        );
        // One query after a cache sees every key, so it needs no causality.
        assert_eq!(
            fused(1, 7, AttentionMask::causal(6), &default),
            Some((None, false))
        );
        // Several queries after a cache: burn would align causality to the first key.
        assert_eq!(fused(3, 9, AttentionMask::causal(6), &default), None);
        // The vision tower's full attention.
        assert_eq!(
            fused(5, 5, AttentionMask::none(), &default),
            Some((None, false))
        );
        // Another scale than 1/sqrt(head_dim).
        assert_eq!(fused(6, 6, AttentionMask::causal(0), &options(0.5)), None);
        // A window that hides a key, and one that hides none.
        let windowed = |w| AttentionMask::causal(0).with_sliding_window(Some(w));
        assert_eq!(fused(6, 6, windowed(5), &default), None);
        assert_eq!(fused(6, 6, windowed(6), &default), Some((None, true)));
        // Padding becomes a dense boolean mask over every head and query.
        let padding = Tensor::<Flex, 2, Bool>::from_data(
            [[true, false, false, false, false, false], [false; 6]],
            &device,
        );
        let padded = AttentionMask::causal(0).with_padding(Some(padding));
        assert_eq!(
            fused(6, 6, padded, &default),
            Some((Some([2, 3, 6, 6]), true))
        );
    }
}

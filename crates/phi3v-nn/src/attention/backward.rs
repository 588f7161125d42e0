//! The memory-efficient backward, and the autodiff operation that uses it.
//!
//! Under autodiff, burn records every tensor op of a forward and keeps what each needs
//! for its gradient: for the tiled forward that would be every score tile, i.e. the full
//! `[q, k]` matrix again. Instead the whole attention is one autodiff node whose state is
//! its inputs, its output and the per-row log-sum-exp; the backward recomputes each
//! score tile (`p = exp(s - lse)`, exact, without a second softmax pass) and turns it into
//! gradients at once, as flash attention does. Its memory is linear in the sequence.
//!
//! With `D_i = sum_d dO_id O_id`, the gradients of `O = softmax(s) V`, `s = scale q k^T`
//! are, tile by tile (`p = exp(s - lse)`): `dV += p^T dO`, `dp = dO V^T`, `ds = p (dp - D)`,
//! `dq += scale ds K`, `dK += scale ds^T q`. Masked scores are constants in the naive
//! path (`mask_fill` passes no gradient through them); here `p = 0` there, so `ds = 0`.
//! A row that sees no key attends uniformly to all `k_len` keys in the naive path, so
//! it sends `dO_i / k_len` to every value and nothing to `q` or `k`.

use std::cell::Cell;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::autodiff::NodeId;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, Tensor, TensorPrimitive};

use super::backend::{AttentionBackend, AttentionResiduals};
use super::mask::{AttentionMask, TileKind};
use super::tiled::{blocks, mask_tile, TiledOptions};

/// The tiled backward.
///
/// # Shapes
/// - `saved.q`: `[batch, heads, q_len, head_dim]`; `saved.k`, `saved.v`:
///   `[batch, heads, k_len, head_dim]`; `saved.out`: like `q`; `saved.lse`:
///   `[batch, heads, q_len, 1]`
/// - `grad`: `[batch, heads, q_len, head_dim]`, the gradient of the output
/// - returns the gradients of `q`, `k` and `v`, shaped like them
pub fn backward<B: Backend>(
    saved: AttentionResiduals<B>,
    grad: Tensor<B, 4>,
    mask: &AttentionMask<B>,
    options: TiledOptions,
) -> [Tensor<B, 4>; 3] {
    let AttentionResiduals { q, k, v, out, lse } = saved;
    let [b, h, n, d] = q.dims();
    let [_, _, m, dv] = v.dims();
    let device = q.device();
    if n == 0 || m == 0 {
        return [q.zeros_like(), k.zeros_like(), v.zeros_like()];
    }
    // D_i = sum_d dO_id O_id = sum_j p_ij dp_ij, the softmax backward's row term.
    let row_dot = (grad.clone() * out).sum_dim(3);

    // `exp(s - lse)` and `dp - D` come straight out of the matmuls: each key block gets a
    // row of ones (`[k, 1]`), each query block a column `-lse` (and `dO` a column `-D`).
    // Broadcasting a `[block_q, 1]` column over a score tile would cost more than the
    // tile's matmul on the CPU.
    let key_blocks: Vec<_> = blocks(m, options.block_k)
        .into_iter()
        .map(|r| {
            let ones = Tensor::<B, 4>::ones([b, h, 1, r.len()], &device);
            let kb = k.clone().slice([0..b, 0..h, r.clone(), 0..d]);
            let kt = Tensor::cat(vec![kb.clone().swap_dims(2, 3), ones.clone()], 2);
            let vt = v
                .clone()
                .slice([0..b, 0..h, r.clone(), 0..dv])
                .swap_dims(2, 3);
            let vt = Tensor::cat(vec![vt, ones], 2);
            (r, kb, kt, vt)
        })
        .collect();
    let mut dk: Vec<Option<Tensor<B, 4>>> = vec![None; key_blocks.len()];
    let mut dv_blocks: Vec<Option<Tensor<B, 4>>> = vec![None; key_blocks.len()];
    let mut dq_blocks = Vec::new();

    for qr in blocks(n, options.block_q) {
        let bq = qr.len();
        let qs = q
            .clone()
            .slice([0..b, 0..h, qr.clone(), 0..d])
            .mul_scalar(options.scale);
        let g = grad.clone().slice([0..b, 0..h, qr.clone(), 0..dv]);
        let lse_q = lse.clone().slice([0..b, 0..h, qr.clone(), 0..1]);
        let dot_q = row_dot.clone().slice([0..b, 0..h, qr.clone(), 0..1]);
        let qs_lse = Tensor::cat(vec![qs.clone(), lse_q.neg()], 3);
        let g_dot = Tensor::cat(vec![g.clone(), dot_q.neg()], 3);
        let mut dq: Option<Tensor<B, 4>> = None;
        for (i, (kr, kb, kt, vt)) in key_blocks.iter().enumerate() {
            let kind = mask.tile_kind(&qr, kr);
            if kind == TileKind::Hidden {
                continue;
            }
            // s - lse, with masked entries at MASK_VALUE so that p = 0 there.
            let shifted = mask_tile(qs_lse.clone().matmul(kt.clone()), mask, kind, &qr, kr);
            let p = shifted.exp();
            let dv_tile = p.clone().swap_dims(2, 3).matmul(g.clone());
            let ds = p * g_dot.clone().matmul(vt.clone());
            let dq_tile = ds.clone().matmul(kb.clone());
            let dk_tile = ds.swap_dims(2, 3).matmul(qs.clone());
            dq = Some(add(dq, dq_tile));
            dk[i] = Some(add(dk[i].take(), dk_tile));
            dv_blocks[i] = Some(add(dv_blocks[i].take(), dv_tile));
        }
        let dq = match dq {
            Some(dq) => dq.mul_scalar(options.scale),
            None => Tensor::zeros([b, h, bq, d], &device),
        };
        dq_blocks.push(dq);
    }

    let gather = |parts: Vec<Option<Tensor<B, 4>>>, width: usize| {
        let parts = parts
            .into_iter()
            .zip(&key_blocks)
            .map(|(t, (r, _, _, _))| {
                t.unwrap_or_else(|| Tensor::zeros([b, h, r.len(), width], &device))
            })
            .collect();
        Tensor::cat(parts, 2)
    };
    let dk = gather(dk, d);
    let mut dv_full = gather(dv_blocks, dv);
    if let Some(rows) = mask.fully_masked_rows(n, m, &device) {
        let pb = rows.dims()[0];
        dv_full = dv_full + empty_rows_value_grad(&grad, rows.reshape([pb, 1, n, 1]), m);
    }
    [Tensor::cat(dq_blocks, 2), dk, dv_full]
}

/// The values' gradient from the rows that see no key. Such a row attends uniformly to
/// all `k_len` keys in the naive path (its masked scores are all the same finite minimum),
/// so it sends `dO_i / k_len` to every value.
///
/// # Shapes
/// - `grad`: `[batch, heads, q_len, head_dim]`, the gradient of the output
/// - `rows`: `[batch or 1, heads or 1, q_len, 1]`, `true` where a query sees no key
/// - returns `[batch, heads, k_len, head_dim]`
pub(crate) fn empty_rows_value_grad<B: Backend>(
    grad: &Tensor<B, 4>,
    rows: Tensor<B, 4, Bool>,
    k_len: usize,
) -> Tensor<B, 4> {
    let [b, h, n, dv] = grad.dims();
    grad.clone()
        .mask_fill(rows.expand([b, h, n, dv]).bool_not(), 0.0)
        .sum_dim(2)
        .div_scalar(k_len as f64)
        .expand([b, h, k_len, dv])
}

fn add<B: Backend>(acc: Option<Tensor<B, 4>>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match acc {
        Some(acc) => acc + x,
        None => x,
    }
}

thread_local! {
    static AUTODIFF_BACKWARD_RUNS: Cell<usize> = const { Cell::new(0) };
}

/// How many times this thread has run the backward of the memory-efficient attention's
/// autodiff node. A decomposed backward would give the same gradients, so this is how
/// tests check that the custom node (and its linear memory) is what actually ran.
#[doc(hidden)]
pub fn autodiff_backward_runs() -> usize {
    AUTODIFF_BACKWARD_RUNS.with(Cell::get)
}

/// The autodiff node of one memory-efficient attention call.
#[derive(Debug)]
pub(crate) struct MemoryEfficientAttentionBackward;

/// What the node keeps for the backward: checkpoint ids of `q`, `k`, `v` (so that a
/// checkpointing strategy can recompute them instead), and the output and log-sum-exp,
/// which are linear in the sequence length.
#[derive(Clone, Debug)]
pub(crate) struct SavedState<B: Backend> {
    pub inputs: [NodeId; 3],
    pub out: Tensor<B, 4>,
    pub lse: Tensor<B, 4>,
    pub mask: AttentionMask<B>,
    pub options: TiledOptions,
}

impl<B: AttentionBackend> Backward<B, 3> for MemoryEfficientAttentionBackward {
    type State = SavedState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let SavedState {
            inputs,
            out,
            lse,
            mask,
            options,
        } = ops.state;
        AUTODIFF_BACKWARD_RUNS.with(|runs| runs.set(runs.get() + 1));
        let grad = float::<B>(grads.consume::<B>(&ops.node));
        let [q, k, v] = inputs.map(|id| float::<B>(checkpointer.retrieve_node_output(id)));
        let saved = AttentionResiduals { q, k, v, out, lse };
        let grads_qkv = B::memory_efficient_attention_backward(saved, grad, &mask, options);
        for (parent, g) in ops.parents.into_iter().zip(grads_qkv) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g.into_primitive().tensor());
            }
        }
    }
}

fn float<B: Backend>(primitive: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

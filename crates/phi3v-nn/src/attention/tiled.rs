//! The memory-efficient forward: tiles over queries and keys with an online softmax.
//!
//! For each block of queries the kernel walks the key blocks, keeping per query row the
//! output so far (normalised over the keys seen) and the log-sum-exp `lse` of those
//! keys' scores. Each tile is normalised on its own with the backend's softmax (one
//! fused pass on the CPU backends), its log-sum-exp is read back from that softmax
//! (`lse_t = max_j s_j - ln max_j p_j`, since the largest probability is
//! `exp(max s - lse_t)`), and the two are merged:
//! `lse' = logaddexp(lse, lse_t)`, `out' = out e^(lse - lse') + (p v) e^(lse_t - lse')`.
//! Only one `[block_q, block_k]` score tile per head is alive at a time, so memory grows
//! linearly with the sequence, and tiles that the causal or window rule hides entirely
//! are skipped (about half the work of a causal forward). No arithmetic broadcasts over
//! a score tile (only over `[block_q, 1]` or `[block_q, head_dim]`): on the CPU such a
//! broadcast costs several times the tile's matmul.
//!
//! Masked scores take [`MASK_VALUE`] as in the naive path. A row whose keys in a tile are
//! all masked gets `lse_t = MASK_VALUE` (up to rounding, which `MASK_VALUE` absorbs), and
//! the first tile with a visible key scales the earlier terms by
//! `exp(MASK_VALUE - lse') = 0`, so they vanish exactly. Rows that see no key at all
//! (left-padding positions) are found from the mask rules and given the naive path's
//! answer, the mean of all values.

use std::ops::Range;

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

use super::mask::{AttentionMask, TileKind};
use super::naive::MASK_VALUE;

/// The log-sum-exp of rows that see no key. The backward computes `exp(s - lse)` inside
/// a matmul (as `[q, -lse] [k, 1]^T`), so it must be finite: `s - f32::MAX` is still
/// `-f32::MAX`, whose exponential is 0.
pub const EMPTY_ROW_LSE: f32 = f32::MAX;

/// The scale and tile sizes of the memory-efficient kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TiledOptions {
    /// Multiplies `q k^T`, usually `1 / sqrt(head_dim)`.
    pub scale: f64,
    /// Queries per tile.
    pub block_q: usize,
    /// Keys per tile.
    pub block_k: usize,
}

/// `0..len` cut into consecutive ranges of at most `block` (the last may be shorter).
pub(crate) fn blocks(len: usize, block: usize) -> Vec<Range<usize>> {
    assert!(block > 0, "attention tiles must be at least one row");
    (0..len)
        .step_by(block)
        .map(|start| start..(start + block).min(len))
        .collect()
}

/// Masks the scores of one tile: the structural rule when the tile straddles it, then
/// padding when some key of the tile is padding. The mask is built for this tile only.
///
/// # Shapes
/// - `scores`: `[batch, heads, q.len(), k.len()]`
pub(crate) fn mask_tile<B: Backend>(
    scores: Tensor<B, 4>,
    mask: &AttentionMask<B>,
    kind: TileKind,
    q: &Range<usize>,
    k: &Range<usize>,
) -> Tensor<B, 4> {
    let [b, h, bq, bk] = scores.dims();
    let device = scores.device();
    let structural = (kind == TileKind::Partial).then(|| {
        mask.structural_tile(q.clone(), k.clone(), &device)
            .reshape([1, 1, bq, bk])
    });
    let padding = mask.padding_tile(k).map(|p| {
        let pb = p.dims()[0];
        p.reshape([pb, 1, 1, bk]).expand([pb, 1, bq, bk])
    });
    let hidden: Option<Tensor<B, 4, Bool>> = match (structural, padding) {
        (None, None) => None,
        (Some(s), None) => Some(s),
        (None, Some(p)) => Some(p),
        (Some(s), Some(p)) => {
            let pb = p.dims()[0];
            Some(s.expand([pb, 1, bq, bk]).bool_or(p))
        }
    };
    match hidden {
        Some(hidden) => scores.mask_fill(hidden.expand([b, h, bq, bk]), MASK_VALUE),
        None => scores,
    }
}

/// `out`, the output of query block `q`, with its rows that see no key set to the naive
/// path's answer: `mean_v`, the mean of all values.
///
/// # Shapes
/// - `out`: `[batch, heads, q.len(), head_dim]`
/// - `rows`: `[batch or 1, q_len]`, `true` where a query sees no key
/// - `mean_v`: `[batch, heads, 1, head_dim]`
pub(crate) fn empty_rows_as_mean<B: Backend>(
    out: Tensor<B, 4>,
    rows: &Tensor<B, 2, Bool>,
    q: &Range<usize>,
    mean_v: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, h, bq, dv] = out.dims();
    out.mask_where(
        fully_masked_block(rows, q, [b, h, dv]),
        mean_v.clone().expand([b, h, bq, dv]),
    )
}

/// The fully masked rows of query block `q`, ready to broadcast over `[batch, heads, q, n]`.
pub(crate) fn fully_masked_block<B: Backend>(
    rows: &Tensor<B, 2, Bool>,
    q: &Range<usize>,
    [b, h, n]: [usize; 3],
) -> Tensor<B, 4, Bool> {
    let pb = rows.dims()[0];
    rows.clone()
        .slice([0..pb, q.clone()])
        .reshape([pb, 1, q.len(), 1])
        .expand([b, h, q.len(), n])
}

/// The tiled forward. Returns the output and, per query row, the log-sum-exp of its
/// scaled, masked scores ([`EMPTY_ROW_LSE`] for rows that see no key), which is all the
/// backward needs besides the inputs.
///
/// # Shapes
/// - `q`: `[batch, heads, q_len, head_dim]`
/// - `k`, `v`: `[batch, heads, k_len, head_dim]`
/// - returns `[batch, heads, q_len, head_dim]` and `[batch, heads, q_len, 1]`
pub fn forward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &AttentionMask<B>,
    options: TiledOptions,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [b, h, n, d] = q.dims();
    let [_, _, m, dv] = v.dims();
    assert_eq!(
        k.dims(),
        [b, h, m, d],
        "keys must be [batch, heads, k_len, head_dim]"
    );
    mask.check(b, m);
    let device = q.device();
    if n == 0 || m == 0 {
        return (
            Tensor::zeros([b, h, n, dv], &device),
            Tensor::full([b, h, n, 1], EMPTY_ROW_LSE, &device),
        );
    }
    let key_blocks: Vec<_> = blocks(m, options.block_k)
        .into_iter()
        .map(|r| {
            let kt = k
                .clone()
                .slice([0..b, 0..h, r.clone(), 0..d])
                .swap_dims(2, 3);
            let vb = v.clone().slice([0..b, 0..h, r.clone(), 0..dv]);
            (r, kt, vb)
        })
        .collect();
    let empty_rows = mask.fully_masked_rows(n, m, &device);
    let mean_v = empty_rows.as_ref().map(|_| v.clone().mean_dim(2));

    let mut outs = Vec::new();
    let mut lses = Vec::new();
    for qr in blocks(n, options.block_q) {
        let bq = qr.len();
        let qs = q
            .clone()
            .slice([0..b, 0..h, qr.clone(), 0..d])
            .mul_scalar(options.scale);
        let mut out = Tensor::<B, 4>::zeros([b, h, bq, dv], &device);
        let mut lse = Tensor::<B, 4>::full([b, h, bq, 1], MASK_VALUE, &device);
        for (kr, kt, vb) in &key_blocks {
            let kind = mask.tile_kind(&qr, kr);
            if kind == TileKind::Hidden {
                continue;
            }
            let scores = mask_tile(qs.clone().matmul(kt.clone()), mask, kind, &qr, kr);
            let tile_max = scores.clone().max_dim(3);
            let p = softmax(scores, 3);
            let tile_lse = tile_max - p.clone().max_dim(3).log();
            let new_lse = log_add_exp(lse.clone(), tile_lse.clone());
            let keep = (lse - new_lse.clone()).exp();
            let take = (tile_lse - new_lse.clone()).exp();
            out = out * keep + p.matmul(vb.clone()) * take;
            lse = new_lse;
        }
        if let (Some(rows), Some(mean_v)) = (&empty_rows, &mean_v) {
            out = empty_rows_as_mean(out, rows, &qr, mean_v);
            lse = lse.mask_fill(fully_masked_block(rows, &qr, [b, h, 1]), EMPTY_ROW_LSE);
        }
        outs.push(out);
        lses.push(lse);
    }
    (Tensor::cat(outs, 2), Tensor::cat(lses, 2))
}

/// `ln(e^a + e^b)`, elementwise, without overflow.
fn log_add_exp<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    let max = a.clone().max_pair(b.clone());
    max + (a - b).abs().neg().exp().log1p()
}

//! The CubeCL kernels of the fused attention; [`super`] launches them and documents the
//! algorithm. Each reads its tensors through their strides, so views need no copy.
//!
//! A comptime flag (`causal`, `windowed`, `padded`) is tested in an `if` of its own, so
//! that the macro resolves it while expanding the kernel instead of joining it to a
//! runtime condition; clippy would collapse those `if`s.
#![allow(clippy::collapsible_if)]

use burn_cubecl::cubecl;
use burn_cubecl::cubecl::prelude::*;

use super::{KEY_TILE, ROWS};
use crate::attention::EMPTY_ROW_LSE;

/// A score below every real one: the running maximum before any key, and the mark of a
/// masked key in a tile.
const NO_SCORE: f32 = -3.0e38;

/// Whether query `i` (at absolute position `pos = past_len + i`) sees key `j` by the
/// structural rules: `j <= pos` when causal, `pos - j < window` with a window.
#[cube]
fn structurally_visible(
    pos: usize,
    j: usize,
    window: usize,
    #[comptime] causal: bool,
    #[comptime] windowed: bool,
) -> bool {
    let mut seen = true;
    if causal {
        seen = j <= pos;
    }
    if windowed {
        // pos - j < window, without going below zero for keys after the query.
        seen = seen && pos < j + window;
    }
    seen
}

/// The first key query `first` (at `past_len + first`) can see: its window's start.
/// Later queries' windows start later, so no query of the cube sees an earlier key.
#[cube]
fn first_key_seen(
    first: usize,
    past_len: usize,
    window: usize,
    #[comptime] windowed: bool,
) -> usize {
    let mut start: usize = 0;
    if windowed {
        if past_len + first + 1 > window {
            start = past_len + first + 1 - window;
        }
    }
    start
}

/// One past the last key query `last` can see: causal, its own position.
#[cube]
fn key_end(last: usize, k_len: usize, past_len: usize, #[comptime] causal: bool) -> usize {
    let mut end = k_len;
    if causal {
        if past_len + last + 1 < k_len {
            end = past_len + last + 1;
        }
    }
    end
}

/// Where row `row` of (batch `b`, head `h`) starts in a `[batch, heads, len, dim]` tensor.
#[cube]
fn row_at<F: Float>(t: &Tensor<F>, b: usize, h: usize, row: usize) -> usize {
    b * t.stride(0) + h * t.stride(1) + row * t.stride(2)
}

/// Whether the query at `pos` sees key `j`, staged at `jj` by [`stage_keys`]: below the
/// staged `end`, structurally visible, and (with padding) not padding.
#[cube]
#[allow(clippy::too_many_arguments)]
fn sees_staged_key<F: Float>(
    pos: usize,
    j: usize,
    end: usize,
    window: usize,
    pad_tile: &SharedMemory<F>,
    jj: usize,
    #[comptime] causal: bool,
    #[comptime] windowed: bool,
    #[comptime] padded: bool,
) -> bool {
    let mut seen = j < end && structurally_visible(pos, j, window, causal, windowed);
    if padded {
        seen = seen && pad_tile[jj] < F::new(0.5);
    }
    seen
}

/// Is key `j` padding for batch row `b`? `padding` is `[batch or 1, k_len]`, 1 at padding.
#[cube]
fn is_padding<F: Float>(padding: &Tensor<F>, b: usize, j: usize) -> bool {
    let mut row = b;
    if padding.shape(0) == 1 {
        row = 0;
    }
    padding[row * padding.stride(0) + j * padding.stride(1)] > F::new(0.5)
}

/// The last row of the cube whose first row is `first`, of `len`.
#[cube]
fn last_row(first: usize, len: usize) -> usize {
    let mut last = len - 1;
    if first + ROWS < len {
        last = first + ROWS - 1;
    }
    last
}

/// Stages keys `t..t + KEY_TILE` (those below `end`) of one (batch, head) into shared
/// memory: their keys and values, and with padding a 1 for each padding key. Every unit
/// copies a share, then waits for the rest.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_keys<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    padding: &Tensor<F>,
    k_tile: &mut SharedMemory<F>,
    v_tile: &mut SharedMemory<F>,
    pad_tile: &mut SharedMemory<F>,
    k_at: usize,
    v_at: usize,
    b: usize,
    t: usize,
    end: usize,
    #[comptime] head_dim: usize,
    #[comptime] padded: bool,
) {
    let mut e = UNIT_POS_X as usize;
    while e < KEY_TILE * head_dim {
        let j = t + e / head_dim;
        let c = e % head_dim;
        if j < end {
            k_tile[e] = k[k_at + j * k.stride(2) + c * k.stride(3)];
            v_tile[e] = v[v_at + j * v.stride(2) + c * v.stride(3)];
        }
        e += ROWS;
    }
    if padded {
        if (UNIT_POS_X as usize) < KEY_TILE {
            let j = t + UNIT_POS_X as usize;
            let mut hidden = F::new(0.0);
            if j < end {
                if is_padding::<F>(padding, b, j) {
                    hidden = F::new(1.0);
                }
            }
            pad_tile[UNIT_POS_X as usize] = hidden;
        }
    }
    sync_cube();
}

/// The forward. Launch: `(ceil(q_len / ROWS), batch * heads)` cubes of `ROWS` units.
///
/// - `q`: `[batch, heads, q_len, head_dim]`; `k`, `v`: `[batch, heads, k_len, head_dim]`
/// - `padding`: `[batch or 1, k_len]`, 1 at padding (read only when `padded`)
/// - `out`: like `q`; `lse`: `[batch, heads, q_len, 1]`
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn flash_forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    padding: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    scale: f32,
    past_len: u32,
    window: u32,
    #[comptime] head_dim: usize,
    #[comptime] causal: bool,
    #[comptime] windowed: bool,
    #[comptime] padded: bool,
    #[define(F)] _dtype: StorageType,
) {
    let heads = q.shape(1);
    let q_len = q.shape(2);
    let k_len = k.shape(2);
    let bh = CUBE_POS_Y as usize;
    let b = bh / heads;
    let h = bh % heads;
    let first = CUBE_POS_X as usize * ROWS;
    let row = first + UNIT_POS_X as usize;
    let live = row < q_len;
    let last = last_row(first, q_len);
    let past_len = past_len as usize;
    let window = window as usize;
    let pos = past_len + row;

    // This unit's query, scaled, and its running output, in registers.
    let mut qs = Array::<F>::new(head_dim);
    let mut acc = Array::<F>::new(head_dim);
    let q_at = row_at::<F>(q, b, h, row);
    for c in 0..head_dim {
        acc[c] = F::new(0.0);
        qs[c] = F::new(0.0);
        if live {
            qs[c] = q[q_at + c * q.stride(3)] * F::cast_from(scale);
        }
    }
    let mut run_max = F::new(NO_SCORE);
    let mut run_sum = F::new(0.0);
    let mut scores = Array::<F>::new(KEY_TILE);

    let mut k_tile = SharedMemory::<F>::new(KEY_TILE * head_dim);
    let mut v_tile = SharedMemory::<F>::new(KEY_TILE * head_dim);
    let mut pad_tile = SharedMemory::<F>::new(KEY_TILE);

    let start = first_key_seen(first, past_len, window, windowed);
    let end = key_end(last, k_len, past_len, causal);
    let k_at = row_at::<F>(k, b, h, 0);
    let v_at = row_at::<F>(v, b, h, 0);
    let mut t = start;
    while t < end {
        stage_keys::<F>(
            k,
            v,
            padding,
            &mut k_tile,
            &mut v_tile,
            &mut pad_tile,
            k_at,
            v_at,
            b,
            t,
            end,
            head_dim,
            padded,
        );

        if live {
            // Scores of the tile, and their maximum over the keys this row sees.
            let mut tile_max = F::new(NO_SCORE);
            for jj in 0..KEY_TILE {
                let j = t + jj;
                let seen = sees_staged_key::<F>(
                    pos, j, end, window, &pad_tile, jj, causal, windowed, padded,
                );
                let mut s = F::new(NO_SCORE);
                if seen {
                    s = F::new(0.0);
                    for c in 0..head_dim {
                        s += qs[c] * k_tile[jj * head_dim + c];
                    }
                    if s > tile_max {
                        tile_max = s;
                    }
                }
                scores[jj] = s;
            }
            if tile_max > F::new(NO_SCORE) {
                // Merge the tile into the row: rescale what is there to the new maximum.
                let new_max = if tile_max > run_max {
                    tile_max
                } else {
                    run_max
                };
                let keep = F::exp(run_max - new_max);
                run_sum *= keep;
                for c in 0..head_dim {
                    acc[c] *= keep;
                }
                for jj in 0..KEY_TILE {
                    if scores[jj] > F::new(NO_SCORE) {
                        let p = F::exp(scores[jj] - new_max);
                        run_sum += p;
                        for c in 0..head_dim {
                            acc[c] += p * v_tile[jj * head_dim + c];
                        }
                    }
                }
                run_max = new_max;
            }
        }
        sync_cube();
        t += KEY_TILE;
    }

    if live {
        let o_at = row_at::<F>(out, b, h, row);
        let l_at = row_at::<F>(lse, b, h, row);
        if run_sum > F::new(0.0) {
            for c in 0..head_dim {
                out[o_at + c * out.stride(3)] = acc[c] / run_sum;
            }
            lse[l_at] = run_max + F::ln(run_sum);
        } else {
            for c in 0..head_dim {
                out[o_at + c * out.stride(3)] = F::new(0.0);
            }
            lse[l_at] = F::new(EMPTY_ROW_LSE);
        }
    }
}

/// The gradients of `q`. Launch: `(ceil(q_len / ROWS), batch * heads)` cubes of `ROWS`
/// units, one per query.
///
/// - `q`, `grad` (`dO`), `dq`: `[batch, heads, q_len, head_dim]`
/// - `k`, `v`: `[batch, heads, k_len, head_dim]`
/// - `lse`, `row_dot` (`D = dO.O`): `[batch, heads, q_len, 1]`
/// - `padding`: `[batch or 1, k_len]`, 1 at padding (read only when `padded`)
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn flash_query_grads_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    grad: &Tensor<F>,
    lse: &Tensor<F>,
    row_dot: &Tensor<F>,
    padding: &Tensor<F>,
    dq: &mut Tensor<F>,
    scale: f32,
    past_len: u32,
    window: u32,
    #[comptime] head_dim: usize,
    #[comptime] causal: bool,
    #[comptime] windowed: bool,
    #[comptime] padded: bool,
    #[define(F)] _dtype: StorageType,
) {
    let heads = q.shape(1);
    let q_len = q.shape(2);
    let k_len = k.shape(2);
    let bh = CUBE_POS_Y as usize;
    let b = bh / heads;
    let h = bh % heads;
    let first = CUBE_POS_X as usize * ROWS;
    let row = first + UNIT_POS_X as usize;
    let live = row < q_len;
    let last = last_row(first, q_len);
    let past_len = past_len as usize;
    let window = window as usize;
    let pos = past_len + row;
    let scale = F::cast_from(scale);

    let mut qs = Array::<F>::new(head_dim);
    let mut g = Array::<F>::new(head_dim);
    let mut acc = Array::<F>::new(head_dim);
    let q_at = row_at::<F>(q, b, h, row);
    let g_at = row_at::<F>(grad, b, h, row);
    let mut row_lse = F::new(EMPTY_ROW_LSE);
    let mut row_d = F::new(0.0);
    for c in 0..head_dim {
        acc[c] = F::new(0.0);
        qs[c] = F::new(0.0);
        g[c] = F::new(0.0);
        if live {
            qs[c] = q[q_at + c * q.stride(3)] * scale;
            g[c] = grad[g_at + c * grad.stride(3)];
        }
    }
    if live {
        row_lse = lse[row_at::<F>(lse, b, h, row)];
        row_d = row_dot[row_at::<F>(row_dot, b, h, row)];
    }

    let mut k_tile = SharedMemory::<F>::new(KEY_TILE * head_dim);
    let mut v_tile = SharedMemory::<F>::new(KEY_TILE * head_dim);
    let mut pad_tile = SharedMemory::<F>::new(KEY_TILE);

    let start = first_key_seen(first, past_len, window, windowed);
    let end = key_end(last, k_len, past_len, causal);
    let k_at = row_at::<F>(k, b, h, 0);
    let v_at = row_at::<F>(v, b, h, 0);
    let mut t = start;
    while t < end {
        stage_keys::<F>(
            k,
            v,
            padding,
            &mut k_tile,
            &mut v_tile,
            &mut pad_tile,
            k_at,
            v_at,
            b,
            t,
            end,
            head_dim,
            padded,
        );

        if live {
            for jj in 0..KEY_TILE {
                let j = t + jj;
                let seen = sees_staged_key::<F>(
                    pos, j, end, window, &pad_tile, jj, causal, windowed, padded,
                );
                if seen {
                    let mut s = F::new(0.0);
                    let mut dp = F::new(0.0);
                    for c in 0..head_dim {
                        s += qs[c] * k_tile[jj * head_dim + c];
                        dp += g[c] * v_tile[jj * head_dim + c];
                    }
                    let ds = F::exp(s - row_lse) * (dp - row_d);
                    for c in 0..head_dim {
                        acc[c] += ds * k_tile[jj * head_dim + c];
                    }
                }
            }
        }
        sync_cube();
        t += KEY_TILE;
    }

    if live {
        let at = row_at::<F>(dq, b, h, row);
        for c in 0..head_dim {
            dq[at + c * dq.stride(3)] = acc[c] * scale;
        }
    }
}

/// The gradients of `k` and `v`. Launch: `(ceil(k_len / ROWS), batch * heads)` cubes of
/// `ROWS` units, one per key.
///
/// - `q`, `grad` (`dO`): `[batch, heads, q_len, head_dim]`
/// - `k`, `v`, `dk`, `dv`: `[batch, heads, k_len, head_dim]`
/// - `lse`, `row_dot` (`D = dO.O`): `[batch, heads, q_len, 1]`
/// - `padding`: `[batch or 1, k_len]`, 1 at padding (read only when `padded`)
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn flash_key_grads_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    grad: &Tensor<F>,
    lse: &Tensor<F>,
    row_dot: &Tensor<F>,
    padding: &Tensor<F>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    scale: f32,
    past_len: u32,
    window: u32,
    #[comptime] head_dim: usize,
    #[comptime] causal: bool,
    #[comptime] windowed: bool,
    #[comptime] padded: bool,
    #[define(F)] _dtype: StorageType,
) {
    let heads = q.shape(1);
    let q_len = q.shape(2);
    let k_len = k.shape(2);
    let bh = CUBE_POS_Y as usize;
    let b = bh / heads;
    let h = bh % heads;
    let first_key = CUBE_POS_X as usize * ROWS;
    let key = first_key + UNIT_POS_X as usize;
    let mut live = key < k_len;
    if padded {
        if live {
            // A padding key is seen by no query: its gradients are zero.
            live = !is_padding::<F>(padding, b, key);
        }
    }
    let last_key = last_row(first_key, k_len);
    let past_len = past_len as usize;
    let window = window as usize;
    let scale = F::cast_from(scale);

    let mut kr = Array::<F>::new(head_dim);
    let mut vr = Array::<F>::new(head_dim);
    let mut dk_acc = Array::<F>::new(head_dim);
    let mut dv_acc = Array::<F>::new(head_dim);
    let k_at = row_at::<F>(k, b, h, key);
    let v_at = row_at::<F>(v, b, h, key);
    for c in 0..head_dim {
        kr[c] = F::new(0.0);
        vr[c] = F::new(0.0);
        dk_acc[c] = F::new(0.0);
        dv_acc[c] = F::new(0.0);
        if key < k_len {
            kr[c] = k[k_at + c * k.stride(3)];
            vr[c] = v[v_at + c * v.stride(3)];
        }
    }

    // The queries that can see some key of this cube: causal, query i sees key j when
    // past_len + i >= j; with a window, when past_len + i < j + window.
    let mut start: usize = 0;
    if causal {
        if first_key > past_len {
            start = first_key - past_len;
        }
    }
    let mut end = q_len;
    if windowed {
        if last_key + window <= past_len {
            end = 0;
        } else if last_key + window - past_len < q_len {
            end = last_key + window - past_len;
        }
    }

    let mut q_tile = SharedMemory::<F>::new(KEY_TILE * head_dim);
    let mut g_tile = SharedMemory::<F>::new(KEY_TILE * head_dim);
    let mut lse_tile = SharedMemory::<F>::new(KEY_TILE);
    let mut dot_tile = SharedMemory::<F>::new(KEY_TILE);

    let q_at = row_at::<F>(q, b, h, 0);
    let g_at = row_at::<F>(grad, b, h, 0);
    let mut t = start;
    while t < end {
        let mut e = UNIT_POS_X as usize;
        while e < KEY_TILE * head_dim {
            let i = t + e / head_dim;
            let c = e % head_dim;
            if i < end {
                q_tile[e] = q[q_at + i * q.stride(2) + c * q.stride(3)] * scale;
                g_tile[e] = grad[g_at + i * grad.stride(2) + c * grad.stride(3)];
            }
            e += ROWS;
        }
        if (UNIT_POS_X as usize) < KEY_TILE {
            let i = t + UNIT_POS_X as usize;
            if i < end {
                lse_tile[UNIT_POS_X as usize] = lse[row_at::<F>(lse, b, h, i)];
                dot_tile[UNIT_POS_X as usize] = row_dot[row_at::<F>(row_dot, b, h, i)];
            }
        }
        sync_cube();

        if live {
            for ii in 0..KEY_TILE {
                let i = t + ii;
                if i < end && structurally_visible(past_len + i, key, window, causal, windowed) {
                    let mut s = F::new(0.0);
                    let mut dp = F::new(0.0);
                    for c in 0..head_dim {
                        s += q_tile[ii * head_dim + c] * kr[c];
                        dp += g_tile[ii * head_dim + c] * vr[c];
                    }
                    let p = F::exp(s - lse_tile[ii]);
                    let ds = p * (dp - dot_tile[ii]);
                    for c in 0..head_dim {
                        dv_acc[c] += p * g_tile[ii * head_dim + c];
                        dk_acc[c] += ds * q_tile[ii * head_dim + c];
                    }
                }
            }
        }
        sync_cube();
        t += KEY_TILE;
    }

    if key < k_len {
        let k_out = row_at::<F>(dk, b, h, key);
        let v_out = row_at::<F>(dv, b, h, key);
        for c in 0..head_dim {
            dk[k_out + c * dk.stride(3)] = dk_acc[c];
            dv[v_out + c * dv.stride(3)] = dv_acc[c];
        }
    }
}

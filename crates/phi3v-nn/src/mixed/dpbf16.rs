//! Products in bf16 with f32 accumulation on AVX512-BF16's dot-product instruction.
//!
//! Why: `vdpbf16ps` multiplies 32 pairs of bf16 values and adds them into 16 f32 lanes, at
//! the rate an f32 fused multiply-add does 16 products: twice the arithmetic rate of f32.
//! Zen 4, Cooper Lake and Sapphire Rapids have it. PyTorch reaches the same rate on such
//! CPUs only under bf16 autocast, by rounding the activations to bf16; so does this kernel,
//! and only when asked ([`ProductDtype::Bf16`](crate::ProductDtype::Bf16)).
//!
//! The layout is GotoBLAS's, one level deep:
//! - the activations `x` (`[m, k]`, f32) are rounded to bf16 (to nearest, ties to even) once
//!   per product and packed in blocks of [`MR`] rows: for each pair of `k` indices, the
//!   block's rows' pairs as one `u32` each, which the kernel broadcasts;
//! - the weight is packed one tile of [`TILE_COLUMNS`] columns at a time, by the task that
//!   owns the tile, in strips of [`NR`] columns: for each pair of `k` indices, the strip's
//!   columns' pairs, which are two vector loads;
//! - the microkernel keeps an `MR x NR` block of the output in 24 vector registers over the
//!   whole of `k`, and writes it once.
//!
//! Tiles own disjoint columns of the output and are spread over rayon's pool.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::flex::{Bf16Bits, SharedOut};

/// Output rows per microkernel call: 12 rows x 2 vectors = 24 accumulator registers of 32,
/// leaving room for the two weight vectors and the broadcast.
const MR: usize = 12;
/// Output columns per microkernel call: two 16-lane vectors.
pub(super) const NR: usize = 32;
/// Weight columns packed per task: `k x 128` bf16 values (768 KB at Phi-3's `k = 3072`),
/// which stays in a core's L2 cache while every row block runs over it.
const TILE_COLUMNS: usize = 128;

/// Whether this CPU runs the kernel (AVX-512 F and BF16).
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// A `[k, n]` weight whose values the packer reads as bf16 bits.
pub(super) trait Bf16Source: Sync {
    /// `(k, n)`.
    fn dims(&self) -> (usize, usize);

    /// Packs columns `c0..c0 + cols` (at most [`NR`]) as `out[p * NR + j]`: the bf16 bits of
    /// rows `2p` (low half) and `2p + 1` (high half) of column `c0 + j`, zero past `k` and
    /// past `cols`. `out` holds `k.div_ceil(2) * NR` values.
    fn pack_strip(&self, c0: usize, cols: usize, out: &mut [u32]);
}

/// Two bf16 values as the kernel's `u32` pair: `low` first in memory.
#[inline(always)]
pub(super) fn pair(low: u16, high: u16) -> u32 {
    low as u32 | (high as u32) << 16
}

/// Calls `put(p, pair)` for each pair `(values[2p], values[2p + 1])` of a contiguous run,
/// the last one zero-padded when the run is odd.
#[inline(always)]
pub(super) fn pack_pairs<T: Bf16Bits>(values: &[T], mut put: impl FnMut(usize, u32)) {
    let pairs = values.chunks_exact(2);
    let rest = pairs.remainder();
    let full = pairs.len();
    for (p, two) in pairs.enumerate() {
        put(p, pair(two[0].bf16_bits(), two[1].bf16_bits()));
    }
    if let [last] = rest {
        put(full, pair(last.bf16_bits(), 0));
    }
}

/// `x w` rounded as described in the module notes, as `[m, n]` row-major f32.
///
/// # Safety
/// The CPU must have AVX-512 F and BF16 ([`available`]).
///
/// # Shapes
/// - `x`: `[m, k]` row-major; `w`: `[k, n]`; returns `[m, n]`
pub(super) unsafe fn product<W: Bf16Source>(x: &[f32], w: &W, m: usize) -> Vec<f32> {
    let (k, n) = w.dims();
    let k2 = k.div_ceil(2);
    let blocks = m.div_ceil(MR);
    let a = pack_rows(x, m, k);
    let mut out = vec![0f32; m * n];
    let out_ptr = SharedOut(out.as_mut_ptr());
    let tiles = n.div_ceil(TILE_COLUMNS);
    (0..tiles).into_par_iter().for_each_init(
        || vec![0u32; k2 * TILE_COLUMNS],
        |b, tile| {
            let c0 = tile * TILE_COLUMNS;
            let cols = TILE_COLUMNS.min(n - c0);
            let strips = cols.div_ceil(NR);
            for (s, strip) in b.chunks_exact_mut(k2 * NR).take(strips).enumerate() {
                w.pack_strip(c0 + s * NR, NR.min(cols - s * NR), strip);
            }
            for block in 0..blocks {
                let r0 = block * MR;
                let a_block = &a[block * k2 * MR..(block + 1) * k2 * MR];
                for (s, strip) in b.chunks_exact(k2 * NR).take(strips).enumerate() {
                    let col = c0 + s * NR;
                    // SAFETY: the block writes rows `r0..r0 + rows` and columns
                    // `col..col + NR.min(..)` of `out`, inside this tile's columns; the
                    // caller vouches for the CPU.
                    unsafe {
                        microkernel(
                            k2,
                            a_block.as_ptr(),
                            strip.as_ptr(),
                            out_ptr.at(r0 * n + col),
                            n,
                            MR.min(m - r0),
                            NR.min(n - col),
                        );
                    }
                }
            }
        },
    );
    out
}

/// `x` (`[m, k]` row-major f32) rounded to bf16 and packed in blocks of [`MR`] rows: block
/// `b`, pair `p`, row `i` at `(b * k2 + p) * MR + i`, rows past `m` zero.
fn pack_rows(x: &[f32], m: usize, k: usize) -> Vec<u32> {
    let k2 = k.div_ceil(2);
    let mut a = vec![0u32; m.div_ceil(MR) * k2 * MR];
    a.par_chunks_mut(k2 * MR)
        .enumerate()
        .for_each(|(block, out)| {
            for i in 0..MR.min(m - block * MR) {
                let row = &x[(block * MR + i) * k..(block * MR + i + 1) * k];
                pack_pairs(row, |p, v| out[p * MR + i] = v);
            }
        });
    a
}

/// One `rows x cols` block of the output (at most `MR x NR`), over all `k2` pairs:
/// `c[i * ldc + j] = sum_p a[p * MR + i] . b[p * NR + j]` (each a dot product of two bf16
/// pairs).
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn microkernel(
    k2: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
) {
    let mut low = [_mm512_setzero_ps(); MR];
    let mut high = [_mm512_setzero_ps(); MR];
    for p in 0..k2 {
        // SAFETY: the packed panels hold `k2 * MR` and `k2 * NR` values.
        let (b0, b1, ap) = unsafe {
            let bp = b.add(p * NR);
            (
                m512bh(_mm512_loadu_si512(bp.cast())),
                m512bh(_mm512_loadu_si512(bp.add(16).cast())),
                a.add(p * MR),
            )
        };
        for i in 0..MR {
            // SAFETY: as above.
            let ai = m512bh(_mm512_set1_epi32(unsafe { *ap.add(i) } as i32));
            low[i] = _mm512_dpbf16_ps(low[i], ai, b0);
            high[i] = _mm512_dpbf16_ps(high[i], ai, b1);
        }
    }
    let mask = |lanes: usize| -> __mmask16 { ((1u32 << lanes.min(16)) - 1) as __mmask16 };
    let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
    for i in 0..MR {
        if i < rows {
            // SAFETY: row `i < rows` and the masked columns lie inside the output.
            unsafe {
                _mm512_mask_storeu_ps(c.add(i * ldc), m0, low[i]);
                _mm512_mask_storeu_ps(c.add(i * ldc + 16), m1, high[i]);
            }
        }
    }
}

/// A vector of 32 bf16 values from its bits.
#[inline(always)]
fn m512bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 512 bits of plain data.
    unsafe { std::mem::transmute(v) }
}

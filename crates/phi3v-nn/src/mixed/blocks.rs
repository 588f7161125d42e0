//! Flex's product with a block-quantized weight (a QLoRA base), dequantized where it is
//! read.
//!
//! burn-flex's own quantized product dequantizes the whole weight into an f32 copy,
//! single-threaded, before multiplying: four bytes written and read again per weight value,
//! which made a 5-token prefill over a full-size q4 base take 29 s. Here the weight is read
//! once, at one byte per value, in the two regimes of the bf16 kernel (`flex.rs`):
//! - **a few rows** (decoding): each rayon task owns a range of output columns and sweeps
//!   the weight's rows over it, scaling each block's values into row accumulators that stay
//!   in L1; nothing is dequantized into memory;
//! - **many rows** (prefill, training, and every gradient): each task dequantizes one tile of
//!   weight columns into a buffer that stays in its core's cache, and gemm runs on it.
//!
//! The layout is what the loader makes (`Weights::linear_weight`): a contiguous `[k, n]`
//! (`[in, out]`) tensor of `i8` values with one f32 scale per block of 32 consecutive values
//! along `n`, and a value is `q * scale`, as burn dequantizes symmetric blocks. Any other
//! layout or scheme falls back to burn's product.

use burn::backend::Flex;
use burn::tensor::quantization::{QTensorPrimitive, QuantLevel, QuantStore};
use burn::tensor::{Tensor, TensorPrimitive};
use burn_flex::FlexQTensor;

use rayon::prelude::*;

use super::flex::{contiguous, primitive, tensor, tiled_product, ColumnTiles, Simd, DOT_ROWS};

/// `x w`, or `x w^T` when `transposed`, for f32 `x` `[m, k]` and a quantized `w`.
///
/// # Shapes
/// - `x`: `[m, k]`
/// - `w`: `[k, n]`, or `[n, k]` when `transposed`
/// - returns `[m, n]`
pub(super) fn product(x: Tensor<Flex, 2>, w: Tensor<Flex, 2>, transposed: bool) -> Tensor<Flex, 2> {
    let TensorPrimitive::QFloat(q) = w.into_primitive() else {
        unreachable!("the caller checked that the weight is quantized")
    };
    let Some(view) = BlockView::new(&q, transposed) else {
        let w = Tensor::<Flex, 2>::from_primitive(TensorPrimitive::QFloat(q));
        return if transposed {
            super::widened_transposed_matmul(x, w)
        } else {
            super::rounded_matmul(x, w)
        };
    };
    let m = x.dims()[0];
    let (k, n) = view.dims();
    let x = contiguous(primitive(x));
    let x = &x.storage::<f32>()[..m * k];
    let simd = Simd::detect();
    let out = if m <= DOT_ROWS && !transposed {
        row_sweep(x, &view, m, simd)
    } else {
        tiled_product(x, &view, m, simd)
    };
    tensor(out, m, n)
}

/// Output columns per task of the few-rows regime: 8 rows of 256 f32 accumulators (8 KB)
/// stay in L1 while the task sweeps the weight's rows.
const SWEEP_COLUMNS: usize = 256;

/// The few-rows regime: `out[i, c] = sum_r x[i, r] * scale(r, c) * q[r, c]`, each task
/// sweeping every weight row over its own range of output columns.
fn row_sweep(x: &[f32], w: &BlockView<'_>, m: usize, simd: Simd) -> Vec<f32> {
    let (k, n) = (w.rows, w.cols);
    let groups = n.div_ceil(SWEEP_COLUMNS);
    // Computed per group as `[m][cols]`, then laid out as `[m, n]`.
    let parts: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let c0 = g * SWEEP_COLUMNS;
            let cols = SWEEP_COLUMNS.min(n - c0);
            let mut acc = vec![0f32; m * cols];
            for r in 0..k {
                let start = r * n + c0;
                let values = &w.values[start..start + cols];
                let scales = &w.scales[start / BLOCK..(start + cols) / BLOCK];
                for (i, acc) in acc.chunks_exact_mut(cols).enumerate() {
                    let xi = x[i * k + r];
                    if xi != 0.0 {
                        match simd {
                            Simd::Baseline => scaled_add(xi, values, scales, acc),
                            // SAFETY: the CPU has AVX2 and FMA (checked in `Simd::detect`).
                            #[cfg(target_arch = "x86_64")]
                            Simd::Avx2Fma => unsafe { scaled_add_avx2(xi, values, scales, acc) },
                        }
                    }
                }
            }
            acc
        })
        .collect();
    let mut out = vec![0f32; m * n];
    for (g, part) in parts.iter().enumerate() {
        let c0 = g * SWEEP_COLUMNS;
        let cols = part.len() / m;
        for i in 0..m {
            out[i * n + c0..i * n + c0 + cols].copy_from_slice(&part[i * cols..(i + 1) * cols]);
        }
    }
    out
}

/// The loop compiled for AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scaled_add_avx2(x: f32, values: &[i8], scales: &[f32], acc: &mut [f32]) {
    scaled_add(x, values, scales, acc)
}

/// `acc[j] += x * scales[j / BLOCK] * values[j]`, block by block.
#[inline(always)]
fn scaled_add(x: f32, values: &[i8], scales: &[f32], acc: &mut [f32]) {
    for ((acc, values), &scale) in acc
        .chunks_exact_mut(BLOCK)
        .zip(values.chunks_exact(BLOCK))
        .zip(scales)
    {
        let s = x * scale;
        for (a, &q) in acc.iter_mut().zip(values) {
            *a = s.mul_add(q as f32, *a);
        }
    }
}

/// Values per block of the layout this kernel reads.
const BLOCK: usize = crate::base_dtype::QUANT_BLOCK as usize;

/// A quantized `[rows, cols]` weight read as the `[k, n]` matrix of a product: itself, or
/// its transpose (`k = cols`, `n = rows`) for the gradient `dy w^T`.
struct BlockView<'a> {
    values: &'a [i8],
    scales: &'a [f32],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<'a> BlockView<'a> {
    /// The view of `q`, or `None` when its layout or scheme is not the loader's.
    fn new(q: &'a FlexQTensor, transposed: bool) -> Option<Self> {
        let scheme = q.scheme();
        let t = q.tensor();
        let shape = t.layout().shape();
        let blocked = scheme.level == QuantLevel::block([BLOCK as u8]);
        if !blocked
            || scheme.store != QuantStore::Native
            || shape.num_dims() != 2
            || !t.is_contiguous()
            || t.layout().start_offset() != 0
            || !shape[1].is_multiple_of(BLOCK)
        {
            return None;
        }
        let (rows, cols) = (shape[0], shape[1]);
        Some(Self {
            values: &t.storage::<i8>()[..rows * cols],
            scales: &q.scales()[..rows * cols / BLOCK],
            rows,
            cols,
            transposed,
        })
    }

    /// Dequantizes `dst.len()` values from flat position `start` (a multiple of the block)
    /// into `dst`.
    fn dequantize(&self, start: usize, dst: &mut [f32], simd: Simd) {
        let src = &self.values[start..start + dst.len()];
        let scales = &self.scales[start / BLOCK..];
        match simd {
            Simd::Baseline => dequantize_blocks(src, scales, dst),
            // SAFETY: the CPU has AVX2 (checked in `Simd::detect`).
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Fma => unsafe { dequantize_avx2(src, scales, dst) },
        }
    }
}

impl ColumnTiles for BlockView<'_> {
    fn dims(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    fn widen_columns(&self, c0: usize, cols: usize, buf: &mut [f32], simd: Simd) -> (isize, isize) {
        if self.transposed {
            // Product columns are weight rows, each contiguous: buf is [cols][k].
            let k = self.cols;
            for (j, out) in buf.chunks_exact_mut(k).take(cols).enumerate() {
                self.dequantize((c0 + j) * k, out, simd);
            }
            (k as isize, 1)
        } else {
            // Product columns are a slice of every weight row (whole blocks, as tiles
            // start at multiples of 128 and widths are multiples of 32): buf is [k][cols].
            for (r, out) in buf.chunks_exact_mut(cols).take(self.rows).enumerate() {
                self.dequantize(r * self.cols + c0, out, simd);
            }
            (1, cols as isize)
        }
    }
}

/// The loop compiled for AVX2: eight `i8` widened and scaled per instruction group, where
/// the baseline build (SSE2) converts four.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequantize_avx2(src: &[i8], scales: &[f32], dst: &mut [f32]) {
    dequantize_blocks(src, scales, dst)
}

/// `dst[i] = src[i] * scales[i / BLOCK]`, block by block.
#[inline(always)]
fn dequantize_blocks(src: &[i8], scales: &[f32], dst: &mut [f32]) {
    for ((dst, src), &scale) in dst
        .chunks_exact_mut(BLOCK)
        .zip(src.chunks_exact(BLOCK))
        .zip(scales)
    {
        for (d, &q) in dst.iter_mut().zip(src) {
            *d = q as f32 * scale;
        }
    }
}

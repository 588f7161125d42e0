//! Flex's mixed product: bf16 weights read where they lie, f32 accumulation, all cores.
//!
//! Two regimes, because their bottlenecks differ:
//! - **A few rows** (decoding: one token per sequence). The product is a pass over the
//!   weight, bound by memory bandwidth. Each output column is a dot product of an
//!   activation row with one weight column, which a transposed PyTorch `[out, in]` weight
//!   holds contiguously; its bf16 values are widened in registers, never in memory, so
//!   the bytes read are the bf16 weight's own.
//! - **Many rows** (prefill, training). The product is bound by arithmetic. The weight is
//!   widened to f32 one tile of columns at a time into a buffer that lives only for that
//!   tile, and gemm (the crate burn-flex itself multiplies with) runs on the tile. The
//!   widening is `k x n` work against the product's `m x k x n`.
//!
//! Tiles, and groups of columns in the dot-product regime, are spread over rayon's pool.
//!
//! A block-quantized weight (a QLoRA base) has both regimes too, with its values
//! dequantized instead of widened (see `blocks.rs`).

use burn::backend::Flex;
use burn::tensor::quantization::QuantScheme;
use burn::tensor::{DType, FloatDType, Tensor, TensorPrimitive};
use burn_flex::{FlexTensor, Layout};
use half::bf16;
use rayon::prelude::*;

use super::MixedMatmul;

/// Up to this many activation rows, the product is computed as dot products over the
/// weight's columns (reading the weight once for all rows); above it, tile by tile.
pub(super) const DOT_ROWS: usize = 8;
/// Weight columns per task in the dot-product regime.
const DOT_COLUMNS: usize = 32;
/// Weight columns widened per tile in the tiled regime: `128 x k` f32 values (1.5 MB at
/// Phi-3's `k = 3072`), which stays in a core's cache while gemm runs over it.
const TILE_COLUMNS: usize = 128;

impl MixedMatmul for Flex {
    fn mixed_matmul(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        if x.dtype() == DType::F32 && super::is_quantized(&w) {
            return super::blocks::product(x, w, false);
        }
        if x.dtype() != DType::F32 || w.dtype() != DType::BF16 {
            return super::rounded_matmul(x, w);
        }
        let [m, k] = x.dims();
        let [_, n] = w.dims();
        let x = contiguous(primitive(x));
        let x_values = &x.storage::<f32>()[..m * k];
        let out = with_view::<bf16, _>(&primitive(w), k, n, |w| product(x_values, w, m));
        tensor(out, m, n)
    }

    /// A bf16 or f32 weight read in place (see [`bf16_product`]). A quantized weight takes
    /// the provided method.
    fn bf16_matmul(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        let float_weight = matches!(w.dtype(), DType::BF16 | DType::F32);
        if x.dtype() != DType::F32 || !float_weight {
            return super::rounded_bf16_matmul(x, w);
        }
        let [m, k] = x.dims();
        let [_, n] = w.dims();
        let x = contiguous(primitive(x));
        let x_values = &x.storage::<f32>()[..m * k];
        let w = primitive(w);
        let out = if w.dtype() == DType::BF16 {
            with_view::<bf16, _>(&w, k, n, |w| bf16_product(x_values, w, m))
        } else {
            with_view::<f32, _>(&w, k, n, |w| bf16_product(x_values, w, m))
        };
        tensor(out, m, n)
    }

    fn mixed_matmul_transposed(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        if x.dtype() == DType::F32 && super::is_quantized(&w) {
            return super::blocks::product(x, w, true);
        }
        Self::mixed_matmul(x, w.transpose())
    }

    /// A quantized weight dequantized on all cores (burn-flex's dequantization runs on one,
    /// and cannot read a packed weight).
    fn widen(w: Tensor<Self, 2>, dtype: FloatDType) -> Tensor<Self, 2> {
        match super::blocks::dequantized(&w) {
            Some(values) => values.cast(dtype),
            None => super::widened(w, dtype),
        }
    }

    /// Row chunks quantized by burn on all cores, q4 packed two to a byte (see `blocks.rs`).
    fn quantize_frozen(w: Tensor<Self, 2>, scheme: &QuantScheme) -> Tensor<Self, 2> {
        super::blocks::quantize(w, scheme)
    }
}

/// `t`, or its contiguous copy when it is a strided view. The activations are small beside
/// the weight, so the copy costs nothing next to the product.
pub(super) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        t
    } else {
        t.to_contiguous()
    }
}

pub(super) fn primitive(t: Tensor<Flex, 2>) -> FlexTensor {
    t.into_primitive().tensor()
}

pub(super) fn tensor(values: Vec<f32>, m: usize, n: usize) -> Tensor<Flex, 2> {
    let data = burn::tensor::TensorData::new(values, [m, n]);
    Tensor::from_primitive(TensorPrimitive::Float(FlexTensor::from_data(data)))
}

/// `x w` with both operands rounded to bf16. On a CPU with AVX512-BF16, and more than
/// [`DOT_ROWS`] rows, the dot-product kernel of `dpbf16.rs`. Elsewhere the activations are
/// rounded here and the f32 kernels of [`product`] round the weight as they widen it: the
/// same products, summed in another order.
///
/// # Shapes
/// - `x`: `[m, k]` row-major; `w`: `[k, n]`; returns `[m, n]` row-major
fn bf16_product<T: Bf16Bits>(x: &[f32], w: &Strided<'_, T>, m: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if m > DOT_ROWS && super::dpbf16::available() {
        // SAFETY: `available` checked the CPU.
        return unsafe { super::dpbf16::product(x, w, m) };
    }
    let rounded: Vec<f32> = x.iter().map(|&v| v.widened()).collect();
    product(&rounded, w, m)
}

/// `f` on the `[k, n]` view of `w`'s storage, or of its contiguous copy when its strides
/// are not positive (a flipped tensor).
fn with_view<T: burn::tensor::Element + bytemuck::Pod, R>(
    w: &FlexTensor,
    k: usize,
    n: usize,
    f: impl FnOnce(&Strided<'_, T>) -> R,
) -> R {
    match Strided::new(w, k, n) {
        Some(view) => f(&view),
        None => {
            let w = w.to_contiguous();
            f(&Strided::new(&w, k, n).expect("a contiguous tensor has positive strides"))
        }
    }
}

/// `x w` for `x` `[m, k]` (row-major) and the view `w` (bf16, or f32 rounded to bf16 as it
/// is read), as `[m, n]` row-major.
fn product<T: Bf16Bits>(x: &[f32], w: &Strided<'_, T>, m: usize) -> Vec<f32> {
    let simd = Simd::detect();
    if m <= DOT_ROWS && w.row_stride == 1 {
        dot_product(x, w, m, simd)
    } else {
        tiled_product(x, w, m, simd)
    }
}

/// A `[k, n]` weight that the tiled regime widens to f32 one tile of columns at a time.
pub(super) trait ColumnTiles: Sync {
    /// `(k, n)`.
    fn dims(&self) -> (usize, usize);

    /// Widens columns `c0..c0 + cols` into `buf` (at least `k x cols` values). Returns gemm's
    /// `(rhs_cs, rhs_rs)` strides of the buffer.
    fn widen_columns(&self, c0: usize, cols: usize, buf: &mut [f32], simd: Simd) -> (isize, isize);
}

/// A `[k, n]` matrix inside a flex tensor's storage, of bf16 (a bf16 base) or f32 (an f32
/// base multiplied in bf16): `w[r, c] = data[offset + r * row_stride + c * col_stride]`.
pub(super) struct Strided<'a, T> {
    data: &'a [T],
    offset: usize,
    k: usize,
    n: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T: burn::tensor::Element + bytemuck::Pod> Strided<'a, T> {
    /// The view of `t`, or `None` when its strides are not positive (a flipped tensor),
    /// which the caller makes contiguous first.
    fn new(t: &'a FlexTensor, k: usize, n: usize) -> Option<Self> {
        let layout: &Layout = t.layout();
        let strides = layout.strides();
        let (rs, cs) = (strides[0], strides[1]);
        if rs <= 0 || cs <= 0 {
            return None;
        }
        Some(Self {
            data: t.storage::<T>(),
            offset: layout.start_offset(),
            k,
            n,
            row_stride: rs as usize,
            col_stride: cs as usize,
        })
    }
}

impl<T: Copy> Strided<'_, T> {
    /// Column `c` when the rows are contiguous (`row_stride == 1`).
    fn column(&self, c: usize) -> &[T] {
        let start = self.offset + c * self.col_stride;
        &self.data[start..start + self.k]
    }

    /// Row `r`'s columns `c0..c0 + cols` when the columns are contiguous (`col_stride == 1`).
    fn row_part(&self, r: usize, c0: usize, cols: usize) -> &[T] {
        let start = self.offset + r * self.row_stride + c0;
        &self.data[start..start + cols]
    }

    fn at(&self, r: usize, c: usize) -> T {
        self.data[self.offset + r * self.row_stride + c * self.col_stride]
    }
}

impl<T: Bf16Bits> ColumnTiles for Strided<'_, T> {
    fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// Keeps the memory order of the source, so that the reads are sequential.
    fn widen_columns(&self, c0: usize, cols: usize, buf: &mut [f32], simd: Simd) -> (isize, isize) {
        let k = self.k;
        if self.row_stride == 1 {
            // Column-contiguous: buf is [cols][k].
            for (j, out) in buf.chunks_exact_mut(k).take(cols).enumerate() {
                simd.widen(self.column(c0 + j), out);
            }
            (k as isize, 1)
        } else if self.col_stride == 1 {
            // Row-contiguous: buf is [k][cols].
            for (r, out) in buf.chunks_exact_mut(cols).take(k).enumerate() {
                simd.widen(self.row_part(r, c0, cols), out);
            }
            (1, cols as isize)
        } else {
            for (r, out) in buf.chunks_exact_mut(cols).take(k).enumerate() {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = self.at(r, c0 + j).widened();
                }
            }
            (1, cols as isize)
        }
    }
}

/// Rows `2p` and `2p + 1` of each column, as the bf16 kernel multiplies them.
#[cfg(target_arch = "x86_64")]
impl<T: Bf16Bits> super::dpbf16::Bf16Source for Strided<'_, T> {
    fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// Reads in the source's memory order: down each column when the rows are contiguous
    /// (a transposed PyTorch weight, the forward's case), along row pairs otherwise (the
    /// gradient's transposed product).
    fn pack_strip(&self, c0: usize, cols: usize, out: &mut [u32]) {
        use super::dpbf16::{pack_pairs, pair, NR};
        let k = self.k;
        if cols < NR {
            out.fill(0);
        }
        if self.row_stride == 1 {
            for j in 0..cols {
                pack_pairs(self.column(c0 + j), |p, v| out[p * NR + j] = v);
            }
            return;
        }
        for (p, out) in out.chunks_exact_mut(NR).enumerate() {
            let (r0, r1) = (2 * p, 2 * p + 1);
            if r0 >= k {
                break;
            }
            if self.col_stride == 1 {
                let low = self.row_part(r0, c0, cols);
                if r1 < k {
                    let high = self.row_part(r1, c0, cols);
                    for (o, (&l, &h)) in out.iter_mut().zip(low.iter().zip(high)) {
                        *o = pair(l.bf16_bits(), h.bf16_bits());
                    }
                } else {
                    for (o, &l) in out.iter_mut().zip(low) {
                        *o = pair(l.bf16_bits(), 0);
                    }
                }
            } else {
                for (j, o) in out.iter_mut().take(cols).enumerate() {
                    let high = if r1 < k {
                        self.at(r1, c0 + j).bf16_bits()
                    } else {
                        0
                    };
                    *o = pair(self.at(r0, c0 + j).bf16_bits(), high);
                }
            }
        }
    }
}

/// The few-rows regime: each output is a dot product of an activation row with a weight
/// column read once for all rows.
fn dot_product<T: Bf16Bits>(x: &[f32], w: &Strided<'_, T>, m: usize, simd: Simd) -> Vec<f32> {
    let (k, n) = (w.k, w.n);
    // Computed column-major ([n][m]) so that each task owns a contiguous slice.
    let mut out_t = vec![0f32; n * m];
    out_t
        .par_chunks_mut(DOT_COLUMNS * m)
        .enumerate()
        .for_each(|(group, chunk)| {
            for (j, outs) in chunk.chunks_exact_mut(m).enumerate() {
                let column = w.column(group * DOT_COLUMNS + j);
                for (r, o) in outs.iter_mut().enumerate() {
                    *o = simd.dot(column, &x[r * k..(r + 1) * k]);
                }
            }
        });
    if m == 1 {
        return out_t;
    }
    let mut out = vec![0f32; m * n];
    for (c, outs) in out_t.chunks_exact(m).enumerate() {
        for (r, &v) in outs.iter().enumerate() {
            out[r * n + c] = v;
        }
    }
    out
}

/// The many-rows regime: gemm on each tile of widened weight columns.
pub(super) fn tiled_product<W: ColumnTiles>(x: &[f32], w: &W, m: usize, simd: Simd) -> Vec<f32> {
    let (k, n) = w.dims();
    let mut out = vec![0f32; m * n];
    let out_ptr = SharedOut(out.as_mut_ptr());
    let tiles = n.div_ceil(TILE_COLUMNS);
    (0..tiles).into_par_iter().for_each_init(
        || vec![0f32; k * TILE_COLUMNS],
        |buf, tile| {
            let c0 = tile * TILE_COLUMNS;
            let cols = TILE_COLUMNS.min(n - c0);
            let (rhs_cs, rhs_rs) = w.widen_columns(c0, cols, buf, simd);
            // SAFETY: every tile writes only its own columns `c0..c0 + cols` of `out`
            // (an `m x n` row-major buffer that outlives the loop); `x` holds `m x k`
            // values and `buf` at least `k x cols`, laid out as the strides say.
            unsafe {
                gemm::gemm(
                    m,
                    cols,
                    k,
                    out_ptr.at(c0),
                    1,
                    n as isize,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    buf.as_ptr(),
                    rhs_cs,
                    rhs_rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    out
}

/// The output buffer, shared by tiles that write disjoint columns.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);
// SAFETY: tiles write disjoint columns (see `tiled_product`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(super) fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers pass an offset inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// A weight value the kernels read as bf16: bf16 as it is, f32 rounded to nearest, ties to
/// even (NaN stays NaN), as PyTorch rounds to bf16.
pub(super) trait Bf16Bits: Copy + Sync {
    fn bf16_bits(self) -> u16;

    /// The value as the kernels multiply it, in f32. bf16 to f32 is exact: bf16 is the top
    /// half of an f32.
    #[inline(always)]
    fn widened(self) -> f32 {
        f32::from_bits((self.bf16_bits() as u32) << 16)
    }
}

impl Bf16Bits for bf16 {
    #[inline(always)]
    fn bf16_bits(self) -> u16 {
        self.to_bits()
    }
}

impl Bf16Bits for f32 {
    #[inline(always)]
    fn bf16_bits(self) -> u16 {
        bf16::from_f32(self).to_bits()
    }
}

/// The instruction set the loops are compiled for, chosen once per product.
#[derive(Clone, Copy)]
pub(super) enum Simd {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Simd {
    pub(super) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Simd::Avx2Fma;
        }
        Simd::Baseline
    }

    fn dot<T: Bf16Bits>(self, w: &[T], x: &[f32]) -> f32 {
        match self {
            Simd::Baseline => dot_lanes::<false, T>(w, x),
            // SAFETY: the CPU has AVX2 and FMA (checked in `detect`).
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Fma => unsafe { dot_avx2(w, x) },
        }
    }

    fn widen<T: Bf16Bits>(self, src: &[T], dst: &mut [f32]) {
        match self {
            Simd::Baseline => widen_all(src, dst),
            // SAFETY: the CPU has AVX2 (checked in `detect`).
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2Fma => unsafe { widen_avx2(src, dst) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2<T: Bf16Bits>(w: &[T], x: &[f32]) -> f32 {
    dot_lanes::<true, T>(w, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn widen_avx2<T: Bf16Bits>(src: &[T], dst: &mut [f32]) {
    widen_all(src, dst)
}

#[inline(always)]
fn widen_all<T: Bf16Bits>(src: &[T], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.widened();
    }
}

/// A dot product in 16 independent f32 lanes, which the compiler turns into vector
/// instructions (fused multiply-adds when `FMA`, which is only set where the CPU has them:
/// elsewhere `mul_add` would be a slow library call).
#[inline(always)]
fn dot_lanes<const FMA: bool, T: Bf16Bits>(w: &[T], x: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (w_chunks, x_chunks) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let (w_rest, x_rest) = (w_chunks.remainder(), x_chunks.remainder());
    for (wc, xc) in w_chunks.zip(x_chunks) {
        for i in 0..LANES {
            acc[i] = if FMA {
                wc[i].widened().mul_add(xc[i], acc[i])
            } else {
                acc[i] + wc[i].widened() * xc[i]
            };
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (&wv, &xv) in w_rest.iter().zip(x_rest) {
        sum += wv.widened() * xv;
    }
    sum
}

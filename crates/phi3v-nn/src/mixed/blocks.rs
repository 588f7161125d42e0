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
//! (`[in, out]`) tensor with one f32 scale per block of 32 consecutive values along `n`,
//! and a value is `q * scale`, as burn dequantizes symmetric blocks. The values are either
//! burn-flex's own, one `i8` each (q8), or packed two 4-bit values to a byte (q4, see
//! [`pack`]). Any other layout or scheme of unpacked values falls back to burn's product.
//!
//! burn-flex 0.21 quantizes and stores q4 unpacked, one byte per 4-bit value, so a q4 base
//! took as much memory as a q8 one (4.8 GB at full size). [`pack`] stores it in burn's own
//! `PackedU32` byte layout instead, which the CubeCL backends use, and only this module
//! reads it: burn-flex's ops (`dequantize`, `into_data`) expect unpacked values.

use burn::backend::Flex;
use burn::tensor::quantization::{
    QTensorPrimitive, QuantLevel, QuantScheme, QuantStore, QuantValue,
};
use burn::tensor::{Bytes, DType, Tensor, TensorPrimitive};
use burn_flex::{FlexQTensor, FlexTensor, Layout};

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
            let mut unpacked = [0i8; SWEEP_COLUMNS];
            for r in 0..k {
                let start = r * n + c0;
                let values = w.values.read(start, &mut unpacked[..cols], simd);
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

/// The scheme a packed weight declares: burn's `PackedU32` along the last dimension, whose
/// little-endian bytes hold two values each, the first in the low nibble.
const PACKED: QuantStore = QuantStore::PackedU32(0);

/// A q4 weight from burn-flex's quantizer (one `i8` per value) with its values packed two
/// to a byte, as burn packs them into `u32` words: about 0.63 bytes per value with the
/// scales, against 1.13 unpacked. Any other weight is returned as it is.
///
/// # Shapes
/// - `w`: `[k, n]`; returns `[k, n]`
pub(super) fn pack(w: Tensor<Flex, 2>) -> Tensor<Flex, 2> {
    let TensorPrimitive::QFloat(q) = w.into_primitive() else {
        unreachable!("the caller checked that the weight is quantized")
    };
    let packable = q.scheme().value == QuantValue::Q4S;
    let view = BlockView::new(&q, false).filter(|_| packable);
    let Some(BlockView {
        values: Values::Bytes(values),
        ..
    }) = view
    else {
        return Tensor::from_primitive(TensorPrimitive::QFloat(q));
    };
    // Both values of a byte lie in one block, as blocks hold an even count.
    let packed: Vec<i8> = values
        .par_chunks(2 * PACK_CHUNK)
        .flat_map_iter(|chunk| {
            chunk
                .chunks_exact(2)
                .map(|pair| ((pair[0] as u8 & 0x0f) | ((pair[1] as u8) << 4)) as i8)
        })
        .collect();
    let shape = q.tensor().layout().shape().clone();
    let tensor = FlexTensor::new(
        Bytes::from_elems(packed),
        Layout::contiguous(shape),
        DType::I8,
    );
    let packed = FlexQTensor::new(tensor, q.scheme().with_store(PACKED), q.scales().to_vec());
    Tensor::from_primitive(TensorPrimitive::QFloat(packed))
}

/// Value pairs packed per rayon task.
const PACK_CHUNK: usize = 1 << 16;

/// `w` quantized into `scheme` by burn's own quantizer, and packed where [`pack`] packs.
///
/// burn-flex quantizes on one core, after a contiguous copy of the whole (transposed)
/// weight. A block of the loader's layout never crosses a row, so quantizing chunks of
/// rows gives the same values and scales: each rayon task copies, quantizes and packs
/// about [`QUANTIZE_CHUNK`] values, and the parts are joined.
///
/// # Shapes
/// - `w`: `[k, n]`, any strides; returns `[k, n]`
pub(super) fn quantize(w: Tensor<Flex, 2>, scheme: &QuantScheme) -> Tensor<Flex, 2> {
    let [k, n] = w.dims();
    if scheme.level != QuantLevel::block([BLOCK as u8]) || !n.is_multiple_of(BLOCK) || k == 0 {
        // Not the loader's layout: burn's quantizer whole, which `pack` would leave as is.
        return w.quantize_dynamic(scheme);
    }
    let rows = (QUANTIZE_CHUNK / n).max(1);
    let starts: Vec<usize> = (0..k).step_by(rows).collect();
    let parts: Vec<FlexQTensor> = starts
        .into_par_iter()
        .map(|r0| {
            let chunk = w.clone().slice([r0..(r0 + rows).min(k), 0..n]);
            match pack(chunk.quantize_dynamic(scheme)).into_primitive() {
                TensorPrimitive::QFloat(q) => q,
                TensorPrimitive::Float(_) => unreachable!("burn quantized the chunk"),
            }
        })
        .collect();
    let store = parts[0].scheme().store;
    // Bytes, whether they hold `i8` values or nibble pairs: the dtype below says `I8`.
    let mut values = Vec::<u8>::with_capacity(parts.iter().map(|q| q.tensor().bytes().len()).sum());
    let mut scales = Vec::with_capacity(k * n / BLOCK);
    for q in &parts {
        values.extend_from_slice(q.tensor().bytes());
        scales.extend_from_slice(q.scales());
    }
    let tensor = FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous([k, n].into()),
        DType::I8,
    );
    let joined = FlexQTensor::new(tensor, scheme.with_store(store), scales);
    Tensor::from_primitive(TensorPrimitive::QFloat(joined))
}

/// Values quantized per rayon task: a few hundred KB of f32, so that each task's copy and
/// blocks stay in its core's cache.
const QUANTIZE_CHUNK: usize = 1 << 16;

/// `w` dequantized to f32, all cores, or `None` when its layout is not the loader's (then
/// burn's `dequantize` reads it).
///
/// # Shapes
/// - `w`: `[k, n]`; returns `[k, n]`
pub(super) fn dequantized(w: &Tensor<Flex, 2>) -> Option<Tensor<Flex, 2>> {
    let TensorPrimitive::QFloat(q) = w.clone().into_primitive() else {
        return None;
    };
    let view = BlockView::new(&q, false)?;
    let (k, n) = (view.rows, view.cols);
    let simd = Simd::detect();
    let mut out = vec![0f32; k * n];
    out.par_chunks_mut(n)
        .enumerate()
        .for_each(|(r, row)| view.dequantize(r * n, row, simd));
    Some(tensor(out, k, n))
}

/// The stored values of a quantized weight, flat in its `[rows, cols]` order.
#[derive(Clone, Copy)]
enum Values<'a> {
    /// One `i8` per value: burn-flex's own layout (q8).
    Bytes(&'a [i8]),
    /// Two 4-bit values per byte, the first in the low nibble (q4, see [`pack`]).
    Nibbles(&'a [u8]),
}

impl<'a> Values<'a> {
    /// The `buf.len()` values from flat position `start` (even): borrowed where they are
    /// stored one per byte, unpacked into `buf` where they are packed.
    #[inline(always)]
    fn read<'b>(&self, start: usize, buf: &'b mut [i8], simd: Simd) -> &'b [i8]
    where
        'a: 'b,
    {
        match *self {
            Values::Bytes(values) => &values[start..start + buf.len()],
            Values::Nibbles(bytes) => {
                let bytes = &bytes[start / 2..(start + buf.len()) / 2];
                match simd {
                    Simd::Baseline => unpack(bytes, buf),
                    // SAFETY: the CPU has AVX2 (checked in `Simd::detect`).
                    #[cfg(target_arch = "x86_64")]
                    Simd::Avx2Fma => unsafe { unpack_avx2(bytes, buf) },
                }
                buf
            }
        }
    }
}

/// The loop compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn unpack_avx2(bytes: &[u8], out: &mut [i8]) {
    unpack(bytes, out)
}

/// `out[2i]` and `out[2i + 1]`: the low and high nibble of `bytes[i]`, sign-extended (each
/// shifted to the top of a byte, then arithmetically back).
#[inline(always)]
fn unpack(bytes: &[u8], out: &mut [i8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = ((b << 4) as i8) >> 4;
        pair[1] = (b as i8) >> 4;
    }
}

/// A quantized `[rows, cols]` weight read as the `[k, n]` matrix of a product: itself, or
/// its transpose (`k = cols`, `n = rows`) for the gradient `dy w^T`.
struct BlockView<'a> {
    values: Values<'a>,
    scales: &'a [f32],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<'a> BlockView<'a> {
    /// The view of `q`, or `None` when its layout or scheme is not the loader's.
    ///
    /// # Panics
    /// When `q` is packed ([`pack`]) but not in the layout `pack` makes: no other reader
    /// could read it.
    fn new(q: &'a FlexQTensor, transposed: bool) -> Option<Self> {
        let scheme = q.scheme();
        let t = q.tensor();
        let shape = t.layout().shape();
        let packed = scheme.store == PACKED && scheme.value == QuantValue::Q4S;
        let loader_layout = scheme.level == QuantLevel::block([BLOCK as u8])
            && shape.num_dims() == 2
            && t.is_contiguous()
            && t.layout().start_offset() == 0
            && shape[1].is_multiple_of(BLOCK);
        if !loader_layout {
            assert!(
                !packed,
                "a packed q4 weight must be contiguous [k, n] with blocks of {BLOCK} along n"
            );
            return None;
        }
        let (rows, cols) = (shape[0], shape[1]);
        let values = if packed {
            Values::Nibbles(&t.bytes()[..rows * cols / 2])
        } else if scheme.store == QuantStore::Native {
            Values::Bytes(&t.storage::<i8>()[..rows * cols])
        } else {
            return None;
        };
        Some(Self {
            values,
            scales: &q.scales()[..rows * cols / BLOCK],
            rows,
            cols,
            transposed,
        })
    }

    /// Dequantizes `dst.len()` values from flat position `start` (a multiple of the block)
    /// into `dst`, unpacking (when packed) a stack buffer's worth of values at a time.
    fn dequantize(&self, start: usize, dst: &mut [f32], simd: Simd) {
        let mut unpacked = [0i8; SWEEP_COLUMNS];
        for (i, dst) in dst.chunks_mut(SWEEP_COLUMNS).enumerate() {
            let at = start + i * SWEEP_COLUMNS;
            let src = self.values.read(at, &mut unpacked[..dst.len()], simd);
            let scales = &self.scales[at / BLOCK..];
            match simd {
                Simd::Baseline => dequantize_blocks(src, scales, dst),
                // SAFETY: the CPU has AVX2 (checked in `Simd::detect`).
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2Fma => unsafe { dequantize_avx2(src, scales, dst) },
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::quantization::QuantizedBytes;
    use burn::tensor::Distribution;

    /// A packed q4 weight holds burn's `PackedU32` layout, half a byte per value: burn's own
    /// unpacking gives back the values and scales its quantizer made.
    #[test]
    fn packed_q4_is_burns_packed_layout() {
        let device = Default::default();
        let scheme = crate::BaseDtype::Q4
            .resolve::<Flex>(&device)
            .unwrap()
            .quantization
            .unwrap();
        let (k, n) = (6, 96);
        let unpacked = Tensor::<Flex, 2>::random([k, n], Distribution::Normal(0.0, 1.0), &device)
            .quantize_dynamic(&scheme);
        let data = unpacked.clone().into_data();
        let burn::tensor::DType::QFloat(native) = data.dtype else {
            panic!("quantized data")
        };
        let (values, qparams) = QuantizedBytes {
            bytes: data.bytes,
            scheme: native,
            num_elements: k * n,
        }
        .into_vec_i8();
        assert!(values.iter().any(|&v| v < 0) && values.iter().all(|&v| (-8..=7).contains(&v)));

        let TensorPrimitive::QFloat(q) = pack(unpacked).into_primitive() else {
            panic!("packing keeps the weight quantized")
        };
        assert_eq!(q.scheme().store, QuantStore::PackedU32(0));
        assert_eq!(q.tensor().layout().shape().dims::<2>(), [k, n]);
        let stored = q.tensor().bytes();
        assert_eq!(stored.len(), k * n / 2);
        let mut bytes = stored.to_vec();
        bytes.extend(q.scales().iter().flat_map(|s| s.to_le_bytes()));
        let (repacked, requantized) = QuantizedBytes {
            bytes: Bytes::from_bytes_vec(bytes),
            scheme: *q.scheme(),
            num_elements: k * n,
        }
        .into_vec_i8();
        assert_eq!(repacked, values);
        assert_eq!(requantized.scales, qparams.scales);
    }

    /// Quantizing row chunks on all cores gives what burn's quantizer gives the whole weight
    /// (then packed), over several chunks of a transposed view, as the loader quantizes.
    #[test]
    fn chunked_quantization_is_burns() {
        let device = Default::default();
        let (k, n) = (1500, 96);
        assert!(k * n > 2 * QUANTIZE_CHUNK, "several chunks");
        for base in [crate::BaseDtype::Q8, crate::BaseDtype::Q4] {
            let scheme = base.resolve::<Flex>(&device).unwrap().quantization.unwrap();
            let float = Tensor::<Flex, 2>::random([n, k], Distribution::Normal(0.0, 1.0), &device)
                .transpose();
            let parts = |w: Tensor<Flex, 2>| match w.into_primitive() {
                TensorPrimitive::QFloat(q) => (
                    *q.scheme(),
                    q.tensor().bytes().to_vec(),
                    q.scales().to_vec(),
                ),
                TensorPrimitive::Float(_) => panic!("quantized"),
            };
            let whole = parts(pack(float.clone().quantize_dynamic(&scheme)));
            let chunked = parts(quantize(float, &scheme));
            assert!(whole == chunked, "{base:?}: chunked quantization differs");
        }
    }

    /// Packing leaves q8 weights, and layouts its kernels cannot read, as they are.
    #[test]
    fn only_q4_in_the_loader_layout_is_packed() {
        let device = Default::default();
        for (base, n) in [(crate::BaseDtype::Q8, 64), (crate::BaseDtype::Q4, 48)] {
            let scheme = base.resolve::<Flex>(&device).unwrap().quantization.unwrap();
            let w = Tensor::<Flex, 2>::ones([4, n], &device).quantize_dynamic(&scheme);
            let TensorPrimitive::QFloat(q) = pack(w).into_primitive() else {
                panic!("packing keeps the weight quantized")
            };
            assert_eq!(q.scheme().store, QuantStore::Native, "{base:?}, width {n}");
        }
    }
}

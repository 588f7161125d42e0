//! The global view: `torch.nn.functional.interpolate(hd, size=(S, S), mode="bicubic")` on the
//! normalised HD tensor, reproduced operation for operation.
//!
//! PyTorch's CPU kernel (`upsample_bicubic2d`, `align_corners=False`, no antialias) works in
//! `f32` for `f32` input:
//!
//! - `scale = in_size as f32 / out_size as f32`, source coordinate
//!   `real = scale * (i + 0.5) - 0.5` (not clamped at 0 for cubic),
//!   `idx = min(floor(real), in_size - 1)`, `t = clamp(real - idx, 0, 1)`;
//! - Keys' cubic weights with `A = -0.75` for taps `idx - 1 ..= idx + 2`, each tap index
//!   clamped to the image (border replication);
//! - `out = sum_j wy[j] * (sum_i wx[i] * in[y_j][x_i])`: the inner (width) sum first.
//!
//! Since the HD size is a multiple of the output size, `scale` is an integer and the weights
//! are exact dyadic numbers, so the only rounding is in the sums. PyTorch's x86-64 build
//! (GCC, which contracts `a*b + c` into fused multiply-adds) evaluates each 4-tap sum as
//! `fma(x3, w3, fma(x2, w2, fma(x0, w0, x1 * w1)))`; this was found by probing torch 2.15
//! (AVX512 kernels) and reproduces its output bit for bit. We evaluate the sums the same way,
//! with hardware FMA when the CPU has it and `f32::mul_add` (correctly rounded in software)
//! otherwise, so the result is the same on every machine. Other PyTorch builds may round the
//! sums differently, by at most a few ulps.
//!
//! A horizontal pass per source row is shared by all output rows that read it, which gives
//! the same values as PyTorch's per-pixel nesting.

/// Four taps of the cubic filter for one output index.
#[derive(Clone, Copy, Debug)]
struct Taps {
    idx: [usize; 4],
    w: [f32; 4],
}

fn cubic_convolution1(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

fn cubic_convolution2(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

fn taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    const A: f32 = -0.75;
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let idx = (real.floor() as i64).min(in_size as i64 - 1);
            let t = (real - idx as f32).clamp(0.0, 1.0);
            let x2 = 1.0 - t;
            let w = [
                cubic_convolution2(t + 1.0, A),
                cubic_convolution1(t, A),
                cubic_convolution1(x2, A),
                cubic_convolution2(x2 + 1.0, A),
            ];
            let mut ids = [0usize; 4];
            for (j, id) in ids.iter_mut().enumerate() {
                *id = (idx - 1 + j as i64).clamp(0, in_size as i64 - 1) as usize;
            }
            Taps { idx: ids, w }
        })
        .collect()
}

/// Bicubic resize of the normalised HD image to `out x out`, written as `[3, out, out]` into
/// `dst`.
///
/// The HD image is given as packed `u8` RGB (`width x height`) plus the per-channel
/// normalisation table (`lut[c][v]` = normalised value of `v` in channel `c`), which is exactly
/// the `f32` tensor the reference interpolates, without materialising it.
pub(crate) fn global_view(
    hd: &[u8],
    width: usize,
    height: usize,
    lut: &[[f32; 256]; 3],
    out: usize,
    dst: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports FMA, checked just above.
        unsafe { global_view_fma(hd, width, height, lut, out, dst) };
        return;
    }
    global_view_impl(hd, width, height, lut, out, dst);
}

/// [`global_view_impl`] compiled with FMA instructions, so `mul_add` is one instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn global_view_fma(
    hd: &[u8],
    width: usize,
    height: usize,
    lut: &[[f32; 256]; 3],
    out: usize,
    dst: &mut [f32],
) {
    global_view_impl(hd, width, height, lut, out, dst);
}

/// PyTorch's evaluation order of a 4-tap sum (see the module docs).
#[inline(always)]
fn sum4(x: [f32; 4], w: [f32; 4]) -> f32 {
    let acc = x[1] * w[1];
    let acc = x[0].mul_add(w[0], acc);
    let acc = x[2].mul_add(w[2], acc);
    x[3].mul_add(w[3], acc)
}

#[inline(always)]
fn global_view_impl(
    hd: &[u8],
    width: usize,
    height: usize,
    lut: &[[f32; 256]; 3],
    out: usize,
    dst: &mut [f32],
) {
    assert_eq!(dst.len(), 3 * out * out);
    let tx = taps(width, out);
    let ty = taps(height, out);
    // Which source rows are read, and their slot in the horizontal-pass buffer.
    let mut slot = vec![usize::MAX; height];
    let mut rows = Vec::new();
    for t in &ty {
        for &y in &t.idx {
            if slot[y] == usize::MAX {
                slot[y] = rows.len();
                rows.push(y);
            }
        }
    }
    // Horizontal pass: tmp[slot][c][ox].
    let mut tmp = vec![0f32; rows.len() * 3 * out];
    for (s, &y) in rows.iter().enumerate() {
        let row = &hd[y * width * 3..(y + 1) * width * 3];
        let buf = &mut tmp[s * 3 * out..(s + 1) * 3 * out];
        for (c, lut_c) in lut.iter().enumerate() {
            let bufc = &mut buf[c * out..(c + 1) * out];
            for (o, t) in bufc.iter_mut().zip(&tx) {
                let v = |j: usize| lut_c[row[t.idx[j] * 3 + c] as usize];
                *o = sum4([v(0), v(1), v(2), v(3)], t.w);
            }
        }
    }
    // Vertical pass.
    for c in 0..3 {
        let dst_c = &mut dst[c * out * out..(c + 1) * out * out];
        for (oy, t) in ty.iter().enumerate() {
            let r = |j: usize| {
                let s = slot[t.idx[j]];
                &tmp[s * 3 * out + c * out..s * 3 * out + (c + 1) * out]
            };
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            let dst_row = &mut dst_c[oy * out..(oy + 1) * out];
            for (ox, d) in dst_row.iter_mut().enumerate() {
                *d = sum4([r0[ox], r1[ox], r2[ox], r3[ox]], t.w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_scales_give_exact_dyadic_weights() {
        // scale 4 and 2: t = 0.5; scale 3 and 1: t = 0 (pure sampling)
        for (i, o) in [(1344, 336), (672, 336)] {
            for t in taps(i, o) {
                assert_eq!(t.w, [-0.09375, 0.59375, 0.59375, -0.09375]);
            }
        }
        for (i, o) in [(1008, 336), (336, 336)] {
            for t in taps(i, o) {
                assert_eq!(t.w, [0.0, 1.0, 0.0, 0.0]);
            }
        }
    }

    #[test]
    fn fma_and_portable_paths_agree() {
        let (w, h, out) = (24usize, 16usize, 8usize);
        let hd: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
        let mut lut = [[0f32; 256]; 3];
        for (c, t) in lut.iter_mut().enumerate() {
            for (v, x) in t.iter_mut().enumerate() {
                *x = (v as f32 / 255.0 - 0.4) / (0.26 + c as f32 * 0.01);
            }
        }
        let mut a = vec![0f32; 3 * out * out];
        let mut b = vec![0f32; 3 * out * out];
        global_view(&hd, w, h, &lut, out, &mut a);
        global_view_impl(&hd, w, h, &lut, out, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn border_taps_are_clamped() {
        let t = taps(672, 336);
        assert_eq!(t[0].idx, [0, 0, 1, 2]);
        assert_eq!(t[335].idx, [669, 670, 671, 671]);
    }
}

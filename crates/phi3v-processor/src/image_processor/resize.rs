//! PIL's bilinear resize (`Image.resize(size, Image.BILINEAR)`) for 8-bit RGB, bit for bit.
//!
//! The `image` crate's resize is a different algorithm, so this is a re-implementation of the
//! behaviour of Pillow's `libImaging/Resample.c`:
//!
//! - The filter is a triangle of support 1, **stretched by the downscale factor** when
//!   shrinking (antialiasing): `support = max(in/out, 1)`.
//! - For each output index, the window of input indices is
//!   `[trunc(center - support + 0.5), trunc(center + support + 0.5))` clamped to the image,
//!   with `center = (i + 0.5) * in/out`; weights `tri((j - center + 0.5) / filterscale)` are
//!   normalised to sum 1 in `f64`, then turned into fixed point with 22 fractional bits
//!   (`PRECISION_BITS = 32 - 8 - 2`), rounding half away from zero.
//! - Two separable passes with an 8-bit intermediate. Each pass starts its accumulator at
//!   `1 << 21` (rounding), shifts right by 22 and clamps to `0..=255`. A pass whose size does
//!   not change is skipped.
//! - Pass order: normally the **horizontal pass first**, over only the input rows that the
//!   vertical pass will read, then the vertical pass. Pillow 13 runs the vertical pass first
//!   when the height shrinks by more than twice as many pixels as the width
//!   (`new_h < h && h - new_h > 2 * (w - new_w)`); this rule was measured on Pillow 13.0.0
//!   (3,300 random size pairs, no exception), older Pillow always goes horizontal first. The
//!   order changes the result by one level in places because of the 8-bit intermediate. The
//!   HD transform never meets the vertical-first case (it preserves the aspect ratio of an
//!   image that is at least as wide as tall), so its output is the same under both versions.
//!
//! Because the arithmetic is integer, the order of the sums does not matter, which lets the
//! vertical pass run row-wise over contiguous memory.

const PRECISION_BITS: u32 = 32 - 8 - 2;
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Fixed-point resampling weights along one axis.
struct Coefficients {
    /// Maximum taps per output index (stride of `weights`).
    ksize: usize,
    /// Per output index: (first input index, number of taps).
    bounds: Vec<(usize, usize)>,
    /// `out_size * ksize` weights, with 22 fractional bits.
    weights: Vec<i32>,
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Weights for resampling `in_size` samples (the box `0..in_size`) to `out_size` samples.
fn precompute(in_size: usize, out_size: usize) -> Coefficients {
    const SUPPORT: f64 = 1.0; // bilinear
    let in0 = 0.0f64;
    // Pillow computes `(double)(in1 - in0) / outSize` with float box edges; exact for the sizes
    // an image can have.
    let scale = (in_size as f32 - in0 as f32) as f64 / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_filterscale = 1.0 / filterscale;

    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        // C casts to int, truncating toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let taps = (xmax - xmin).max(0) as usize;
        let mut ww = 0.0f64;
        for (x, kx) in k.iter_mut().enumerate().take(taps) {
            let w = bilinear_filter(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..xx * ksize + taps];
        for (dst, &w) in row.iter_mut().zip(&k[..taps]) {
            let w = if ww != 0.0 { w / ww } else { w };
            let scaled = w * (1u32 << PRECISION_BITS) as f64;
            *dst = if w < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        bounds.push((xmin as usize, taps));
    }
    Coefficients {
        ksize,
        bounds,
        weights,
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Which of the two separable passes runs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PassOrder {
    /// Horizontal, then vertical: what PIL does (nearly always, see the module docs).
    HorizontalFirst,
    /// Vertical, then horizontal: PIL's order on the transposed image, seen from the
    /// original orientation, and Pillow 13's order when the height shrinks a lot.
    VerticalFirst,
}

/// Resizes a packed 8-bit RGB image (`width * height * 3` bytes, row-major, no padding) to
/// `new_width x new_height` exactly as PIL's `Image.resize((new_width, new_height),
/// Image.BILINEAR)` does on an `RGB` image (Pillow 13's pass order; see the module docs for
/// the one case where older Pillow differs).
///
/// Returns the packed RGB bytes of the result. Sizes must be non-zero.
///
/// # Panics
/// If a size is zero or `src` is not `width * height * 3` bytes long.
pub fn resize_bilinear_rgb8(
    src: &[u8],
    width: usize,
    height: usize,
    new_width: usize,
    new_height: usize,
) -> Vec<u8> {
    let order = if vertical_first(width, height, new_width, new_height) {
        PassOrder::VerticalFirst
    } else {
        PassOrder::HorizontalFirst
    };
    let mut out = vec![0u8; new_width * new_height * 3];
    let mut rows = RowsMut {
        buf: &mut out,
        stride: new_width * 3,
        offset: 0,
    };
    resize_rgb8_into(
        src,
        (width, height),
        (new_width, new_height),
        order,
        &mut rows,
    );
    out
}

/// Pillow 13's choice of running the vertical pass first (see the module docs).
pub(crate) fn vertical_first(
    width: usize,
    height: usize,
    new_width: usize,
    new_height: usize,
) -> bool {
    let (w, h, nw, nh) = (
        width as i64,
        height as i64,
        new_width as i64,
        new_height as i64,
    );
    nh < h && h - nh > 2 * (w - nw)
}

/// Where a pass writes its rows: row `i` (of `row_len` bytes) starts at byte
/// `offset + i * stride` of `buf`. Lets the last pass write straight into a padded canvas.
pub(crate) struct RowsMut<'a> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) stride: usize,
    pub(crate) offset: usize,
}

impl RowsMut<'_> {
    fn row(&mut self, i: usize, row_len: usize) -> &mut [u8] {
        let start = self.offset + i * self.stride;
        &mut self.buf[start..start + row_len]
    }
}

/// [`resize_bilinear_rgb8`] with an explicit pass order, writing the `new_height` rows of
/// `new_width * 3` bytes into `dst`.
///
/// Resizing a transposed image horizontal-first and transposing back gives exactly
/// `VerticalFirst` on the original (same weights, same 8-bit intermediate), which is how
/// the HD transform handles portrait images without transposing pixels.
pub(crate) fn resize_rgb8_into(
    src: &[u8],
    (width, height): (usize, usize),
    (new_width, new_height): (usize, usize),
    order: PassOrder,
    dst: &mut RowsMut<'_>,
) {
    assert!(width > 0 && height > 0 && new_width > 0 && new_height > 0);
    assert_eq!(src.len(), width * height * 3, "RGB buffer size");
    let need_horizontal = new_width != width;
    let need_vertical = new_height != height;
    match (need_horizontal, need_vertical) {
        (false, false) => {
            for (y, row) in src.chunks_exact(width * 3).enumerate() {
                dst.row(y, width * 3).copy_from_slice(row);
            }
        }
        (true, false) => {
            let horiz = precompute(width, new_width);
            horizontal_pass(src, width, 0, 0..height, &horiz, dst);
        }
        (false, true) => {
            let vert = precompute(height, new_height);
            vertical_pass(src, width, 0..width, 0, &vert, dst);
        }
        (true, true) => {
            let horiz = precompute(width, new_width);
            let vert = precompute(height, new_height);
            match order {
                PassOrder::HorizontalFirst => {
                    // Only the input rows the vertical pass reads (as Pillow does).
                    let rows = vert.span();
                    let first = rows.start;
                    let stride = new_width * 3;
                    let mut tmp = vec![0u8; rows.len() * stride];
                    let mut tmp_rows = RowsMut {
                        buf: &mut tmp,
                        stride,
                        offset: 0,
                    };
                    horizontal_pass(src, width, 0, rows, &horiz, &mut tmp_rows);
                    vertical_pass(&tmp, new_width, 0..new_width, first, &vert, dst);
                }
                PassOrder::VerticalFirst => {
                    // Only the input columns the horizontal pass reads.
                    let cols = horiz.span();
                    let (first, tmp_width) = (cols.start, cols.len());
                    let mut tmp = vec![0u8; new_height * tmp_width * 3];
                    let mut tmp_rows = RowsMut {
                        buf: &mut tmp,
                        stride: tmp_width * 3,
                        offset: 0,
                    };
                    vertical_pass(src, width, cols, 0, &vert, &mut tmp_rows);
                    horizontal_pass(&tmp, tmp_width, first, 0..new_height, &horiz, dst);
                }
            }
        }
    }
}

impl Coefficients {
    /// The input indices read by any output index.
    fn span(&self) -> std::ops::Range<usize> {
        let first = self.bounds[0].0;
        let (last_min, last_taps) = self.bounds[self.bounds.len() - 1];
        first..last_min + last_taps
    }
}

/// Horizontal pass over the rows `rows` of `src` (`width` pixels per row), writing
/// `rows.len()` rows of `c.bounds.len()` pixels. `src` column 0 is input column `col_offset`.
fn horizontal_pass(
    src: &[u8],
    width: usize,
    col_offset: usize,
    rows: std::ops::Range<usize>,
    c: &Coefficients,
    dst: &mut RowsMut<'_>,
) {
    let row_len = c.bounds.len() * 3;
    // Each row is copied into a buffer with `ksize` zero pixels of slack, so every output
    // pixel can read a fixed `ksize` taps (the weights past `taps` are zero, and integer sums
    // do not care about extra zero terms).
    let mut padded = vec![0u8; (width + c.ksize) * 3];
    let starts: Vec<usize> = c
        .bounds
        .iter()
        .map(|&(m, _)| (m - col_offset) * 3)
        .collect();
    for (i, y) in rows.enumerate() {
        padded[..width * 3].copy_from_slice(&src[y * width * 3..(y + 1) * width * 3]);
        let out_row = dst.row(i, row_len);
        match c.ksize {
            3 => horizontal_row::<3>(&padded, out_row, &starts, &c.weights),
            5 => horizontal_row::<5>(&padded, out_row, &starts, &c.weights),
            7 => horizontal_row::<7>(&padded, out_row, &starts, &c.weights),
            _ => horizontal_row_any(&padded, out_row, &starts, &c.weights, c.ksize),
        }
    }
}

#[inline(always)]
fn horizontal_row<const K: usize>(row: &[u8], out: &mut [u8], starts: &[usize], weights: &[i32]) {
    for ((px, &start), k) in out
        .chunks_exact_mut(3)
        .zip(starts)
        .zip(weights.chunks_exact(K))
    {
        let src = &row[start..start + 3 * K];
        let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
        for t in 0..K {
            s0 += src[3 * t] as i32 * k[t];
            s1 += src[3 * t + 1] as i32 * k[t];
            s2 += src[3 * t + 2] as i32 * k[t];
        }
        px[0] = clip8(s0);
        px[1] = clip8(s1);
        px[2] = clip8(s2);
    }
}

fn horizontal_row_any(row: &[u8], out: &mut [u8], starts: &[usize], weights: &[i32], ksize: usize) {
    for ((px, &start), k) in out
        .chunks_exact_mut(3)
        .zip(starts)
        .zip(weights.chunks_exact(ksize))
    {
        let src = &row[start..start + 3 * ksize];
        let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
        for (p, &w) in src.chunks_exact(3).zip(k) {
            s0 += p[0] as i32 * w;
            s1 += p[1] as i32 * w;
            s2 += p[2] as i32 * w;
        }
        px[0] = clip8(s0);
        px[1] = clip8(s1);
        px[2] = clip8(s2);
    }
}

/// Vertical pass over the columns `cols` of `src` (`width` pixels per row), writing
/// `c.bounds.len()` rows of `cols.len()` pixels. `src` row 0 is input row `row_offset`.
fn vertical_pass(
    src: &[u8],
    width: usize,
    cols: std::ops::Range<usize>,
    row_offset: usize,
    c: &Coefficients,
    dst: &mut RowsMut<'_>,
) {
    let row_len = cols.len() * 3;
    let (lo, hi) = (cols.start * 3, cols.end * 3);
    let mut acc = vec![0i32; row_len];
    for (yy, &(ymin, taps)) in c.bounds.iter().enumerate() {
        let k = &c.weights[yy * c.ksize..yy * c.ksize + taps];
        acc.fill(HALF);
        for (t, &w) in k.iter().enumerate() {
            let y = ymin + t - row_offset;
            let in_row = &src[y * width * 3 + lo..y * width * 3 + hi];
            for (a, &v) in acc.iter_mut().zip(in_row) {
                *a += v as i32 * w;
            }
        }
        for (o, &a) in dst.row(yy, row_len).iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7) as u8).collect();
        assert_eq!(resize_bilinear_rgb8(&src, 5, 4, 5, 4), src);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![200u8; 17 * 9 * 3];
        for (w, h) in [(3, 2), (40, 30), (17, 20), (5, 9)] {
            let out = resize_bilinear_rgb8(&src, 17, 9, w, h);
            assert!(out.iter().all(|&v| v == 200), "{w}x{h}");
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(10, 3), (3, 10), (1000, 1344), (1344, 336), (7, 7)] {
            let c = precompute(i, o);
            for (xx, &(_, taps)) in c.bounds.iter().enumerate() {
                let s: i32 = c.weights[xx * c.ksize..xx * c.ksize + taps].iter().sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= taps as i32, "{i}->{o}");
            }
        }
    }
}

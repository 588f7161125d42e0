//! The geometry and the 8-bit stage of the HD transform: resize and white padding, in the
//! transposed frame for portrait images.

use image::RgbImage;

use super::resize::{resize_rgb8_into, vertical_first, PassOrder, RowsMut};
use crate::ProcessorError;

/// Where the HD transform puts an image, computed from its size alone.
///
/// Knowing the plan without touching pixels lets a dataset builder count image tokens (and so
/// sequence lengths) for a catalogue without decoding a single image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HdPlan {
    /// Whether the image is portrait (`width < height`) and is resized in the transposed frame.
    pub transposed: bool,
    /// Resize target `(width, height)` in the working frame (transposed when `transposed`).
    pub resize_to: (usize, usize),
    /// White rows added above the resized image in the working frame; the rest go below.
    pub pad_top: usize,
    /// Final padded size `[H_pad, W_pad]` in the original orientation; both are multiples of
    /// the crop size. This is the reference's `image_sizes` entry.
    pub image_size: [usize; 2],
    /// Number of crops `(rows, cols)` = `(H_pad / crop, W_pad / crop)`.
    pub crops: (usize, usize),
}

impl HdPlan {
    /// Plans the HD transform of a `width x height` image for at most `num_crops` crops of
    /// `crop_size` pixels, following the reference's `HD_transform` / `calc_hd_transform_size`.
    ///
    /// # Errors
    /// [`ProcessorError::EmptyImage`] for a zero-sized image, [`ProcessorError::DegenerateResize`] when
    /// the image is so elongated that it would be resized to zero rows (PIL refuses that too),
    /// [`ProcessorError::InvalidConfig`] for `num_crops == 0` or `crop_size == 0`.
    pub fn new(
        width: usize,
        height: usize,
        num_crops: usize,
        crop_size: usize,
    ) -> Result<Self, ProcessorError> {
        if width == 0 || height == 0 {
            return Err(ProcessorError::EmptyImage { width, height });
        }
        if num_crops == 0 || crop_size == 0 {
            return Err(ProcessorError::InvalidConfig(format!(
                "num_crops ({num_crops}) and crop_size ({crop_size}) must be positive"
            )));
        }
        let transposed = width < height;
        let (w, h) = if transposed {
            (height, width)
        } else {
            (width, height)
        };
        // Python: ratio = width / height (float), then
        // `while scale * np.ceil(scale / ratio) <= hd_num: scale += 1`, then `scale -= 1`.
        let ratio = w as f64 / h as f64;
        let mut scale = 1usize;
        while (scale as f64) * (scale as f64 / ratio).ceil() <= num_crops as f64 {
            scale += 1;
        }
        scale -= 1;
        let new_w = scale * crop_size;
        let new_h = (new_w as f64 / ratio) as usize; // int() truncates
        if new_h == 0 {
            return Err(ProcessorError::DegenerateResize {
                width,
                height,
                num_crops,
                new_width: new_w,
                new_height: new_h,
            });
        }
        let target = new_h.div_ceil(crop_size) * crop_size;
        let pad_top = (target - new_h) / 2;
        let (h_pad, w_pad) = if transposed {
            (new_w, target)
        } else {
            (target, new_w)
        };
        Ok(Self {
            transposed,
            resize_to: (new_w, new_h),
            pad_top,
            image_size: [h_pad, w_pad],
            crops: (h_pad / crop_size, w_pad / crop_size),
        })
    }
}

/// Runs the 8-bit stage of the HD transform on an RGB image: resize with PIL's bilinear
/// filter, pad with white to a multiple of the crop size, for portrait images in the
/// transposed frame, as the reference does.
///
/// Portrait images are not transposed here: PIL's horizontal-then-vertical resize of the
/// transposed image is exactly a vertical-then-horizontal resize of the original (the same
/// weights and the same 8-bit intermediate), and padding rows at the top of the transposed
/// image is padding columns at the left of the original.
///
/// The result is the image the reference normalises, of size `plan.image_size` =
/// `[H_pad, W_pad]`.
pub(crate) fn hd_image_u8(image: &RgbImage, plan: &HdPlan) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (new_w, new_h) = plan.resize_to; // working frame
    let [out_h, out_w] = plan.image_size;
    let mut out = vec![255u8; out_w * out_h * 3];
    let (new_size, order, offset) = if plan.transposed {
        // Working frame: (h x w) resized to (new_w x new_h); original frame: (w x h) resized
        // to (new_h x new_w) with the pass order swapped, placed `pad_top` columns in.
        let order = if vertical_first(h, w, new_w, new_h) {
            PassOrder::HorizontalFirst
        } else {
            PassOrder::VerticalFirst
        };
        ((new_h, new_w), order, plan.pad_top * 3)
    } else {
        let order = if vertical_first(w, h, new_w, new_h) {
            PassOrder::VerticalFirst
        } else {
            PassOrder::HorizontalFirst
        };
        ((new_w, new_h), order, plan.pad_top * out_w * 3)
    };
    let mut rows = RowsMut {
        buf: &mut out,
        stride: out_w * 3,
        offset,
    };
    resize_rgb8_into(image.as_raw(), (w, h), new_size, order, &mut rows);
    RgbImage::from_raw(out_w as u32, out_h as u32, out).expect("sized from the plan")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_image_gets_four_by_four() {
        let p = HdPlan::new(1000, 1000, 16, 336).unwrap();
        assert_eq!(p.image_size, [1344, 1344]);
        assert_eq!(p.crops, (4, 4));
        assert!(!p.transposed);
    }

    #[test]
    fn portrait_is_planned_transposed() {
        let p = HdPlan::new(800, 1000, 16, 336).unwrap();
        assert!(p.transposed);
        assert_eq!(p.resize_to, (1344, 1075));
        assert_eq!(p.image_size, [1344, 1344]);
        let q = HdPlan::new(1000, 800, 16, 336).unwrap();
        assert_eq!(q.image_size, [1344, 1344]);
        assert_eq!(q.pad_top, (1344 - 1075) / 2);
    }

    #[test]
    fn very_wide_image() {
        let p = HdPlan::new(4000, 400, 16, 336).unwrap();
        assert_eq!(p.resize_to, (3360, 336));
        assert_eq!(p.crops, (1, 10));
        assert!(matches!(
            HdPlan::new(100_000, 1, 16, 336),
            Err(ProcessorError::DegenerateResize { .. })
        ));
    }

    #[test]
    fn hd_resizes_never_take_pillow13_vertical_first_path() {
        // So the HD image is the same under Pillow 13 and older Pillow (see resize.rs).
        for num_crops in [1, 4, 9, 16, 25] {
            for w in (1..4000).step_by(7) {
                for h in (1..4000).step_by(13) {
                    let p = HdPlan::new(w, h, num_crops, 336);
                    let Ok(p) = p else { continue };
                    let (sw, sh) = if p.transposed { (h, w) } else { (w, h) };
                    let (nw, nh) = p.resize_to;
                    let both = nw != sw && nh != sh;
                    assert!(
                        !(both && vertical_first(sw, sh, nw, nh)),
                        "{w}x{h} nc {num_crops}"
                    );
                }
            }
        }
    }
}

//! Conversion of decoded images to 8-bit RGB, the way PIL's `Image.convert("RGB")` does it.
//!
//! The reference opens files with PIL and calls `convert("RGB")`. The `image` crate decodes the
//! same files into different pixel types, so each type is mapped to what PIL would produce for
//! the same file:
//!
//! | decoded as | PIL mode | PIL `convert("RGB")` | here |
//! |---|---|---|---|
//! | `Luma8` (8-bit gray, or 1/2/4-bit gray expanded) | `L` / `1` | replicate | replicate |
//! | `LumaA8` | `LA` | replicate L, drop A | same |
//! | `Rgb8`, palette without transparency | `RGB` / `P` | as is / palette lookup | as is |
//! | `Rgba8`, palette with transparency | `RGBA` / `P` | **drop** alpha (no compositing) | same |
//! | `Luma16` (16-bit gray PNG) | `I;16` | **clip**: `v > 255 ? 255 : v` | same |
//! | `LumaA16` (16-bit gray+alpha PNG) | `RGBA` (`LA;16B`) | high byte, drop A | same |
//! | `Rgb16`, `Rgba16` (16-bit colour PNG) | `RGB` / `RGBA` (`;16B`) | high byte `v >> 8` | same |
//!
//! The 16-bit rules look odd (a 16-bit gray photo becomes almost white) but they are what the
//! reference feeds the model, so they are what we reproduce. Known gap: a 16-bit gray PNG with
//! a `tRNS` chunk is `I;16` in PIL (clip) but `LumaA16` here (high byte). JPEG files arrive
//! as `Luma8` or `Rgb8` with PIL's pixels already (CMYK JPEGs converted by Pillow's formula in
//! the `jpeg` module).

use image::{DynamicImage, RgbImage};

use crate::ProcessorError;

/// Converts any decoded image to 8-bit RGB exactly as PIL's `convert("RGB")` would convert the
/// same file (see the module docs for the per-format rules).
///
/// # Errors
/// [`ProcessorError::UnsupportedPixelFormat`] for float images, which PIL does not open as RGB.
pub fn to_rgb8(image: &DynamicImage) -> Result<RgbImage, ProcessorError> {
    let (w, h) = (image.width(), image.height());
    let n = w as usize * h as usize;
    let mut out = Vec::with_capacity(n * 3);
    match image {
        DynamicImage::ImageRgb8(img) => return Ok(img.clone()),
        DynamicImage::ImageRgba8(img) => {
            for p in img.as_raw().chunks_exact(4) {
                out.extend_from_slice(&p[..3]);
            }
        }
        DynamicImage::ImageLuma8(img) => {
            for &v in img.as_raw() {
                out.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageLumaA8(img) => {
            for p in img.as_raw().chunks_exact(2) {
                out.extend_from_slice(&[p[0], p[0], p[0]]);
            }
        }
        DynamicImage::ImageLuma16(img) => {
            for &v in img.as_raw() {
                let v = v.min(255) as u8;
                out.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageLumaA16(img) => {
            for p in img.as_raw().chunks_exact(2) {
                let v = (p[0] >> 8) as u8;
                out.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageRgb16(img) => {
            out.extend(img.as_raw().iter().map(|&v| (v >> 8) as u8));
        }
        DynamicImage::ImageRgba16(img) => {
            for p in img.as_raw().chunks_exact(4) {
                out.extend(p[..3].iter().map(|&v| (v >> 8) as u8));
            }
        }
        other => {
            return Err(ProcessorError::UnsupportedPixelFormat {
                format: format!("{:?}", other.color()),
                width: w as usize,
                height: h as usize,
            })
        }
    }
    Ok(RgbImage::from_raw(w, h, out).expect("buffer sized from the image dimensions"))
}

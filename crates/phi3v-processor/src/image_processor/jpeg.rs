//! JPEG decoding with libjpeg-turbo's algorithms, so that the pixels are PIL's pixels.
//!
//! PIL decodes JPEG files with libjpeg-turbo: the accurate integer IDCT ("islow") and "fancy"
//! (triangular) chroma upsampling. Other decoders (zune-jpeg, which the `image` crate uses)
//! round differently and upsample differently, which moves pixels by up to 13 levels on 4:2:0
//! photos. So JPEG files go through MozJPEG here, a libjpeg-turbo fork built from C sources
//! without SIMD; libjpeg-turbo's C and SIMD code paths of that IDCT and upsampling are
//! bit-exact with each other, so this matches Pillow's SIMD build byte for byte
//! (`tests/jpeg_fidelity.rs`).
//!
//! # What PIL does, and what is done here
//!
//! | file | PIL mode, then `convert("RGB")` | here |
//! |---|---|---|
//! | YCbCr or RGB (3 components) | `RGB` from libjpeg, as is | libjpeg's RGB output ([`DynamicImage::ImageRgb8`]) |
//! | grayscale | `L`, replicated to RGB | [`DynamicImage::ImageLuma8`] (replicated by [`super::to_rgb8`]) |
//! | CMYK or YCCK (4 components) | raw mode `CMYK;I` (inverted: Adobe's convention, assumed for every CMYK JPEG), then Pillow's `cmyk2rgb` | the same inversion and integer formula, as [`DynamicImage::ImageRgb8`] |
//! | 2 components, 12-bit, lossless | refused | refused |
//!
//! EXIF orientation is not applied (PIL does not, nor does the reference processor).
//!
//! # Damaged files
//!
//! libjpeg's fatal errors (a bad marker, a broken header) unwind out of the C code (the
//! `unwinding` build of mozjpeg-sys) into [`std::panic::catch_unwind`] and become
//! [`ImageDecodeError::Jpeg`]: no abort, no panic reaches the caller (this needs the default
//! `panic = "unwind"`; with `panic = "abort"` a bad file would end the process).
//!
//! libjpeg's *warnings* (premature end of file, corrupt entropy-coded data, extraneous bytes)
//! are errors too ([`ImageDecodeError::JpegWarning`]): libjpeg would fill the missing part with
//! grey or garbage and carry on. PIL refuses a truncated file ("image file is truncated") and a
//! scan with an unknown marker, which these two rules cover; PIL *accepts* the other warnings
//! silently (for example an EOI marker in the middle of a scan, or extra bytes before a
//! marker), and those files are refused here, deliberately: a damaged product photo is dropped
//! from a dataset rather than trained on. Bytes after the end marker are ignored, as PIL does.

use std::ffi::c_int;
use std::io;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use image::{DynamicImage, GrayImage, RgbImage};
use mozjpeg::{ColorSpace, DctMethod, Decompress};
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr};

use crate::error::ImageDecodeError;

/// Decodes a JPEG file like PIL's `Image.open(..)` followed by `convert("RGB")` (see the module
/// docs), refusing images of more than `max_pixels` pixels before allocating them.
pub(super) fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ImageDecodeError> {
    match catch_unwind(AssertUnwindSafe(|| decode_unguarded(bytes, max_pixels))) {
        Ok(result) => result,
        Err(payload) => Err(match payload.downcast::<Libjpeg>() {
            Ok(message) => match *message {
                Libjpeg::Error(message) => ImageDecodeError::Jpeg { message },
                Libjpeg::Warning(message) => ImageDecodeError::JpegWarning { message },
            },
            // A panic of the wrapper crate (a bug, not a bad file): still an error for this
            // file, not a crash of the whole run.
            Err(other) => ImageDecodeError::Jpeg {
                message: panic_text(other.as_ref()),
            },
        }),
    }
}

/// The payload that libjpeg's fatal errors and warnings unwind with, out of the C code.
enum Libjpeg {
    Error(String),
    Warning(String),
}

/// The decoding itself; libjpeg's errors unwind out of it (see [`decode_jpeg`]).
fn decode_unguarded(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ImageDecodeError> {
    let mut header = Decompress::builder()
        .with_err(error_manager())
        .from_mem(bytes)
        .map_err(io_error)?;
    let (width, height) = (header.width() as u32, header.height() as u32);
    super::decode::check_pixels(width, height, max_pixels)?;

    let output = match header.color_space() {
        ColorSpace::JCS_GRAYSCALE => ColorSpace::JCS_GRAYSCALE,
        ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => ColorSpace::JCS_RGB,
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => ColorSpace::JCS_CMYK,
        other => {
            return Err(ImageDecodeError::JpegColorSpace {
                color_space: format!("{other:?}"),
                components: header.components().len(),
            })
        }
    };
    // libjpeg's defaults, and PIL's: set anyway, since parity depends on them.
    header.dct_method(DctMethod::IntegerSlow);
    header.do_fancy_upsampling(true);

    let mut started = header.to_colorspace(output).map_err(io_error)?;
    let pixels: Vec<u8> = started.read_scanlines().map_err(io_error)?;
    // Reads up to EOI, so that damage after the last scanline is seen too.
    started.finish().map_err(io_error)?;

    let image = match output {
        ColorSpace::JCS_GRAYSCALE => GrayImage::from_raw(width, height, pixels).map(Into::into),
        ColorSpace::JCS_CMYK => {
            RgbImage::from_raw(width, height, inverted_cmyk_to_rgb(&pixels)).map(Into::into)
        }
        _ => RgbImage::from_raw(width, height, pixels).map(Into::into),
    };
    image.ok_or_else(|| ImageDecodeError::Jpeg {
        message: "libjpeg returned fewer scanlines than the image has".into(),
    })
}

/// Pillow's `CMYK;I` unpacking (each byte inverted) followed by its `cmyk2rgb`:
/// `nk = 255 - k`, `channel = nk - round(v * nk / 255)` with Pillow's integer rounding
/// (`MULDIV255`). Checked against PIL for every `(v, k)` pair when this was written, and by
/// the `cmyk_adobe` fixture.
fn inverted_cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        // Stored bytes are inverted ink: ink k = 255 - stored, so nk = 255 - k = stored.
        let nk = u32::from(px[3]);
        for &v in &px[..3] {
            let v = 255 - u32::from(v); // ink of C, M or Y
            let t = v * nk + 128;
            rgb.push(nk.saturating_sub(((t >> 8) + t) >> 8) as u8);
        }
    }
    rgb
}

/// libjpeg's standard error manager with Rust handlers: errors and warnings both unwind (with
/// the formatted libjpeg message) instead of `exit()`ing or printing to stderr.
fn error_manager() -> jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is a plain C struct (function pointers, integers, pointers to
    // static tables) that `jpeg_std_error` fills completely.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(on_error);
    err.emit_message = Some(on_message);
    err.output_message = Some(silence);
    err
}

/// libjpeg's `error_exit`: must not return; unwinds with the message.
extern "C-unwind" fn on_error(cinfo: &mut jpeg_common_struct) {
    let message = format_message(cinfo);
    // `resume_unwind` skips the panic hook: nothing is printed for a bad file.
    resume_unwind(Box::new(Libjpeg::Error(message)));
}

/// libjpeg's `emit_message`: level -1 is a warning (damaged data), which unwinds like an
/// error; levels 0 and up are trace messages, ignored.
extern "C-unwind" fn on_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    if level < 0 {
        let message = format_message(cinfo);
        resume_unwind(Box::new(Libjpeg::Warning(message)));
    }
}

/// libjpeg's `output_message` (printing to stderr): nothing, the message is in the error.
extern "C-unwind" fn silence(_cinfo: &mut jpeg_common_struct) {}

/// The current libjpeg message as text (libjpeg's own `format_message`, into its 80-byte
/// `JMSG_LENGTH_MAX` buffer).
fn format_message(cinfo: &mut jpeg_common_struct) -> String {
    // SAFETY: libjpeg calls the handlers with `cinfo.err` pointing at our error manager.
    let err = unsafe { &*cinfo.err };
    let code = err.msg_code;
    let Some(format) = err.format_message else {
        return format!("libjpeg message {code}");
    };
    // The binding declares the buffer `&[u8; 80]`, but libjpeg writes into it: call it through
    // a pointer type that says so (same ABI, a pointer either way).
    type FormatFn = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, *mut [u8; 80]);
    // SAFETY: identical signatures up to the pointer type of the second argument.
    let format = unsafe {
        std::mem::transmute::<
            unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &[u8; 80]),
            FormatFn,
        >(format)
    };
    let mut buffer = [0u8; 80];
    // SAFETY: libjpeg writes at most JMSG_LENGTH_MAX (80) bytes, NUL included.
    unsafe { format(cinfo, &mut buffer) };
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// The wrapper's `io::Error`s (suspension, short reads): cannot happen on an in-memory file
/// except through damage, so they are decode errors.
fn io_error(e: io::Error) -> ImageDecodeError {
    ImageDecodeError::Jpeg {
        message: e.to_string(),
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("decoder panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("decoder panicked: {s}")
    } else {
        "decoder panicked".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formula against values computed with Pillow 13 (`Image.frombytes("CMYK", ..)
    /// .convert("RGB")` of the inverted bytes).
    #[test]
    fn cmyk_formula_matches_pillow_samples() {
        // Stored (inverted) CMYK bytes -> PIL's RGB. Stored 255 = ink 0.
        assert_eq!(inverted_cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(inverted_cmyk_to_rgb(&[0, 0, 0, 0]), [0, 0, 0]);
        assert_eq!(inverted_cmyk_to_rgb(&[255, 0, 128, 255]), [255, 0, 128]);
        // ink c = 100, k = 50: nk = 205, 205 - round(100 * 205 / 255) = 205 - 80 = 125.
        assert_eq!(inverted_cmyk_to_rgb(&[155, 155, 155, 205]), [125, 125, 125]);
    }
}

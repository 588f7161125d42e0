//! The one image decoding path of the project: from file bytes to pixels, as PIL's
//! `Image.open` decodes them, with limits on what a file may cost.
//!
//! The format is sniffed from the content, never from a file name. JPEG files (`FF D8 FF`, the
//! test PIL uses too) are decoded by libjpeg's algorithms (the `jpeg` module), which gives
//! PIL's pixels exactly; the other formats (PNG, GIF, BMP, WebP) go through the `image` crate.
//! The lossless ones decode to PIL's pixels by definition; lossy WebP is decoded by the `image`
//! crate's own WebP decoder, not libwebp as in PIL, and is not checked against PIL here.
//! [`super::to_rgb8`] then does PIL's `convert("RGB")`.
//!
//! # Limits
//!
//! A dataset comes from the internet: a file may be huge, endless (`/dev/zero`), or small but
//! claim a giant size (a decompression bomb). So:
//!
//! - [`load_image`] reads at most [`MAX_IMAGE_FILE_BYTES`] (64 MiB) and refuses longer files
//!   without reading them whole ([`ProcessorError::FileTooLarge`]), and reads regular files
//!   only (not `/dev/zero`, not a FIFO that would block);
//! - decoding refuses images of more than [`MAX_IMAGE_PIXELS`] pixels before allocating them
//!   ([`ImageDecodeError::TooManyPixels`]). That is PIL's `DecompressionBombError` threshold,
//!   `2 * Image.MAX_IMAGE_PIXELS`, so what PIL opens with its defaults opens here too (PIL only
//!   warns between 1x and 2x its limit).
//!
//! [`DecodeLimits`] and the `*_with_limits` functions take other limits.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::jpeg::decode_jpeg;
use crate::error::{ImageDecodeError, ProcessorError};

/// The largest image file [`load_image`] reads: 64 MiB. Product photos are a few MB; a larger
/// file is a mistake or an attack, and reading it would cost its size in memory.
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 << 20;

/// PIL's `Image.MAX_IMAGE_PIXELS` (`1024 * 1024 * 1024 // 4 // 3`, about 89.5 million), above
/// which PIL warns of a decompression bomb.
pub const PIL_MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// The most pixels a decoded image may have: `2 * PIL_MAX_IMAGE_PIXELS`, where PIL raises
/// `DecompressionBombError` (about 537 MB as 8-bit RGB).
pub const MAX_IMAGE_PIXELS: u64 = 2 * PIL_MAX_IMAGE_PIXELS;

/// What decoding one image may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The most bytes read from an image file (files only; bytes in memory are already read).
    pub max_file_bytes: u64,
    /// The most pixels (`width * height`) of a decoded image, checked from the header, before
    /// any pixel is allocated.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// [`MAX_IMAGE_FILE_BYTES`] and [`MAX_IMAGE_PIXELS`].
    fn default() -> Self {
        Self {
            max_file_bytes: MAX_IMAGE_FILE_BYTES,
            max_pixels: MAX_IMAGE_PIXELS,
        }
    }
}

/// Decodes an image file's bytes as PIL would (see the module docs), with the default
/// [`DecodeLimits`]. The result is 8-bit RGB or gray for JPEG files, whatever the file holds for
/// the other formats; [`super::to_rgb8`] converts any of them like PIL's `convert("RGB")`.
///
/// # Errors
/// [`ImageDecodeError`]: unknown format, damaged data (including libjpeg's warnings: see the
/// `jpeg` module), too many pixels.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, ImageDecodeError> {
    decode_image_with_limits(bytes, &DecodeLimits::default())
}

/// [`decode_image`] with other limits (only `max_pixels` applies to bytes in memory).
///
/// # Errors
/// As [`decode_image`].
pub fn decode_image_with_limits(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<DynamicImage, ImageDecodeError> {
    match image::guess_format(bytes)? {
        ImageFormat::Jpeg => decode_jpeg(bytes, limits.max_pixels),
        format => decode_with_image_crate(bytes, format, limits.max_pixels),
    }
}

/// Reads and decodes an image file (format from its content, not its extension), with the
/// default [`DecodeLimits`].
///
/// # Errors
/// [`ProcessorError::Io`], [`ProcessorError::FileTooLarge`] or [`ProcessorError::ImageDecode`],
/// each naming the file.
pub fn load_image(path: impl AsRef<Path>) -> Result<DynamicImage, ProcessorError> {
    load_image_with_limits(path, &DecodeLimits::default())
}

/// [`load_image`] with other limits.
///
/// # Errors
/// As [`load_image`].
pub fn load_image_with_limits(
    path: impl AsRef<Path>,
    limits: &DecodeLimits,
) -> Result<DynamicImage, ProcessorError> {
    let path = path.as_ref();
    let bytes = read_image_file(path, limits.max_file_bytes)?;
    decode_image_with_limits(&bytes, limits).map_err(|source| ProcessorError::ImageDecode {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a whole image file of at most `max_bytes` bytes.
///
/// Only regular files are read: a device (`/dev/zero` never ends), a FIFO (opening one waits
/// for a writer) or a folder is refused before it is opened. A longer file is refused from its
/// size without being read, and the read itself stops after `max_bytes + 1` bytes, so a file
/// that grows meanwhile cannot get past the limit either.
///
/// # Errors
/// [`ProcessorError::Io`] (unreadable, or not a regular file) or
/// [`ProcessorError::FileTooLarge`], naming the file.
pub fn read_image_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ProcessorError> {
    let io_error = |source| ProcessorError::Io {
        path: path.to_path_buf(),
        source,
    };
    let checked_len = |meta: std::fs::Metadata| {
        if !meta.is_file() {
            Err(io_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (a device, FIFO or folder), so it is not read",
            )))
        } else if meta.len() > max_bytes {
            Err(ProcessorError::FileTooLarge {
                path: path.to_path_buf(),
                limit: max_bytes,
            })
        } else {
            Ok(meta.len())
        }
    };
    checked_len(std::fs::metadata(path).map_err(io_error)?)?;
    let file = File::open(path).map_err(io_error)?;
    // The path may name another file by now: check the one that is open.
    let len = checked_len(file.metadata().map_err(io_error)?)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ProcessorError::FileTooLarge {
            path: path.to_path_buf(),
            limit: max_bytes,
        });
    }
    Ok(bytes)
}

/// PNG, WebP, GIF, BMP: the `image` crate, after checking the size its header gives.
fn decode_with_image_crate(
    bytes: &[u8],
    format: ImageFormat,
    max_pixels: u64,
) -> Result<DynamicImage, ImageDecodeError> {
    let decoder = ImageReader::with_format(Cursor::new(bytes), format).into_decoder()?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, max_pixels)?;
    Ok(DynamicImage::from_decoder(decoder)?)
}

/// Refuses a `width x height` image above `max_pixels`, counting as PIL does (an empty side
/// counts as 1).
pub(super) fn check_pixels(
    width: u32,
    height: u32,
    max_pixels: u64,
) -> Result<(), ImageDecodeError> {
    let pixels = u64::from(width.max(1)) * u64::from(height.max(1));
    if pixels > max_pixels {
        return Err(ImageDecodeError::TooManyPixels {
            width,
            height,
            limit: max_pixels,
        });
    }
    Ok(())
}

//! Checking that image bytes decode, and the images of loaded rows.
//!
//! Both go through the input processor's decoder
//! ([`phi3v_processor::image_processor::decode_image`]), the one decoding path of the project:
//! JPEG files get PIL's exact pixels, damaged files (truncated, corrupt) are refused, and an
//! image claiming too many pixels is refused before it is allocated. So a row that passes the
//! check here decodes the same way when the trainer or the inference code opens it.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use image::DynamicImage;
use phi3v_processor::image_processor::{
    decode_image, load_image, read_image_file, MAX_IMAGE_FILE_BYTES,
};
use phi3v_processor::ImageDecodeError;

use crate::DataError;

/// Decodes `bytes` completely (format guessed from the content, not from a file name) and
/// returns the image's size.
///
/// The whole image is decoded, not just its header: a truncated JPEG has a valid header and
/// only fails when its pixels are read, and such a row must be dropped now, not fail a
/// training step hours later.
pub fn check_decodes(bytes: &[u8]) -> Result<(u32, u32), ImageDecodeError> {
    let image = decode_image(bytes)?;
    Ok((image.width(), image.height()))
}

/// Where the bytes of a checked image are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageData {
    /// Bytes embedded in the catalogue (a Hugging Face image struct), kept in memory.
    Bytes(Arc<[u8]>),
    /// A file: the catalogue's own image file, or the cached download of a URL.
    File(PathBuf),
}

/// An image that has been fetched and has decoded once: what a loaded row carries.
///
/// The pixels are not kept (a few thousand full-size product photos would not fit in memory);
/// [`ReadyImage::decode`] decodes again when the image is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyImage {
    /// The encoded image.
    pub data: ImageData,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl ReadyImage {
    /// The encoded bytes (read from disk for files, at most
    /// [`phi3v_processor::image_processor::MAX_IMAGE_FILE_BYTES`] of them).
    ///
    /// # Errors
    /// For a file: [`DataError::Processor`] with the processor's read error naming it
    /// (unreadable, or longer than the cap).
    pub fn bytes(&self) -> Result<Cow<'_, [u8]>, DataError> {
        match &self.data {
            ImageData::Bytes(bytes) => Ok(Cow::Borrowed(bytes)),
            ImageData::File(path) => Ok(Cow::Owned(read_image_file(path, MAX_IMAGE_FILE_BYTES)?)),
        }
    }

    /// Decodes the image. A file is read through the processor's capped read
    /// ([`phi3v_processor::image_processor::MAX_IMAGE_FILE_BYTES`]), since it may have changed
    /// on disk since it was checked.
    ///
    /// # Errors
    /// [`DataError::ImageDecode`] for embedded bytes; for a file, the processor's error naming
    /// it ([`DataError::Processor`]: unreadable, too large, or not decodable).
    pub fn decode(&self) -> Result<DynamicImage, DataError> {
        match &self.data {
            ImageData::File(path) => Ok(load_image(path)?),
            ImageData::Bytes(bytes) => {
                decode_image(bytes).map_err(|source| DataError::ImageDecode {
                    path: PathBuf::from("<embedded image>"),
                    source,
                })
            }
        }
    }
}

//! Checking that image bytes decode, and the images of loaded rows.

use std::borrow::Cow;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use image::{DynamicImage, ImageReader};

use crate::DataError;

/// Decodes `bytes` completely (format guessed from the content, not from a file name) and
/// returns the image's size.
///
/// The whole image is decoded, not just its header: a truncated JPEG has a valid header and
/// only fails when its pixels are read, and such a row must be dropped now, not fail a
/// training step hours later.
pub fn check_decodes(bytes: &[u8]) -> Result<(u32, u32), image::ImageError> {
    let image = decode_bytes(bytes)?;
    Ok((image.width(), image.height()))
}

fn decode_bytes(bytes: &[u8]) -> Result<DynamicImage, image::ImageError> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(image::ImageError::IoError)?
        .decode()
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
    /// The encoded bytes (read from disk for files).
    pub fn bytes(&self) -> Result<Cow<'_, [u8]>, DataError> {
        match &self.data {
            ImageData::Bytes(bytes) => Ok(Cow::Borrowed(bytes)),
            ImageData::File(path) => {
                std::fs::read(path)
                    .map(Cow::Owned)
                    .map_err(|source| DataError::Io {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }

    /// Decodes the image.
    pub fn decode(&self) -> Result<DynamicImage, DataError> {
        let bytes = self.bytes()?;
        decode_bytes(&bytes).map_err(|source| DataError::ImageDecode {
            path: match &self.data {
                ImageData::File(path) => path.clone(),
                ImageData::Bytes(_) => PathBuf::from("<embedded image>"),
            },
            source,
        })
    }
}

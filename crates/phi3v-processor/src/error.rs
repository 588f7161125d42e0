//! The error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while turning prompts and images into model inputs.
///
/// Each variant names its culprit (a file, a batch position, image dimensions) so that a failed
/// run over thousands of samples points at the sample to look at.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A file was read but could not be decoded as an image.
    #[error("cannot decode image {path}: {source}")]
    ImageDecode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        #[source]
        source: ImageDecodeError,
    },

    /// An image file is longer than the read limit, so it was not read (see
    /// [`crate::image_processor::MAX_IMAGE_FILE_BYTES`]).
    #[error("image file {path} holds more than {limit} bytes, the limit for an image file")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },

    /// An image has no pixels, so it cannot be resized.
    #[error("image is empty ({width}x{height})")]
    EmptyImage {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
    },

    /// A raw pixel buffer does not match the dimensions it was given with.
    #[error("pixel buffer of {actual} bytes does not hold a {width}x{height} RGB image ({expected} bytes)")]
    BufferSize {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// Bytes the dimensions need.
        expected: usize,
        /// Bytes that were given.
        actual: usize,
    },

    /// The decoded pixel format has no defined conversion to RGB here (for example float HDR).
    #[error("unsupported pixel format {format} in a {width}x{height} image")]
    UnsupportedPixelFormat {
        /// The `image` crate's name for the format.
        format: String,
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
    },

    /// The image is so elongated that the HD transform would resize it to zero rows, which the
    /// reference (PIL) rejects too.
    #[error(
        "image {width}x{height} is too elongated for the HD transform with num_crops {num_crops}: \
         it would be resized to {new_width}x{new_height}"
    )]
    DegenerateResize {
        /// Width of the input image.
        width: usize,
        /// Height of the input image.
        height: usize,
        /// The `num_crops` in use.
        num_crops: usize,
        /// Resize target width (in the transposed frame for portrait images).
        new_width: usize,
        /// Resize target height (in the transposed frame for portrait images).
        new_height: usize,
    },

    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// An error while processing the image stored at `path`.
    #[error("{path}: {source}")]
    InFile {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<ProcessorError>,
    },

    /// A JSON file (`preprocessor_config.json`) could not be written or parsed.
    #[error("JSON file {path}: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },

    /// An error while processing the image at position `index` of a batch.
    #[error("image {index} of the batch: {source}")]
    InBatch {
        /// Position in the batch.
        index: usize,
        /// The underlying error.
        #[source]
        source: Box<ProcessorError>,
    },

    /// The tokenizer could not be loaded, or failed on a text.
    #[error("tokenizer: {context}: {source}")]
    Tokenizer {
        /// What was being done.
        context: String,
        /// What the `tokenizers` crate said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The tokenizer lacks a token Phi-3 prompts rely on, or gives it another id.
    #[error("the tokenizer maps {token} to {found:?}, Phi-3 needs id {expected_id}")]
    MissingToken {
        /// The token text, such as `<|end|>`.
        token: String,
        /// Its Phi-3 id.
        expected_id: u32,
        /// Its id in this tokenizer, if any.
        found: Option<u32>,
    },

    /// A prompt template does not parse.
    #[error("prompt template {template:?}: {reason}")]
    Template {
        /// The template text.
        template: String,
        /// What is wrong.
        reason: String,
    },

    /// A row lacks a field that a prompt template names.
    #[error(
        "prompt template {template:?} needs the field {{{field}}}, which the row does not have"
    )]
    MissingField {
        /// The template text.
        template: String,
        /// The missing field.
        field: String,
    },

    /// An `<|image_N|>` tag of a prompt is invalid: its id is 0, too large, or leaves a gap in
    /// `1..n`.
    #[error("image tag {tag}: {reason}")]
    ImageTag {
        /// The tag, such as `<|image_2|>`.
        tag: String,
        /// What is wrong.
        reason: String,
    },

    /// The image tags of a prompt (ids `1..=tags`) do not match the number of images given.
    #[error(
        "the prompt has image tags <|image_1|>..<|image_{tags}|> ({tags} image(s)) but {images} \
         image(s) were given"
    )]
    ImageCountMismatch {
        /// Distinct image ids in the prompt.
        tags: usize,
        /// Images given.
        images: usize,
    },

    /// A sample is longer than the length limit. Nothing is truncated (that would cut image
    /// placeholders, the answer or the question), so callers skip the sample.
    #[error(
        "{row}: {len} tokens ({image_tokens} image placeholders, {answer_tokens} answer tokens) \
         exceed max_len {max_len}; the sample is skipped, not truncated"
    )]
    SampleTooLong {
        /// The row, as the caller named it.
        row: String,
        /// Tokens of the sample.
        len: usize,
        /// The limit.
        max_len: usize,
        /// Image placeholder positions among them.
        image_tokens: usize,
        /// Trained answer tokens among them (0 for a generation prompt).
        answer_tokens: usize,
    },

    /// An error while building the sample of one row.
    #[error("{row}: {source}")]
    InRow {
        /// The row, as the caller named it.
        row: String,
        /// The underlying error.
        #[source]
        source: Box<ProcessorError>,
    },

    /// A sample cannot be collated (see [`crate::batch::collate`]).
    #[error("sample {sample} of the batch: {reason}")]
    InvalidSample {
        /// Position in the batch.
        sample: usize,
        /// What is wrong.
        reason: String,
    },

    /// A batch needs at least one sample.
    #[error("cannot collate an empty batch")]
    EmptyBatch,

    /// Images were given to a processor without an image processor (a text-only model).
    #[error("this model is text-only: it takes no images ({images} given)")]
    NoImageProcessor {
        /// Images given.
        images: usize,
    },
}

/// Why image bytes do not decode ([`crate::image_processor::decode_image`]). The file's path is
/// added by whoever knows it ([`ProcessorError::ImageDecode`]).
#[derive(Debug, thiserror::Error)]
pub enum ImageDecodeError {
    /// A fatal libjpeg error: the file is not a JPEG file libjpeg (and so PIL) can decode.
    #[error("JPEG: {message}")]
    Jpeg {
        /// libjpeg's message, such as "Unsupported marker type 0x5a".
        message: String,
    },

    /// A libjpeg warning, which means damaged data: a truncated file ("Premature end of JPEG
    /// file"), corrupt entropy-coded data, extraneous bytes. libjpeg would decode on with
    /// made-up pixels; here the file is refused (PIL refuses truncated files too).
    #[error("damaged JPEG: {message}")]
    JpegWarning {
        /// libjpeg's message.
        message: String,
    },

    /// A JPEG colour space with no conversion to RGB (for example a 2-component file, which
    /// PIL refuses too).
    #[error(
        "JPEG colour space {color_space} with {components} component(s) has no conversion to RGB"
    )]
    JpegColorSpace {
        /// libjpeg's name of the colour space.
        color_space: String,
        /// Components in the file.
        components: usize,
    },

    /// The header claims more pixels than the limit (a decompression bomb, or a mistake);
    /// refused before any pixel is allocated.
    #[error(
        "image of {width}x{height} pixels exceeds the limit of {limit} pixels \
         (a decompression bomb?)"
    )]
    TooManyPixels {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The pixel limit in force.
        limit: u64,
    },

    /// An error of the `image` crate (non-JPEG formats), or an unrecognised format.
    #[error(transparent)]
    Image(#[from] image::ImageError),
}

//! # phi3v-processor
//!
//! The input processor of Phi-3-Vision: from a chat prompt and its images to the model's
//! inputs, as the reference `Phi3VProcessor` does it. Inference, the dataset builder, the
//! trainer and the benches all call this one piece.
//!
//! The crate needs no tensor backend, and no catalogue format or HTTP client: everything here
//! is plain Rust on the CPU, producing flat `Vec` buffers with documented shapes that a model
//! crate uploads to its device (the `phi3v` facade's `inputs` module does).
//!
//! ## Modules
//!
//! - [`Processor`] ([`processor`]): tokenizer + image processor; a prompt and its images to a
//!   [`batch::Batch`] of one.
//! - [`image_processor`]: the Phi-3-Vision "HD transform" (PIL-exact bilinear resize, white
//!   padding to multiples of the crop size, CLIP normalisation, bicubic global view, crops),
//!   matching the Python reference bit for bit on the `u8` stage and to float rounding on the
//!   `f32` stage. See its module docs for the algorithm and the measured parity. Also the one
//!   image decoding path of the project ([`image_processor::decode_image`],
//!   [`image_processor::load_image`]): PIL's pixels for JPEG (libjpeg-turbo's algorithms),
//!   damaged files refused, file size and pixel count capped.
//! - [`config`]: [`PreprocessorConfig`], the typed `preprocessor_config.json` (reads and writes
//!   it).
//! - [`prompt`]: `{field}` templates, the chat format, and Python's float `repr`.
//! - [`tokenize`]: the Phi-3 `tokenizer.json` and the reference processor's prompt encoding
//!   (chunks with BOS, `<|image_N|>` as `-N` placeholders, checked image ids).
//! - [`sample`]: training examples (prompt masked with -100, answer + `<|end|>` +
//!   `<|endoftext|>` trained, as the Phi-3 Cookbook does) and generation prompts; over-long
//!   samples are reported, never truncated.
//! - [`batch`]: padding (right for training, left for generation), masks, positions, and the
//!   real image tiles as one `[tiles, 3, S, S]` buffer.
//! - [`error`]: [`ProcessorError`], the crate's error type, and [`ImageDecodeError`], why image
//!   bytes do not decode.
//!
//! ## Example
//!
//! ```no_run
//! use phi3v_processor::image_processor::{ImageProcessor, ProcessorConfig};
//! use phi3v_processor::tokenize::Phi3Tokenizer;
//! use phi3v_processor::Processor;
//!
//! let processor = Processor::new(
//!     Phi3Tokenizer::from_file("tokenizer.json")?,
//!     Some(ImageProcessor::new(ProcessorConfig::default())?),
//! );
//! let text = "<|user|>\n<|image_1|>What is shown in this image?<|end|>\n<|assistant|>\n";
//! let inputs = processor.process_paths(text, &["photo.jpg"])?;
//! // A 4x4-crop image: its 17 real tiles, and 2509 placeholders -1 in the ids.
//! assert_eq!(inputs.pixel_values_shape(), [17, 3, 336, 336]);
//! assert_eq!(inputs.image_grids, [(4, 4)]);
//! # Ok::<(), phi3v_processor::ProcessorError>(())
//! ```

pub mod batch;
pub mod config;
pub mod error;
pub mod image_processor;
pub mod processor;
pub mod prompt;
pub mod sample;
pub mod tokenize;

pub use config::PreprocessorConfig;
pub use error::{ImageDecodeError, ProcessorError};
pub use processor::Processor;

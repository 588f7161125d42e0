//! Image sources of catalogue rows: downloading with a cache, and the decoding check.
//!
//! - [`ImageFetcher`] downloads URLs with a bounded pool of threads ([`FetchConfig::concurrency`]),
//!   a per-attempt timeout, retries with exponential backoff for transient failures, and a
//!   bounded number of redirects. TLS is rustls with the webpki roots (no OpenSSL, one TLS
//!   stack), so `https` image URLs work on any machine.
//! - [`ImageCache`] keeps each download in a file named by the SHA-256 of its URL, written
//!   atomically, so a second run over a catalogue downloads nothing.
//! - Every image is read under one size limit, [`FetchConfig::max_bytes`] (by default
//!   [`MAX_IMAGE_BYTES`], 64 MiB): downloads, cached files and local files alike. A local file
//!   over the limit is refused from its size, unread, and only regular files are read (not
//!   `/dev/zero`, not a FIFO).
//! - [`ImageFetcher::fetch_one`] fetches one image a user names (a URL or a path), for
//!   `phi3v generate --image`, through the same cache and limits.
//! - [`check_decodes`] decodes an image completely, so undecodable rows are dropped up front.
//! - [`ReadyImage`] is what a loaded catalogue row carries: where the encoded bytes are, and
//!   the image size.
//!
//! # Example
//!
//! ```no_run
//! use phi3v_data::images::{FetchConfig, ImageFetcher};
//!
//! let fetcher = ImageFetcher::new(FetchConfig {
//!     cache_dir: "cache/images".into(),
//!     ..FetchConfig::default()
//! })?;
//! let urls = vec!["https://example.com/a.jpg".to_string()];
//! for result in fetcher.fetch_many(&urls) {
//!     match result {
//!         Ok(fetched) => println!("{}", fetched.path.display()),
//!         Err(failure) => eprintln!("{failure}"),
//!     }
//! }
//! # Ok::<(), phi3v_data::DataError>(())
//! ```

mod cache;
mod decode;
mod fetch;
mod progress;

pub use cache::ImageCache;
pub use decode::{check_decodes, ImageData, ReadyImage};
pub use fetch::{
    default_cache_dir, FetchConfig, FetchError, FetchFailure, FetchStats, Fetched, ImageFetcher,
    MAX_IMAGE_BYTES,
};
pub(crate) use fetch::{parse_image_ref, read_image_file, ImageRef};
pub(crate) use progress::progress_bar;

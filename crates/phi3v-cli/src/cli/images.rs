//! The `--image` values of `generate` and `logits`: local files, or URLs fetched through the
//! same downloader and cache as catalogue images.

use std::path::PathBuf;

use phi3v_data::images::{FetchConfig, ImageFetcher};

/// Turns each `--image` value into a local file: an `http://` or `https://` URL is downloaded
/// into the image cache (once; a second run reads the cache), anything else is a path. The
/// files are decoded later, with the image decoder's size limits.
///
/// # Errors
/// A URL that cannot be fetched or a path that does not exist, naming the value.
pub fn resolve(values: &[String]) -> Result<Vec<PathBuf>, String> {
    let is_url = |v: &String| v.starts_with("http://") || v.starts_with("https://");
    let fetcher = if values.iter().any(is_url) {
        let config = FetchConfig {
            progress: false,
            ..FetchConfig::default()
        };
        Some(ImageFetcher::new(config).map_err(|e| format!("--image: {e}"))?)
    } else {
        None
    };
    values
        .iter()
        .map(|value| match &fetcher {
            Some(fetcher) if is_url(value) => fetcher
                .fetch(value)
                .map(|fetched| fetched.path)
                .map_err(|failure| format!("--image {value}: {failure}")),
            _ => {
                let path = PathBuf::from(value);
                if path.is_file() {
                    Ok(path)
                } else if path.exists() {
                    Err(format!("--image {value}: not a file"))
                } else {
                    Err(format!("--image {value}: no such file"))
                }
            }
        })
        .collect()
}

//! Downloading images: timeouts, retries with backoff, bounded redirects, a bounded pool of
//! download threads, and the on-disk cache; reading local image files under the same size
//! limit; and the one entry point for an image a user names ([`ImageFetcher::fetch_one`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use phi3v_processor::ProcessorError;

use super::cache::ImageCache;
use super::progress::progress_bar;
use crate::DataError;

/// The default largest image, in bytes, read from a file or a download: the image decoder's
/// 64 MiB ([`FetchConfig::max_bytes`]). Product photos are a few megabytes; a larger file is a
/// mistake or an attack (`/dev/zero`, a multi-gigabyte "image"), and reading it would cost
/// its size in memory.
pub const MAX_IMAGE_BYTES: u64 = phi3v_processor::image_processor::MAX_IMAGE_FILE_BYTES;

/// Settings of the [`ImageFetcher`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FetchConfig {
    /// Where downloaded images are kept ([`default_cache_dir`] by default).
    pub cache_dir: PathBuf,
    /// Limit for one attempt: connecting, redirects, headers and body together. A server that
    /// trickles bytes cannot stall a run past this.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Limit for opening the connection (a dead host fails fast).
    #[serde(with = "millis")]
    pub connect_timeout: Duration,
    /// Extra attempts after a failure that may be transient (timeouts, refused connections,
    /// HTTP 408, 429 and 5xx). A 404 is not retried.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further retry (capped at 30 s).
    #[serde(with = "millis")]
    pub backoff: Duration,
    /// Redirects followed per attempt; one more is an error (a redirect loop ends here).
    pub max_redirects: u32,
    /// Downloads in flight at once.
    pub concurrency: usize,
    /// Largest accepted image, in bytes ([`MAX_IMAGE_BYTES`] by default): for downloads, and
    /// for local image files (catalogue rows, cached downloads, [`ImageFetcher::fetch_one`]),
    /// which are refused from their size without being read.
    pub max_bytes: u64,
    /// Honour `HTTP(S)_PROXY` / `ALL_PROXY` / `NO_PROXY` from the environment.
    pub proxy_from_env: bool,
    /// Show a progress bar (only ever drawn when stderr is a terminal).
    pub progress: bool,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_redirects: 5,
            concurrency: 8,
            max_bytes: MAX_IMAGE_BYTES,
            proxy_from_env: true,
            progress: true,
            user_agent: concat!("phi3v-data/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// The default image cache: `$PHI3V_IMAGE_CACHE`, else `$XDG_CACHE_HOME/phi3v/images`, else
/// `~/.cache/phi3v/images`, else `<temp dir>/phi3v/images`.
pub fn default_cache_dir() -> PathBuf {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = env("PHI3V_IMAGE_CACHE") {
        return dir.into();
    }
    let base = env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("phi3v").join("images")
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Why one download attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The server answered with an error status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The attempt took longer than the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// More redirects than allowed (or a redirect loop).
    #[error("more than {0} redirects")]
    TooManyRedirects(u32),
    /// The body is larger than the limit.
    #[error("response larger than {0} bytes")]
    TooLarge(u64),
    /// The server sent an empty body.
    #[error("empty response body")]
    Empty,
    /// The connection could not be made or broke.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The TLS handshake failed (bad certificate, not a TLS server).
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The URL is not a valid http(s) URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The downloaded image could not be stored in the cache.
    #[error("cannot write cache file {path}: {error}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What the operating system said.
        error: String,
    },
    /// Anything else the HTTP client reported.
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status(code) => matches!(code, 408 | 429 | 500..=599),
            FetchError::Timeout(_) | FetchError::Connection(_) | FetchError::Other(_) => true,
            FetchError::TooManyRedirects(_)
            | FetchError::TooLarge(_)
            | FetchError::Empty
            | FetchError::Tls(_)
            | FetchError::InvalidUrl(_)
            | FetchError::Cache { .. } => false,
        }
    }
}

/// A URL that could not be fetched: the last attempt's error and the number of attempts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} ({attempts} attempt{})", if *attempts == 1 { "" } else { "s" })]
pub struct FetchFailure {
    /// The last attempt's error.
    pub error: FetchError,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
}

/// A fetched image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The cached file.
    pub path: PathBuf,
    /// True when the file was already in the cache (no request was made).
    pub from_cache: bool,
}

/// Counters of a fetcher's work since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchStats {
    /// HTTP attempts made (including retries).
    pub requests: u64,
    /// URLs downloaded and stored.
    pub downloaded: u64,
    /// URLs served from the cache.
    pub cache_hits: u64,
    /// URLs that failed after all attempts.
    pub failed: u64,
}

/// Downloads images into an [`ImageCache`].
///
/// A URL already in the cache is never requested again, so a second run over the same
/// catalogue downloads nothing. Failures are returned per URL, never panicked or retried
/// forever.
#[derive(Debug)]
pub struct ImageFetcher {
    config: FetchConfig,
    cache: ImageCache,
    agent: ureq::Agent,
    requests: AtomicU64,
    downloaded: AtomicU64,
    cache_hits: AtomicU64,
    failed: AtomicU64,
}

impl ImageFetcher {
    /// A fetcher with `config`; creates the cache folder.
    pub fn new(config: FetchConfig) -> Result<Self, DataError> {
        if config.concurrency == 0 {
            return Err(DataError::InvalidConfig(
                "image fetch concurrency must be at least 1".into(),
            ));
        }
        if config.max_bytes == 0 {
            return Err(DataError::InvalidConfig(
                "the image size limit (max_bytes) must be at least 1 byte".into(),
            ));
        }
        let cache = ImageCache::new(&config.cache_dir)?;
        let mut builder = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .timeout_connect(Some(config.connect_timeout))
            .max_redirects(config.max_redirects)
            .max_redirects_will_error(true)
            .http_status_as_error(true)
            .user_agent(config.user_agent.as_str());
        if !config.proxy_from_env {
            builder = builder.proxy(None);
        }
        let agent = builder.build().new_agent();
        Ok(Self {
            config,
            cache,
            agent,
            requests: AtomicU64::new(0),
            downloaded: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// The cache.
    pub fn cache(&self) -> &ImageCache {
        &self.cache
    }

    /// Counters of the work done so far.
    pub fn stats(&self) -> FetchStats {
        FetchStats {
            requests: self.requests.load(Ordering::Relaxed),
            downloaded: self.downloaded.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// The bytes of one image a user names (`phi3v generate --image`): an `http(s)://` URL
    /// (or a protocol-relative `//host/...` one) goes through [`fetch`](Self::fetch), so through
    /// the same cache, retries and limits as a catalogue's URLs; anything else is a local path
    /// (`file://` or plain, relative to the working directory).
    ///
    /// The user named the file, so unlike a catalogue row it may be anywhere; but it is read
    /// under the same size limit ([`FetchConfig::max_bytes`]), and only if it is a regular file
    /// (a device such as `/dev/zero`, a FIFO or a folder is refused unread).
    ///
    /// The bytes are returned rather than a path so that what is decoded is what was checked.
    ///
    /// # Errors
    /// [`DataError::Download`] naming the URL, [`DataError::Io`] naming the file (missing,
    /// too large, not a regular file), [`DataError::InvalidConfig`] for an empty reference.
    pub fn fetch_one(&self, reference: &str) -> Result<Vec<u8>, DataError> {
        let path = match parse_image_ref(reference) {
            ImageRef::Empty => {
                return Err(DataError::InvalidConfig(
                    "the image reference is empty: give a path or an http(s) URL".into(),
                ))
            }
            ImageRef::Url(url) => match self.fetch(&url) {
                Ok(fetched) => fetched.path,
                Err(source) => return Err(DataError::Download { url, source }),
            },
            ImageRef::Path(path) => PathBuf::from(path),
        };
        read_image_file(&path, self.config.max_bytes)
            .map_err(|source| DataError::Io { path, source })
    }

    /// Fetches one URL: from the cache if present, else downloaded (with retries) and cached.
    pub fn fetch(&self, url: &str) -> Result<Fetched, FetchFailure> {
        if let Some(path) = self.cache.get(url) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Fetched {
                path,
                from_cache: true,
            });
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self.download(url) {
                Ok(bytes) => match self.cache.put(url, &bytes) {
                    Ok(path) => {
                        self.downloaded.fetch_add(1, Ordering::Relaxed);
                        return Ok(Fetched {
                            path,
                            from_cache: false,
                        });
                    }
                    Err(e) => FetchError::Cache {
                        path: self.cache.path(url),
                        error: e.to_string(),
                    },
                },
                Err(error) => error,
            };
            if !error.is_transient() || attempts > self.config.retries {
                self.failed.fetch_add(1, Ordering::Relaxed);
                return Err(FetchFailure { error, attempts });
            }
            let factor = 1u32 << (attempts - 1).min(16);
            let wait = self
                .config
                .backoff
                .saturating_mul(factor)
                .min(Duration::from_secs(30));
            std::thread::sleep(wait);
        }
    }

    /// One attempt: GET `url` and read the whole body.
    fn download(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut response = self.agent.get(url).call().map_err(|e| self.map_error(e))?;
        if response.status().is_redirection() {
            // Only reachable with max_redirects = 0: a redirect that may not be followed.
            return Err(FetchError::TooManyRedirects(self.config.max_redirects));
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(self.config.max_bytes)
            .read_to_vec()
            .map_err(|e| self.map_error(e))?;
        if bytes.is_empty() {
            return Err(FetchError::Empty);
        }
        Ok(bytes)
    }

    fn map_error(&self, e: ureq::Error) -> FetchError {
        match e {
            ureq::Error::StatusCode(code) => FetchError::Status(code),
            ureq::Error::Timeout(_) => FetchError::Timeout(self.config.timeout),
            ureq::Error::TooManyRedirects => {
                FetchError::TooManyRedirects(self.config.max_redirects)
            }
            ureq::Error::BodyExceedsLimit(_) => FetchError::TooLarge(self.config.max_bytes),
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                FetchError::Timeout(self.config.timeout)
            }
            // rustls reports handshake and record failures as `InvalidData` I/O errors (the
            // only source of that kind in this build: ureq's SOCKS support is not enabled).
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                FetchError::Tls(e.to_string())
            }
            ureq::Error::Io(e) => FetchError::Connection(e.to_string()),
            e @ (ureq::Error::ConnectionFailed | ureq::Error::HostNotFound) => {
                FetchError::Connection(e.to_string())
            }
            e @ (ureq::Error::Tls(_) | ureq::Error::Rustls(_)) => FetchError::Tls(e.to_string()),
            e @ (ureq::Error::BadUri(_) | ureq::Error::Http(_)) => {
                FetchError::InvalidUrl(e.to_string())
            }
            e => FetchError::Other(e.to_string()),
        }
    }

    /// Fetches many URLs with up to `concurrency` downloads in flight, showing a progress bar
    /// when stderr is a terminal. Results are in the order of `urls`; a URL given twice is
    /// fetched once.
    pub fn fetch_many(&self, urls: &[String]) -> Vec<Result<Fetched, FetchFailure>> {
        let bar = progress_bar(
            Some(urls.len() as u64),
            self.config.progress,
            "downloading images",
        );
        let results = self.fetch_many_with(urls, &bar);
        bar.finish_and_clear();
        results
    }

    /// [`fetch_many`](Self::fetch_many), advancing `bar` by one per URL.
    pub(crate) fn fetch_many_with(
        &self,
        urls: &[String],
        bar: &ProgressBar,
    ) -> Vec<Result<Fetched, FetchFailure>> {
        // Deduplicate, so two rows with one image never download it twice at once.
        let mut unique: Vec<&str> = Vec::new();
        let mut slot_of = Vec::with_capacity(urls.len());
        let mut seen = std::collections::HashMap::new();
        for url in urls {
            let slot = *seen.entry(url.as_str()).or_insert_with(|| {
                unique.push(url.as_str());
                unique.len() - 1
            });
            slot_of.push(slot);
        }
        let results: Vec<OnceLock<Result<Fetched, FetchFailure>>> =
            (0..unique.len()).map(|_| OnceLock::new()).collect();
        let next = AtomicUsize::new(0);
        let workers = self.config.concurrency.min(unique.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(url) = unique.get(i) else { break };
                    let _ = results[i].set(self.fetch(url));
                    bar.inc(1);
                });
            }
        });
        let results: Vec<_> = results
            .into_iter()
            .map(|r| r.into_inner().expect("every URL is fetched"))
            .collect();
        // Duplicates count as done too.
        bar.inc((urls.len() - unique.len()) as u64);
        slot_of.into_iter().map(|s| results[s].clone()).collect()
    }
}

/// What an image reference in a catalogue cell or on the command line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImageRef<'a> {
    /// Nothing (an empty or blank string).
    Empty,
    /// An `http` or `https` URL.
    Url(String),
    /// A local path, as written (a `file://` prefix removed).
    Path(&'a str),
}

/// Reads an image reference: `http://` and `https://` URLs (any case), protocol-relative
/// `//host/...` URLs (as `https`), `file://` URLs and plain paths. Surrounding whitespace is
/// ignored. Catalogue rows and [`ImageFetcher::fetch_one`] both read references with it, so a
/// string means the same image wherever it is given.
pub(crate) fn parse_image_ref(s: &str) -> ImageRef<'_> {
    let s = s.trim();
    let has_scheme = |scheme: &str| {
        s.get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
    };
    if s.is_empty() {
        ImageRef::Empty
    } else if has_scheme("http://") || has_scheme("https://") {
        ImageRef::Url(s.to_string())
    } else if let Some(rest) = s.strip_prefix("//") {
        ImageRef::Url(format!("https://{rest}"))
    } else if let Some(rest) = s.strip_prefix("file://") {
        ImageRef::Path(rest)
    } else {
        ImageRef::Path(s)
    }
}

/// Reads a whole local image file of at most `max_bytes` bytes, with the image decoder's
/// reader ([`phi3v_processor::image_processor::read_image_file`]: regular files only, so `/dev/zero`, a FIFO or
/// a folder is refused unopened; the size checked before reading and the read bounded). The
/// errors say why, not which file: callers add the path.
pub(crate) fn read_image_file(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    phi3v_processor::image_processor::read_image_file(path, max_bytes).map_err(|e| match e {
        ProcessorError::Io { source, .. } => source,
        ProcessorError::FileTooLarge { .. } => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the image size limit of {max_bytes} bytes (max_bytes)"),
        ),
        other => io::Error::other(other.to_string()),
    })
}

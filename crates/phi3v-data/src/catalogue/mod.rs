//! Reading product catalogues: parquet, CSV and JSON Lines, with a column mapping.
//!
//! A catalogue is a table with one product per row. The default [`ColumnMapping`] is the one of
//! the Burberry US dataset (`DBQ/Burberry.Product.prices.United.States`, 17 columns, see
//! [`BURBERRY_SCHEMA`]); any other catalogue works once its id, title, category, price and
//! image columns are named.
//!
//! # Reading
//!
//! [`Catalogue::rows`] streams [`CatalogueRow`]s: parquet one record batch at a time (only the
//! columns the mapping needs are decoded), CSV one record at a time, JSONL one line at a time,
//! so a catalogue larger than memory can be read. A row carries its [`Product`], its
//! [`ImageSource`] and the problems found while reading it. Only failures of the file as a
//! whole (cannot open, not parquet, a mapped column missing) are errors; a bad row is data.
//!
//! # Loading
//!
//! [`Catalogue::load`] turns the rows into usable [`CatalogueItem`]s: it checks each row
//! (title, price, image), fetches images (URLs through the
//! [`ImageFetcher`](crate::images::ImageFetcher) and its cache, local files, embedded bytes),
//! decodes each image once, drops duplicate product codes (keeping the first usable row), and
//! records every dropped row and why in a [`Report`](crate::report::Report).
//!
//! # Images
//!
//! The image column may hold a URL, a path (relative paths resolve against the catalogue's
//! folder), binary image bytes, or the `{bytes, path}` struct that Hugging Face `datasets`
//! writes for an `Image` feature (the embedded bytes are used, so such a parquet file works as
//! is).
//!
//! # Example
//!
//! ```no_run
//! use phi3v_data::catalogue::Catalogue;
//! use phi3v_data::images::{FetchConfig, ImageFetcher};
//!
//! let catalogue = Catalogue::open("burberry.parquet")?;
//! let fetcher = ImageFetcher::new(FetchConfig::default())?;
//! let loaded = catalogue.load(&fetcher)?;
//! println!("{}", loaded.report.summary());
//! loaded.report.write_json("burberry.report.json")?;
//! # Ok::<(), phi3v_data::DataError>(())
//! ```

mod csv_reader;
mod jsonl_reader;
mod load;
mod mapping;
mod parquet_io;
mod product;
mod value;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use load::{CatalogueItem, LoadedCatalogue};
pub use mapping::ColumnMapping;
pub use parquet_io::{burberry_arrow_schema, write_parquet};
pub use product::{ColumnType, Product, BURBERRY_SCHEMA};

use crate::report::DropReason;
use crate::DataError;

/// File format of a catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogueFormat {
    /// Apache Parquet (the format of the Hugging Face dataset).
    Parquet,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl CatalogueFormat {
    /// The format a file name says: `.parquet`/`.pq`, `.csv`, `.jsonl`/`.ndjson`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            _ => None,
        }
    }
}

/// Where a row's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Image bytes stored in the catalogue itself, with the original file name if known.
    Embedded {
        /// The encoded image.
        bytes: Vec<u8>,
        /// The `path` of a Hugging Face image struct (informational).
        path: Option<String>,
    },
    /// A local file (already resolved against the catalogue's folder).
    File(PathBuf),
    /// An `http` or `https` URL.
    Url(String),
    /// The row names no image.
    Missing,
}

impl ImageSource {
    /// A short description for reports: the path, the URL, or "embedded (N bytes)".
    pub fn describe(&self) -> String {
        match self {
            ImageSource::Embedded { bytes, path } => match path {
                Some(p) => format!("embedded {p} ({} bytes)", bytes.len()),
                None => format!("embedded ({} bytes)", bytes.len()),
            },
            ImageSource::File(path) => path.display().to_string(),
            ImageSource::Url(url) => url.clone(),
            ImageSource::Missing => "none".into(),
        }
    }
}

/// One row as read from a catalogue, before any check.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueRow {
    /// 0-based index of the row in the file (data rows, in file order).
    pub index: usize,
    /// The row's values (defaults where the file has no value).
    pub product: Product,
    /// The product code, when the row has a readable one.
    pub product_code: Option<i64>,
    /// The row's image.
    pub image: ImageSource,
    /// Problems found while reading: unparseable row or cell, missing product code or price.
    pub problems: Vec<DropReason>,
}

/// Rows streamed from a catalogue file.
pub struct CatalogueRows {
    inner: Box<dyn Iterator<Item = Result<CatalogueRow, DataError>> + Send>,
    total: Option<usize>,
}

impl CatalogueRows {
    /// The number of rows, when the format records it (parquet).
    pub fn total(&self) -> Option<usize> {
        self.total
    }
}

impl Iterator for CatalogueRows {
    type Item = Result<CatalogueRow, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

/// A catalogue file, its format and its column mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    path: PathBuf,
    format: CatalogueFormat,
    mapping: ColumnMapping,
}

impl Catalogue {
    /// A catalogue with the format told by the file name and the Burberry mapping. The file
    /// is opened by [`rows`](Self::rows) / [`load`](Self::load).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DataError> {
        let path = path.into();
        let format = CatalogueFormat::from_path(&path)
            .ok_or_else(|| DataError::UnknownCatalogueFormat { path: path.clone() })?;
        Ok(Self {
            path,
            format,
            mapping: ColumnMapping::default(),
        })
    }

    /// Uses another format than the file name says.
    pub fn with_format(mut self, format: CatalogueFormat) -> Self {
        self.format = format;
        self
    }

    /// Uses another column mapping.
    pub fn with_mapping(mut self, mapping: ColumnMapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// The catalogue file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file format.
    pub fn format(&self) -> CatalogueFormat {
        self.format
    }

    /// The column mapping.
    pub fn mapping(&self) -> &ColumnMapping {
        &self.mapping
    }

    /// The folder relative image paths resolve against: the catalogue's folder.
    pub fn base_dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// Streams the rows. Fails if the file cannot be opened, is not of its format, or lacks a
    /// column the mapping needs; a bad row is not an error (see [`CatalogueRow::problems`]).
    pub fn rows(&self) -> Result<CatalogueRows, DataError> {
        let base = self.base_dir();
        Ok(match self.format {
            CatalogueFormat::Parquet => {
                let (rows, total) = parquet_io::ParquetRows::open(&self.path, base, &self.mapping)?;
                CatalogueRows {
                    inner: Box::new(rows),
                    total,
                }
            }
            CatalogueFormat::Csv => CatalogueRows {
                inner: Box::new(csv_reader::CsvRows::open(&self.path, base, &self.mapping)?),
                total: None,
            },
            CatalogueFormat::Jsonl => CatalogueRows {
                inner: Box::new(jsonl_reader::JsonlRows::open(
                    &self.path,
                    base,
                    &self.mapping,
                )?),
                total: None,
            },
        })
    }
}

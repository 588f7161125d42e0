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
//! (title, category, price within [`LoadOptions`], image), fetches images (URLs through the
//! [`ImageFetcher`](crate::images::ImageFetcher) and its cache, local files, embedded bytes),
//! decodes each image once, drops duplicate product codes (keeping the first usable row), and
//! records every dropped row and why in a [`Report`](crate::report::Report). Each dropped
//! row's message starts with where a person finds the row: `line N` of a CSV or JSONL file
//! (CSV lines counted with CRLF, CR or LF line ends and with the lines inside quoted fields),
//! `row N` (0-based) of a parquet file; and a reason about a cell names its column.
//!
//! # Hostile files
//!
//! A catalogue may come from anywhere, so what it can make the loader do is bounded:
//!
//! - values: prices must be finite, above 0 and at most [`LoadOptions::max_price`]; a mapped
//!   category must not be empty; a cell of the wrong type (a JSON `true` or array in the price
//!   column) drops its row, while a parquet column of the wrong type (a boolean price column)
//!   is an error of the file, naming the column and its type, since every row would fail;
//!   a text cell over [`MAX_FIELD_BYTES`] drops its row;
//! - sizes: a JSONL line over [`MAX_ROW_BYTES`] is dropped unread past that length, and a
//!   CSV record over it (usually a quote left open) is an error of the file; images are read under
//!   [`FetchConfig::max_bytes`](crate::images::FetchConfig::max_bytes), and only regular files;
//! - paths: an image file outside the catalogue's folder (an absolute path elsewhere, a `..`
//!   escape, a symbolic link resolving outside) drops its row unless
//!   [`LoadOptions::allow_outside_paths`] is set, so a downloaded catalogue cannot make a
//!   training run read (and later show or upload) arbitrary files of the machine.
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

pub(crate) use jsonl_reader::{is_blank, read_line, without_position, Line};
pub(crate) use load::{fetch_urls, ready_image, ImageRules};
pub use load::{CatalogueItem, LoadOptions, LoadedCatalogue, DEFAULT_MAX_PRICE};
pub use mapping::{CellKind, ColumnMapping, RecordColumn, RecordLayout};
pub use parquet_io::{burberry_arrow_schema, write_parquet};
pub use product::{ColumnType, Product, BURBERRY_SCHEMA};
pub(crate) use value::image_from_str;
pub use value::{MAX_FIELD_BYTES, MAX_ROW_BYTES};

use crate::report::DropReason;
use crate::DataError;
use mapping::Layout;

/// The named cells of one row, for a catalogue read with a [`RecordLayout`]: the columns it
/// names, each as the file holds it (text, integer, float, boolean or null). Templates read
/// it directly ([`phi3v_processor::prompt::Fields`]).
pub type Record = std::collections::BTreeMap<String, phi3v_processor::prompt::FieldValue>;

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
    /// A local file (relative paths already resolved against the catalogue's folder; not yet
    /// checked to be inside it: [`Catalogue::load`] does that).
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
    /// 1-based line of the file where the row starts (CSV, JSONL); `None` for parquet, whose
    /// rows are found by `index`. CSV lines count CRLF, CR and LF line ends alike, and the
    /// line ends inside quoted fields.
    pub line: Option<u64>,
    /// The row's values (defaults where the file has no value).
    pub product: Product,
    /// The product code, when the row has a readable one (product mapping only).
    pub product_code: Option<i64>,
    /// The cells of the [`RecordLayout`]'s columns (empty with the product mapping).
    pub record: Record,
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

impl CatalogueRow {
    /// Where a person finds the row in its file: `line 12` (CSV, JSONL) or `row 11`
    /// (parquet, 0-based as pandas and pyarrow count). Drop messages start with it.
    pub fn location(&self) -> String {
        crate::report::row_location(self.index, self.line)
    }
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
    /// When set, rows are read as records of these columns instead of through `mapping`.
    record: Option<RecordLayout>,
    options: LoadOptions,
}

impl Catalogue {
    /// A catalogue with the format told by the file name, the Burberry mapping and the default
    /// [`LoadOptions`]. The file is opened by [`rows`](Self::rows) / [`load`](Self::load).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DataError> {
        let path = path.into();
        let format = CatalogueFormat::from_path(&path)
            .ok_or_else(|| DataError::UnknownCatalogueFormat { path: path.clone() })?;
        Ok(Self {
            path,
            format,
            mapping: ColumnMapping::default(),
            record: None,
            options: LoadOptions::default(),
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

    /// Reads each row as a [`Record`] of the layout's columns instead of a
    /// [`Product`]: no column is a title, category, price or product id, rows are not
    /// deduplicated, and a row is dropped when a cell does not hold what its
    /// [`CellKind`] asks for (or the image is missing or unusable).
    pub fn with_record_layout(mut self, layout: RecordLayout) -> Self {
        self.record = Some(layout);
        self
    }

    /// The record layout, when rows are read as records.
    pub fn record_layout(&self) -> Option<&RecordLayout> {
        self.record.as_ref()
    }

    /// How rows are read.
    fn layout(&self) -> Layout<'_> {
        match &self.record {
            Some(layout) => Layout::Record(layout),
            None => Layout::Product(&self.mapping),
        }
    }

    /// Uses other row checks and path rules for [`load`](Self::load).
    pub fn with_options(mut self, options: LoadOptions) -> Self {
        self.options = options;
        self
    }

    /// The row checks and path rules of [`load`](Self::load).
    pub fn options(&self) -> &LoadOptions {
        &self.options
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
        folder_of(&self.path)
    }

    /// Streams the rows. Fails if the file cannot be opened, is not of its format, or lacks a
    /// column the mapping needs; a bad row is not an error (see [`CatalogueRow::problems`]).
    pub fn rows(&self) -> Result<CatalogueRows, DataError> {
        let base = self.base_dir();
        let layout = self.layout();
        Ok(match self.format {
            CatalogueFormat::Parquet => {
                let (rows, total) = parquet_io::ParquetRows::open(&self.path, base, layout)?;
                CatalogueRows {
                    inner: Box::new(rows),
                    total,
                }
            }
            CatalogueFormat::Csv => CatalogueRows {
                inner: Box::new(csv_reader::CsvRows::open(&self.path, base, layout)?),
                total: None,
            },
            CatalogueFormat::Jsonl => CatalogueRows {
                inner: Box::new(jsonl_reader::JsonlRows::open(&self.path, base, layout)?),
                total: None,
            },
        })
    }
}

/// The folder holding the data file at `path` (`.` for a bare file name): where relative
/// image paths of its rows or records resolve.
pub(crate) fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

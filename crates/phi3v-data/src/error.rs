//! The error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while building data for Phi-3-Vision.
///
/// Each variant names its culprit (a file, a batch position, image dimensions) so that a failed
/// run over thousands of samples points at the sample to look at.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
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
        /// What the decoder (the input processor's, the project's one decoding path) said.
        #[source]
        source: phi3v_processor::ImageDecodeError,
    },

    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A catalogue's format could not be told from its file name.
    #[error(
        "cannot tell the format of catalogue {path}: expected a .parquet, .csv, .jsonl or \
         .ndjson file name (or give the format explicitly)"
    )]
    UnknownCatalogueFormat {
        /// The catalogue file.
        path: PathBuf,
    },

    /// A parquet file could not be opened, read or written.
    #[error("parquet file {path}: {source}")]
    Parquet {
        /// The parquet file.
        path: PathBuf,
        /// What the parquet library said.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// Arrow data of a catalogue could not be decoded or built, from row `row` on.
    #[error("{path}, rows from {row}: {source}")]
    Arrow {
        /// The catalogue file.
        path: PathBuf,
        /// The first row of the batch that failed.
        row: usize,
        /// What the arrow library said.
        #[source]
        source: arrow_schema::ArrowError,
    },

    /// A CSV catalogue could not be read as a whole (its header, or an I/O failure).
    #[error("CSV file {path}: {source}")]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// What the CSV reader said.
        #[source]
        source: csv::Error,
    },

    /// A JSON file (report, fault list) could not be written or parsed.
    #[error("JSON file {path}: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },

    /// A column the column mapping needs is not in the catalogue.
    #[error(
        "catalogue {path} has no column `{column}` (mapped as the {role}); its columns are: \
         {available}"
    )]
    MissingColumn {
        /// The catalogue file.
        path: PathBuf,
        /// The column the mapping names.
        column: String,
        /// What the mapping uses it for ("title", "price", ...).
        role: String,
        /// The columns the file has, comma separated.
        available: String,
    },

    /// A record column none of whose cells holds what it must (a number column of words):
    /// the column, not its rows, is wrong.
    #[error("catalogue {path}, column `{column}` cannot hold {expected}: no row has one (for example {example})")]
    ColumnValues {
        /// The catalogue file.
        path: PathBuf,
        /// The column.
        column: String,
        /// What it should hold (`a number`).
        expected: String,
        /// One cell and where it is (`line 2: "Oak Chair"`).
        example: String,
    },

    /// A catalogue column has a type that cannot be read for its role.
    #[error("catalogue {path}, column `{column}`: type {found} cannot be read as {expected}")]
    ColumnType {
        /// The catalogue file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The column's type in the file.
        found: String,
        /// What it should hold.
        expected: String,
    },

    /// An image could not be encoded or written.
    #[error("cannot write image {path}: {source}")]
    ImageEncode {
        /// The image file.
        path: PathBuf,
        /// What the encoder said.
        #[source]
        source: image::ImageError,
    },

    /// An image URL a user named could not be downloaded
    /// ([`ImageFetcher::fetch_one`](crate::images::ImageFetcher::fetch_one)).
    #[error("cannot download {url}: {source}")]
    Download {
        /// The URL.
        url: String,
        /// The last attempt's failure and the number of attempts.
        #[source]
        source: crate::images::FetchFailure,
    },

    /// An output could not be written, or would replace a non-empty folder the user did not
    /// ask to replace (the sample-data folder); the message names the path.
    #[error(transparent)]
    Output(#[from] phi3v_io::OutputError),

    /// An error of the input processor (prompt, tokenizer, image processor, collation).
    #[error(transparent)]
    Processor(#[from] phi3v_processor::ProcessorError),
}

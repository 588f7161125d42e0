//! The report of dropped rows: a catalogue row (or a record of a conversation file) that
//! cannot be used is dropped and said so, never silently.
//!
//! Every dropped row is recorded with its row index (0-based, in file order), its product code
//! when it has a readable one, and a [`DropReason`]. The report is written as JSON
//! ([`Report::write_json`]) and summarised in one line ([`Report::summary`]), e.g.
//!
//! ```text
//! catalogue.parquet: 3040 rows read, 2994 kept, 46 dropped (41 download failed, 3 undecodable image, 2 empty title)
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Why a row was dropped. Serialised with a `kind` tag (`{"kind": "empty_title", ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DropReason {
    /// The row could not be parsed (a CSV line with the wrong number of fields, a JSONL line
    /// that is not a JSON object, invalid UTF-8).
    Malformed {
        /// What the parser said, with the line number.
        message: String,
    },
    /// A cell could not be read as its column's type (`"abc"` in a price column).
    InvalidValue {
        /// The column.
        column: String,
        /// The cell as found.
        value: String,
        /// What the column should hold.
        expected: String,
    },
    /// The product id is missing: without it the row cannot be deduplicated or split.
    MissingProductCode {
        /// The product id column.
        column: String,
    },
    /// The title is missing, empty or only whitespace: nothing to learn.
    EmptyTitle {
        /// The title column.
        column: String,
    },
    /// The price is missing.
    MissingPrice {
        /// The price column.
        column: String,
    },
    /// The price is NaN or infinite.
    NonFinitePrice {
        /// The price column.
        column: String,
        /// The value as text ("NaN", "inf").
        value: String,
    },
    /// The row names no image.
    MissingImage {
        /// The image column.
        column: String,
    },
    /// The image is a local file that cannot be read (usually: it does not exist).
    ImageFileUnreadable {
        /// The file, resolved against the catalogue's folder.
        path: PathBuf,
        /// What the operating system said.
        error: String,
    },
    /// The image URL could not be downloaded (after retries).
    DownloadFailed {
        /// The URL.
        url: String,
        /// The last attempt's failure.
        error: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The image bytes were read but do not decode as an image.
    UndecodableImage {
        /// Where the bytes came from: a path, a URL, or "embedded".
        image: String,
        /// What the decoder said.
        error: String,
    },
    /// Another usable row earlier in the file has the same product code; that one is kept.
    DuplicateProductCode {
        /// The row that is kept.
        first_row: usize,
    },
    /// The row loaded, but its training example (image placeholders, prompt and answer) is
    /// longer than the token budget. Nothing is truncated: a cut example trains the wrong
    /// target, and one huge example can exhaust memory.
    TooManyTokens {
        /// Tokens of the example.
        tokens: usize,
        /// The budget.
        max_tokens: usize,
    },
    /// The row loaded, but it could not become an example (an image whose shape the HD
    /// transform refuses, a prompt that does not render).
    NotAnExample {
        /// Why, as the example builder said it.
        message: String,
    },
    /// A conversation record whose messages cannot be trained: roles out of order, no
    /// assistant turn to end it, a message that is not `{role, content}` text.
    BadConversation {
        /// What is wrong, naming the message (1-based, as a person counts).
        message: String,
    },
    /// A conversation record whose `<image>` tags and `images` list disagree in number: which
    /// image goes where would be a guess.
    ImageCountMismatch {
        /// `<image>` tags across the record's messages.
        tags: usize,
        /// Entries of its `images` list.
        images: usize,
    },
}

/// The kind of a [`DropReason`], without its details: for counting and for comparing a
/// report with the faults a test injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropKind {
    /// See [`DropReason::Malformed`].
    Malformed,
    /// See [`DropReason::InvalidValue`].
    InvalidValue,
    /// See [`DropReason::MissingProductCode`].
    MissingProductCode,
    /// See [`DropReason::EmptyTitle`].
    EmptyTitle,
    /// See [`DropReason::MissingPrice`].
    MissingPrice,
    /// See [`DropReason::NonFinitePrice`].
    NonFinitePrice,
    /// See [`DropReason::MissingImage`].
    MissingImage,
    /// See [`DropReason::ImageFileUnreadable`].
    ImageFileUnreadable,
    /// See [`DropReason::DownloadFailed`].
    DownloadFailed,
    /// See [`DropReason::UndecodableImage`].
    UndecodableImage,
    /// See [`DropReason::DuplicateProductCode`].
    DuplicateProductCode,
    /// See [`DropReason::TooManyTokens`].
    TooManyTokens,
    /// See [`DropReason::NotAnExample`].
    NotAnExample,
    /// See [`DropReason::BadConversation`].
    BadConversation,
    /// See [`DropReason::ImageCountMismatch`].
    ImageCountMismatch,
}

impl DropKind {
    /// A short human label ("download failed").
    pub fn label(self) -> &'static str {
        match self {
            DropKind::Malformed => "malformed",
            DropKind::InvalidValue => "invalid value",
            DropKind::MissingProductCode => "missing product code",
            DropKind::EmptyTitle => "empty title",
            DropKind::MissingPrice => "missing price",
            DropKind::NonFinitePrice => "non-finite price",
            DropKind::MissingImage => "missing image",
            DropKind::ImageFileUnreadable => "unreadable image file",
            DropKind::DownloadFailed => "download failed",
            DropKind::UndecodableImage => "undecodable image",
            DropKind::DuplicateProductCode => "duplicate product code",
            DropKind::TooManyTokens => "over the token budget",
            DropKind::NotAnExample => "not an example",
            DropKind::BadConversation => "bad conversation",
            DropKind::ImageCountMismatch => "image count mismatch",
        }
    }
}

impl fmt::Display for DropKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl DropReason {
    /// The reason's kind.
    pub fn kind(&self) -> DropKind {
        match self {
            DropReason::Malformed { .. } => DropKind::Malformed,
            DropReason::InvalidValue { .. } => DropKind::InvalidValue,
            DropReason::MissingProductCode { .. } => DropKind::MissingProductCode,
            DropReason::EmptyTitle { .. } => DropKind::EmptyTitle,
            DropReason::MissingPrice { .. } => DropKind::MissingPrice,
            DropReason::NonFinitePrice { .. } => DropKind::NonFinitePrice,
            DropReason::MissingImage { .. } => DropKind::MissingImage,
            DropReason::ImageFileUnreadable { .. } => DropKind::ImageFileUnreadable,
            DropReason::DownloadFailed { .. } => DropKind::DownloadFailed,
            DropReason::UndecodableImage { .. } => DropKind::UndecodableImage,
            DropReason::DuplicateProductCode { .. } => DropKind::DuplicateProductCode,
            DropReason::TooManyTokens { .. } => DropKind::TooManyTokens,
            DropReason::NotAnExample { .. } => DropKind::NotAnExample,
            DropReason::BadConversation { .. } => DropKind::BadConversation,
            DropReason::ImageCountMismatch { .. } => DropKind::ImageCountMismatch,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Malformed { message } => write!(f, "malformed row: {message}"),
            DropReason::InvalidValue {
                column,
                value,
                expected,
            } => write!(f, "column `{column}`: {value} is not {expected}"),
            DropReason::MissingProductCode { column } => {
                write!(f, "missing product code (column `{column}`)")
            }
            DropReason::EmptyTitle { column } => write!(f, "empty title (column `{column}`)"),
            DropReason::MissingPrice { column } => write!(f, "missing price (column `{column}`)"),
            DropReason::NonFinitePrice { column, value } => {
                write!(f, "price is {value} (column `{column}`)")
            }
            DropReason::MissingImage { column } => {
                write!(f, "no image given (column `{column}`)")
            }
            DropReason::ImageFileUnreadable { path, error } => {
                write!(f, "cannot read image file {}: {error}", path.display())
            }
            DropReason::DownloadFailed {
                url,
                error,
                attempts,
            } => write!(
                f,
                "download of {url} failed after {attempts} attempt{}: {error}",
                if *attempts == 1 { "" } else { "s" }
            ),
            DropReason::UndecodableImage { image, error } => {
                write!(f, "image {image} does not decode: {error}")
            }
            DropReason::DuplicateProductCode { first_row } => {
                write!(f, "duplicate product code (kept row {first_row})")
            }
            DropReason::TooManyTokens { tokens, max_tokens } => write!(
                f,
                "the example is {tokens} tokens, over the budget of {max_tokens}"
            ),
            DropReason::NotAnExample { message } => {
                write!(f, "cannot become an example: {message}")
            }
            DropReason::BadConversation { message } => write!(f, "bad conversation: {message}"),
            DropReason::ImageCountMismatch { tags, images } => write!(
                f,
                "{tags} <image> tag{} in the messages but {images} entr{} in `images`: each \
                 image needs exactly one tag where it goes",
                if *tags == 1 { "" } else { "s" },
                if *images == 1 { "y" } else { "ies" }
            ),
        }
    }
}

/// One dropped row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedRow {
    /// 0-based index of the row in the catalogue (data rows, in file order).
    pub row: usize,
    /// The row's first line in a CSV or JSONL file (1-based, as an editor counts: the header
    /// and multi-line quoted fields included); absent for parquet, whose rows have no lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The row's product code, when it has a readable one.
    pub product_code: Option<i64>,
    /// Why it was dropped.
    pub reason: DropReason,
    /// `reason` as a sentence, for people reading the JSON.
    pub message: String,
}

impl DroppedRow {
    /// A dropped row whose message starts with where a person finds it in the file.
    fn new(row: usize, line: Option<u64>, product_code: Option<i64>, reason: DropReason) -> Self {
        Self {
            row,
            line,
            product_code,
            message: format!("{}: {reason}", row_location(row, line)),
            reason,
        }
    }
}

/// Where a person finds a row in its file: `line 12` (CSV, JSONL: the row index is no line
/// of the file) or `row 11` (parquet, 0-based as pandas and pyarrow count).
pub fn row_location(row: usize, line: Option<u64>) -> String {
    match line {
        Some(line) => format!("line {line}"),
        None => format!("row {row}"),
    }
}

/// What happened to the rows of one catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The catalogue file.
    pub catalogue: PathBuf,
    /// Rows read from the file.
    pub rows_read: usize,
    /// Rows kept (`rows_read - dropped.len()`).
    pub rows_kept: usize,
    /// Dropped rows per kind.
    pub counts: BTreeMap<DropKind, usize>,
    /// The dropped rows, in row order.
    pub dropped: Vec<DroppedRow>,
}

impl Report {
    /// An empty report for `catalogue`.
    pub fn new(catalogue: impl Into<PathBuf>) -> Self {
        Self {
            catalogue: catalogue.into(),
            rows_read: 0,
            rows_kept: 0,
            counts: BTreeMap::new(),
            dropped: Vec::new(),
        }
    }

    /// Records a dropped row.
    pub fn drop_row(
        &mut self,
        row: usize,
        line: Option<u64>,
        product_code: Option<i64>,
        reason: DropReason,
    ) {
        *self.counts.entry(reason.kind()).or_default() += 1;
        self.dropped
            .push(DroppedRow::new(row, line, product_code, reason));
    }

    /// Records a row that the loader kept but a later stage could not use (building its
    /// example: see [`DropReason::TooManyTokens`]), so that the report still accounts for
    /// every row read: the row moves from kept to dropped, in row order.
    ///
    /// # Errors
    /// [`DataError::InvalidConfig`] if the row is already reported as dropped or no kept row
    /// is left (the report would count a row twice).
    pub fn drop_kept_row(
        &mut self,
        row: usize,
        line: Option<u64>,
        product_code: Option<i64>,
        reason: DropReason,
    ) -> Result<(), DataError> {
        let at = self.dropped.partition_point(|d| d.row < row);
        if self.dropped.get(at).is_some_and(|d| d.row == row) || self.rows_kept == 0 {
            return Err(DataError::InvalidConfig(format!(
                "{}: row {row} cannot be dropped as {}: it is not a kept row",
                self.catalogue.display(),
                reason.kind()
            )));
        }
        *self.counts.entry(reason.kind()).or_default() += 1;
        self.dropped
            .insert(at, DroppedRow::new(row, line, product_code, reason));
        self.rows_kept -= 1;
        Ok(())
    }

    /// Sorts the dropped rows by row index (rows are checked in parallel chunks).
    pub(crate) fn finish(&mut self, rows_read: usize) {
        self.dropped.sort_by_key(|d| d.row);
        self.rows_read = rows_read;
        self.rows_kept = rows_read - self.dropped.len();
    }

    /// `(row, kind)` of every dropped row, in row order.
    pub fn dropped_kinds(&self) -> Vec<(usize, DropKind)> {
        self.dropped
            .iter()
            .map(|d| (d.row, d.reason.kind()))
            .collect()
    }

    /// The one-line summary: rows read, kept, dropped, and the drop counts by kind (most
    /// frequent first).
    pub fn summary(&self) -> String {
        let name = self.catalogue.file_name().map_or_else(
            || self.catalogue.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let mut line = format!(
            "{name}: {} rows read, {} kept, {} dropped",
            self.rows_read,
            self.rows_kept,
            self.dropped.len()
        );
        if !self.counts.is_empty() {
            let mut counts: Vec<_> = self.counts.iter().collect();
            counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            line.push_str(&format!(" ({})", parts.join(", ")));
        }
        line
    }

    /// Writes the report as pretty-printed JSON.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<(), DataError> {
        crate::json_file::write(path.as_ref(), self)
    }

    /// Reads a report written by [`Report::write_json`].
    pub fn read_json(path: impl AsRef<Path>) -> Result<Self, DataError> {
        crate::json_file::read(path.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five rows read, rows 1 and 3 dropped by the loader.
    fn loaded() -> Report {
        let mut report = Report::new("shop.csv");
        report.drop_row(
            3,
            None,
            Some(30),
            DropReason::DuplicateProductCode { first_row: 0 },
        );
        report.drop_row(
            1,
            Some(3),
            None,
            DropReason::EmptyTitle {
                column: "title".into(),
            },
        );
        report.finish(5);
        report
    }

    #[test]
    fn a_row_dropped_after_loading_moves_from_kept_to_dropped_in_row_order() {
        let mut report = loaded();
        assert_eq!(report.rows_kept, 3);
        let too_long = DropReason::TooManyTokens {
            tokens: 9000,
            max_tokens: 4096,
        };
        report
            .drop_kept_row(2, Some(4), Some(20), too_long)
            .unwrap();
        assert_eq!(report.rows_kept, 2);
        assert_eq!(
            report.dropped_kinds(),
            vec![
                (1, DropKind::EmptyTitle),
                (2, DropKind::TooManyTokens),
                (3, DropKind::DuplicateProductCode)
            ]
        );
        assert_eq!(
            report.dropped[1].message,
            "line 4: the example is 9000 tokens, over the budget of 4096"
        );
        assert_eq!(report.counts[&DropKind::TooManyTokens], 1);
        assert!(
            report
                .summary()
                .starts_with("shop.csv: 5 rows read, 2 kept, 3 dropped ("),
            "{}",
            report.summary()
        );
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains(r#""kind":"too_many_tokens""#), "{json}");
    }

    #[test]
    fn a_row_cannot_be_dropped_twice() {
        let mut report = loaded();
        let reason = || DropReason::NotAnExample {
            message: "too elongated".into(),
        };
        let err = report
            .drop_kept_row(3, None, Some(30), reason())
            .unwrap_err();
        assert!(err.to_string().contains("row 3"), "{err}");
        report.drop_kept_row(0, None, None, reason()).unwrap();
        report.drop_kept_row(2, None, None, reason()).unwrap();
        report.drop_kept_row(4, None, None, reason()).unwrap();
        assert_eq!(report.rows_kept, 0);
        assert!(report.drop_kept_row(5, None, None, reason()).is_err());
        assert_eq!(report.dropped.len(), 5);
    }
}

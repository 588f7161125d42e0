//! From catalogue rows to usable items: checks, image fetching, decoding, deduplication.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::value::number;
use super::{
    Catalogue, CatalogueRow, CellKind, ColumnMapping, ImageSource, Product, Record, RecordLayout,
};
use crate::images::{
    check_decodes, progress_bar, read_image_file, FetchFailure, Fetched, ImageData, ImageFetcher,
    ReadyImage,
};
use crate::report::{DropReason, Report};
use crate::DataError;

/// Rows checked together: their downloads run concurrently and their images decode in
/// parallel, while memory stays bounded by one chunk of rows.
const CHUNK_ROWS: usize = 256;

/// The default [`LoadOptions::max_price`]: 10 million in the catalogue's currency.
pub const DEFAULT_MAX_PRICE: f64 = 1e7;

/// How [`Catalogue::load`] judges rows and which image files it may read. Deserialises with
/// missing keys taking their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadOptions {
    /// The highest price kept ([`DEFAULT_MAX_PRICE`], 10 million, by default); a row above it
    /// is dropped as an invalid value. Prices must also be finite and above 0.
    ///
    /// A ceiling is a judgement call, hence a setting: one absurd price (`1e308`) would make
    /// the mean-price baseline and the price loss meaningless, while the most expensive
    /// products of a luxury catalogue cost thousands of dollars or euros. 10 million leaves
    /// room for currencies of small units (yen, won); raise it for catalogues priced in, say,
    /// rupiah. `f64::INFINITY` turns the ceiling off.
    pub max_price: f64,
    /// Whether a row may name an image file outside the catalogue's folder: an absolute path
    /// elsewhere, a `..` escape or a symbolic link that resolves outside. Off by default, so
    /// that a catalogue from elsewhere cannot make a run read, show or upload files of the
    /// machine (`/etc/passwd`, `~/.ssh/id_rsa`) as images: such a row is dropped, its path
    /// named. Turn it on for a catalogue you wrote that points at a shared image folder.
    pub allow_outside_paths: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_price: DEFAULT_MAX_PRICE,
            allow_outside_paths: false,
        }
    }
}

impl LoadOptions {
    pub(crate) fn validate(&self) -> Result<(), DataError> {
        // Written so that NaN fails too.
        if self.max_price.is_nan() || self.max_price <= 0.0 {
            return Err(DataError::InvalidConfig(format!(
                "max_price must be above 0, got {}",
                self.max_price
            )));
        }
        Ok(())
    }
}

/// A usable catalogue row: checked fields and an image that decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueItem {
    /// 0-based index of the row in the catalogue file.
    pub row: usize,
    /// Its first line, for CSV and JSONL files (see [`CatalogueRow::line`]).
    pub line: Option<u64>,
    /// The product (a price within [`LoadOptions`], a non-empty title and category, a unique
    /// product code); defaults when the catalogue is read as records.
    pub product: Product,
    /// The cells of a [`RecordLayout`]'s columns, each holding what its
    /// [`CellKind`] asks for (empty with the product mapping).
    pub record: Record,
    /// The image, fetched and checked.
    pub image: ReadyImage,
}

/// The usable rows of a catalogue and the report of the dropped ones.
#[derive(Debug, Clone)]
pub struct LoadedCatalogue {
    /// Usable rows, in file order.
    pub items: Vec<CatalogueItem>,
    /// Every dropped row and why.
    pub report: Report,
}

impl Catalogue {
    /// Reads every row, drops (and reports) those that cannot be used, and returns the rest
    /// with their images fetched and checked.
    ///
    /// Checks, in this order, the first failing one naming the row's drop reason: the row
    /// parses; its cells have their column's type and fit
    /// [`MAX_FIELD_BYTES`](super::MAX_FIELD_BYTES); its price is above 0 and at most
    /// [`LoadOptions::max_price`], its category (when the mapping has one) is not empty; it has
    /// a product code, a non-empty title, a finite price and an image; an image file is inside
    /// the catalogue's folder (unless [`LoadOptions::allow_outside_paths`]), a regular file and
    /// within the fetcher's size limit, and a URL downloads; the image decodes. Of usable rows sharing a product code,
    /// the first is kept and the others are reported as duplicates. Each drop's message starts
    /// with the row's [`location`](CatalogueRow::location) in the file.
    ///
    /// Errors are reserved for the catalogue as a whole (unreadable file, missing mapped
    /// column, a parquet column of the wrong type) and for invalid [`LoadOptions`].
    pub fn load(&self, fetcher: &ImageFetcher) -> Result<LoadedCatalogue, DataError> {
        self.options.validate()?;
        let rules = ImageRules::new(&self.options, fetcher, self.base_dir())?;
        let mut rows = self.rows()?;
        let bar = progress_bar(
            rows.total().map(|n| n as u64),
            fetcher.config().progress,
            "loading catalogue",
        );
        let mut report = Report::new(&self.path);
        let mut items = Vec::new();
        let mut first_row_of: HashMap<i64, usize> = HashMap::new();
        let mut numbers = self.record.as_ref().map(NumberColumns::new);
        let mut rows_read = 0;
        loop {
            let chunk: Vec<CatalogueRow> =
                rows.by_ref().take(CHUNK_ROWS).collect::<Result<_, _>>()?;
            if chunk.is_empty() {
                break;
            }
            rows_read += chunk.len();
            if let Some(numbers) = &mut numbers {
                numbers.count(&chunk);
            }
            let n = chunk.len() as u64;
            self.load_chunk(
                chunk,
                fetcher,
                &rules,
                &mut report,
                &mut items,
                &mut first_row_of,
            );
            bar.inc(n);
        }
        bar.finish_and_clear();
        if let Some(numbers) = &numbers {
            numbers.check(&self.path)?;
        }
        report.finish(rows_read);
        Ok(LoadedCatalogue { items, report })
    }

    fn load_chunk(
        &self,
        chunk: Vec<CatalogueRow>,
        fetcher: &ImageFetcher,
        rules: &ImageRules,
        report: &mut Report,
        items: &mut Vec<CatalogueItem>,
        first_row_of: &mut HashMap<i64, usize>,
    ) {
        let mut candidates = Vec::with_capacity(chunk.len());
        for row in chunk {
            let problem = match &self.record {
                Some(layout) => record_problem(&row, layout),
                None => field_problem(&row, &self.mapping, &self.options),
            };
            match problem {
                Some(reason) => drop_row(report, &row, reason),
                None => candidates.push(row),
            }
        }
        let fetched = fetch_urls(fetcher, candidates.iter().map(|row| &row.image));
        let checked: Vec<Result<ReadyImage, DropReason>> = candidates
            .par_iter()
            .map(|row| ready_image(&row.image, &fetched, rules))
            .collect();
        // Records are not deduplicated: rows sharing a value are the task's to group.
        let dedup = self.record.is_none();
        for (row, image) in candidates.into_iter().zip(checked) {
            let code = row.product.product_code;
            let result = image.and_then(|image| match first_row_of.get(&code) {
                Some(&first_row) if dedup => Err(DropReason::DuplicateProductCode { first_row }),
                _ => Ok(image),
            });
            match result {
                Ok(image) => {
                    if dedup {
                        first_row_of.insert(code, row.index);
                    }
                    items.push(CatalogueItem {
                        row: row.index,
                        line: row.line,
                        product: row.product,
                        record: row.record,
                        image,
                    });
                }
                Err(reason) => drop_row(report, &row, reason),
            }
        }
    }
}

/// Records a dropped row with its line, so that its message names where a person finds it.
fn drop_row(report: &mut Report, row: &CatalogueRow, reason: DropReason) {
    report.drop_row(row.index, row.line, row.product_code, reason);
}

/// The first problem of a row's fields, in the order of [`DropKind`](crate::report::DropKind)
/// (a row that does not parse, then a cell of the wrong type or an invalid value, then the
/// missing values).
fn field_problem(
    row: &CatalogueRow,
    mapping: &ColumnMapping,
    options: &LoadOptions,
) -> Option<DropReason> {
    let mut problems = row.problems.clone();
    // A cell that was not read (missing, wrong type, too long) has its problem already, and
    // its field holds a default, which must not be judged as a value.
    let was_read = |column: &str| {
        !row.problems.iter().any(|p| match p {
            DropReason::InvalidValue { column: c, .. } | DropReason::MissingPrice { column: c } => {
                c == column
            }
            _ => false,
        })
    };
    if row.product.title.trim().is_empty() && was_read(&mapping.title) {
        problems.push(DropReason::EmptyTitle {
            column: mapping.title.clone(),
        });
    }
    if let Some(column) = mapping.category.as_ref().filter(|c| was_read(c)) {
        let category = &row.product.category3_code;
        if category.trim().is_empty() {
            problems.push(DropReason::InvalidValue {
                column: column.clone(),
                value: if category.is_empty() {
                    "null".into()
                } else {
                    format!("{category:?}")
                },
                expected: "a category (it is part of the answer)".into(),
            });
        }
    }
    let price = row.product.full_price;
    if !was_read(&mapping.price) {
        // Reported as missing or invalid already.
    } else if !price.is_finite() {
        problems.push(DropReason::NonFinitePrice {
            column: mapping.price.clone(),
            value: price.to_string(),
        });
    } else if price <= 0.0 || price > options.max_price {
        problems.push(DropReason::InvalidValue {
            column: mapping.price.clone(),
            value: number(price),
            expected: format!(
                "a price above 0 and at most {} (max_price)",
                number(options.max_price)
            ),
        });
    }
    if row.image == ImageSource::Missing {
        problems.push(DropReason::MissingImage {
            column: mapping.image.clone(),
        });
    }
    problems.into_iter().min_by_key(DropReason::kind)
}

/// The first problem of a record row: its cells (checked while reading, see
/// [`CellKind`]) and its image.
fn record_problem(row: &CatalogueRow, layout: &RecordLayout) -> Option<DropReason> {
    let mut problems = row.problems.clone();
    if row.image == ImageSource::Missing {
        problems.push(DropReason::MissingImage {
            column: layout.image.clone(),
        });
    }
    problems.into_iter().min_by_key(DropReason::kind)
}

/// The number columns of a record layout, and whether any of their cells held a number: a
/// column none of whose cells does (a number field on a column of names) is an error of the
/// task and the file, not a report of every row.
struct NumberColumns {
    /// Column, cells that were numbers, and the first cell that was not (with its place).
    columns: Vec<(String, usize, Option<String>)>,
}

impl NumberColumns {
    fn new(layout: &RecordLayout) -> Self {
        let mut columns: Vec<(String, usize, Option<String>)> = Vec::new();
        for c in layout.columns.iter().filter(|c| c.kind == CellKind::Number) {
            if !columns.iter().any(|(name, ..)| *name == c.name) {
                columns.push((c.name.clone(), 0, None));
            }
        }
        Self { columns }
    }

    fn count(&mut self, rows: &[CatalogueRow]) {
        for (name, numbers, example) in &mut self.columns {
            for row in rows {
                if row.record.contains_key(name.as_str()) {
                    *numbers += 1;
                } else if example.is_none() {
                    *example = row.problems.iter().find_map(|p| match p {
                        DropReason::InvalidValue { column, value, .. } if column == name => {
                            Some(format!("{}: {value}", row.location()))
                        }
                        _ => None,
                    });
                }
            }
        }
    }

    fn check(&self, path: &Path) -> Result<(), DataError> {
        for (column, numbers, example) in &self.columns {
            if let (0, Some(example)) = (numbers, example) {
                return Err(DataError::ColumnValues {
                    path: path.to_path_buf(),
                    column: column.clone(),
                    expected: "numbers".into(),
                    example: example.clone(),
                });
            }
        }
        Ok(())
    }
}

/// What may be read for a row's image.
pub(crate) struct ImageRules {
    /// The most bytes of an image file
    /// ([`FetchConfig::max_bytes`](crate::images::FetchConfig::max_bytes)).
    max_bytes: u64,
    /// The folder image files must be in; `None` when
    /// [`LoadOptions::allow_outside_paths`] lets them be anywhere.
    folder: Option<Folder>,
}

impl ImageRules {
    /// The rules of `options` for images of a file in `base_dir`, read through `fetcher`.
    pub(crate) fn new(
        options: &LoadOptions,
        fetcher: &ImageFetcher,
        base_dir: &Path,
    ) -> Result<Self, DataError> {
        Ok(Self {
            max_bytes: fetcher.config().max_bytes,
            folder: if options.allow_outside_paths {
                None
            } else {
                Some(Folder::new(base_dir)?)
            },
        })
    }
}

/// The catalogue's folder, as written (made absolute, `.` and `..` resolved) and with its
/// symbolic links resolved.
struct Folder {
    lexical: PathBuf,
    real: PathBuf,
}

impl Folder {
    fn new(dir: &Path) -> Result<Self, DataError> {
        let io_err = |source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        };
        Ok(Self {
            lexical: lexical_absolute(dir).map_err(io_err)?,
            real: dir.canonicalize().map_err(io_err)?,
        })
    }

    /// The file to read for the image `path`: `path` itself with its links resolved, if it is
    /// inside the folder both as written (no `..` escape, no absolute path elsewhere) and once
    /// resolved (no link leading out). A path that does not resolve (a missing file) is
    /// returned as it is, for the read to report why.
    fn confine(&self, path: &Path) -> Result<PathBuf, DropReason> {
        let outside = |what: String| DropReason::ImageFileUnreadable {
            path: path.to_path_buf(),
            error: format!(
                "{what} outside the catalogue's folder {} (set allow_outside_paths to read it)",
                self.lexical.display()
            ),
        };
        match lexical_absolute(path) {
            Ok(written) if written.starts_with(&self.lexical) => {}
            _ => return Err(outside("it is".into())),
        }
        match path.canonicalize() {
            Ok(real) if real.starts_with(&self.real) => Ok(real),
            Ok(real) => Err(outside(format!(
                "it is a link to {}, which is",
                real.display()
            ))),
            Err(_) => Ok(path.to_path_buf()),
        }
    }
}

/// `path` made absolute with `.` and `..` resolved by the text alone (`a/../b` is `b`), as a
/// person reads it; links are resolved separately.
fn lexical_absolute(path: &Path) -> std::io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for component in std::path::absolute(path)?.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Downloads every URL among `sources` (through the fetcher's cache, in parallel), keyed by
/// URL for [`ready_image`]; paths and inline bytes are read there instead.
pub(crate) fn fetch_urls<'a>(
    fetcher: &ImageFetcher,
    sources: impl Iterator<Item = &'a ImageSource>,
) -> HashMap<String, Result<Fetched, FetchFailure>> {
    let urls: Vec<String> = sources
        .filter_map(|source| match source {
            ImageSource::Url(url) => Some(url.clone()),
            _ => None,
        })
        .collect();
    if urls.is_empty() {
        return HashMap::new();
    }
    let results = fetcher.fetch_many_with(&urls, &indicatif::ProgressBar::hidden());
    urls.into_iter().zip(results).collect()
}

/// Reads (or takes the download of) a row's image and checks that it decodes.
pub(crate) fn ready_image(
    source: &ImageSource,
    fetched: &HashMap<String, Result<Fetched, FetchFailure>>,
    rules: &ImageRules,
) -> Result<ReadyImage, DropReason> {
    let undecodable = |error: phi3v_processor::ImageDecodeError| DropReason::UndecodableImage {
        image: source.describe(),
        error: error.to_string(),
    };
    // Reads `file`, reporting `path` (the path as the row gives it) when that fails.
    let read = |path: &Path, file: &Path| {
        read_image_file(file, rules.max_bytes).map_err(|e| DropReason::ImageFileUnreadable {
            path: path.to_path_buf(),
            error: e.to_string(),
        })
    };
    let (data, (width, height)) = match source {
        ImageSource::Embedded { bytes, .. } => {
            let size = check_decodes(bytes).map_err(undecodable)?;
            (ImageData::Bytes(Arc::from(bytes.as_slice())), size)
        }
        ImageSource::File(path) => {
            let file = match &rules.folder {
                Some(folder) => folder.confine(path)?,
                None => path.clone(),
            };
            let bytes = read(path, &file)?;
            (
                ImageData::File(path.clone()),
                check_decodes(&bytes).map_err(undecodable)?,
            )
        }
        ImageSource::Url(url) => match fetched.get(url) {
            Some(Ok(fetched)) => {
                let bytes = read(&fetched.path, &fetched.path)?;
                let size = check_decodes(&bytes).map_err(undecodable)?;
                (ImageData::File(fetched.path.clone()), size)
            }
            Some(Err(failure)) => {
                return Err(DropReason::DownloadFailed {
                    url: url.clone(),
                    error: failure.error.to_string(),
                    attempts: failure.attempts,
                })
            }
            None => unreachable!("every URL of the chunk was fetched"),
        },
        ImageSource::Missing => unreachable!("rows without an image are dropped before"),
    };
    Ok(ReadyImage {
        data,
        width,
        height,
    })
}

//! Cell values as the readers find them, and their conversion to the [`Product`] types.
//!
//! All three readers (parquet, CSV, JSONL) reduce a cell to a [`Raw`] value and share the
//! conversion below, so a catalogue means the same thing whatever its format: an empty CSV
//! field, a JSON `null` and a parquet null are all "missing"; `"12"` and `12.0` are both the
//! integer 12; `"NaN"` is a non-finite price, not a parse error.
//!
//! Types are checked cell by cell here, because CSV and JSONL have no column types: a JSON
//! `true` or `[1, 2]` in the price column is that row's [`DropReason::InvalidValue`], not an
//! error of the file. (Parquet columns have one type for the whole file, so there a column of
//! the wrong type is refused when the file is opened: see `parquet_io`.)

use std::borrow::Cow;
use std::path::Path;

use phi3v_processor::prompt::FieldValue as Cell;

use super::mapping::{CellKind, ReadPlan};
use super::product::{ColumnType, FieldValue, Product};
use super::{CatalogueRow, ImageSource, Record};
use crate::images::{parse_image_ref, ImageRef};
use crate::report::DropReason;

/// The longest text a cell may hold: 64 KiB. Titles are not limited here (the trainer skips
/// examples over its token budget), but a cell this large is not a product field: it is a
/// broken file (a quote left open that swallowed the lines after it) or an attack, and the
/// row is dropped with [`DropReason::InvalidValue`] rather than carried into prompts.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// The most bytes one row may take in a text catalogue: 64 MiB for a JSONL line or a CSV
/// record. Far above any product row (an embedded image of a few megabytes as a JSON array
/// included), it bounds the memory one broken or hostile line can take.
pub const MAX_ROW_BYTES: usize = 64 << 20;

/// How much of a refused cell a drop reason quotes: enough to recognise it, without copying
/// a huge cell into the report.
const QUOTED_CHARS: usize = 60;

/// One cell before conversion.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    /// A boolean: read only by integer columns (a flag such as `flg_discount`), as 0 or 1.
    Bool(bool),
    /// A value of a type no column holds (a JSON array or object), as its JSON text.
    Nested(String),
}

impl Raw<'_> {
    /// The cell as a drop reason quotes it: strings in quotes and cut after
    /// [`QUOTED_CHARS`] characters.
    fn describe(&self) -> String {
        match self {
            Raw::Null => "null".into(),
            Raw::Str(s) => quote(s),
            Raw::Int(v) => v.to_string(),
            Raw::Float(v) => number(*v),
            Raw::Bool(v) => v.to_string(),
            Raw::Nested(text) => shorten(text),
        }
    }
}

/// A number as a person reads it: `-5`, `12.5`, but `1e308` rather than 309 digits.
pub(crate) fn number(v: f64) -> String {
    if v != 0.0 && !(1e-4..1e15).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// `text` in quotes, cut as [`head`] cuts it.
fn quote(text: &str) -> String {
    match head(text) {
        None => format!("{text:?}"),
        Some(head) => format!("{head:?}... ({} bytes)", text.len()),
    }
}

/// `text`, cut as [`head`] cuts it.
fn shorten(text: &str) -> String {
    match head(text) {
        None => text.to_string(),
        Some(head) => format!("{head}... ({} bytes)", text.len()),
    }
}

/// The first [`QUOTED_CHARS`] characters of `text`, if it is longer.
fn head(text: &str) -> Option<&str> {
    text.char_indices()
        .nth(QUOTED_CHARS)
        .map(|(end, _)| &text[..end])
}

/// Converts a cell to a column type: `Ok(None)` for a missing value, `Err` with the cell's text
/// when it cannot be read as that type.
pub(crate) fn convert(raw: &Raw<'_>, ty: ColumnType) -> Result<Option<FieldValue>, String> {
    let bad = || Err(raw.describe());
    Ok(Some(match (ty, raw) {
        (_, Raw::Null) => return Ok(None),
        (ColumnType::Utf8, Raw::Str(s)) => FieldValue::Str(s.to_string()),
        (ColumnType::Utf8, Raw::Int(v)) => FieldValue::Str(v.to_string()),
        (ColumnType::Utf8, Raw::Float(v)) => FieldValue::Str(v.to_string()),
        (ColumnType::Int64, Raw::Int(v)) => FieldValue::Int(*v),
        (ColumnType::Int64, Raw::Bool(v)) => FieldValue::Int(i64::from(*v)),
        (_, Raw::Bool(_) | Raw::Nested(_)) => return bad(),
        (ColumnType::Int64, Raw::Float(v)) => match float_to_int(*v) {
            Some(v) => FieldValue::Int(v),
            None => return bad(),
        },
        (ColumnType::Int64, Raw::Str(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            match s.parse::<i64>() {
                Ok(v) => FieldValue::Int(v),
                Err(_) => match s.parse::<f64>().ok().and_then(float_to_int) {
                    Some(v) => FieldValue::Int(v),
                    None => return bad(),
                },
            }
        }
        (ColumnType::Float64, Raw::Int(v)) => FieldValue::Float(*v as f64),
        (ColumnType::Float64, Raw::Float(v)) => FieldValue::Float(*v),
        (ColumnType::Float64, Raw::Str(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            match s.parse::<f64>() {
                Ok(v) => FieldValue::Float(v),
                Err(_) => return bad(),
            }
        }
    }))
}

/// Converts a cell of a record column: `Err` with the reason its row is dropped when the cell
/// does not hold what `kind` asks for (see [`CellKind`]). Numeric text becomes a number
/// (`"12"` an integer, `"12.5"` a float), so a CSV means what the same parquet file means.
pub(crate) fn record_cell(raw: &Raw<'_>, kind: CellKind, column: &str) -> Result<Cell, DropReason> {
    let invalid = |expected: &str| DropReason::InvalidValue {
        column: column.to_string(),
        value: raw.describe(),
        expected: expected.to_string(),
    };
    let blank = match raw {
        Raw::Null => true,
        Raw::Str(s) => s.trim().is_empty(),
        _ => false,
    };
    if blank {
        return match kind {
            CellKind::Any => Ok(Cell::Null),
            CellKind::Value => Err(invalid("a value (it is part of the answer)")),
            CellKind::Number => Err(invalid("a number (it is part of the answer)")),
        };
    }
    if let Raw::Nested(_) = raw {
        return Err(invalid("a text, number or boolean"));
    }
    if kind != CellKind::Number {
        return Ok(match raw {
            Raw::Str(s) => Cell::Str(s.to_string()),
            Raw::Int(v) => Cell::Int(*v),
            Raw::Float(v) => Cell::Float(*v),
            Raw::Bool(v) => Cell::Bool(*v),
            Raw::Null | Raw::Nested(_) => unreachable!("handled above"),
        });
    }
    let number = match raw {
        Raw::Int(v) => Some(Cell::Int(*v)),
        Raw::Float(v) => Some(Cell::Float(*v)),
        Raw::Str(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .map(Cell::Int)
                .ok()
                .or_else(|| s.parse::<f64>().ok().map(Cell::Float))
        }
        _ => None,
    };
    match number {
        Some(Cell::Float(v)) if !v.is_finite() => Err(invalid("a finite number")),
        Some(cell) => Ok(cell),
        None => Err(invalid("a number")),
    }
}

/// An integral, in-range float as an integer (`12.0` -> 12); `None` otherwise.
fn float_to_int(v: f64) -> Option<i64> {
    (v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e18).then_some(v as i64)
}

/// Reads an image string (see [`parse_image_ref`]): URLs stay URLs; paths, `file://` ones
/// included, resolve against `base_dir`, the catalogue's folder, so a catalogue and its images
/// can move together. Empty strings mean no image.
pub(crate) fn image_from_str(s: &str, base_dir: &Path) -> ImageSource {
    match parse_image_ref(s) {
        ImageRef::Empty => ImageSource::Missing,
        ImageRef::Url(url) => ImageSource::Url(url),
        ImageRef::Path(path) => ImageSource::File(base_dir.join(path)),
    }
}

/// The problem of a text cell longer than [`MAX_FIELD_BYTES`], if it is one.
fn oversized(raw: &Raw<'_>, column: &str) -> Option<DropReason> {
    match raw {
        Raw::Str(s) if s.len() > MAX_FIELD_BYTES => Some(DropReason::InvalidValue {
            column: column.to_string(),
            value: raw.describe(),
            expected: format!("a text of at most {MAX_FIELD_BYTES} bytes"),
        }),
        _ => None,
    }
}

/// Builds a row from its cells: `cell(i)` is the cell of file column `i`. Values that cannot be
/// converted, a missing product id and a missing price are recorded as the row's problems
/// (validation turns them into drop reasons); other missing values keep the field's default.
pub(crate) fn assemble<'a>(
    index: usize,
    line: Option<u64>,
    plan: &ReadPlan,
    mut cell: impl FnMut(usize) -> Raw<'a>,
    image: ImageSource,
) -> CatalogueRow {
    let mut product = Product::default();
    let mut problems = Vec::new();
    for planned in &plan.fields {
        let raw = cell(planned.column);
        let column = &plan.names[planned.column];
        if let Some(problem) = oversized(&raw, column) {
            problems.push(problem);
            continue;
        }
        match convert(&raw, planned.ty) {
            Ok(Some(value)) => product.set(planned.field, value),
            Ok(None) if Some(planned.column) == plan.product_id => {
                problems.push(DropReason::MissingProductCode {
                    column: column.clone(),
                })
            }
            Ok(None) if Some(planned.column) == plan.price => {
                problems.push(DropReason::MissingPrice {
                    column: column.clone(),
                })
            }
            Ok(None) => {}
            Err(value) => problems.push(DropReason::InvalidValue {
                column: column.clone(),
                value,
                expected: match planned.ty {
                    ColumnType::Utf8 => "a string",
                    ColumnType::Int64 => "an integer",
                    ColumnType::Float64 => "a number",
                }
                .to_string(),
            }),
        }
    }
    // `imageurl` keeps the text of the file (not the resolved path), so an exported catalogue
    // still points at its images relative to its own folder.
    match &image {
        ImageSource::Embedded { path, .. } => product.imageurl = path.clone().unwrap_or_default(),
        _ => {
            let raw = cell(plan.image);
            if let Some(problem) = oversized(&raw, &plan.names[plan.image]) {
                problems.push(problem);
            } else if let Raw::Str(s) = raw {
                product.imageurl = s.trim().to_string();
            }
        }
    }
    let mut record = Record::new();
    for &(column, kind) in &plan.kept {
        let raw = cell(column);
        let name = &plan.names[column];
        match oversized(&raw, name).map_or_else(|| record_cell(&raw, kind, name), Err) {
            Ok(value) => {
                record.insert(name.clone(), value);
            }
            Err(problem) => problems.push(problem),
        }
    }
    let product_code = plan.product_id.and_then(|id| {
        let id_column = &plan.names[id];
        let id_read = !problems.iter().any(|p| match p {
            DropReason::MissingProductCode { .. } => true,
            DropReason::InvalidValue { column, .. } => column == id_column,
            _ => false,
        });
        id_read.then_some(product.product_code)
    });
    CatalogueRow {
        index,
        line,
        product,
        product_code,
        record,
        image,
        problems,
    }
}

impl CatalogueRow {
    /// A row that could not be parsed at all.
    pub(crate) fn malformed(index: usize, line: Option<u64>, message: String) -> Self {
        CatalogueRow {
            index,
            line,
            product: Product::default(),
            product_code: None,
            record: Record::new(),
            image: ImageSource::Missing,
            problems: vec![DropReason::Malformed { message }],
        }
    }
}

//! Cell values as the readers find them, and their conversion to the [`Product`] types.
//!
//! All three readers (parquet, CSV, JSONL) reduce a cell to a [`Raw`] value and share the
//! conversion below, so a catalogue means the same thing whatever its format: an empty CSV
//! field, a JSON `null` and a parquet null are all "missing"; `"12"` and `12.0` are both the
//! integer 12; `"NaN"` is a non-finite price, not a parse error.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::mapping::ReadPlan;
use super::product::{ColumnType, FieldValue, Product};
use super::{CatalogueRow, ImageSource};
use crate::report::DropReason;

/// One cell before conversion.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
}

impl Raw<'_> {
    fn describe(&self) -> String {
        match self {
            Raw::Null => "null".into(),
            Raw::Str(s) => format!("{s:?}"),
            Raw::Int(v) => v.to_string(),
            Raw::Float(v) => v.to_string(),
        }
    }
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

/// An integral, in-range float as an integer (`12.0` -> 12); `None` otherwise.
fn float_to_int(v: f64) -> Option<i64> {
    (v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e18).then_some(v as i64)
}

/// Reads an image string: a URL (`http://`, `https://`, protocol-relative `//host/...`), a
/// `file://` URL, or a path (relative paths resolve against `base_dir`, the catalogue's folder,
/// so a catalogue and its images can move together). Empty strings mean no image.
pub(crate) fn image_from_str(s: &str, base_dir: &Path) -> ImageSource {
    let s = s.trim();
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    if s.is_empty() {
        ImageSource::Missing
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        ImageSource::Url(s.to_string())
    } else if let Some(rest) = s.strip_prefix("//") {
        ImageSource::Url(format!("https://{rest}"))
    } else if let Some(rest) = s.strip_prefix("file://") {
        ImageSource::File(PathBuf::from(rest))
    } else {
        ImageSource::File(base_dir.join(s))
    }
}

/// Builds a row from its cells: `cell(i)` is the cell of file column `i`. Values that cannot be
/// converted, a missing product id and a missing price are recorded as the row's problems
/// (validation turns them into drop reasons); other missing values keep the field's default.
pub(crate) fn assemble<'a>(
    index: usize,
    plan: &ReadPlan,
    mut cell: impl FnMut(usize) -> Raw<'a>,
    image: ImageSource,
) -> CatalogueRow {
    let mut product = Product::default();
    let mut problems = Vec::new();
    for planned in &plan.fields {
        let raw = cell(planned.column);
        let column = &plan.names[planned.column];
        match convert(&raw, planned.ty) {
            Ok(Some(value)) => product.set(planned.field, value),
            Ok(None) if planned.column == plan.product_id => {
                problems.push(DropReason::MissingProductCode {
                    column: column.clone(),
                })
            }
            Ok(None) if planned.column == plan.price => problems.push(DropReason::MissingPrice {
                column: column.clone(),
            }),
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
            if let Raw::Str(s) = cell(plan.image) {
                product.imageurl = s.trim().to_string();
            }
        }
    }
    let id_column = &plan.names[plan.product_id];
    let id_read = !problems.iter().any(|p| match p {
        DropReason::MissingProductCode { .. } => true,
        DropReason::InvalidValue { column, .. } => column == id_column,
        _ => false,
    });
    let product_code = id_read.then_some(product.product_code);
    CatalogueRow {
        index,
        product,
        product_code,
        image,
        problems,
    }
}

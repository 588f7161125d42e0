//! Parquet catalogues: a streaming reader (one record batch at a time, only the columns the
//! mapping needs) and the writer of the 17-column Burberry schema.
//!
//! A parquet column has one type for the whole file, so a column whose type cannot hold its
//! field (a boolean or date price column, a boolean title) is an error of the file, naming the
//! column and its type, when the file is opened: every row would fail the same way, and one
//! error says it better than a report of thousands of drops. Values are still checked row by
//! row (a null, a negative price).

use std::any::Any;
use std::borrow::Cow;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type, Float64Type, Int16Type,
    Int32Type, Int64Type, Int8Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, RecordBatchReader, StringArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use super::mapping::{CellKind, Layout, ReadPlan};
use super::product::{ColumnType, Product, BURBERRY_SCHEMA};
use super::value::{assemble, image_from_str, Raw};
use super::{CatalogueRow, ImageSource};
use crate::DataError;

/// Rows per record batch: large enough to amortise the per-batch work, small enough that a
/// batch of embedded images stays a few megabytes.
const BATCH_ROWS: usize = 256;

/// Streams the rows of a parquet catalogue, decoding one record batch at a time, so a file
/// larger than memory is read in constant memory (plus one batch).
pub(crate) struct ParquetRows {
    path: PathBuf,
    base_dir: PathBuf,
    plan: ReadPlan,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    pos: usize,
    next_index: usize,
    done: bool,
}

impl ParquetRows {
    pub(crate) fn open(
        path: &Path,
        base_dir: &Path,
        layout: Layout<'_>,
    ) -> Result<(Self, Option<usize>), DataError> {
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let builder = guarded(path, || ParquetRecordBatchReaderBuilder::try_new(file))?;
        let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).ok();
        let names: Vec<String> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let full_plan = layout.plan(path, &names)?;
        let used = full_plan.used_columns();
        let mask = ProjectionMask::roots(builder.parquet_schema(), used.iter().copied());
        let reader = guarded(path, || {
            builder
                .with_projection(mask)
                .with_batch_size(BATCH_ROWS)
                .build()
        })?;
        // Re-plan against the projected schema so column indices are batch positions.
        let schema = reader.schema();
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let plan = layout.plan(path, &names)?;
        for planned in &plan.fields {
            check_type(path, schema.field(planned.column), planned.ty)?;
        }
        for &(column, kind) in &plan.kept {
            check_record_type(path, schema.field(column), kind)?;
        }
        check_image(path, schema.field(plan.image))?;
        Ok((
            Self {
                path: path.to_path_buf(),
                base_dir: base_dir.to_path_buf(),
                plan,
                reader,
                batch: None,
                pos: 0,
                next_index: 0,
                done: false,
            },
            rows,
        ))
    }
}

impl Iterator for ParquetRows {
    type Item = Result<CatalogueRow, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(batch) = &self.batch {
                if self.pos < batch.num_rows() {
                    let i = self.pos;
                    self.pos += 1;
                    let index = self.next_index;
                    self.next_index += 1;
                    let columns = batch.columns();
                    let image = image_cell(columns[self.plan.image].as_ref(), i, &self.base_dir);
                    let row = assemble(
                        index,
                        None,
                        &self.plan,
                        |c| scalar_cell(columns[c].as_ref(), i),
                        image,
                    );
                    return Some(Ok(row));
                }
            }
            let next = catch_unwind(AssertUnwindSafe(|| self.reader.next()))
                .unwrap_or_else(|panic| Some(Err(ArrowError::ParquetError(damaged(panic)))));
            match next {
                Some(Ok(batch)) => {
                    self.batch = Some(batch);
                    self.pos = 0;
                }
                Some(Err(source)) => {
                    self.done = true;
                    return Some(Err(DataError::Arrow {
                        path: self.path.clone(),
                        row: self.next_index,
                        source,
                    }));
                }
                None => {
                    self.done = true;
                    self.batch = None;
                }
            }
        }
    }
}

/// Calls into the parquet library for a file from anywhere: its errors, and its panics, become
/// errors naming the file.
///
/// The parquet crate panics on some damaged files instead of returning an error (found by
/// `tests/fuzz_catalogue.rs`: one flipped byte of a data page header gives "Decoder for dict
/// should have been set"). A damaged catalogue must be an error of that file, not a crash of
/// the run, so every call that decodes the file runs under `catch_unwind`; the reader is not
/// used again after a panic.
fn guarded<T>(path: &Path, call: impl FnOnce() -> Result<T, ParquetError>) -> Result<T, DataError> {
    let source = match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(source)) => source,
        Err(panic) => ParquetError::General(damaged(panic)),
    };
    Err(DataError::Parquet {
        path: path.to_path_buf(),
        source,
    })
}

/// The error of a parquet library panic, with its message.
fn damaged(panic: Box<dyn Any + Send>) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("damaged file: the parquet reader failed ({message})")
}

/// Whether [`scalar_cell`] can read a column of this type.
fn is_scalar(dt: &DataType) -> bool {
    use DataType::*;
    match dt {
        Null | Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64
        | Float16 | Float32 | Float64 | Utf8 | LargeUtf8 | Utf8View | Date32 | Date64
        | Decimal128(..) => true,
        Timestamp(..) => true,
        Dictionary(_, values) => is_scalar(values),
        _ => false,
    }
}

/// Whether [`scalar_cell`] values of a column of type `dt` can be read as `ty`, cell by cell.
///
/// Text columns can hold anything (`"12.5"` is parsed per cell), and numbers can be text (a
/// numeric category code). But a boolean is only a flag (an integer column such as
/// `flg_discount`), and a date only text: a boolean or date column in place of a price or a
/// product id is a mistake of the file, not of its rows.
fn readable_as(dt: &DataType, ty: ColumnType) -> bool {
    use DataType::*;
    match dt {
        Dictionary(_, values) => readable_as(values, ty),
        Null | Utf8 | LargeUtf8 | Utf8View => true,
        Boolean => ty == ColumnType::Int64,
        Date32 | Date64 | Timestamp(..) => ty == ColumnType::Utf8,
        dt => is_scalar(dt),
    }
}

/// Refuses a column of a type that cannot hold its field (see [`readable_as`]).
fn check_type(path: &Path, field: &Field, ty: ColumnType) -> Result<(), DataError> {
    if readable_as(field.data_type(), ty) {
        return Ok(());
    }
    let expected = match ty {
        ColumnType::Utf8 => "text (a string, number or date column)",
        ColumnType::Int64 => "an integer (an integer, float, decimal, boolean or string column)",
        ColumnType::Float64 => "a number (an integer, float, decimal or string column)",
    };
    Err(DataError::ColumnType {
        path: path.to_path_buf(),
        column: field.name().clone(),
        found: field.data_type().to_string(),
        expected: expected.into(),
    })
}

/// Refuses a record column whose type cannot hold its cells: a number column must be
/// readable as a number (not a boolean or a date), any other a scalar (not a list, struct
/// or binary).
fn check_record_type(path: &Path, field: &Field, kind: CellKind) -> Result<(), DataError> {
    let dt = field.data_type();
    let (ok, expected) = match kind {
        CellKind::Number => (
            readable_as(dt, ColumnType::Float64),
            "a number (an integer, float, decimal or string column)",
        ),
        CellKind::Any | CellKind::Value => (
            is_scalar(dt),
            "a text, number or boolean (not a list, struct or binary column)",
        ),
    };
    if ok {
        return Ok(());
    }
    Err(DataError::ColumnType {
        path: path.to_path_buf(),
        column: field.name().clone(),
        found: dt.to_string(),
        expected: expected.into(),
    })
}

fn check_image(path: &Path, field: &Field) -> Result<(), DataError> {
    use DataType::*;
    let ok = match field.data_type() {
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => true,
        Struct(fields) => fields
            .iter()
            .any(|f| f.name() == "bytes" || f.name() == "path"),
        dt => is_scalar(dt),
    };
    if ok {
        Ok(())
    } else {
        Err(DataError::ColumnType {
            path: path.to_path_buf(),
            column: field.name().clone(),
            found: field.data_type().to_string(),
            expected: "an image (URL or path string, binary bytes, or a {bytes, path} struct)"
                .into(),
        })
    }
}

/// The value of a scalar column at row `i` (types checked by [`is_scalar`]).
fn scalar_cell(a: &dyn Array, i: usize) -> Raw<'_> {
    use DataType::*;
    if a.is_null(i) {
        return Raw::Null;
    }
    let int = |v: i64| Raw::Int(v);
    match a.data_type() {
        Boolean => Raw::Bool(a.as_boolean().value(i)),
        Int8 => int(a.as_primitive::<Int8Type>().value(i) as i64),
        Int16 => int(a.as_primitive::<Int16Type>().value(i) as i64),
        Int32 => int(a.as_primitive::<Int32Type>().value(i) as i64),
        Int64 => int(a.as_primitive::<Int64Type>().value(i)),
        UInt8 => int(a.as_primitive::<UInt8Type>().value(i) as i64),
        UInt16 => int(a.as_primitive::<UInt16Type>().value(i) as i64),
        UInt32 => int(a.as_primitive::<UInt32Type>().value(i) as i64),
        UInt64 => {
            let v = a.as_primitive::<UInt64Type>().value(i);
            i64::try_from(v).map_or(Raw::Float(v as f64), Raw::Int)
        }
        Float16 => Raw::Float(a.as_primitive::<Float16Type>().value(i).to_f64()),
        Float32 => Raw::Float(a.as_primitive::<Float32Type>().value(i) as f64),
        Float64 => Raw::Float(a.as_primitive::<Float64Type>().value(i)),
        Decimal128(_, scale) => {
            let v = a.as_primitive::<Decimal128Type>().value(i);
            Raw::Float(v as f64 / 10f64.powi(*scale as i32))
        }
        Utf8 => Raw::Str(Cow::Borrowed(a.as_string::<i32>().value(i))),
        LargeUtf8 => Raw::Str(Cow::Borrowed(a.as_string::<i64>().value(i))),
        Utf8View => Raw::Str(Cow::Borrowed(a.as_string_view().value(i))),
        Date32 => {
            let days = a.as_primitive::<Date32Type>().value(i) as i64;
            Raw::Str(Cow::Owned(format_datetime(days * 86_400, 0)))
        }
        Date64 => {
            let ms = a.as_primitive::<Date64Type>().value(i);
            Raw::Str(Cow::Owned(format_datetime(ms.div_euclid(1000), 0)))
        }
        Timestamp(unit, _) => {
            let (v, per_s) = match unit {
                TimeUnit::Second => (a.as_primitive::<TimestampSecondType>().value(i), 1),
                TimeUnit::Millisecond => {
                    (a.as_primitive::<TimestampMillisecondType>().value(i), 1_000)
                }
                TimeUnit::Microsecond => (
                    a.as_primitive::<TimestampMicrosecondType>().value(i),
                    1_000_000,
                ),
                TimeUnit::Nanosecond => (
                    a.as_primitive::<TimestampNanosecondType>().value(i),
                    1_000_000_000,
                ),
            };
            Raw::Str(Cow::Owned(format_datetime(
                v.div_euclid(per_s),
                v.rem_euclid(per_s),
            )))
        }
        Dictionary(..) => {
            let dict = a.as_any_dictionary();
            match scalar_cell(dict.keys(), i) {
                Raw::Int(k) if k >= 0 && (k as usize) < dict.values().len() => {
                    scalar_cell(dict.values().as_ref(), k as usize)
                }
                _ => Raw::Null,
            }
        }
        _ => Raw::Null,
    }
}

/// `YYYY-MM-DD` for a midnight timestamp, `YYYY-MM-DDTHH:MM:SS` otherwise (UTC).
fn format_datetime(secs: i64, subsec: i64) -> String {
    let days = secs.div_euclid(86_400);
    let s = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    if s == 0 && subsec == 0 {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// The image of row `i`: Hugging Face `{bytes, path}` structs (embedded bytes win; a bare
/// path is a file), binary columns (embedded bytes), or strings (URL or path).
fn image_cell(a: &dyn Array, i: usize, base_dir: &Path) -> ImageSource {
    use DataType::*;
    if a.is_null(i) {
        return ImageSource::Missing;
    }
    match a.data_type() {
        Struct(_) => {
            let s = a.as_struct();
            let path = s
                .column_by_name("path")
                .and_then(|p| match scalar_cell(p.as_ref(), i) {
                    Raw::Str(p) if !p.trim().is_empty() => Some(p.into_owned()),
                    _ => None,
                });
            let bytes = s
                .column_by_name("bytes")
                .and_then(|b| binary_cell(b.as_ref(), i))
                .filter(|b| !b.is_empty());
            match (bytes, path) {
                (Some(bytes), path) => ImageSource::Embedded {
                    bytes: bytes.to_vec(),
                    path,
                },
                (None, Some(path)) => image_from_str(&path, base_dir),
                (None, None) => ImageSource::Missing,
            }
        }
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => match binary_cell(a, i) {
            Some(bytes) if !bytes.is_empty() => ImageSource::Embedded {
                bytes: bytes.to_vec(),
                path: None,
            },
            _ => ImageSource::Missing,
        },
        _ => match scalar_cell(a, i) {
            Raw::Str(s) => image_from_str(&s, base_dir),
            _ => ImageSource::Missing,
        },
    }
}

fn binary_cell(a: &dyn Array, i: usize) -> Option<&[u8]> {
    use DataType::*;
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        Binary => Some(a.as_binary::<i32>().value(i)),
        LargeBinary => Some(a.as_binary::<i64>().value(i)),
        BinaryView => Some(a.as_binary_view().value(i)),
        FixedSizeBinary(_) => Some(a.as_fixed_size_binary().value(i)),
        _ => None,
    }
}

/// The arrow schema of the Burberry catalogue: the 17 columns of
/// [`BURBERRY_SCHEMA`], all nullable (as in the published file).
pub fn burberry_arrow_schema() -> Schema {
    Schema::new(
        BURBERRY_SCHEMA
            .iter()
            .map(|(name, ty)| {
                let dt = match ty {
                    ColumnType::Utf8 => DataType::Utf8,
                    ColumnType::Int64 => DataType::Int64,
                    ColumnType::Float64 => DataType::Float64,
                };
                Field::new(*name, dt, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// Writes products as a parquet file with exactly the Burberry schema (17 columns, in the
/// published order and types), snappy-compressed, `row_group_rows` rows per row group.
///
/// The file is written next to `path` under a temporary name and renamed into place
/// ([`phi3v_io::write_atomic`]), so a crash never leaves a truncated catalogue that looks
/// complete, and a reader never sees half a catalogue.
pub fn write_parquet(
    path: &Path,
    products: &[Product],
    row_group_rows: usize,
) -> Result<(), DataError> {
    phi3v_io::write_atomic(path, |tmp| {
        write_parquet_file(tmp, path, products, row_group_rows)
    })
}

/// [`write_parquet`] into the temporary file `tmp`; errors name `path`, the file the user
/// will look for.
fn write_parquet_file(
    tmp: &Path,
    path: &Path,
    products: &[Product],
    row_group_rows: usize,
) -> Result<(), DataError> {
    let schema = Arc::new(burberry_arrow_schema());
    let file = File::create(tmp).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build();
    let parquet_err = |source| DataError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(parquet_err)?;
    for (chunk_index, chunk) in products.chunks(row_group_rows.max(1)).enumerate() {
        let strings = |f: fn(&Product) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(chunk.iter().map(f)))
        };
        let ints = |f: fn(&Product) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(chunk.iter().map(f)))
        };
        let floats = |f: fn(&Product) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(chunk.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            strings(|p| &p.website_name),
            strings(|p| &p.competence_date),
            strings(|p| &p.country_code),
            strings(|p| &p.currency_code),
            strings(|p| &p.brand),
            strings(|p| &p.category1_code),
            strings(|p| &p.category2_code),
            strings(|p| &p.category3_code),
            ints(|p| p.product_code),
            strings(|p| &p.title),
            strings(|p| &p.itemurl),
            strings(|p| &p.imageurl),
            floats(|p| p.full_price),
            floats(|p| p.price),
            floats(|p| p.full_price_eur),
            floats(|p| p.price_eur),
            ints(|p| p.flg_discount),
        ];
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|source| DataError::Arrow {
                path: path.to_path_buf(),
                row: chunk_index * row_group_rows.max(1),
                source,
            })?;
        writer.write(&batch).map_err(parquet_err)?;
        writer.flush().map_err(parquet_err)?;
    }
    writer.close().map_err(parquet_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_of_the_parquet_library_is_an_error_naming_the_file() {
        let path = Path::new("shop.parquet");
        let err =
            guarded::<()>(path, || panic!("Decoder for dict should have been set")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parquet file shop.parquet: Parquet error: damaged file: the parquet reader failed \
             (Decoder for dict should have been set)"
        );
        let err = guarded::<()>(path, || Err(ParquetError::EOF("short".into()))).unwrap_err();
        assert!(err.to_string().contains("shop.parquet"), "{err}");
        assert_eq!(guarded(path, || Ok(7)).unwrap(), 7);
    }
}

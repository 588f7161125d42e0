//! JSON Lines catalogues: one JSON object per line, streamed line by line.
//!
//! The columns are the keys of the first object; a key missing from a later line is a missing
//! value there. Blank lines are skipped and do not count as rows.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::mapping::{ColumnMapping, ReadPlan};
use super::value::{assemble, image_from_str, Raw};
use super::{CatalogueRow, ImageSource, Product};
use crate::report::DropReason;
use crate::DataError;

pub(crate) struct JsonlRows {
    path: PathBuf,
    base_dir: PathBuf,
    plan: ReadPlan,
    lines: Lines<BufReader<File>>,
    /// The first data line, read ahead to learn the columns.
    first: Option<(usize, String)>,
    line_no: usize,
    next_index: usize,
    done: bool,
}

impl JsonlRows {
    pub(crate) fn open(
        path: &Path,
        base_dir: &Path,
        mapping: &ColumnMapping,
    ) -> Result<Self, DataError> {
        let io_err = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let mut lines = BufReader::new(file).lines();
        let mut line_no = 0;
        let mut first = None;
        let mut names = Vec::new();
        for line in lines.by_ref() {
            line_no += 1;
            let line = line.map_err(io_err)?;
            // Editors on Windows like to start UTF-8 files with a byte-order mark.
            let line = line.trim_start_matches('\u{feff}').to_string();
            if line.trim().is_empty() {
                continue;
            }
            let object: Map<String, Value> =
                serde_json::from_str(&line).map_err(|source| DataError::Json {
                    path: path.to_path_buf(),
                    source,
                })?;
            names = object.keys().cloned().collect();
            first = Some((line_no, line));
            break;
        }
        let plan = mapping.plan(path, &names)?;
        Ok(Self {
            path: path.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            plan,
            lines,
            first,
            line_no,
            next_index: 0,
            done: false,
        })
    }

    fn row(&self, index: usize, line_no: usize, line: &str) -> CatalogueRow {
        let object: Map<String, Value> = match serde_json::from_str(line) {
            Ok(object) => object,
            Err(e) => {
                return CatalogueRow::malformed(
                    index,
                    format!("line {line_no}: not a JSON object: {e}"),
                )
            }
        };
        let get = |c: usize| object.get(&self.plan.names[c]);
        let cell = |c: usize| match get(c) {
            None | Some(Value::Null) => Raw::Null,
            Some(Value::String(s)) if s.is_empty() => Raw::Null,
            Some(Value::String(s)) => Raw::Str(Cow::Borrowed(s.as_str())),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) => Raw::Int(v),
                None => Raw::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Some(Value::Bool(b)) => Raw::Int(*b as i64),
            Some(other) => Raw::Str(Cow::Owned(other.to_string())),
        };
        let image = match get(self.plan.image) {
            Some(Value::String(s)) => image_from_str(s, &self.base_dir),
            Some(Value::Object(o)) => json_image_object(o, &self.base_dir),
            _ => ImageSource::Missing,
        };
        assemble(index, &self.plan, cell, image)
    }
}

/// An image given as `{"bytes": [..u8..], "path": "..."}` (the shape of a Hugging Face image
/// feature): bytes win, a bare path is a file or URL.
fn json_image_object(o: &Map<String, Value>, base_dir: &Path) -> ImageSource {
    let path = o
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| !p.trim().is_empty());
    let bytes: Option<Vec<u8>> = o.get("bytes").and_then(Value::as_array).and_then(|a| {
        a.iter()
            .map(|v| v.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect()
    });
    match (bytes.filter(|b| !b.is_empty()), path) {
        (Some(bytes), path) => ImageSource::Embedded {
            bytes,
            path: path.map(str::to_string),
        },
        (None, Some(path)) => image_from_str(path, base_dir),
        (None, None) => ImageSource::Missing,
    }
}

impl Iterator for JsonlRows {
    type Item = Result<CatalogueRow, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some((line_no, line)) = self.first.take() {
            let index = self.next_index;
            self.next_index += 1;
            return Some(Ok(self.row(index, line_no, &line)));
        }
        loop {
            let line = self.lines.next()?;
            self.line_no += 1;
            match line {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => {
                    let index = self.next_index;
                    self.next_index += 1;
                    return Some(Ok(self.row(index, self.line_no, &line)));
                }
                Err(source) if source.kind() == std::io::ErrorKind::InvalidData => {
                    let index = self.next_index;
                    self.next_index += 1;
                    return Some(Ok(CatalogueRow::malformed(
                        index,
                        format!("line {}: {source}", self.line_no),
                    )));
                }
                Err(source) => {
                    self.done = true;
                    return Some(Err(DataError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

impl CatalogueRow {
    /// A row that could not be parsed at all.
    pub(crate) fn malformed(index: usize, message: String) -> Self {
        CatalogueRow {
            index,
            product: Product::default(),
            product_code: None,
            image: ImageSource::Missing,
            problems: vec![DropReason::Malformed { message }],
        }
    }
}

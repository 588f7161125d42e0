//! JSON Lines catalogues: one JSON object per line, streamed line by line.
//!
//! The columns are the keys of the first object; a key missing from a later line is a missing
//! value there. Blank lines are skipped and do not count as rows. Lines end with `\n` or
//! `\r\n`; a line longer than [`MAX_ROW_BYTES`] is dropped unread past that length (its row
//! is malformed), so one endless line cannot take all memory.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::mapping::{Layout, ReadPlan};
use super::value::{assemble, image_from_str, Raw, MAX_ROW_BYTES};
use super::{CatalogueRow, ImageSource};
use crate::DataError;

pub(crate) struct JsonlRows {
    path: PathBuf,
    base_dir: PathBuf,
    plan: ReadPlan,
    reader: BufReader<File>,
    /// The current line's bytes (reused from line to line).
    buf: Vec<u8>,
    /// The first data line, read ahead to learn the columns.
    first: Option<(u64, Vec<u8>)>,
    line_no: u64,
    next_index: usize,
    done: bool,
}

/// One line of the file, as [`read_line`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// The line is in the buffer, without its line end.
    Whole,
    /// The line is longer than [`MAX_ROW_BYTES`]; it was skipped.
    TooLong,
}

impl JsonlRows {
    pub(crate) fn open(
        path: &Path,
        base_dir: &Path,
        layout: Layout<'_>,
    ) -> Result<Self, DataError> {
        let io_err = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut line_no = 0;
        let mut first = None;
        let mut names = Vec::new();
        while let Some(line) = read_line(&mut reader, &mut buf).map_err(io_err)? {
            line_no += 1;
            if let Line::TooLong = line {
                return Err(io_err(too_long(line_no)));
            }
            // Editors on Windows like to start UTF-8 files with a byte-order mark.
            if line_no == 1 && buf.starts_with("\u{feff}".as_bytes()) {
                buf.drain(..3);
            }
            if is_blank(&buf) {
                continue;
            }
            let object: Map<String, Value> =
                serde_json::from_slice(&buf).map_err(|source| DataError::Json {
                    path: path.to_path_buf(),
                    source,
                })?;
            names = object.keys().cloned().collect();
            first = Some((line_no, std::mem::take(&mut buf)));
            break;
        }
        let plan = layout.plan(path, &names)?;
        Ok(Self {
            path: path.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            plan,
            reader,
            buf,
            first,
            line_no,
            next_index: 0,
            done: false,
        })
    }

    fn row(&self, index: usize, line_no: u64, line: &[u8]) -> CatalogueRow {
        let object: Map<String, Value> = match serde_json::from_slice(line) {
            Ok(object) => object,
            Err(e) => {
                return CatalogueRow::malformed(
                    index,
                    Some(line_no),
                    format!("not a JSON object: {}", without_position(&e)),
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
            Some(Value::Bool(b)) => Raw::Bool(*b),
            Some(nested) => Raw::Nested(nested.to_string()),
        };
        let image = match get(self.plan.image) {
            Some(Value::String(s)) => image_from_str(s, &self.base_dir),
            Some(Value::Object(o)) => json_image_object(o, &self.base_dir),
            _ => ImageSource::Missing,
        };
        assemble(index, Some(line_no), &self.plan, cell, image)
    }
}

/// serde_json's message without its "at line 1 column N" (the line is always 1 here: the row's
/// location is added by whoever reports it), keeping the column.
pub(crate) fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&position) {
        Some(message) => format!("{message} (column {})", e.column()),
        None => message,
    }
}

pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn too_long(line_no: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("line {line_no} is longer than {MAX_ROW_BYTES} bytes"),
    )
}

/// Reads the next line into `buf` without its `\n` or `\r\n`, reading at most
/// [`MAX_ROW_BYTES`] + 1 bytes of it: a longer line is skipped to its end, chunk by chunk,
/// and reported as [`Line::TooLong`]. `None` at the end of the file.
pub(crate) fn read_line(
    reader: &mut BufReader<File>,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Line>> {
    buf.clear();
    let n = reader
        .by_ref()
        .take(MAX_ROW_BYTES as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Some(Line::Whole));
    }
    if buf.len() <= MAX_ROW_BYTES {
        // The last line, without a line end.
        return Ok(Some(Line::Whole));
    }
    buf.clear();
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                break;
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
    Ok(Some(Line::TooLong))
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
        let mut buf = std::mem::take(&mut self.buf);
        let row = loop {
            let line = match read_line(&mut self.reader, &mut buf) {
                Ok(Some(line)) => line,
                Ok(None) => break None,
                Err(source) => {
                    self.done = true;
                    break Some(Err(DataError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            };
            self.line_no += 1;
            let index = self.next_index;
            match line {
                Line::Whole if is_blank(&buf) => continue,
                Line::Whole => {
                    self.next_index += 1;
                    break Some(Ok(self.row(index, self.line_no, &buf)));
                }
                Line::TooLong => {
                    self.next_index += 1;
                    let message = format!("longer than {MAX_ROW_BYTES} bytes");
                    break Some(Ok(CatalogueRow::malformed(
                        index,
                        Some(self.line_no),
                        message,
                    )));
                }
            }
        };
        self.buf = buf;
        row
    }
}

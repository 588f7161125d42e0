//! CSV catalogues (header row required), streamed record by record.
//!
//! Line numbers are counted here rather than taken from the `csv` crate, whose count misses
//! line ends in CRLF files (every row one line short) and in CR files (every row on line 1).
//! [`LineCounter`] sits between the file and the parser, notes where each line's content
//! starts, and turns a record's byte offset (which the parser gets right) into the line a
//! person sees in an editor.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::mapping::{Layout, ReadPlan};
use super::value::{assemble, image_from_str, Raw, MAX_ROW_BYTES};
use super::{CatalogueRow, ImageSource};
use crate::DataError;

pub(crate) struct CsvRows {
    path: PathBuf,
    base_dir: PathBuf,
    plan: ReadPlan,
    reader: csv::Reader<LineCounter<File>>,
    record: csv::StringRecord,
    next_index: usize,
    done: bool,
}

impl CsvRows {
    pub(crate) fn open(
        path: &Path,
        base_dir: &Path,
        layout: Layout<'_>,
    ) -> Result<Self, DataError> {
        let csv_err = |source| DataError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(LineCounter::new(file));
        let names: Vec<String> = reader
            .headers()
            .map_err(csv_err)?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let plan = layout.plan(path, &names)?;
        Ok(Self {
            path: path.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            plan,
            reader,
            record: csv::StringRecord::new(),
            next_index: 0,
            done: false,
        })
    }

    /// The line where the record at `position` starts.
    fn line(&mut self, position: Option<&csv::Position>) -> Option<u64> {
        let byte = position?.byte();
        self.reader.get_mut().line_of_record(byte)
    }
}

impl Iterator for CsvRows {
    type Item = Result<CatalogueRow, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let index = self.next_index;
        match self.reader.read_record(&mut self.record) {
            Ok(false) => {
                self.done = true;
                None
            }
            Ok(true) => {
                self.next_index += 1;
                let position = self.record.position().cloned();
                let line = self.line(position.as_ref());
                let record = &self.record;
                let cell = |c: usize| match record.get(c) {
                    None | Some("") => Raw::Null,
                    Some(s) => Raw::Str(Cow::Borrowed(s)),
                };
                let image = match record.get(self.plan.image) {
                    Some(s) => image_from_str(s, &self.base_dir),
                    None => ImageSource::Missing,
                };
                Some(Ok(assemble(index, line, &self.plan, cell, image)))
            }
            // A broken record (wrong field count, invalid UTF-8) is that row's problem; the
            // reader goes on with the next record.
            Err(e) if !matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                self.next_index += 1;
                let line = self.line(e.position());
                Some(Ok(CatalogueRow::malformed(index, line, malformed(&e))))
            }
            Err(source) => {
                self.done = true;
                Some(Err(DataError::Csv {
                    path: self.path.clone(),
                    source,
                }))
            }
        }
    }
}

/// What is wrong with a record, without the `csv` crate's position (its line number is the
/// one this module corrects; the row's location is added by whoever reports it).
fn malformed(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, but the header has {expected_len}"),
        csv::ErrorKind::Utf8 { err, .. } => {
            format!("field {} is not valid UTF-8", err.field() + 1)
        }
        _ => e.to_string(),
    }
}

/// Passes a file's bytes on to the CSV parser, noting where each line's content starts, so
/// that a record's byte offset gives its line; and stops a record that never ends.
///
/// Line ends are `\n`, `\r\n` and a lone `\r`, as for the parser. The parser gives a record
/// the offset just after the previous record's line end, before any blank lines, so a
/// record's line is the line of the first content byte at or after its offset.
struct LineCounter<R> {
    inner: R,
    /// Bytes passed on so far.
    offset: u64,
    /// The line of the next byte.
    line: u64,
    /// Whether the last byte was `\r`: then a `\n` ends the same line.
    after_cr: bool,
    /// Whether no content byte has come since the last line end.
    at_line_start: bool,
    /// `(offset, line)` of the first content byte of the lines read ahead of the parser; only
    /// those past the last record asked about are kept, so the queue holds what the parser
    /// has buffered, not the file.
    starts: VecDeque<(u64, u64)>,
    /// The offset and line of the last record asked about.
    record: (u64, u64),
}

impl<R> LineCounter<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            line: 1,
            after_cr: false,
            at_line_start: true,
            starts: VecDeque::new(),
            record: (0, 1),
        }
    }

    /// The line of the record the parser placed at `offset`. Records are asked about in file
    /// order.
    fn line_of_record(&mut self, offset: u64) -> Option<u64> {
        while self
            .starts
            .front()
            .is_some_and(|&(start, _)| start < offset)
        {
            self.starts.pop_front();
        }
        let &(_, line) = self.starts.front()?;
        self.record = (offset, line);
        Some(line)
    }
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A record far longer than any product row is a quote left open (which swallows the
        // rest of the file into one field) or an attack: refusing it bounds memory.
        let (record_offset, record_line) = self.record;
        if self.offset - record_offset > MAX_ROW_BYTES as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "no record ends within {MAX_ROW_BYTES} bytes after line \
                     {record_line} (a quote left open?)"
                ),
            ));
        }
        let n = self.inner.read(buf)?;
        for (i, &byte) in buf[..n].iter().enumerate() {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.line += 1;
                    self.after_cr = byte == b'\r';
                    self.at_line_start = true;
                }
                _ => {
                    self.after_cr = false;
                    if self.at_line_start {
                        self.starts.push_back((self.offset + i as u64, self.line));
                        self.at_line_start = false;
                    }
                }
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `LineCounter` gives the records of `text`, read through the CSV parser.
    fn record_lines(text: &str) -> Vec<Option<u64>> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(LineCounter::new(text.as_bytes()));
        let mut record = csv::StringRecord::new();
        let mut lines = Vec::new();
        while reader.read_record(&mut record).unwrap() {
            let byte = record.position().unwrap().byte();
            lines.push(reader.get_mut().line_of_record(byte));
        }
        lines
    }

    #[test]
    fn lines_count_every_kind_of_line_end_blank_lines_and_quoted_line_ends() {
        for end in ["\n", "\r\n", "\r"] {
            let text = ["a,b", "1,2", "", "3,4", "\"x", "y\",5", "6,7", ""].join(end);
            assert_eq!(
                record_lines(&text),
                vec![Some(2), Some(4), Some(5), Some(7)],
                "line end {end:?}"
            );
        }
    }

    #[test]
    fn a_record_that_never_ends_is_an_error_not_a_huge_allocation() {
        let mut text = String::from("a,b\n1,\"");
        text.push_str(&"x".repeat(MAX_ROW_BYTES + (64 << 10)));
        let mut reader = csv::Reader::from_reader(LineCounter::new(text.as_bytes()));
        let mut record = csv::StringRecord::new();
        let err = reader.read_record(&mut record).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(err.to_string().contains("quote left open"), "{err}");
    }
}

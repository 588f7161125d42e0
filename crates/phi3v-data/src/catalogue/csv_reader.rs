//! CSV catalogues (header row required), streamed record by record.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::mapping::{ColumnMapping, ReadPlan};
use super::value::{assemble, image_from_str, Raw};
use super::{CatalogueRow, ImageSource};
use crate::DataError;

pub(crate) struct CsvRows {
    path: PathBuf,
    base_dir: PathBuf,
    plan: ReadPlan,
    records: csv::StringRecordsIntoIter<File>,
    next_index: usize,
    done: bool,
}

impl CsvRows {
    pub(crate) fn open(
        path: &Path,
        base_dir: &Path,
        mapping: &ColumnMapping,
    ) -> Result<Self, DataError> {
        let csv_err = |source| DataError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_path(path)
            .map_err(csv_err)?;
        let names: Vec<String> = reader
            .headers()
            .map_err(csv_err)?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let plan = mapping.plan(path, &names)?;
        Ok(Self {
            path: path.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            plan,
            records: reader.into_records(),
            next_index: 0,
            done: false,
        })
    }
}

impl Iterator for CsvRows {
    type Item = Result<CatalogueRow, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let record = self.records.next()?;
        let index = self.next_index;
        self.next_index += 1;
        match record {
            Ok(record) => {
                let cell = |c: usize| match record.get(c) {
                    None | Some("") => Raw::Null,
                    Some(s) => Raw::Str(Cow::Borrowed(s)),
                };
                let image = match record.get(self.plan.image) {
                    Some(s) => image_from_str(s, &self.base_dir),
                    None => ImageSource::Missing,
                };
                Some(Ok(assemble(index, &self.plan, cell, image)))
            }
            // A broken line (wrong field count, invalid UTF-8) is that row's problem; the
            // reader goes on with the next record.
            Err(e) if !matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                let message = match e.position() {
                    Some(pos) => format!("line {}: {e}", pos.line()),
                    None => e.to_string(),
                };
                Some(Ok(CatalogueRow::malformed(index, message)))
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

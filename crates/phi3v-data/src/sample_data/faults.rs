//! Broken rows mixed into sample catalogues, and the sidecar that lists them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::DropKind;
use crate::DataError;

/// A kind of broken row the generator can inject. Each maps to exactly one
/// [`DropKind`] that the catalogue loader must report for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The image file exists but holds bytes that do not decode (a PNG signature and junk).
    BadImageBytes,
    /// `imageurl` names a file that is not there.
    MissingFile,
    /// `imageurl` is a URL on a closed port of 127.0.0.1 (port 1): the connection is refused
    /// at once, without any network.
    UnreachableUrl,
    /// `full_price` (and `full_price_eur`) is NaN.
    NanPrice,
    /// `title` is the empty string.
    EmptyTitle,
}

impl FaultKind {
    /// All kinds, in the order they are assigned to the faulty rows.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::BadImageBytes,
        FaultKind::MissingFile,
        FaultKind::UnreachableUrl,
        FaultKind::NanPrice,
        FaultKind::EmptyTitle,
    ];

    /// The drop reason the loader reports for this fault.
    pub fn expected_drop(self) -> DropKind {
        match self {
            FaultKind::BadImageBytes => DropKind::UndecodableImage,
            FaultKind::MissingFile => DropKind::ImageFileUnreadable,
            FaultKind::UnreachableUrl => DropKind::DownloadFailed,
            FaultKind::NanPrice => DropKind::NonFinitePrice,
            FaultKind::EmptyTitle => DropKind::EmptyTitle,
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedFault {
    /// 0-based row index in the catalogue.
    pub row: usize,
    /// The row's product code.
    pub product_code: i64,
    /// What was broken.
    pub fault: FaultKind,
    /// What the loader should report.
    pub expected_drop: DropKind,
}

/// The sidecar file `faults.json` next to a sample catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultList {
    /// The catalogue file name.
    pub catalogue: PathBuf,
    /// Rows in the catalogue.
    pub rows: usize,
    /// The requested fault fraction.
    pub fraction: f64,
    /// The broken rows, by row index.
    pub faults: Vec<InjectedFault>,
}

impl FaultList {
    /// Reads a sidecar written by the generator.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, DataError> {
        crate::json_file::read(path.as_ref())
    }

    pub(crate) fn write(&self, path: &Path) -> Result<(), DataError> {
        crate::json_file::write(path, self)
    }

    /// `(row, expected drop kind)` of every fault, in row order: compare with
    /// [`Report::dropped_kinds`](crate::report::Report::dropped_kinds).
    pub fn expected_drops(&self) -> Vec<(usize, DropKind)> {
        self.faults
            .iter()
            .map(|f| (f.row, f.expected_drop))
            .collect()
    }
}

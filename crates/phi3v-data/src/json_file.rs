//! Pretty-printed JSON files (drop reports, fault lists), with errors naming the file.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::DataError;

/// Writes `value` as pretty-printed JSON with a trailing newline.
pub(crate) fn write(path: &Path, value: &impl Serialize) -> Result<(), DataError> {
    let json = |source| DataError::Json {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_string_pretty(value).map_err(json)?;
    std::fs::write(path, text + "\n").map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a JSON file written by [`write`].
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> Result<T, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| DataError::Json {
        path: path.to_path_buf(),
        source,
    })
}

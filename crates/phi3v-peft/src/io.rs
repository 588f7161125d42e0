//! File helpers of the exports and the merge: atomic writes, JSON files, and tensors as
//! plain `Vec<f32>` on their way to a safetensors file.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use phi3v_nn::weights::save_f32;

use crate::error::PeftError;
/// The workspace's one atomic write (`phi3v-io`): a reader sees the old file or the new one.
pub use phi3v_io::write_atomic;

/// Named f32 tensors: name to `(shape, values)`.
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads a JSON file into `T`, naming the file in errors, and the key when the error has a
/// position inside a value.
///
/// serde_json reports a line and a column, not the key: a bad `"r": -1` or a
/// `"lora_alpha": NaN` (which Python's `json.dump` writes, and which is no JSON number) would
/// otherwise be reported only as "expected value at line 7 column 17".
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PeftError> {
    let text = std::fs::read_to_string(path).map_err(|e| PeftError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        match key_at(&text, e.line(), e.column()).filter(|key| !key.is_empty()) {
            Some(key) => PeftError::setting(path, key, e),
            None => PeftError::io(path, e),
        }
    })
}

/// The key path (`alpha_pattern.q_proj`, `target_modules[2]`) of the value that JSON `text`
/// is in at `line` and `column` (1-based, as serde_json counts them); `Some("")` at the top
/// level, `None` for a position outside the text.
fn key_at(text: &str, line: usize, column: usize) -> Option<String> {
    let line_start = match line {
        0 => return None,
        1 => 0,
        n => text.match_indices('\n').nth(n - 2)?.0 + 1,
    };
    let end = (line_start + column.saturating_sub(1)).min(text.len());
    enum Frame {
        Object { key: Option<String>, in_key: bool },
        Array { index: usize },
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut string: Option<String> = None;
    let mut escaped = false;
    // serde_json's column may fall inside a multi-byte character: stop before it.
    for (_, c) in text.char_indices().take_while(|&(at, _)| at < end) {
        if let Some(s) = &mut string {
            match c {
                _ if escaped => {
                    escaped = false;
                    s.push(c);
                }
                '\\' => escaped = true,
                '"' => {
                    let s = string.take().unwrap_or_default();
                    if let Some(Frame::Object { key, in_key: true }) = stack.last_mut() {
                        *key = Some(s);
                    }
                }
                _ => s.push(c),
            }
            continue;
        }
        match c {
            '"' => string = Some(String::new()),
            '{' => stack.push(Frame::Object {
                key: None,
                in_key: true,
            }),
            '[' => stack.push(Frame::Array { index: 0 }),
            '}' | ']' => {
                stack.pop();
            }
            ':' => {
                if let Some(Frame::Object { in_key, .. }) = stack.last_mut() {
                    *in_key = false;
                }
            }
            ',' => match stack.last_mut() {
                Some(Frame::Object { key, in_key }) => {
                    *key = None;
                    *in_key = true;
                }
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            _ => {}
        }
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(key), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    Some(path)
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), PeftError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| PeftError::io(path, e))?;
    write_atomic(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| PeftError::io(tmp, e))
    })
}

/// Writes f32 tensors to a safetensors file atomically.
pub fn save_tensors(path: &Path, tensors: &TensorMap) -> Result<(), PeftError> {
    write_atomic(path, |tmp| {
        save_f32(tmp, tensors, None).map_err(|e| PeftError::io(tmp, e))
    })
}

/// A tensor's shape and f32 values.
pub fn to_vec<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let shape = tensor.dims().to_vec();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 tensor data");
    (shape, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Settings {
        r: usize,
        alpha: f64,
        patterns: BTreeMap<String, f64>,
        targets: Vec<String>,
    }

    fn error_of(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, text).unwrap();
        let err = read_json::<Settings>(&path).unwrap_err().to_string();
        assert!(err.contains("settings.json"), "{err}");
        err
    }

    /// Errors inside a value name its key; the positions serde_json gives stay in the text.
    #[test]
    fn json_errors_name_the_key() {
        let ok = r#"{"r": 4, "alpha": 8, "patterns": {"q": 1}, "targets": ["a", "b"]}"#;
        assert!(error_of(&ok.replace("8", "NaN")).contains("`alpha`"));
        assert!(error_of(&ok.replace("4", "-4")).contains("`r`"));
        assert!(error_of(&ok.replace("1}", "Infinity}")).contains("`patterns.q`"));
        assert!(error_of(&ok.replace("\"b\"", "3")).contains("`targets[1]`"));
        // A string holding the JSON's punctuation does not confuse the key.
        let tricky = r#"{"targets": ["x\",:{[", "y"], "r": 1.5, "alpha": 1, "patterns": {}}"#;
        assert!(error_of(tricky).contains("`r`"), "{}", error_of(tricky));
        // Multi-byte characters before the error do not shift the key.
        let accents = r#"{"targets": ["é€😀"], "r": 1, "alpha": "ü", "patterns": {}}"#;
        assert!(
            error_of(accents).contains("`alpha`"),
            "{}",
            error_of(accents)
        );
        // serde_json's column can point inside a multi-byte character: here, the one before
        // a raw control character (which JSON strings may not hold) in a skipped key.
        let inside = "{\"skipped\": \"\u{FFFD}\u{0}\", \"r\": 1, \"alpha\": 1}";
        assert!(
            error_of(inside).contains("`skipped`"),
            "{}",
            error_of(inside)
        );
        // Errors at the top level (a missing field) have no key to name.
        let err = error_of(r#"{"r": 4}"#);
        assert!(err.contains("missing field"), "{err}");
    }
}

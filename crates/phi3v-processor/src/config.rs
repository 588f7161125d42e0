//! `preprocessor_config.json`, the processor settings a model dir ships with.
//!
//! One struct reads and writes the file. Keys this crate does not use (`processor_class`,
//! `auto_map`, `num_img_tokens`, ...) are kept in [`PreprocessorConfig::extra`], so a file read
//! and written again keeps them. Missing keys take the released model's values.
//!
//! The file does not hold the crop size: the vision tower's `image_size` fixes it, so a model
//! dir combines both into the image processor's [`ProcessorConfig`]
//! ([`ProcessorConfig::from_preprocessor`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::image_processor::ProcessorConfig;
use crate::ProcessorError;

/// The file name in a model dir.
pub const PREPROCESSOR_CONFIG_FILE: &str = "preprocessor_config.json";

/// `preprocessor_config.json` of a Phi-3-V model dir.
///
/// Mean and std are `f64`, as Python writes them: written back they keep their digits
/// (`0.48145466`), and narrowed to `f32` they are what the reference's torch tensors hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreprocessorConfig {
    /// `"Phi3VImageProcessor"`.
    pub image_processor_type: String,
    /// Maximum crops per image (16 in the released model).
    pub num_crops: usize,
    /// Per-channel mean (CLIP's).
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation (CLIP's).
    pub image_std: [f64; 3],
    /// Convert to RGB first. Images are always converted here (PIL's `convert("RGB")`), so this
    /// is only carried through.
    pub do_convert_rgb: bool,
    /// Every other key of the file, kept as read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for PreprocessorConfig {
    /// The released Phi-3-Vision-128K-Instruct's values.
    // OPENAI_CLIP_MEAN / OPENAI_CLIP_STD digit for digit, as Python writes them.
    #[allow(clippy::excessive_precision)]
    fn default() -> Self {
        Self {
            image_processor_type: "Phi3VImageProcessor".into(),
            num_crops: 16,
            image_mean: [0.48145466, 0.4578275, 0.40821073],
            image_std: [0.26862954, 0.26130258, 0.27577711],
            do_convert_rgb: true,
            extra: BTreeMap::new(),
        }
    }
}

impl PreprocessorConfig {
    /// Parses the text of a `preprocessor_config.json`.
    ///
    /// # Errors
    /// serde_json's error, naming the key and the position.
    pub fn from_json_str(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Reads a `preprocessor_config.json`.
    ///
    /// # Errors
    /// [`ProcessorError::Io`] or [`ProcessorError::Json`], naming the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ProcessorError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ProcessorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text).map_err(|source| ProcessorError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The file's JSON value. Its keys are sorted (serde_json's map), whatever the order the
    /// file was read in.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a preprocessor config is plain JSON")
    }

    /// Writes the file as pretty-printed [`Self::to_json`].
    ///
    /// # Errors
    /// [`ProcessorError::Io`] naming the file.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), ProcessorError> {
        let path = path.as_ref();
        let text =
            serde_json::to_string_pretty(&self.to_json()).expect("a JSON value always serialises");
        std::fs::write(path, text).map_err(|source| ProcessorError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl ProcessorConfig {
    /// The image processor settings of a model dir: crops, mean and std from its
    /// `preprocessor_config.json`, crop and patch size from its vision tower. Not validated
    /// (see [`ProcessorConfig::validate`]).
    pub fn from_preprocessor(
        file: &PreprocessorConfig,
        crop_size: usize,
        patch_size: usize,
    ) -> Self {
        Self {
            num_crops: file.num_crops,
            crop_size,
            patch_size,
            // serde reads an f32 the same way: the JSON number as f64, then narrowed.
            image_mean: file.image_mean.map(|v| v as f32),
            image_std: file.image_std.map(|v| v as f32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_processor::{CLIP_MEAN, CLIP_STD};

    #[test]
    fn defaults_narrow_to_the_clip_constants() {
        let c = ProcessorConfig::from_preprocessor(&PreprocessorConfig::default(), 336, 14);
        assert_eq!(c, ProcessorConfig::default());
        assert_eq!(c.image_mean, CLIP_MEAN);
        assert_eq!(c.image_std, CLIP_STD);
    }

    #[test]
    fn round_trips_unknown_keys() {
        let text =
            r#"{"num_crops": 4, "processor_class": "Phi3VProcessor", "num_img_tokens": 144}"#;
        let c = PreprocessorConfig::from_json_str(text).unwrap();
        assert_eq!(c.num_crops, 4);
        assert_eq!(c.image_mean, PreprocessorConfig::default().image_mean);
        assert_eq!(c.extra["processor_class"], "Phi3VProcessor");
        let json = c.to_json();
        assert_eq!(json["num_img_tokens"], 144);
        assert_eq!(json["image_processor_type"], "Phi3VImageProcessor");
        assert_eq!(
            PreprocessorConfig::from_json_str(&json.to_string()).unwrap(),
            c
        );
        let e = PreprocessorConfig::from_json_str(r#"{"image_mean": [1, 2]}"#).unwrap_err();
        assert!(
            e.to_string().contains("expected an array of length 3")
                || e.to_string().contains("length 3"),
            "{e}"
        );
    }
}

//! The `config.json` of a Phi-3-V checkpoint (`model_type = "phi3_v"`), or of a plain
//! Phi-3 text model (`model_type = "phi3"`).
//!
//! The decoder keys sit at the top level; the vision path is described by `embd_layer`
//! and `img_processor`. Small test checkpoints may add `img_processor.vision_config` (CLIP
//! sizes) to override the ViT-L/14-336 defaults.

use std::path::Path;

use phi3_decoder::Phi3Config;
use phi3v_vision::ClipVisionConfig;
use serde_json::Value;

use crate::error::Phi3VError;

/// The vision settings of a Phi-3-V checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionSettings {
    pub clip: ClipVisionConfig,
}

/// A whole model's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Phi3VConfig {
    pub text: Phi3Config,
    /// `None` for a text-only Phi-3 checkpoint.
    pub vision: Option<VisionSettings>,
}

impl Phi3VConfig {
    /// Reads `config.json`; errors name the file and the key at fault.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Phi3VError> {
        let path = path.as_ref();
        let bad = |m: String| Phi3VError::Config(format!("{}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        Self::from_value(&value).map_err(|e| match e {
            Phi3VError::Config(m) => bad(m),
            other => other,
        })
    }

    pub fn from_value(value: &Value) -> Result<Self, Phi3VError> {
        let model_type = value
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let text = Phi3Config::from_value(value).map_err(|e| Phi3VError::Config(e.to_string()))?;
        let vision = match model_type {
            "phi3" => None,
            "phi3_v" => Some(Self::vision(value)?),
            other => {
                return Err(Phi3VError::Config(format!(
                    "model_type `{other}` is not supported (expected `phi3_v` or `phi3`)"
                )))
            }
        };
        Ok(Self { text, vision })
    }

    fn vision(value: &Value) -> Result<VisionSettings, Phi3VError> {
        let err = |m: String| Phi3VError::Config(m);
        let embd = value
            .get("embd_layer")
            .ok_or_else(|| err("`embd_layer` is missing".into()))?;
        let check = |key: &str, expected: Value| -> Result<(), Phi3VError> {
            match embd.get(key) {
                None => Ok(()),
                Some(v) if *v == expected => Ok(()),
                Some(v) => Err(err(format!(
                    "embd_layer.{key} = {v} is not supported (expected {expected})"
                ))),
            }
        };
        check("embedding_cls", "image".into())?;
        check("hd_transform_order", "sub_glb".into())?;
        check("projection_cls", "mlp".into())?;
        check("use_hd_transform", true.into())?;
        check("with_learnable_separator", true.into())?;
        let img = value
            .get("img_processor")
            .ok_or_else(|| err("`img_processor` is missing".into()))?;
        let clip = match img.get("vision_config") {
            Some(v) => ClipVisionConfig::from_value(v)
                .map_err(|e| err(format!("img_processor.vision_config: {e}")))?,
            None => ClipVisionConfig::default(),
        };
        if let Some(dim) = img.get("image_dim_out").and_then(Value::as_u64) {
            if dim as usize != clip.hidden_size {
                return Err(err(format!(
                    "img_processor.image_dim_out {dim} differs from the CLIP hidden size {}",
                    clip.hidden_size
                )));
            }
        }
        if let Some(layer) = img.get("layer_idx").and_then(Value::as_i64) {
            if layer != -2 {
                return Err(err(format!(
                    "img_processor.layer_idx {layer} is not supported (only -2)"
                )));
            }
        }
        Ok(VisionSettings { clip })
    }
}

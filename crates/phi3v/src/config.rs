//! The `config.json` of a Phi-3-V model dir (`model_type = "phi3_v"`), or of a plain Phi-3
//! text model (`model_type = "phi3"`).
//!
//! The decoder keys sit at the top level ([`Phi3ConfigJson`], all rotary spellings); the
//! vision path is described by `embd_layer` and `img_processor`. Small test models may add
//! `img_processor.vision_config` (CLIP sizes) to override the ViT-L/14-336 defaults.
//!
//! [`ConfigJson`] is the file, key for key: it reads and writes it, keeping keys it does not
//! use. [`Phi3VConfig`] is what it means, checked.

use std::collections::BTreeMap;
use std::path::Path;

use phi3_decoder::{Phi3Config, Phi3ConfigJson};
use phi3v_vision::ClipVisionConfig;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::Phi3VError;

/// The file name in a model dir.
pub const CONFIG_FILE: &str = "config.json";

/// The vision settings of a Phi-3-V model.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionSettings {
    pub clip: ClipVisionConfig,
}

/// A whole model's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Phi3VConfig {
    pub text: Phi3Config,
    /// `None` for a text-only Phi-3 model.
    pub vision: Option<VisionSettings>,
}

/// `config.json`, as Hugging Face writes it. One struct reads and writes the file.
///
/// Keys that no field names (`attention_dropout`, `initializer_range`, `use_cache`, ...) are
/// kept in [`Self::extra`], so a file read and written again keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigJson {
    /// `"phi3_v"` or `"phi3"`.
    #[serde(default)]
    pub model_type: String,
    /// `["Phi3VForCausalLM"]` in the released model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// The dtype the weights were saved in (`"bfloat16"`), for information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// How image features enter the decoder (Phi-3-V only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embd_layer: Option<EmbdLayer>,
    /// The vision tower (Phi-3-V only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub img_processor: Option<ImgProcessor>,
    /// The decoder keys, at the top level of the file.
    #[serde(flatten)]
    pub text: Phi3ConfigJson,
    /// Every other key of the file, kept as read. Declared after `text`, which takes its keys
    /// first.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `embd_layer`: the reference's choices for the image embedding. Only the released values
/// are supported; absent keys mean them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbdLayer {
    /// `"image"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_cls: Option<String>,
    /// `"sub_glb"`: the sub-images, then the global view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hd_transform_order: Option<String>,
    /// `"mlp"`: the two-layer `img_projection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_cls: Option<String>,
    /// `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_hd_transform: Option<bool>,
    /// `true`: the `sub_GN` / `glb_GN` separators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_learnable_separator: Option<bool>,
    /// Other keys, kept as read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl EmbdLayer {
    /// The released model's `embd_layer`, every key written.
    pub fn released() -> Self {
        Self {
            embedding_cls: Some("image".into()),
            hd_transform_order: Some("sub_glb".into()),
            projection_cls: Some("mlp".into()),
            use_hd_transform: Some(true),
            with_learnable_separator: Some(true),
            extra: BTreeMap::new(),
        }
    }

    /// Checks that every key present has the released value.
    fn check(&self) -> Result<(), Phi3VError> {
        let expected = Self::released();
        let keys: [(&str, Option<Value>, Option<Value>); 5] = [
            (
                "embedding_cls",
                self.embedding_cls.clone().map(Value::from),
                expected.embedding_cls.map(Value::from),
            ),
            (
                "hd_transform_order",
                self.hd_transform_order.clone().map(Value::from),
                expected.hd_transform_order.map(Value::from),
            ),
            (
                "projection_cls",
                self.projection_cls.clone().map(Value::from),
                expected.projection_cls.map(Value::from),
            ),
            (
                "use_hd_transform",
                self.use_hd_transform.map(Value::from),
                expected.use_hd_transform.map(Value::from),
            ),
            (
                "with_learnable_separator",
                self.with_learnable_separator.map(Value::from),
                expected.with_learnable_separator.map(Value::from),
            ),
        ];
        for (key, found, expected) in keys {
            if let (Some(v), Some(expected)) = (found, expected) {
                if v != expected {
                    return Err(Phi3VError::Config(format!(
                        "embd_layer.{key} = {v} is not supported (expected {expected})"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `img_processor`: the CLIP tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImgProcessor {
    /// Width of the tower's features; must be the CLIP hidden size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_dim_out: Option<usize>,
    /// The tower layer whose features are used; only -2 is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_idx: Option<i64>,
    /// `"openai/clip-vit-large-patch14-336"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// `"clip_vision_model"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tokens per crop after the 2x2 merge (144 in the released model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_img_tokens: Option<usize>,
    /// CLIP sizes, for models other than ViT-L/14-336. Written without `num_channels` when it
    /// is 3, as the reference's fixtures write it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "vision_config_json"
    )]
    pub vision_config: Option<ClipVisionConfig>,
    /// Other keys, kept as read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `vision_config` as the file holds it: RGB is not spelled out.
fn vision_config_json<S: Serializer>(
    config: &Option<ClipVisionConfig>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut value = serde_json::to_value(config).map_err(serde::ser::Error::custom)?;
    if let Some(map) = value.as_object_mut() {
        if map.get("num_channels") == Some(&Value::from(3)) {
            map.remove("num_channels");
        }
    }
    value.serialize(serializer)
}

impl ConfigJson {
    /// Parses the text of a `config.json`.
    ///
    /// # Errors
    /// serde_json's error, naming the key and the position.
    pub fn from_json_str(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Reads a `config.json`; errors name the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, Phi3VError> {
        let path = path.as_ref();
        let bad = |m: String| Phi3VError::Config(format!("{}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        Self::from_json_str(&text).map_err(|e| bad(e.to_string()))
    }

    /// The `config.json` of `config`, laid out as the released model's: its `embd_layer`,
    /// its `img_processor` naming the CLIP tower (with `vision_config` holding the sizes), the
    /// decoder keys of [`Phi3ConfigJson::from_config`]. Add what else the file should hold
    /// (`torch_dtype`, `initializer_range` in [`Self::extra`], ...) before writing it.
    pub fn from_config(config: &Phi3VConfig) -> Self {
        let vision = config.vision.as_ref();
        Self {
            model_type: if vision.is_some() { "phi3_v" } else { "phi3" }.into(),
            architectures: Some(vec![if vision.is_some() {
                "Phi3VForCausalLM"
            } else {
                "Phi3ForCausalLM"
            }
            .into()]),
            torch_dtype: None,
            embd_layer: vision.map(|_| EmbdLayer::released()),
            img_processor: vision.map(|v| {
                let per_side = v.clip.image_size / v.clip.patch_size / 2;
                ImgProcessor {
                    image_dim_out: Some(v.clip.hidden_size),
                    layer_idx: None,
                    model_name: Some("openai/clip-vit-large-patch14-336".into()),
                    name: Some("clip_vision_model".into()),
                    num_img_tokens: Some(per_side * per_side),
                    vision_config: Some(v.clip.clone()),
                    extra: BTreeMap::new(),
                }
            }),
            text: Phi3ConfigJson::from_config(&config.text),
            extra: BTreeMap::new(),
        }
    }

    /// The file's JSON value. Its keys are sorted (serde_json's map), whatever the order the
    /// file was read in.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a config is plain JSON")
    }

    /// Writes the file as pretty-printed [`Self::to_json`].
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), Phi3VError> {
        let path = path.as_ref();
        let text =
            serde_json::to_string_pretty(&self.to_json()).expect("a JSON value always serialises");
        std::fs::write(path, text)
            .map_err(|e| Phi3VError::Config(format!("{}: cannot write: {e}", path.display())))
    }
}

impl Phi3VConfig {
    /// Reads `config.json`; errors name the file and the key at fault.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Phi3VError> {
        let path = path.as_ref();
        let json = ConfigJson::read(path)?;
        Self::from_json(&json).map_err(|e| match e {
            Phi3VError::Config(m) => Phi3VError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Reads a `config.json` value.
    pub fn from_value(value: &Value) -> Result<Self, Phi3VError> {
        let json: ConfigJson =
            serde_json::from_value(value.clone()).map_err(|e| Phi3VError::Config(e.to_string()))?;
        Self::from_json(&json)
    }

    /// What a `config.json` means, checked: the decoder's config, and for `phi3_v` the
    /// vision tower's.
    pub fn from_json(json: &ConfigJson) -> Result<Self, Phi3VError> {
        let text = Phi3Config::from_json(json.text.clone())
            .map_err(|e| Phi3VError::Config(e.to_string()))?;
        let vision = match json.model_type.as_str() {
            "phi3" => None,
            "phi3_v" => Some(Self::vision(json)?),
            other => {
                return Err(Phi3VError::Config(format!(
                    "model_type `{other}` is not supported (expected `phi3_v` or `phi3`)"
                )))
            }
        };
        Ok(Self { text, vision })
    }

    fn vision(json: &ConfigJson) -> Result<VisionSettings, Phi3VError> {
        let err = |m: String| Phi3VError::Config(m);
        json.embd_layer
            .as_ref()
            .ok_or_else(|| err("`embd_layer` is missing".into()))?
            .check()?;
        let img = json
            .img_processor
            .as_ref()
            .ok_or_else(|| err("`img_processor` is missing".into()))?;
        let clip = match &img.vision_config {
            Some(clip) => {
                clip.validate()
                    .map_err(|e| err(format!("img_processor.vision_config: {e}")))?;
                clip.clone()
            }
            None => ClipVisionConfig::default(),
        };
        if let Some(dim) = img.image_dim_out {
            if dim != clip.hidden_size {
                return Err(err(format!(
                    "img_processor.image_dim_out {dim} differs from the CLIP hidden size {}",
                    clip.hidden_size
                )));
            }
        }
        if let Some(layer) = img.layer_idx {
            if layer != -2 {
                return Err(err(format!(
                    "img_processor.layer_idx {layer} is not supported (only -2)"
                )));
            }
        }
        Ok(VisionSettings { clip })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> ConfigJson {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/tiny_phi3v/config.json"
        );
        ConfigJson::read(path).unwrap()
    }

    #[test]
    fn reads_the_fixture_and_keeps_every_key() {
        let json = fixture();
        assert_eq!(json.model_type, "phi3_v");
        assert_eq!(json.extra["initializer_range"], 0.02);
        assert!(
            !json.extra.contains_key("vocab_size"),
            "decoder keys are typed"
        );
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/tiny_phi3v/config.json"
        );
        let original: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(json.to_json(), original);
        let config = Phi3VConfig::from_json(&json).unwrap();
        assert_eq!(config.vision.as_ref().unwrap().clip.image_size, 56);
    }

    #[test]
    fn from_config_round_trips() {
        let config = Phi3VConfig::from_json(&fixture()).unwrap();
        let written = ConfigJson::from_config(&config);
        assert_eq!(Phi3VConfig::from_json(&written).unwrap(), config);
        let value = written.to_json();
        assert!(value["img_processor"]["vision_config"]
            .get("num_channels")
            .is_none());
        assert_eq!(value["rope_scaling"]["type"], "su");
        let reread = ConfigJson::from_json_str(&value.to_string()).unwrap();
        assert_eq!(reread, written);
    }

    #[test]
    fn checks_embd_layer_values() {
        let mut json = fixture();
        json.embd_layer.as_mut().unwrap().use_hd_transform = Some(false);
        let e = Phi3VConfig::from_json(&json).unwrap_err().to_string();
        assert!(
            e.contains("embd_layer.use_hd_transform = false is not supported (expected true)"),
            "{e}"
        );
    }
}

//! The decoder's configuration, read from a Hugging Face `config.json`.
//!
//! Three spellings of the rotary scaling exist in the wild and all are accepted:
//! `rope_scaling.type = "su"` (the released Phi-3-V config), `rope_scaling.type =
//! "longrope"`, and transformers 5's `rope_parameters.rope_type = "longrope"`. They are
//! normalised into [`RopeScaling`] once, here, so the model code sees one shape.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::DecoderError;

/// LongRoPE parameters: per-frequency divisors for short and long contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// Divisors used while the forward's largest position is below
    /// `original_max_position_embeddings`; `head_dim / 2` values.
    pub short_factor: Vec<f64>,
    /// Divisors used beyond it; `head_dim / 2` values.
    pub long_factor: Vec<f64>,
    /// Overrides the cos/sin magnitude scale (otherwise derived from the context ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_factor: Option<f64>,
    /// Overrides the context ratio used to derive the magnitude scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
}

/// Configuration of a Phi-3 decoder (Phi-3-mini/-small text models and the Phi-3-V
/// language model share it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phi3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub original_max_position_embeddings: usize,
    /// `None` for plain RoPE (no scaling).
    pub rope_scaling: Option<RopeScaling>,
    /// Keys further back than this are hidden from a query; `None` for no window.
    pub sliding_window: Option<usize>,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    pub tie_word_embeddings: bool,
}

/// The decoder keys of a `config.json`, as the file spells them: one struct reads and writes
/// them. [`Phi3Config`] is what they mean, normalised and validated
/// ([`Phi3Config::from_json`]); [`Phi3ConfigJson::from_config`] writes a config back.
///
/// Missing keys take the defaults transformers gives them. Keys of the file that are not
/// decoder keys are ignored here (a wrapping struct, such as Phi-3-V's, flattens this one and
/// keeps them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phi3ConfigJson {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// `num_attention_heads` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// 10000 when absent (and not in `rope_parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    pub max_position_embeddings: usize,
    /// `max_position_embeddings` when absent (and not in `rope_parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    /// The released spelling of the rotary scaling (`"type": "su"` or `"longrope"`); `null`
    /// for plain RoPE.
    #[serde(default)]
    pub rope_scaling: Option<RopeJson>,
    /// transformers 5's spelling (`"rope_type": "longrope"`); wins over `rope_scaling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeJson>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default = "default_bos")]
    pub bos_token_id: u32,
    #[serde(default = "default_eos")]
    pub eos_token_id: TokenIds,
    /// `null` means 32000 too.
    #[serde(default = "default_pad")]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_rotary_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
}

/// `eos_token_id` is an integer or a list in Hugging Face configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

fn default_eps() -> f64 {
    1e-5
}
fn default_bos() -> u32 {
    1
}
fn default_eos() -> TokenIds {
    TokenIds::One(32000)
}
fn default_pad() -> Option<u32> {
    Some(32000)
}
fn default_act() -> String {
    "silu".into()
}

/// The rotary block of a config, whichever key and spelling it came under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeJson {
    /// `"su"`, `"longrope"` or `"default"`; transformers 5 names it `rope_type`.
    #[serde(
        rename = "type",
        alias = "rope_type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_factor: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_factor: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_rotary_factor: Option<f64>,
}

impl Phi3ConfigJson {
    /// The keys that describe `config`, in the released model's spelling (`rope_scaling` with
    /// `"type": "su"`, every default written out).
    pub fn from_config(config: &Phi3Config) -> Self {
        Self {
            vocab_size: config.vocab_size,
            hidden_size: config.hidden_size,
            intermediate_size: config.intermediate_size,
            num_hidden_layers: config.num_hidden_layers,
            num_attention_heads: config.num_attention_heads,
            num_key_value_heads: Some(config.num_key_value_heads),
            rms_norm_eps: config.rms_norm_eps,
            rope_theta: Some(config.rope_theta),
            max_position_embeddings: config.max_position_embeddings,
            original_max_position_embeddings: Some(config.original_max_position_embeddings),
            rope_scaling: config.rope_scaling.as_ref().map(|r| RopeJson {
                kind: Some("su".into()),
                short_factor: Some(r.short_factor.clone()),
                long_factor: Some(r.long_factor.clone()),
                attention_factor: r.attention_factor,
                factor: r.factor,
                rope_theta: None,
                original_max_position_embeddings: None,
                partial_rotary_factor: None,
            }),
            rope_parameters: None,
            sliding_window: config.sliding_window,
            bos_token_id: config.bos_token_id,
            eos_token_id: TokenIds::One(config.eos_token_id),
            pad_token_id: Some(config.pad_token_id),
            tie_word_embeddings: config.tie_word_embeddings,
            hidden_act: default_act(),
            partial_rotary_factor: None,
            head_dim: None,
        }
    }
}

impl Phi3Config {
    /// Parses a `config.json` text and validates it.
    pub fn from_json_str(text: &str) -> Result<Self, DecoderError> {
        let raw: Phi3ConfigJson =
            serde_json::from_str(text).map_err(|e| DecoderError::Config(e.to_string()))?;
        Self::from_json(raw)
    }

    /// Reads and validates a `config.json` file; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, DecoderError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| DecoderError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json_str(&text)
            .map_err(|e| DecoderError::Config(format!("{}: {e}", path.display())))
    }

    /// Reads the decoder part of a larger config value (the Phi-3-V `config.json` holds the
    /// decoder keys at top level, beside `embd_layer` and `img_processor`).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, DecoderError> {
        let raw: Phi3ConfigJson = serde_json::from_value(value.clone())
            .map_err(|e| DecoderError::Config(e.to_string()))?;
        Self::from_json(raw)
    }

    /// Normalises the keys of a `config.json` (any rotary spelling, defaults) and validates
    /// the result.
    pub fn from_json(raw: Phi3ConfigJson) -> Result<Self, DecoderError> {
        if raw.hidden_act != "silu" {
            return Err(DecoderError::Config(format!(
                "hidden_act `{}` is not supported (Phi-3 uses `silu`)",
                raw.hidden_act
            )));
        }
        let rope = raw.rope_parameters.or(raw.rope_scaling);
        let mut rope_theta = raw.rope_theta;
        let mut original_max = raw.original_max_position_embeddings;
        let mut partial = raw.partial_rotary_factor;
        let rope_scaling = match rope {
            None => None,
            Some(r) => {
                rope_theta = rope_theta.or(r.rope_theta);
                original_max = original_max.or(r.original_max_position_embeddings);
                partial = partial.or(r.partial_rotary_factor);
                match r.kind.as_deref() {
                    Some("su") | Some("longrope") => Some(RopeScaling {
                        short_factor: r.short_factor.ok_or_else(|| {
                            DecoderError::Config("longrope scaling without `short_factor`".into())
                        })?,
                        long_factor: r.long_factor.ok_or_else(|| {
                            DecoderError::Config("longrope scaling without `long_factor`".into())
                        })?,
                        attention_factor: r.attention_factor,
                        factor: r.factor,
                    }),
                    None | Some("default") => None,
                    Some(other) => {
                        return Err(DecoderError::Config(format!(
                            "rope type `{other}` is not supported (expected `su` or `longrope`)"
                        )))
                    }
                }
            }
        };
        if let Some(p) = partial {
            if (p - 1.0).abs() > f64::EPSILON {
                return Err(DecoderError::Config(format!(
                    "partial_rotary_factor {p} is not supported (Phi-3 rotates the whole head)"
                )));
            }
        }
        let eos_token_id = match raw.eos_token_id {
            TokenIds::One(id) => id,
            TokenIds::Many(ids) => *ids
                .first()
                .ok_or_else(|| DecoderError::Config("empty eos_token_id list".into()))?,
        };
        let config = Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: rope_theta.unwrap_or(10000.0),
            max_position_embeddings: raw.max_position_embeddings,
            original_max_position_embeddings: original_max.unwrap_or(raw.max_position_embeddings),
            rope_scaling,
            sliding_window: raw.sliding_window,
            bos_token_id: raw.bos_token_id,
            eos_token_id,
            pad_token_id: raw.pad_token_id.unwrap_or(32000),
            tie_word_embeddings: raw.tie_word_embeddings,
        };
        if let Some(head_dim) = raw.head_dim {
            if head_dim != config.head_dim() {
                return Err(DecoderError::Config(format!(
                    "head_dim {head_dim} differs from hidden_size / num_attention_heads = {}",
                    config.head_dim()
                )));
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Output width of the fused `qkv_proj`.
    pub fn qkv_dim(&self) -> usize {
        (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim()
    }

    /// Checks the invariants the model code relies on, with a message naming the field.
    pub fn validate(&self) -> Result<(), DecoderError> {
        let err = |m: String| Err(DecoderError::Config(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
            (
                "original_max_position_embeddings",
                self.original_max_position_embeddings,
            ),
        ] {
            if v == 0 {
                return err(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        let head_dim = self.head_dim();
        if !head_dim.is_multiple_of(2) {
            return err(format!(
                "head_dim {head_dim} is odd: rotary embedding needs pairs"
            ));
        }
        if self.rms_norm_eps.is_nan()
            || self.rms_norm_eps <= 0.0
            || self.rope_theta.is_nan()
            || self.rope_theta <= 0.0
        {
            return err("rms_norm_eps and rope_theta must be positive".into());
        }
        if let Some(s) = &self.rope_scaling {
            for (name, f) in [
                ("short_factor", &s.short_factor),
                ("long_factor", &s.long_factor),
            ] {
                if f.len() != head_dim / 2 {
                    return err(format!(
                        "rope {name} has {} values, expected head_dim / 2 = {}",
                        f.len(),
                        head_dim / 2
                    ));
                }
                if f.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                    return err(format!(
                        "rope {name} holds a non-positive or non-finite value"
                    ));
                }
            }
        }
        if self.pad_token_id as usize >= self.vocab_size && self.pad_token_id != 32000 {
            return err(format!(
                "pad_token_id {} is outside the vocabulary of {}",
                self.pad_token_id, self.vocab_size
            ));
        }
        Ok(())
    }

    /// The language model of the released Phi-3-Vision-128K-Instruct.
    pub fn phi3_vision_128k() -> Self {
        let mut short = Vec::with_capacity(48);
        for (v, n) in SHORT_FACTOR_RUNS {
            short.extend(std::iter::repeat_n(*v, *n));
        }
        Self {
            vocab_size: 32064,
            hidden_size: 3072,
            intermediate_size: 8192,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 32,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 131072,
            original_max_position_embeddings: 4096,
            rope_scaling: Some(RopeScaling {
                short_factor: short,
                long_factor: LONG_FACTOR.to_vec(),
                attention_factor: None,
                factor: None,
            }),
            sliding_window: Some(131072),
            bos_token_id: 1,
            eos_token_id: 2,
            pad_token_id: 32000,
            tie_word_embeddings: false,
        }
    }

    /// A small random-initialisable config with the released model's proportions
    /// (LongRoPE included), for examples, benches and tests.
    pub fn tiny(vocab_size: usize) -> Self {
        let head_dim = 16;
        Self {
            vocab_size,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            max_position_embeddings: 131072,
            original_max_position_embeddings: 4096,
            rope_scaling: Some(RopeScaling {
                short_factor: (0..head_dim / 2).map(|i| 1.0 + i as f64 * 0.25).collect(),
                long_factor: (0..head_dim / 2).map(|i| 1.0 + i as f64 * 8.0).collect(),
                attention_factor: None,
                factor: None,
            }),
            sliding_window: None,
            bos_token_id: 1,
            eos_token_id: 2,
            pad_token_id: 0,
            tie_word_embeddings: false,
        }
    }
}

/// The released short factors, as (value, repeat count) runs; 48 values in all.
const SHORT_FACTOR_RUNS: &[(f64, usize)] = &[
    (1.05, 3),
    (1.1, 3),
    (1.2500000000000002, 2),
    (1.4000000000000004, 1),
    (1.4500000000000004, 1),
    (1.5500000000000005, 1),
    (1.8500000000000008, 1),
    (1.9000000000000008, 1),
    (2.000000000000001, 19),
    (2.1000000000000005, 2),
    (2.2, 1),
    (2.3499999999999996, 4),
    (2.3999999999999995, 2),
    (2.6499999999999986, 1),
    (2.6999999999999984, 1),
    (2.8999999999999977, 1),
    (2.9499999999999975, 1),
    (3.049999999999997, 3),
];

/// The released long factors.
const LONG_FACTOR: &[f64] = &[
    1.0299999713897705,
    1.0499999523162842,
    1.0499999523162842,
    1.0799999237060547,
    1.2299998998641968,
    1.2299998998641968,
    1.2999999523162842,
    1.4499999284744263,
    1.5999999046325684,
    1.6499998569488525,
    1.8999998569488525,
    2.859999895095825,
    3.68999981880188,
    5.419999599456787,
    5.489999771118164,
    5.489999771118164,
    9.09000015258789,
    11.579999923706055,
    15.65999984741211,
    15.769999504089355,
    15.789999961853027,
    18.360000610351562,
    21.989999771118164,
    23.079999923706055,
    30.009998321533203,
    32.35000228881836,
    32.590003967285156,
    35.56000518798828,
    39.95000457763672,
    53.840003967285156,
    56.20000457763672,
    57.95000457763672,
    59.29000473022461,
    59.77000427246094,
    59.920005798339844,
    61.190006256103516,
    61.96000671386719,
    62.50000762939453,
    63.3700065612793,
    63.48000717163086,
    63.48000717163086,
    63.66000747680664,
    63.850006103515625,
    64.08000946044922,
    64.760009765625,
    64.80001068115234,
    64.81001281738281,
    64.81001281738281,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_preset_is_valid_and_has_48_factors() {
        let c = Phi3Config::phi3_vision_128k();
        c.validate().unwrap();
        let s = c.rope_scaling.as_ref().unwrap();
        assert_eq!(s.short_factor.len(), 48);
        assert_eq!(s.long_factor.len(), 48);
        assert_eq!(c.head_dim(), 96);
        assert_eq!(c.qkv_dim(), 9216);
        Phi3Config::tiny(100).validate().unwrap();
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "vocab_size": 100, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 64, "original_max_position_embeddings": 16,
            "pad_token_id": 0,
            "rope_scaling": {"type": "su", "short_factor": [1.0, 2.0], "long_factor": [3.0, 4.0]}
        })
    }

    #[test]
    fn accepts_all_three_rope_spellings() {
        let a = Phi3Config::from_value(&base()).unwrap();
        let mut v = base();
        v["rope_scaling"]["type"] = "longrope".into();
        assert_eq!(Phi3Config::from_value(&v).unwrap(), a);
        let mut v = base();
        let rope = v.as_object_mut().unwrap().remove("rope_scaling").unwrap();
        let mut params = rope.clone();
        params.as_object_mut().unwrap().remove("type");
        params["rope_type"] = "longrope".into();
        params["rope_theta"] = 10000.0.into();
        v["rope_parameters"] = params;
        assert_eq!(Phi3Config::from_value(&v).unwrap(), a);
    }

    #[test]
    fn rejects_bad_configs_with_named_fields() {
        let mut v = base();
        v["rope_scaling"]["short_factor"] = serde_json::json!([1.0, 2.0, 3.0]);
        let e = Phi3Config::from_value(&v).unwrap_err().to_string();
        assert!(
            e.contains("short_factor") && e.contains("expected head_dim / 2 = 2"),
            "{e}"
        );

        let mut v = base();
        v["hidden_size"] = 6.into();
        v["num_attention_heads"] = 2.into();
        let e = Phi3Config::from_value(&v).unwrap_err().to_string();
        assert!(e.contains("head_dim 3 is odd"), "{e}");

        let mut v = base();
        v["rope_scaling"]["type"] = "yarn-ish".into();
        let e = Phi3Config::from_value(&v).unwrap_err().to_string();
        assert!(e.contains("yarn-ish"), "{e}");

        let mut v = base();
        v["num_attention_heads"] = 3.into();
        v["hidden_size"] = 12.into();
        v["num_key_value_heads"] = 2.into();
        let e = Phi3Config::from_value(&v).unwrap_err().to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");

        let e = Phi3Config::from_json_str("{").unwrap_err().to_string();
        assert!(e.contains("config"), "{e}");
    }
}

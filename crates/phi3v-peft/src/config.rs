//! `adapter_config.json`: one typed struct that both writes the file and reads it back,
//! whether this crate or PEFT's `save_pretrained` wrote it.

use std::collections::BTreeMap;
use std::path::Path;

use phi3v_nn::LoraInit;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::PeftError;
use crate::io::{read_json, write_json};
use crate::targets::{matches, AdapterPlan};

/// File of the adapter settings.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// The fields of PEFT's `adapter_config.json` this crate writes and reads; the many others
/// PEFT writes are ignored on reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default = "none_bias")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub inference_mode: bool,
    #[serde(default)]
    pub init_lora_weights: serde_json::Value,
    /// Ranks other than `r` for some modules, keyed by module name (matched as
    /// `target_modules` are). PEFT also allows regular expressions here; those are refused.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Alphas other than `lora_alpha` for some modules, keyed as `rank_pattern`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub alpha_pattern: BTreeMap<String, f64>,
}

fn none_bias() -> String {
    "none".into()
}

/// An absent pattern map (`null` in older files) is an empty one.
fn null_as_empty<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
}

/// PEFT settings that change what an adapter computes and that this crate does not
/// implement, with what they mean. Set to anything but `null`, `false`, `[]` or `{}`, they are
/// refused: ignored, they would make a merge or an import silently compute another model.
const UNSUPPORTED: [(&str, &str); 7] = [
    ("use_dora", "DoRA adapters"),
    ("fan_in_fan_out", "fan_in_fan_out (Conv1D-layout) adapters"),
    ("lora_bias", "a bias on lora_B"),
    (
        "alora_invocation_tokens",
        "activated LoRA, applied only after its invocation tokens",
    ),
    ("layer_replication", "layer replication"),
    (
        "target_parameters",
        "LoRA on parameters rather than modules",
    ),
    ("trainable_token_indices", "trainable token embeddings"),
];

/// Whether a JSON value turns a setting on.
fn is_set(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// The first key of `pattern` that selects `module`, with its value.
fn pattern_for<'a, V>(pattern: &'a BTreeMap<String, V>, module: &str) -> Option<(&'a str, &'a V)> {
    pattern
        .iter()
        .find(|(key, _)| matches(module, key))
        .map(|(key, value)| (key.as_str(), value))
}

/// Whether a pattern key is a plain module name: PEFT reads the keys as regular expressions,
/// which give the same selection as the suffix rule only when they hold no other syntax than
/// the `.` of module paths.
fn is_module_name(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl PeftConfig {
    /// The config of adapters made with `plan`.
    pub fn from_plan(plan: &AdapterPlan, base_model: Option<String>) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r: plan.lora.rank,
            lora_alpha: plan.lora.alpha,
            lora_dropout: plan.lora.dropout,
            target_modules: plan.targets.clone(),
            modules_to_save: (!plan.full.is_empty()).then(|| plan.full.clone()),
            bias: none_bias(),
            fan_in_fan_out: false,
            use_rslora: false,
            use_dora: false,
            base_model_name_or_path: base_model,
            inference_mode: true,
            init_lora_weights: match plan.lora.init {
                LoraInit::Gaussian => "gaussian".into(),
                LoraInit::Kaiming => true.into(),
            },
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
        }
    }

    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA: the scale of every module that
    /// neither pattern selects.
    pub fn scale(&self) -> f64 {
        self.scale_of(self.lora_alpha, self.r)
    }

    fn scale_of(&self, alpha: f64, r: usize) -> f64 {
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }

    /// The rank of `module`'s adapter, with the key that sets it (`r`, or
    /// `rank_pattern.{key}`) for messages.
    pub fn rank_for(&self, module: &str) -> (usize, String) {
        match pattern_for(&self.rank_pattern, module) {
            Some((key, &r)) => (r, format!("rank_pattern.{key}")),
            None => (self.r, "r".into()),
        }
    }

    /// The scale of `module`'s adapter: its alpha (`alpha_pattern`, else `lora_alpha`) over
    /// its rank (`rank_pattern`, else `r`), as PEFT computes it per layer.
    pub fn scale_for(&self, module: &str) -> f64 {
        let alpha = pattern_for(&self.alpha_pattern, module).map_or(self.lora_alpha, |(_, &a)| a);
        self.scale_of(alpha, self.rank_for(module).0)
    }

    /// Reads `dir`'s `adapter_config.json` and [checks](Self::check) its values.
    ///
    /// # Errors
    /// An unreadable file, a value that cannot work, or an adapter other than plain LoRA
    /// (another `peft_type`, DoRA, `fan_in_fan_out`, the other settings that change what it
    /// computes), each naming the file and the key.
    pub fn read(dir: &Path) -> Result<Self, PeftError> {
        let path = dir.join(ADAPTER_CONFIG);
        let config: PeftConfig = read_json(&path)?;
        // The keys this struct does not hold are only looked at, never kept.
        let all: serde_json::Value = read_json(&path)?;
        for (key, feature) in UNSUPPORTED {
            if let Some(value) = all.get(key).filter(|v| is_set(v)) {
                return Err(PeftError::setting(
                    &path,
                    key,
                    format!("is {value}: {feature} are not supported"),
                ));
            }
        }
        config.check(&path)?;
        Ok(config)
    }

    /// Checks the values that make an adapter compute something, naming `path` (the file
    /// they came from) and the key: a LoRA `peft_type`, `r` and every `rank_pattern` rank at
    /// least 1 (`alpha / r` is infinite at 0), `lora_alpha` and every `alpha_pattern` alpha
    /// finite and above 0, `lora_dropout` in `[0, 1)`, and pattern keys that are module names.
    pub fn check(&self, path: &Path) -> Result<(), PeftError> {
        let bad = |key: &str, message: String| Err(PeftError::setting(path, key, message));
        if self.peft_type != "LORA" {
            return bad(
                "peft_type",
                format!("is `{}`; only LORA adapters are supported", self.peft_type),
            );
        }
        let rank = |key: &str, r: usize| match r {
            0 => bad(key, "is 0; a rank must be at least 1".into()),
            _ => Ok(()),
        };
        let alpha = |key: &str, a: f64| match a.is_finite() && a > 0.0 {
            true => Ok(()),
            false => bad(key, format!("is {a}; it must be a finite number > 0")),
        };
        rank("r", self.r)?;
        alpha("lora_alpha", self.lora_alpha)?;
        if !(self.lora_dropout.is_finite() && (0.0..1.0).contains(&self.lora_dropout)) {
            return bad(
                "lora_dropout",
                format!("is {}; it must be in [0, 1)", self.lora_dropout),
            );
        }
        for (name, keys) in [
            ("rank_pattern", self.rank_pattern.keys().collect::<Vec<_>>()),
            ("alpha_pattern", self.alpha_pattern.keys().collect()),
        ] {
            if let Some(key) = keys.into_iter().find(|k| !is_module_name(k)) {
                return bad(
                    &format!("{name}.{key}"),
                    "is not a module name: regular expressions in patterns are not supported; \
                     list the modules by name"
                        .into(),
                );
            }
        }
        for (key, &r) in &self.rank_pattern {
            rank(&format!("rank_pattern.{key}"), r)?;
        }
        for (key, &a) in &self.alpha_pattern {
            alpha(&format!("alpha_pattern.{key}"), a)?;
        }
        Ok(())
    }

    /// Checks the module-name patterns against the modules of the model the adapter is used
    /// on, naming `path` and the key: every entry of `target_modules` and every pattern key
    /// must select one of `modules` (a typo would otherwise adapt nothing, or leave a layer
    /// at the wrong rank or scale), and no module may be selected by two pattern keys with
    /// different values (PEFT would pick one by the file's key order).
    pub fn check_modules(&self, path: &Path, modules: &[&str]) -> Result<(), PeftError> {
        let selects = |pattern: &str| modules.iter().any(|m| matches(m, pattern));
        let unknown: Vec<&str> = self
            .target_modules
            .iter()
            .map(String::as_str)
            .filter(|p| !selects(p))
            .collect();
        if !unknown.is_empty() {
            return Err(PeftError::setting(
                path,
                "target_modules",
                format!(
                    "lists {} that no module of the base model matches (modules are named \
                     like `{}`)",
                    unknown
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    modules.first().copied().unwrap_or("?")
                ),
            ));
        }
        let keys = self
            .rank_pattern
            .keys()
            .map(|k| ("rank_pattern", k))
            .chain(self.alpha_pattern.keys().map(|k| ("alpha_pattern", k)));
        for (name, key) in keys {
            if !selects(key) {
                return Err(PeftError::setting(
                    path,
                    format!("{name}.{key}"),
                    "selects no module of the base model",
                ));
            }
        }
        for module in modules {
            check_unambiguous(path, "rank_pattern", &self.rank_pattern, module)?;
            check_unambiguous(path, "alpha_pattern", &self.alpha_pattern, module)?;
        }
        Ok(())
    }

    /// Writes `dir`'s `adapter_config.json` (atomically; `dir` must exist).
    pub fn write(&self, dir: &Path) -> Result<(), PeftError> {
        write_json(&dir.join(ADAPTER_CONFIG), self)
    }
}

/// Refuses two keys of `pattern` that select `module` with different values.
fn check_unambiguous<V: PartialEq + std::fmt::Display>(
    path: &Path,
    name: &str,
    pattern: &BTreeMap<String, V>,
    module: &str,
) -> Result<(), PeftError> {
    let mut selecting = pattern.iter().filter(|(key, _)| matches(module, key));
    if let Some((first, value)) = selecting.next() {
        if let Some((other, other_value)) = selecting.find(|(_, v)| *v != value) {
            return Err(PeftError::setting(
                path,
                name,
                format!(
                    "keys `{first}` ({value}) and `{other}` ({other_value}) both select \
                     module `{module}`"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        for plan in [
            AdapterPlan::reference(true, false),
            AdapterPlan {
                full: vec!["img_projection.0".into()],
                lora: phi3v_nn::LoraConfig {
                    init: LoraInit::Kaiming,
                    ..phi3v_nn::LoraConfig::default()
                },
                ..AdapterPlan::reference(false, true)
            },
        ] {
            let config = PeftConfig::from_plan(&plan, Some("base".into()));
            config.write(tmp.path()).unwrap();
            assert_eq!(PeftConfig::read(tmp.path()).unwrap(), config);
        }
    }

    /// A config as PEFT's `save_pretrained` writes it (trimmed): unknown fields are
    /// ignored, an integer alpha reads as a float.
    #[test]
    fn reads_what_peft_writes() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(ADAPTER_CONFIG),
            r#"{"alpha_pattern": {}, "base_model_name_or_path": null, "bias": "none",
                "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": "gaussian",
                "lora_alpha": 8, "lora_dropout": 0.0, "modules_to_save": null,
                "peft_type": "LORA", "peft_version": "0.21.2", "r": 4,
                "target_modules": ["qkv_proj", "o_proj"], "task_type": null,
                "use_dora": false, "use_rslora": false}"#,
        )
        .unwrap();
        let config = PeftConfig::read(tmp.path()).unwrap();
        assert_eq!((config.r, config.scale()), (4, 2.0));
        assert_eq!(config.target_modules, ["qkv_proj", "o_proj"]);
    }

    #[test]
    fn refuses_other_adapter_types_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = PeftConfig::from_plan(&AdapterPlan::default(), None);
        config.use_dora = true;
        config.write(tmp.path()).unwrap();
        let err = PeftConfig::read(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains(ADAPTER_CONFIG) && err.contains("DoRA"),
            "{err}"
        );
    }

    /// Writes the default plan's config with `edit` applied to its JSON, and reads it.
    fn read_edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<PeftConfig, String> {
        let tmp = tempfile::tempdir().unwrap();
        let mut json =
            serde_json::to_value(PeftConfig::from_plan(&AdapterPlan::default(), None)).unwrap();
        edit(&mut json);
        std::fs::write(tmp.path().join(ADAPTER_CONFIG), json.to_string()).unwrap();
        PeftConfig::read(tmp.path()).map_err(|e| {
            let text = e.to_string();
            assert!(text.contains(ADAPTER_CONFIG), "{text}");
            text
        })
    }

    #[test]
    fn values_that_cannot_work_are_refused_naming_the_key() {
        for (key, value, said) in [
            ("r", serde_json::json!(0), "`r` is 0"),
            ("lora_alpha", serde_json::json!(0.0), "`lora_alpha` is 0"),
            ("lora_alpha", serde_json::json!(-8), "`lora_alpha` is -8"),
            (
                "lora_dropout",
                serde_json::json!(1.0),
                "`lora_dropout` is 1",
            ),
            (
                "lora_dropout",
                serde_json::json!(-0.5),
                "`lora_dropout` is -0.5",
            ),
            (
                "rank_pattern",
                serde_json::json!({"o_proj": 0}),
                "`rank_pattern.o_proj` is 0",
            ),
            (
                "alpha_pattern",
                serde_json::json!({"o_proj": -1.0}),
                "`alpha_pattern.o_proj` is -1",
            ),
            (
                "rank_pattern",
                serde_json::json!({"^model.*o_proj$": 8}),
                "`rank_pattern.^model.*o_proj$` is not a module name",
            ),
            ("lora_bias", serde_json::json!(true), "`lora_bias` is true"),
            (
                "peft_type",
                serde_json::json!("IA3"),
                "`peft_type` is `IA3`",
            ),
        ] {
            let err = read_edited(|c| c[key] = value.clone()).unwrap_err();
            assert!(err.contains(said), "{key} = {value}: {err}");
        }
        // NaN is not JSON, but Python writes it; the error still names the key.
        let tmp = tempfile::tempdir().unwrap();
        let text =
            serde_json::to_string_pretty(&PeftConfig::from_plan(&AdapterPlan::default(), None))
                .unwrap()
                .replace("\"lora_alpha\": 128.0", "\"lora_alpha\": NaN");
        assert!(text.contains("NaN"));
        std::fs::write(tmp.path().join(ADAPTER_CONFIG), text).unwrap();
        let err = PeftConfig::read(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains(ADAPTER_CONFIG) && err.contains("`lora_alpha`"),
            "{err}"
        );
        // Settings that are off, as PEFT writes them, pass.
        let config = read_edited(|c| {
            c["lora_bias"] = false.into();
            c["layer_replication"] = serde_json::Value::Null;
            c["rank_pattern"] = serde_json::Value::Null;
            c["alpha_pattern"] = serde_json::json!({});
        })
        .unwrap();
        assert!(config.rank_pattern.is_empty());
    }

    #[test]
    fn patterns_set_rank_and_scale_per_module() {
        let mut config = PeftConfig::from_plan(&AdapterPlan::default(), None);
        config.rank_pattern.insert("o_proj".into(), 16);
        config
            .alpha_pattern
            .insert("layers.1.self_attn.o_proj".into(), 8.0);
        let o0 = "model.layers.0.self_attn.o_proj";
        let o1 = "model.layers.1.self_attn.o_proj";
        assert_eq!(config.rank_for(o0), (16, "rank_pattern.o_proj".into()));
        assert_eq!(
            config.rank_for("model.layers.0.mlp.down_proj"),
            (64, "r".into())
        );
        assert_eq!(config.scale_for(o0), 128.0 / 16.0);
        assert_eq!(config.scale_for(o1), 8.0 / 16.0);
        assert_eq!(config.scale_for("model.layers.0.mlp.down_proj"), 2.0);
        let path = Path::new(ADAPTER_CONFIG);
        let modules = [o0, o1, "model.layers.0.mlp.down_proj"];
        config.target_modules = vec!["o_proj".into(), "down_proj".into()];
        config.check_modules(path, &modules).unwrap();
        // Two keys selecting one module with different values would depend on key order.
        config
            .rank_pattern
            .insert("layers.0.self_attn.o_proj".into(), 8);
        let err = config
            .check_modules(path, &modules)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`rank_pattern`") && err.contains(o0), "{err}");
        config.rank_pattern.clear();
        config.target_modules.push("qkv_projj".into());
        let err = config
            .check_modules(path, &modules)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`target_modules`") && err.contains("`qkv_projj`"),
            "{err}"
        );
    }
}

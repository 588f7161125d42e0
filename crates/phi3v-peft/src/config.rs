//! `adapter_config.json`: one typed struct that both writes the file and reads it back,
//! whether this crate or PEFT's `save_pretrained` wrote it.

use std::path::Path;

use phi3v_nn::LoraInit;
use serde::{Deserialize, Serialize};

use crate::error::PeftError;
use crate::io::{read_json, write_json};
use crate::targets::AdapterPlan;

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
}

fn none_bias() -> String {
    "none".into()
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
        }
    }

    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Reads `dir`'s `adapter_config.json`.
    ///
    /// # Errors
    /// An unreadable file, or an adapter other than plain LoRA (another `peft_type`, DoRA,
    /// `fan_in_fan_out`), naming the file.
    pub fn read(dir: &Path) -> Result<Self, PeftError> {
        let path = dir.join(ADAPTER_CONFIG);
        let config: PeftConfig = read_json(&path)?;
        if config.peft_type != "LORA" {
            return Err(PeftError::Config(format!(
                "{}: peft_type is `{}`; only LORA adapters can be imported",
                path.display(),
                config.peft_type
            )));
        }
        if config.use_dora || config.fan_in_fan_out {
            return Err(PeftError::Config(format!(
                "{}: DoRA and fan_in_fan_out adapters are not supported",
                path.display()
            )));
        }
        Ok(config)
    }

    /// Writes `dir`'s `adapter_config.json` (atomically; `dir` must exist).
    pub fn write(&self, dir: &Path) -> Result<(), PeftError> {
        write_json(&dir.join(ADAPTER_CONFIG), self)
    }
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
}

//! Adapters in PEFT's directory format, so a model tuned here loads in Python with
//! `PeftModel.from_pretrained`, and adapters tuned in Python load here.
//!
//! - `adapter_model.safetensors`: `base_model.model.{module}.lora_A.weight` (`[r, in]`) and
//!   `.lora_B.weight` (`[out, r]`): PyTorch's layout, the transpose of burn's. Layers
//!   trained in full are saved as `base_model.model.{module}.weight` / `.bias` (`[out, in]`)
//!   and listed in `modules_to_save`.
//! - `adapter_config.json`: `peft_type`, `r`, `lora_alpha`, `target_modules`, ...
//!
//! The scale is `lora_alpha / r` (or `lora_alpha / sqrt(r)` with `use_rslora`).

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use phi3v_nn::{LoraAdapter, NamedLinears, Weights};
use serde::{Deserialize, Serialize};

use crate::error::LoraError;
use crate::io::{save_tensors, to_vec, write_json, TensorMap};
use crate::targets::{matches_any, AdapterPlan};

/// File of the adapter tensors.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// File of the adapter settings.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// PEFT's prefix before the model's own module names.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The fields of PEFT's `adapter_config.json` this crate writes and reads.
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
                phi3v_nn::LoraInit::Gaussian => "gaussian".into(),
                phi3v_nn::LoraInit::Kaiming => true.into(),
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
}

/// The adapter tensors of `model` in PEFT's names and layout.
pub fn peft_tensors<B: Backend, M: NamedLinears<B> + Clone>(
    model: &M,
    full: &[String],
) -> TensorMap {
    let mut tensors = TensorMap::new();
    let put = |tensors: &mut TensorMap, name: String, t: Tensor<B, 2>| {
        tensors.insert(name, to_vec(t.transpose()));
    };
    model.clone().for_each_linear("", &mut |name, linear| {
        let key = format!("{PEFT_PREFIX}{name}");
        if let Some(lora) = &linear.lora {
            put(
                &mut tensors,
                format!("{key}.lora_A.weight"),
                lora.lora_a.val(),
            );
            put(
                &mut tensors,
                format!("{key}.lora_B.weight"),
                lora.lora_b.val(),
            );
        }
        if matches_any(name, full) {
            put(&mut tensors, format!("{key}.weight"), linear.weight.val());
            if let Some(bias) = &linear.bias {
                tensors.insert(format!("{key}.bias"), to_vec(bias.val()));
            }
        }
    });
    tensors
}

/// Writes `model`'s adapters to `dir` as a PEFT adapter directory.
pub fn export_peft<B: Backend, M: NamedLinears<B> + Clone>(
    model: &M,
    plan: &AdapterPlan,
    base_model: Option<String>,
    dir: &Path,
) -> Result<(), LoraError> {
    std::fs::create_dir_all(dir).map_err(|e| LoraError::io(dir, e))?;
    save_tensors(&dir.join(ADAPTER_WEIGHTS), &peft_tensors(model, &plan.full))?;
    write_json(
        &dir.join(ADAPTER_CONFIG),
        &PeftConfig::from_plan(plan, base_model),
    )
}

/// Reads a PEFT adapter directory's config.
pub fn read_peft_config(dir: &Path) -> Result<PeftConfig, LoraError> {
    let path = dir.join(ADAPTER_CONFIG);
    let config: PeftConfig = crate::io::read_json(&path)?;
    if config.peft_type != "LORA" {
        return Err(LoraError::Config(format!(
            "{}: peft_type is `{}`; only LORA adapters can be imported",
            path.display(),
            config.peft_type
        )));
    }
    if config.use_dora || config.fan_in_fan_out {
        return Err(LoraError::Config(format!(
            "{}: DoRA and fan_in_fan_out adapters are not supported",
            path.display()
        )));
    }
    Ok(config)
}

/// Attaches the adapters of a PEFT directory to `model` (replacing any it has) and loads
/// its fully trained layers. Returns the config.
///
/// # Errors
/// A tensor that names no layer of the model, or whose shape does not fit its layer; both
/// name the tensor and the file.
pub fn import_peft<B: Backend, M: NamedLinears<B>>(
    model: &mut M,
    dir: &Path,
    device: &B::Device,
) -> Result<PeftConfig, LoraError> {
    let config = read_peft_config(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let weights = Weights::open(&path).map_err(|e| LoraError::io(&path, e))?;
    // PEFT may keep the adapter name in the keys (`lora_A.default.weight`).
    let key = |name: &str, part: &str| -> Option<String> {
        [
            format!("{PEFT_PREFIX}{name}.{part}.weight"),
            format!("{PEFT_PREFIX}{name}.{part}.default.weight"),
        ]
        .into_iter()
        .find(|k| weights.contains(k))
    };
    let mut used = Vec::new();
    let mut failure = None;
    let scale = config.scale();
    model.for_each_linear("", &mut |name, linear| {
        if failure.is_some() {
            return;
        }
        let (d_in, d_out) = linear.dims();
        let mut load = || -> Result<(), LoraError> {
            let bad = |tensor: &str, e: phi3v_nn::WeightsError| LoraError::Tensor {
                path: path.clone(),
                tensor: tensor.to_string(),
                message: e.to_string(),
            };
            if let (Some(a), Some(b)) = (key(name, "lora_A"), key(name, "lora_B")) {
                let r = weights
                    .shape(&a)
                    .map_err(|e| bad(&a, e))?
                    .first()
                    .copied()
                    .unwrap_or(0);
                let lora_a = weights
                    .linear_weight::<B>(&a, d_in, r, device)
                    .map_err(|e| bad(&a, e))?;
                let lora_b = weights
                    .linear_weight::<B>(&b, r, d_out, device)
                    .map_err(|e| bad(&b, e))?;
                linear.lora = Some(LoraAdapter::from_tensors(lora_a, lora_b, scale));
                used.extend([a, b]);
            }
            let weight = format!("{PEFT_PREFIX}{name}.weight");
            if weights.contains(&weight) {
                let w = weights
                    .linear_weight::<B>(&weight, d_in, d_out, device)
                    .map_err(|e| bad(&weight, e))?;
                linear.weight = burn::module::Param::initialized(linear.weight.id, w);
                used.push(weight);
                let bias = format!("{PEFT_PREFIX}{name}.bias");
                if let Some(old) = &linear.bias {
                    let b = weights
                        .tensor::<B, 1>(&bias, [d_out], device)
                        .map_err(|e| bad(&bias, e))?;
                    linear.bias = Some(burn::module::Param::initialized(old.id, b));
                    used.push(bias);
                }
            }
            Ok(())
        };
        if let Err(e) = load() {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let layers = crate::targets::vision_layer_count(model);
    // Phi-3-V runs its CLIP tower to the second-to-last layer, so the checkpoint's last
    // layer is not part of the model here; adapters on it (PEFT puts them there) have no
    // effect on any output and are skipped.
    let unused: Vec<&str> = weights
        .unused(&used)
        .into_iter()
        .filter(|name| !crate::targets::in_unused_vision_layer(name, layers))
        .collect();
    if let Some(first) = unused.first() {
        return Err(LoraError::Tensor {
            path,
            tensor: first.to_string(),
            message: format!(
                "names no linear layer of this model ({} tensors unused); is the adapter for another architecture?",
                unused.len()
            ),
        });
    }
    if used.is_empty() {
        return Err(LoraError::io(&path, "the file holds no adapter tensors"));
    }
    Ok(config)
}

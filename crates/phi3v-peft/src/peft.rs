//! Adapters in PEFT's directory format, so a model tuned here loads in Python with
//! `PeftModel.from_pretrained`, and adapters tuned in Python load here.
//!
//! - `adapter_model.safetensors`: the factors of each adapted layer, and the weight and
//!   bias of each layer trained in full (listed in `modules_to_save`), under the names of
//!   [`crate::names`], in PyTorch's layout (the transpose of burn's).
//! - `adapter_config.json`: [`PeftConfig`] (`peft_type`, `r`, `lora_alpha`,
//!   `target_modules`, ...).
//!
//! The scale is `lora_alpha / r` (or `lora_alpha / sqrt(r)` with `use_rslora`).

use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use phi3v_nn::{LoraAdapter, NamedLinears, Weights};

use crate::config::PeftConfig;
use crate::error::PeftError;
use crate::io::{save_tensors, to_vec, TensorMap};
use crate::names::{self, Factor};
use crate::targets::{in_unused_vision_layer, matches_any, vision_layer_count, AdapterPlan};

/// File of the adapter tensors.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The adapter tensors of `model` in PEFT's names and layout: the factors of every
/// adapted layer, and the weight and bias of every layer `full` selects.
pub fn peft_tensors<B: Backend, M: NamedLinears<B> + Clone>(
    model: &M,
    full: &[String],
) -> TensorMap {
    let mut tensors = TensorMap::new();
    let put = |tensors: &mut TensorMap, name: String, t: Tensor<B, 2>| {
        tensors.insert(name, to_vec(t.transpose()));
    };
    model.clone().for_each_linear("", &mut |name, linear| {
        if let Some(lora) = &linear.lora {
            put(
                &mut tensors,
                names::lora(name, Factor::A),
                lora.lora_a.val(),
            );
            put(
                &mut tensors,
                names::lora(name, Factor::B),
                lora.lora_b.val(),
            );
        }
        if matches_any(name, full) {
            put(&mut tensors, names::full_weight(name), linear.weight.val());
            if let Some(bias) = &linear.bias {
                tensors.insert(names::full_bias(name), to_vec(bias.val()));
            }
        }
    });
    tensors
}

/// Writes `model`'s adapters to `dir` as a PEFT adapter directory (created if missing;
/// each file is replaced atomically).
pub fn export_peft<B: Backend, M: NamedLinears<B> + Clone>(
    model: &M,
    plan: &AdapterPlan,
    base_model: Option<String>,
    dir: &Path,
) -> Result<(), PeftError> {
    std::fs::create_dir_all(dir).map_err(|e| PeftError::io(dir, e))?;
    save_tensors(&dir.join(ADAPTER_WEIGHTS), &peft_tensors(model, &plan.full))?;
    PeftConfig::from_plan(plan, base_model).write(dir)
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
) -> Result<PeftConfig, PeftError> {
    let config = PeftConfig::read(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let weights = Weights::open(&path).map_err(|e| PeftError::io(&path, e))?;
    let stored = |candidates: [String; 2]| candidates.into_iter().find(|k| weights.contains(k));
    let mut used = Vec::new();
    let mut failure = None;
    let scale = config.scale();
    model.for_each_linear("", &mut |name, linear| {
        if failure.is_some() {
            return;
        }
        let (d_in, d_out) = linear.dims();
        let mut load = || -> Result<(), PeftError> {
            let bad = |tensor: &str, e: phi3v_nn::WeightsError| PeftError::tensor(&path, tensor, e);
            let a = stored(names::lora_candidates(name, Factor::A));
            let b = stored(names::lora_candidates(name, Factor::B));
            if let (Some(a), Some(b)) = (a, b) {
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
            let weight = names::full_weight(name);
            if weights.contains(&weight) {
                let w = weights
                    .linear_weight::<B>(&weight, d_in, d_out, device)
                    .map_err(|e| bad(&weight, e))?;
                linear.weight = Param::initialized(linear.weight.id, w);
                used.push(weight);
                let bias = names::full_bias(name);
                if let Some(old) = &linear.bias {
                    let b = weights
                        .tensor::<B, 1>(&bias, [d_out], device)
                        .map_err(|e| bad(&bias, e))?;
                    linear.bias = Some(Param::initialized(old.id, b));
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
    let layers = vision_layer_count(model);
    // Phi-3-V runs its CLIP tower to the second-to-last layer, so the weights' last
    // layer is not part of the model here; adapters on it (PEFT puts them there) have no
    // effect on any output and are skipped.
    let unused: Vec<&str> = weights
        .unused(&used)
        .into_iter()
        .filter(|name| !in_unused_vision_layer(name, layers))
        .collect();
    if let Some(first) = unused.first() {
        return Err(PeftError::tensor(
            &path,
            *first,
            format!(
                "names no linear layer of this model ({} tensors unused); is the adapter for another architecture?",
                unused.len()
            ),
        ));
    }
    if used.is_empty() {
        return Err(PeftError::io(&path, "the file holds no adapter tensors"));
    }
    Ok(config)
}

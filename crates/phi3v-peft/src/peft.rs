//! Adapters in PEFT's directory format, so a model tuned here loads in Python with
//! `PeftModel.from_pretrained`, and adapters tuned in Python load here.
//!
//! - `adapter_model.safetensors`: the factors of each adapted layer, and the weight and
//!   bias of each layer trained in full (listed in `modules_to_save`), under the names of
//!   [`crate::names`], in PyTorch's layout (the transpose of burn's).
//! - `adapter_config.json`: [`PeftConfig`] (`peft_type`, `r`, `lora_alpha`,
//!   `target_modules`, ...).
//!
//! The scale is `lora_alpha / r` (or `lora_alpha / sqrt(r)` with `use_rslora`), per module
//! when `rank_pattern` or `alpha_pattern` name it.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use phi3v_nn::{LoraAdapter, MixedMatmul, NamedLinears};

use crate::check::{check_adapter, BaseTensors, LoraPair};
use crate::config::PeftConfig;
use crate::error::PeftError;
use crate::io::{save_tensors, to_vec, TensorMap};
use crate::names::{self, Factor};
use crate::targets::{matches_any, AdapterPlan};

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
/// The adapter dir is first checked against the model's linear layers
/// ([`check_adapter`]); nothing of the model changes unless the whole adapter passes.
///
/// # Errors
/// Any failure of [`check_adapter`]: a config value that cannot work, a `target_modules`
/// entry that selects no layer, a tensor that names no layer of the model or does not fit
/// it or the config's rank, a missing factor, a non-finite value; each names the file and
/// the key or tensor.
pub fn import_peft<B: MixedMatmul, M: NamedLinears<B>>(
    model: &mut M,
    dir: &Path,
    device: &B::Device,
) -> Result<PeftConfig, PeftError> {
    let adapter = check_adapter(dir, &BaseTensors::from_model(model))?;
    let pairs: HashMap<&str, &LoraPair> = adapter
        .lora
        .iter()
        .map(|pair| (pair.module.as_str(), pair))
        .collect();
    let full: HashMap<&str, &str> = adapter
        .full
        .iter()
        .map(|f| (f.base.as_str(), f.name.as_str()))
        .collect();
    let weights = &adapter.weights;
    let mut failure = None;
    model.for_each_linear("", &mut |name, linear| {
        if failure.is_some() {
            return;
        }
        let (d_in, d_out) = linear.dims();
        let mut load = || -> Result<(), phi3v_nn::WeightsError> {
            if let Some(pair) = pairs.get(name) {
                let lora_a = weights.linear_weight::<B>(&pair.a, d_in, pair.rank, device)?;
                let lora_b = weights.linear_weight::<B>(&pair.b, pair.rank, d_out, device)?;
                linear.lora = Some(LoraAdapter::from_tensors(lora_a, lora_b, pair.scale));
            }
            if let Some(weight) = full.get(format!("{name}.weight").as_str()) {
                let w = weights.linear_weight::<B>(weight, d_in, d_out, device)?;
                linear.weight = Param::initialized(linear.weight.id, w);
            }
            if let (Some(bias), Some(old)) =
                (full.get(format!("{name}.bias").as_str()), &linear.bias)
            {
                let b = weights.tensor::<B, 1>(bias, [d_out], device)?;
                linear.bias = Some(Param::initialized(old.id, b));
            }
            Ok(())
        };
        if let Err(e) = load() {
            failure = Some(e);
        }
    });
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(adapter.config),
    }
}

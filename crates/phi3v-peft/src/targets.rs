//! Which linear layers get adapters, and which are trained in full, chosen by module name.
//!
//! A pattern matches a module whose Hugging Face name equals it or ends with `.` + pattern,
//! PEFT's rule for `target_modules` given as a list: `qkv_proj` matches every
//! `model.layers.{i}.self_attn.qkv_proj`, `img_projection.0` the first projection layer.

use burn::tensor::backend::Backend;
use burn::tensor::{Element, FloatDType};
use phi3v_nn::{LoraAdapter, LoraConfig, MixedMatmul, NamedLinears};
use serde::{Deserialize, Serialize};

use crate::error::PeftError;

/// Decoder layers the reference recipe adapts.
pub const DECODER_TARGETS: [&str; 4] = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"];
/// CLIP tower and projection layers the reference recipe adapts unless the tower is frozen.
pub const VISION_TARGETS: [&str; 8] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "out_proj",
    "fc1",
    "fc2",
    "img_projection.0",
    "img_projection.2",
];
/// The output head.
pub const LM_HEAD: &str = "lm_head";

/// Whether `name` is selected by `pattern` (equal, or a `.`-separated suffix).
pub fn matches(name: &str, pattern: &str) -> bool {
    name == pattern
        || (name.len() > pattern.len()
            && name.ends_with(pattern)
            && name.as_bytes()[name.len() - pattern.len() - 1] == b'.')
}

/// Whether any of `patterns` selects `name`.
pub fn matches_any(name: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| matches(name, p))
}

/// What is trained: LoRA adapters on some linear layers, full weights of others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterPlan {
    /// Rank, alpha, dropout and initialisation of every adapter.
    pub lora: LoraConfig,
    /// Module-name patterns of the layers that get an adapter.
    pub targets: Vec<String>,
    /// Module-name patterns of the layers whose weight and bias are trained in full (no
    /// adapter is attached to them). `["img_projection.0", "img_projection.2"]` trains
    /// the projection; `[""]` is not a pattern: list the layers.
    pub full: Vec<String>,
}

impl Default for AdapterPlan {
    /// The reference recipe: adapters on the decoder, `lm_head` and the vision path.
    fn default() -> Self {
        Self::reference(true, false)
    }
}

impl AdapterPlan {
    /// The reference recipe's targets: the decoder layers, `lm_head` if asked, and the
    /// CLIP tower and projection unless `freeze_vision`.
    pub fn reference(lm_head: bool, freeze_vision: bool) -> Self {
        let mut targets: Vec<String> = DECODER_TARGETS.iter().map(|s| s.to_string()).collect();
        if lm_head {
            targets.push(LM_HEAD.into());
        }
        if !freeze_vision {
            targets.extend(VISION_TARGETS.iter().map(|s| s.to_string()));
        }
        Self {
            lora: LoraConfig::default(),
            targets,
            full: Vec::new(),
        }
    }

    /// Attaches fresh adapters to the selected layers of `model` (whose base must already
    /// be frozen with `no_grad`) and marks the fully trained layers as trainable, in the
    /// backend's float type even over a bf16 base. Returns
    /// the adapted module names.
    ///
    /// # Errors
    /// A pattern of `targets` or `full` that selects no layer (a typo would otherwise
    /// silently train nothing), or a layer selected by both.
    pub fn apply<B: MixedMatmul, M: NamedLinears<B>>(
        &self,
        model: &mut M,
        device: &B::Device,
    ) -> Result<Vec<String>, PeftError> {
        self.check_patterns(model)?;
        let mut adapted = Vec::new();
        let mut conflict = None;
        model.for_each_linear("", &mut |name, linear| {
            let lora = matches_any(name, &self.targets);
            let full = matches_any(name, &self.full);
            if lora && full {
                conflict.get_or_insert_with(|| name.to_string());
            } else if lora {
                let (d_in, d_out) = linear.dims();
                linear.lora = Some(LoraAdapter::new(d_in, d_out, &self.lora, device));
                adapted.push(name.to_string());
            } else if full {
                // AdamW needs the weight in the backend's float type: updates of a bf16
                // weight (a base loaded with bf16 matrices) would round away, and a
                // quantized one (q4/q8) cannot change at all, so it trains from its
                // dequantized values.
                linear.cast_weight(FloatDType::from(<B::FloatElem as Element>::dtype()));
                linear.weight = linear.weight.clone().set_require_grad(true);
                linear.bias = linear.bias.take().map(|b| b.set_require_grad(true));
            }
        });
        match conflict {
            Some(name) => Err(PeftError::Config(format!(
                "layer `{name}` is selected both for an adapter and for full training"
            ))),
            None => Ok(adapted),
        }
    }

    /// Every pattern must select at least one layer of `model`.
    fn check_patterns<B: Backend, M: NamedLinears<B>>(
        &self,
        model: &mut M,
    ) -> Result<(), PeftError> {
        let mut names = Vec::new();
        model.for_each_linear("", &mut |name, _| names.push(name.to_string()));
        for (field, patterns) in [("targets", &self.targets), ("full", &self.full)] {
            for p in patterns {
                if !names.iter().any(|n| matches(n, p)) {
                    return Err(PeftError::Config(format!(
                        "{field} pattern `{p}` selects no linear layer of the model \
                         (layers are named like `{}`)",
                        names.first().map(String::as_str).unwrap_or("?")
                    )));
                }
            }
        }
        Ok(())
    }
}

const VISION_LAYERS: &str = "vision_model.encoder.layers.";

/// The number of CLIP encoder layers the model runs (0 without a vision tower).
pub fn vision_layer_count<B: Backend, M: NamedLinears<B>>(model: &mut M) -> usize {
    let mut count = 0;
    model.for_each_linear("", &mut |name, _| {
        if let Some(i) = layer_index(name) {
            count = count.max(i + 1);
        }
    });
    count
}

/// Whether `name` belongs to a CLIP encoder layer at or past `layers`: a layer the model
/// dir's weights have but Phi-3-V never runs.
pub fn in_unused_vision_layer(name: &str, layers: usize) -> bool {
    layer_index(name).is_some_and(|i| i >= layers)
}

fn layer_index(name: &str) -> Option<usize> {
    let rest = &name[name.find(VISION_LAYERS)? + VISION_LAYERS.len()..];
    rest.split('.').next()?.parse().ok()
}

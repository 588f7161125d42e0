//! PEFT's tensor names: the one place that spells them.
//!
//! An adapter file names each tensor after the Hugging Face module it belongs to, under
//! PEFT's wrapper prefix (PyTorch layout, the transpose of burn's):
//!
//! | tensor of layer `{module}`     | name in `adapter_model.safetensors`        | shape       |
//! |--------------------------------|--------------------------------------------|-------------|
//! | LoRA factor A                  | `base_model.model.{module}.lora_A.weight`  | `[r, in]`   |
//! | LoRA factor B                  | `base_model.model.{module}.lora_B.weight`  | `[out, r]`  |
//! | weight of a layer saved in full| `base_model.model.{module}.weight`         | `[out, in]` |
//! | its bias                       | `base_model.model.{module}.bias`           | `[out]`     |
//!
//! PEFT may keep the adapter's name in the factors' keys (`lora_A.default.weight`); both
//! spellings are read, the first is written. The model dir names the same layer's weight
//! `{module}.weight`, which is what a merge updates.

/// PEFT's prefix before the model's own module names.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// One of the two low-rank factors of an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// `[r, in]` in the file.
    A,
    /// `[out, r]` in the file.
    B,
}

impl Factor {
    fn part(self) -> &'static str {
        match self {
            Factor::A => "lora_A",
            Factor::B => "lora_B",
        }
    }

    /// The other factor of the pair.
    pub fn other(self) -> Self {
        match self {
            Factor::A => Factor::B,
            Factor::B => Factor::A,
        }
    }
}

impl std::fmt::Display for Factor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.part())
    }
}

/// The name a factor of `module`'s adapter is written under.
pub fn lora(module: &str, factor: Factor) -> String {
    format!("{PEFT_PREFIX}{module}.{}.weight", factor.part())
}

/// The names a factor of `module`'s adapter may be stored under, the written one first.
pub fn lora_candidates(module: &str, factor: Factor) -> [String; 2] {
    [
        lora(module, factor),
        format!("{PEFT_PREFIX}{module}.{}.default.weight", factor.part()),
    ]
}

/// The name of `module`'s weight when the layer is saved in full (`modules_to_save`).
pub fn full_weight(module: &str) -> String {
    format!("{PEFT_PREFIX}{module}.weight")
}

/// The name of `module`'s bias when the layer is saved in full.
pub fn full_bias(module: &str) -> String {
    format!("{PEFT_PREFIX}{module}.bias")
}

/// What a tensor of an adapter file does to the model dir's tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterTensor {
    /// A LoRA factor of the adapter on `module`, whose model-dir weight is
    /// `{module}.weight`; `partner` names the other factor, spelled the same way (with or
    /// without PEFT's `.default`), so that a pair is always read together.
    Lora {
        module: String,
        factor: Factor,
        partner: String,
    },
    /// A full copy of the model dir's tensor `base`.
    Full { base: String },
}

/// What the adapter file's tensor `name` is; `None` when it lacks PEFT's prefix.
pub fn parse(name: &str) -> Option<AdapterTensor> {
    let rest = name.strip_prefix(PEFT_PREFIX)?;
    for factor in [Factor::A, Factor::B] {
        // PEFT's two spellings: `lora_A.weight` and `lora_A.default.weight`.
        for adapter_name in ["", ".default"] {
            let suffix = format!(".{}{adapter_name}.weight", factor.part());
            if let Some(module) = rest.strip_suffix(&suffix) {
                let other = factor.other().part();
                return Some(AdapterTensor::Lora {
                    module: module.to_string(),
                    factor,
                    partner: format!("{PEFT_PREFIX}{module}.{other}{adapter_name}.weight"),
                });
            }
        }
    }
    Some(AdapterTensor::Full {
        base: rest.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_names_parse_back_to_the_model_dir_names() {
        let m = "model.layers.0.self_attn.qkv_proj";
        assert_eq!(
            lora(m, Factor::A),
            "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight"
        );
        assert_eq!(
            parse(&lora(m, Factor::A)),
            Some(AdapterTensor::Lora {
                module: m.into(),
                factor: Factor::A,
                partner: lora(m, Factor::B),
            })
        );
        // PEFT's `.default` spelling pairs with the same spelling.
        let [_, named_a] = lora_candidates(m, Factor::A);
        let [_, named_b] = lora_candidates(m, Factor::B);
        assert_eq!(
            parse(&named_b),
            Some(AdapterTensor::Lora {
                module: m.into(),
                factor: Factor::B,
                partner: named_a,
            })
        );
        assert_eq!(
            parse(&full_bias("img_projection.0")),
            Some(AdapterTensor::Full {
                base: "img_projection.0.bias".into()
            })
        );
        assert_eq!(parse("model.layers.0.mlp.down_proj.weight"), None);
    }
}

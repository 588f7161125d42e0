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
    /// Factor A of the adapter on the model dir's weight `base`; `b` names factor B in the
    /// same file.
    LoraA { base: String, b: String },
    /// Factor B, read together with its factor A.
    LoraB,
    /// A full copy of the model dir's tensor `base`.
    Full { base: String },
}

/// What the adapter file's tensor `name` is; `None` when it lacks PEFT's prefix.
pub fn parse(name: &str) -> Option<AdapterTensor> {
    let module = name
        .strip_prefix(PEFT_PREFIX)?
        .replace(".default.weight", ".weight");
    Some(if let Some(layer) = module.strip_suffix(".lora_A.weight") {
        AdapterTensor::LoraA {
            base: format!("{layer}.weight"),
            b: name.replace("lora_A", "lora_B"),
        }
    } else if module.ends_with(".lora_B.weight") {
        AdapterTensor::LoraB
    } else {
        AdapterTensor::Full { base: module }
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
            Some(AdapterTensor::LoraA {
                base: format!("{m}.weight"),
                b: lora(m, Factor::B),
            })
        );
        let [_, named] = lora_candidates(m, Factor::A);
        assert_eq!(
            parse(&named),
            Some(AdapterTensor::LoraA {
                base: format!("{m}.weight"),
                b: lora_candidates(m, Factor::B)[1].clone(),
            })
        );
        assert_eq!(parse(&lora(m, Factor::B)), Some(AdapterTensor::LoraB));
        assert_eq!(
            parse(&full_bias("img_projection.0")),
            Some(AdapterTensor::Full {
                base: "img_projection.0.bias".into()
            })
        );
        assert_eq!(parse("model.layers.0.mlp.down_proj.weight"), None);
    }
}

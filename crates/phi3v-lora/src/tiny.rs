//! A small random Phi-3-V written as a Hugging Face checkpoint folder.
//!
//! The main example and the tests fine-tune a model that trains in minutes on a CPU. It is
//! written to disk in exactly the released layout (`config.json` with `model_type =
//! "phi3_v"`, `preprocessor_config.json`, `tokenizer.json`, `model.safetensors` under the
//! released tensor names), so everything downstream (loading, PEFT export, merging,
//! `phi3v generate`) runs the same code it runs on the real model.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::LoraError;
use crate::io::{save_tensors, write_json, TensorMap};

/// Sizes of the random model. The vocabulary is always the released one (32064), so the
/// real tokenizer works with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TinySpec {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub vision_hidden_size: usize,
    pub vision_intermediate_size: usize,
    /// CLIP layers in the checkpoint; the model runs all but the last, as Phi-3-V does.
    pub vision_layers: usize,
    pub vision_heads: usize,
    /// Side of a crop in pixels (a multiple of 28: 14-px patches, merged 2x2).
    pub image_size: usize,
    /// Crops of the HD transform (`preprocessor_config.json`).
    pub num_crops: usize,
    /// Standard deviation of the random weights.
    pub init_std: f64,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            vision_hidden_size: 32,
            vision_intermediate_size: 64,
            vision_layers: 3,
            vision_heads: 2,
            image_size: 56,
            num_crops: 4,
            init_std: 0.02,
            seed: 0,
        }
    }
}

const VOCAB: usize = 32064;
const PATCH: usize = 14;

impl TinySpec {
    /// The checkpoint's `config.json`.
    pub fn config_json(&self) -> serde_json::Value {
        let head_dim = self.hidden_size / self.num_attention_heads;
        let half = head_dim / 2;
        json!({
            "architectures": ["Phi3VForCausalLM"],
            "model_type": "phi3_v",
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 32000,
            "pad_token_id": 32000,
            "embd_layer": {
                "embedding_cls": "image",
                "hd_transform_order": "sub_glb",
                "projection_cls": "mlp",
                "use_hd_transform": true,
                "with_learnable_separator": true
            },
            "embd_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_attention_heads,
            "img_processor": {
                "image_dim_out": self.vision_hidden_size,
                "model_name": "openai/clip-vit-large-patch14-336",
                "name": "clip_vision_model",
                "num_img_tokens": (self.image_size / PATCH / 2).pow(2),
                "vision_config": {
                    "hidden_act": "quick_gelu",
                    "hidden_size": self.vision_hidden_size,
                    "image_size": self.image_size,
                    "intermediate_size": self.vision_intermediate_size,
                    "layer_norm_eps": 1e-5,
                    "num_attention_heads": self.vision_heads,
                    "num_hidden_layers": self.vision_layers,
                    "patch_size": PATCH
                }
            },
            "initializer_range": self.init_std,
            "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_scaling": {
                "type": "su",
                "short_factor": vec![1.0; half],
                "long_factor": (0..half).map(|i| 1.0 + i as f64).collect::<Vec<_>>()
            },
            "rope_theta": 10000.0,
            "sliding_window": 131072,
            "tie_word_embeddings": false,
            "torch_dtype": "float32",
            "use_cache": true,
            "vocab_size": VOCAB
        })
    }

    /// Every tensor of the checkpoint: name, PyTorch shape, and whether it is a norm
    /// weight (initialised to one) or a bias (zero).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, heads) = (
            self.hidden_size,
            self.intermediate_size,
            self.num_attention_heads,
        );
        let head_dim = h / heads;
        let mut t: Vec<(String, Vec<usize>)> = vec![
            ("model.embed_tokens.weight".into(), vec![VOCAB, h]),
            ("model.norm.weight".into(), vec![h]),
            ("lm_head.weight".into(), vec![VOCAB, h]),
        ];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}.");
            t.push((format!("{p}input_layernorm.weight"), vec![h]));
            t.push((format!("{p}post_attention_layernorm.weight"), vec![h]));
            t.push((
                format!("{p}self_attn.qkv_proj.weight"),
                vec![3 * heads * head_dim, h],
            ));
            t.push((
                format!("{p}self_attn.o_proj.weight"),
                vec![h, heads * head_dim],
            ));
            t.push((format!("{p}mlp.gate_up_proj.weight"), vec![2 * i, h]));
            t.push((format!("{p}mlp.down_proj.weight"), vec![h, i]));
        }
        let (c, ci) = (self.vision_hidden_size, self.vision_intermediate_size);
        let grid = self.image_size / PATCH;
        let v = "model.vision_embed_tokens.";
        let clip = format!("{v}img_processor.vision_model.");
        t.push((format!("{clip}embeddings.class_embedding"), vec![c]));
        t.push((
            format!("{clip}embeddings.patch_embedding.weight"),
            vec![c, 3, PATCH, PATCH],
        ));
        t.push((
            format!("{clip}embeddings.position_embedding.weight"),
            vec![grid * grid + 1, c],
        ));
        for norm in ["pre_layrnorm", "post_layernorm"] {
            t.push((format!("{clip}{norm}.weight"), vec![c]));
            t.push((format!("{clip}{norm}.bias"), vec![c]));
        }
        for l in 0..self.vision_layers {
            let p = format!("{clip}encoder.layers.{l}.");
            for norm in ["layer_norm1", "layer_norm2"] {
                t.push((format!("{p}{norm}.weight"), vec![c]));
                t.push((format!("{p}{norm}.bias"), vec![c]));
            }
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                t.push((format!("{p}self_attn.{proj}.weight"), vec![c, c]));
                t.push((format!("{p}self_attn.{proj}.bias"), vec![c]));
            }
            t.push((format!("{p}mlp.fc1.weight"), vec![ci, c]));
            t.push((format!("{p}mlp.fc1.bias"), vec![ci]));
            t.push((format!("{p}mlp.fc2.weight"), vec![c, ci]));
            t.push((format!("{p}mlp.fc2.bias"), vec![c]));
        }
        t.push((format!("{v}glb_GN"), vec![1, 1, 4 * c]));
        t.push((format!("{v}sub_GN"), vec![1, 1, 1, 4 * c]));
        t.push((format!("{v}img_projection.0.weight"), vec![h, 4 * c]));
        t.push((format!("{v}img_projection.0.bias"), vec![h]));
        t.push((format!("{v}img_projection.2.weight"), vec![h, h]));
        t.push((format!("{v}img_projection.2.bias"), vec![h]));
        t
    }

    /// Random values for every tensor: norm weights one, biases zero, the rest
    /// `N(0, init_std^2)` from a seeded generator (the same spec gives the same model).
    pub fn random_tensors(&self) -> TensorMap {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut out = TensorMap::new();
        for (name, shape) in self.tensor_shapes() {
            let n: usize = shape.iter().product();
            let is_norm = name.contains("norm") || name.contains("layrnorm");
            let values = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if is_norm {
                vec![1.0; n]
            } else {
                (0..n)
                    .map(|_| (normal(&mut rng) * self.init_std) as f32)
                    .collect()
            };
            out.insert(name, (shape, values));
        }
        out
    }

    /// Writes the checkpoint folder, with `tokenizer` (a `tokenizer.json`) copied in.
    pub fn write(&self, dir: &Path, tokenizer: &Path) -> Result<(), LoraError> {
        if !self.image_size.is_multiple_of(2 * PATCH)
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(LoraError::Config(format!(
                "tiny model: image_size {} must be a multiple of 28 and hidden_size {} of num_attention_heads {}",
                self.image_size, self.hidden_size, self.num_attention_heads
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| LoraError::io(dir, e))?;
        write_json(&dir.join("config.json"), &self.config_json())?;
        write_json(
            &dir.join("preprocessor_config.json"),
            &json!({
                "image_processor_type": "Phi3VImageProcessor",
                "num_crops": self.num_crops,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "do_convert_rgb": true
            }),
        )?;
        std::fs::copy(tokenizer, dir.join("tokenizer.json"))
            .map_err(|e| LoraError::io(tokenizer, e))?;
        save_tensors(&dir.join("model.safetensors"), &self.random_tensors())
    }
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

//! The named sizes and the streamed writer: `wide` and `full` describe the released tensors
//! (checked against the shapes in the reference notes, not against the recorder that made
//! them), and a streamed, sharded bf16 model loads and regenerates tensor by tensor.

#![cfg(feature = "writer")]

use std::collections::HashMap;

use burn::backend::Flex;
use phi3v::nn::{Init, TensorSpec};
use phi3v::{ConfigJson, ModelDir, Phi3VConfig};
use phi3v_testkit::{Draws, Preset, StorageDtype, TinySpec};
use safetensors::SafeTensors;

/// The released model's parameter count (CLIP's unread last layer included).
const FULL_PARAMETERS: usize = 4_146_621_440;

fn specs(preset: Preset) -> HashMap<String, TensorSpec> {
    preset
        .spec()
        .tensor_specs()
        .unwrap()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect()
}

/// Shapes of the released safetensors, from the reference notes (section 4).
const RELEASED_SHAPES: [(&str, &[usize]); 12] = [
    ("model.embed_tokens.weight", &[32064, 3072]),
    ("lm_head.weight", &[32064, 3072]),
    ("model.layers.0.self_attn.qkv_proj.weight", &[9216, 3072]),
    ("model.layers.1.self_attn.o_proj.weight", &[3072, 3072]),
    ("model.layers.0.mlp.gate_up_proj.weight", &[16384, 3072]),
    ("model.layers.1.mlp.down_proj.weight", &[3072, 8192]),
    ("model.vision_embed_tokens.glb_GN", &[1, 1, 4096]),
    ("model.vision_embed_tokens.sub_GN", &[1, 1, 1, 4096]),
    (
        "model.vision_embed_tokens.img_projection.0.weight",
        &[3072, 4096],
    ),
    (
        "model.vision_embed_tokens.img_projection.2.weight",
        &[3072, 3072],
    ),
    (
        "model.vision_embed_tokens.img_processor.vision_model.embeddings.position_embedding.weight",
        &[577, 1024],
    ),
    (
        "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.1.mlp.fc1.weight",
        &[4096, 1024],
    ),
];

#[test]
fn wide_and_full_hold_the_released_shapes() {
    for preset in [Preset::Wide, Preset::Full] {
        let specs = specs(preset);
        for (name, shape) in RELEASED_SHAPES {
            let spec = specs
                .get(name)
                .unwrap_or_else(|| panic!("{preset:?}: {name}"));
            assert_eq!(spec.shape, shape, "{preset:?}: {name}");
        }
        let norm = &specs["model.layers.1.input_layernorm.weight"];
        assert_eq!(
            (norm.shape.as_slice(), norm.init),
            (&[3072][..], Init::Ones)
        );
    }
    let full = specs(Preset::Full);
    assert!(full.contains_key("model.layers.31.mlp.down_proj.weight"));
    assert!(!full.contains_key("model.layers.32.mlp.down_proj.weight"));
    let clip = "model.vision_embed_tokens.img_processor.vision_model.encoder.layers";
    assert!(full.contains_key(&format!("{clip}.23.self_attn.k_proj.weight")));
    assert!(!full.contains_key(&format!("{clip}.24.self_attn.k_proj.weight")));
}

#[test]
fn full_has_the_released_parameter_count_and_config() {
    let spec = Preset::Full.spec();
    assert_eq!(spec.parameter_count().unwrap(), FULL_PARAMETERS);
    let json = ConfigJson::from_config(&spec.config());
    assert_eq!(json.text.num_hidden_layers, 32);
    let written = spec.config_json();
    let value = written.to_json();
    assert_eq!(value["torch_dtype"], "bfloat16");
    assert_eq!(value["eos_token_id"], 2);
    assert_eq!(value["img_processor"]["num_img_tokens"], 144);
    assert_eq!(value["img_processor"]["image_dim_out"], 1024);
    assert!(value["img_processor"].get("vision_config").is_none());
    assert_eq!(
        value["rope_scaling"]["short_factor"]
            .as_array()
            .unwrap()
            .len(),
        48
    );
    assert_eq!(value["rope_scaling"]["long_factor"][47], 64.81001281738281);
    // The file reads back as the spec's model: the released CLIP sizes are the default.
    assert_eq!(Phi3VConfig::from_json(&written).unwrap(), spec.config());
}

/// The tiny sizes, streamed as the release is stored: bf16, two shards, per-tensor draws.
fn small_streamed() -> TinySpec {
    TinySpec {
        dtype: StorageDtype::Bf16,
        shards: 2,
        draws: Draws::PerTensor,
        seed: 7,
        ..TinySpec::default()
    }
}

#[test]
fn a_streamed_sharded_model_loads_and_each_tensor_regenerates_alone() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = dir.path().join("tokenizer-source.json");
    std::fs::write(&tokenizer, "{}").unwrap();
    let model = dir.path().join("model");
    let spec = small_streamed();
    let written = spec.write_model(&model, &tokenizer).unwrap();
    assert_eq!(written.weight_files.len(), 2);

    let resolved = ModelDir::resolve(model.to_str().unwrap()).unwrap();
    resolved.load_model::<Flex>(&Default::default()).unwrap();

    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let specs = spec.tensor_specs().unwrap();
    assert_eq!(index["weight_map"].as_object().unwrap().len(), specs.len());
    let mut total = 0;
    let mut seen = 0;
    for file in &written.weight_files {
        let bytes = std::fs::read(file).unwrap();
        // The safetensors crate accepts the hand-written header and offsets.
        let st = SafeTensors::deserialize(&bytes).unwrap();
        seen += st.len();
        for (name, view) in st.tensors() {
            assert_eq!(view.dtype(), safetensors::Dtype::BF16, "{name}");
            total += view.data().len();
            let stored: Vec<f32> = view
                .data()
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            let regenerated: Vec<f32> = spec
                .tensor_values(&name)
                .unwrap()
                .into_iter()
                .map(|v| half::bf16::from_f32(v).to_f32())
                .collect();
            assert_eq!(stored, regenerated, "{name}");
        }
    }
    assert_eq!(seen, specs.len());
    assert_eq!(index["metadata"]["total_size"], total);
    assert_eq!(
        written.weight_bytes,
        written
            .weight_files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum::<u64>()
    );
}

#[test]
fn per_tensor_draws_depend_on_seed_and_name_only() {
    let spec = small_streamed();
    let name = "model.layers.1.mlp.down_proj.weight";
    let values = spec.tensor_values(name).unwrap();
    // Another shard count or dtype does not move a tensor's values.
    let other = TinySpec {
        shards: 1,
        dtype: StorageDtype::F32,
        ..small_streamed()
    };
    assert_eq!(other.tensor_values(name).unwrap(), values);
    let reseeded = TinySpec {
        seed: 8,
        ..small_streamed()
    };
    assert_ne!(reseeded.tensor_values(name).unwrap(), values);
    assert_ne!(
        spec.tensor_values("model.layers.0.mlp.down_proj.weight")
            .unwrap(),
        values
    );
    // The init distribution is today's: N(0, 0.02^2).
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let std = (values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!(
        mean.abs() < 2e-3 && (std - 0.02).abs() < 2e-3,
        "{mean} {std}"
    );
}

#[test]
fn presets_parse_by_name() {
    for preset in Preset::ALL {
        assert_eq!(preset.name().parse::<Preset>().unwrap(), preset);
    }
    assert_eq!(Preset::Tiny.spec(), TinySpec::default());
    assert!("huge".parse::<Preset>().is_err());
    let bad = TinySpec {
        shards: 1000,
        draws: Draws::PerTensor,
        ..TinySpec::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = dir.path().join("t.json");
    std::fs::write(&tokenizer, "{}").unwrap();
    let err = bad.write(&dir.path().join("m"), &tokenizer).unwrap_err();
    assert!(err.to_string().contains("1000 shards"), "{err}");
}

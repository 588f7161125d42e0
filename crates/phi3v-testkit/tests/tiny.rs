//! The random model dir writer: byte-identical weights for the default spec, config files
//! equal to what the trainer wrote before the writer moved here, and a dir that loads.

#![cfg(feature = "writer")]

use std::path::PathBuf;

use burn::backend::Flex;
use phi3v::nn::{Init, Weights};
use phi3v::{ModelDir, Phi3VConfig};
use phi3v_testkit::TinySpec;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// sha256 of `model.safetensors` for `TinySpec::default()`, as the writer of
/// `phi3v-lora/src/tiny.rs` (commit 7d1b6b1, which spelt every tensor name by hand) wrote it.
/// The main example's numbers rest on these bytes.
const DEFAULT_MODEL_SHA256: &str =
    "121d30b9ad167a47f4c8b5622d027e83c77d24c0be2a9815d9fb52f37271ed06";

fn recorded(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tiny_default")
        .join(file)
}

fn json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn write_default() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = dir.path().join("tokenizer-source.json");
    std::fs::write(&tokenizer, "{}").unwrap();
    TinySpec::default()
        .write(&dir.path().join("model"), &tokenizer)
        .unwrap();
    dir
}

#[test]
fn default_spec_writes_the_recorded_weights() {
    let dir = write_default();
    let bytes = std::fs::read(dir.path().join("model/model.safetensors")).unwrap();
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, DEFAULT_MODEL_SHA256);
}

#[test]
fn config_files_match_the_recorded_ones() {
    let dir = write_default();
    for file in ["config.json", "preprocessor_config.json"] {
        assert_eq!(
            json(&dir.path().join("model").join(file)),
            json(&recorded(file)),
            "{file}"
        );
    }
    let config = Phi3VConfig::from_file(recorded("config.json")).unwrap();
    assert_eq!(config, TinySpec::default().config());
}

#[test]
fn the_written_dir_loads_and_also_holds_clips_unread_last_layer() {
    let dir = write_default();
    let model_dir = ModelDir {
        path: dir.path().join("model"),
    };
    model_dir.load_model::<Flex>(&Default::default()).unwrap();
    let weights = Weights::open(&model_dir.path).unwrap();
    let specs = TinySpec::default().tensor_specs().unwrap();
    assert_eq!(weights.names().len(), specs.len());
    let unread: Vec<&str> = weights
        .names()
        .into_iter()
        .filter(|n| n.contains("encoder.layers.2.") || n.contains("post_layernorm"))
        .collect();
    // CLIP's last layer (16 tensors) and post_layernorm (2) are written but not read.
    assert_eq!(unread.len(), 18, "{unread:?}");
}

#[test]
fn other_sizes_describe_without_allocating() {
    // The released widths: 3072 hidden, 32 heads, CLIP ViT-L/14-336; two layers each.
    let spec = TinySpec {
        hidden_size: 3072,
        intermediate_size: 8192,
        num_hidden_layers: 2,
        num_attention_heads: 32,
        vision_hidden_size: 1024,
        vision_intermediate_size: 4096,
        vision_layers: 2,
        vision_heads: 16,
        image_size: 336,
        ..TinySpec::default()
    };
    let specs = spec.tensor_specs().unwrap();
    let qkv = specs
        .iter()
        .find(|s| s.name == "model.layers.1.self_attn.qkv_proj.weight")
        .unwrap();
    assert_eq!(qkv.shape, vec![3 * 3072, 3072]);
    assert_eq!(qkv.init, Init::Normal);
    let patch = specs
        .iter()
        .find(|s| s.name.ends_with("embeddings.patch_embedding.weight"))
        .unwrap();
    assert_eq!(patch.shape, vec![1024, 3, 14, 14]);
}

#[test]
fn bad_specs_are_errors() {
    let spec = TinySpec {
        image_size: 50,
        ..TinySpec::default()
    };
    let err = spec.tensor_specs().unwrap_err().to_string();
    assert!(err.contains("multiple of 28"), "{err}");
}

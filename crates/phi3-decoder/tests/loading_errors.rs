//! Broken model dirs fail with errors that name the tensor and the file at fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use phi3_decoder::{DecoderError, Phi3Model};
use phi3v_nn::weights::save_f32;
use phi3v_nn::Weights;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Copies `tiny_a` into a temporary folder, with its tensors passed through `edit`.
fn edited_copy(
    edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>),
) -> tempfile::TempDir {
    let src = fixture("tiny_a");
    let weights = Weights::open(&src).unwrap();
    let mut tensors = BTreeMap::new();
    for name in weights.names() {
        let shape = weights.shape(name).unwrap().to_vec();
        let values = weights.read_f32(name, &shape).unwrap();
        tensors.insert(name.to_string(), (shape, values));
    }
    edit(&mut tensors);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    save_f32(&dir.path().join("model.safetensors"), &tensors, None).unwrap();
    dir
}

fn load(dir: &Path) -> String {
    match Phi3Model::<Flex>::from_pretrained(dir, &Default::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unedited_copy_loads() {
    let dir = edited_copy(|_| {});
    Phi3Model::<Flex>::from_pretrained(dir.path(), &Default::default()).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let dir = edited_copy(|t| {
        t.remove("model.layers.1.mlp.down_proj.weight");
    });
    let err = load(dir.path());
    assert!(
        err.contains("`model.layers.1.mlp.down_proj.weight`") && err.contains("missing"),
        "{err}"
    );
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn wrong_shape_is_named() {
    let dir = edited_copy(|t| {
        let entry = t
            .get_mut("model.layers.0.self_attn.qkv_proj.weight")
            .unwrap();
        entry.0 = vec![entry.0[0] / 2, entry.0[1] * 2];
    });
    let err = load(dir.path());
    assert!(
        err.contains("`model.layers.0.self_attn.qkv_proj.weight`"),
        "{err}"
    );
    assert!(err.contains("shape [96, 128], expected [192, 64]"), "{err}");
}

#[test]
fn unknown_dtype_is_named() {
    let dir = edited_copy(|_| {});
    // Rewrite the file with the final norm stored as integers.
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ints = vec![0u8; 64 * 4];
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "model.norm.weight")
        .collect();
    views.push((
        "model.norm.weight".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![64], &ints).unwrap(),
    ));
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
    let err = load(dir.path());
    assert!(
        err.contains("`model.norm.weight`") && err.contains("I32"),
        "{err}"
    );
}

#[test]
fn missing_shard_is_named() {
    let src = fixture("tiny_b");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::remove_file(dir.path().join("model-00002-of-00005.safetensors")).unwrap();
    let err = load(dir.path());
    assert!(err.contains("model-00002-of-00005.safetensors"), "{err}");
}

#[test]
fn bad_config_is_an_error_not_a_panic() {
    let dir = edited_copy(|_| {});
    std::fs::write(dir.path().join("config.json"), r#"{"hidden_size": 64}"#).unwrap();
    let err = load(dir.path());
    assert!(err.contains("config.json"), "{err}");
    assert!(matches!(
        Phi3Model::<Flex>::from_pretrained(dir.path(), &Default::default()),
        Err(DecoderError::Config(_))
    ));
}

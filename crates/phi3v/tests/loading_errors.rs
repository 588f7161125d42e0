//! Broken model dirs fail with errors that name the file, tensor or key at fault.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use phi3v::ModelDir;

fn copy_model_dir() -> tempfile::TempDir {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_phi3v");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn load_error(dir: &Path) -> String {
    let resolved = ModelDir::resolve(dir.to_str().unwrap()).unwrap();
    match resolved.load_model::<Flex>(&Default::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, serde_json::to_string(&config).unwrap()).unwrap();
}

/// Rewrites the second shard with `edit` applied to its tensors.
fn edit_shard(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), d)
                .unwrap();
            (n.clone(), v)
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn the_copy_loads() {
    let dir = copy_model_dir();
    ModelDir::resolve(dir.path().to_str().unwrap())
        .unwrap()
        .load_model::<Flex>(&Default::default())
        .unwrap();
}

#[test]
fn missing_shard() {
    let dir = copy_model_dir();
    std::fs::remove_file(dir.path().join("model-00001-of-00002.safetensors")).unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("model-00001-of-00002.safetensors"), "{err}");
}

#[test]
fn missing_tensor() {
    let dir = copy_model_dir();
    let name = "model.vision_embed_tokens.sub_GN";
    edit_shard(dir.path(), |t| t.retain(|(n, _, _)| n != name));
    // The index still promises the tensor: the error names it and its shard.
    let err = load_error(dir.path());
    assert!(
        err.contains(name) && err.contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn wrong_shape() {
    let dir = copy_model_dir();
    let name = "model.vision_embed_tokens.img_projection.2.weight";
    edit_shard(dir.path(), |t| {
        let entry = t.iter_mut().find(|(n, _, _)| n == name).unwrap();
        entry.1 = vec![16, 64];
    });
    let err = load_error(dir.path());
    assert!(
        err.contains(name) && err.contains("[16, 64]") && err.contains("[32, 32]"),
        "{err}"
    );
}

#[test]
fn bad_config() {
    let dir = copy_model_dir();
    edit_config(dir.path(), |c| {
        c["img_processor"]["image_dim_out"] = 99.into()
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("config.json") && err.contains("image_dim_out"),
        "{err}"
    );

    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn unknown_model_type() {
    let dir = copy_model_dir();
    edit_config(dir.path(), |c| c["model_type"] = "llava".into());
    let err = load_error(dir.path());
    assert!(err.contains("model_type `llava`"), "{err}");
}

#[test]
fn plain_phi3_loads_as_text_only() {
    let dir = copy_model_dir();
    edit_config(dir.path(), |c| c["model_type"] = "phi3".into());
    let model = ModelDir::resolve(dir.path().to_str().unwrap())
        .unwrap()
        .load_model::<Flex>(&Default::default())
        .unwrap();
    assert!(model.vision_embed_tokens.is_none());
}

#[test]
fn wte_alias_is_accepted() {
    let dir = copy_model_dir();
    // Move the token embedding under the alias name in the index and its shard.
    let index_path = dir.path().join("model.safetensors.index.json");
    let index = std::fs::read_to_string(&index_path).unwrap();
    std::fs::write(
        &index_path,
        index.replace(
            "\"model.embed_tokens.weight\"",
            "\"model.vision_embed_tokens.wte.weight\"",
        ),
    )
    .unwrap();
    let shard = dir.path().join("model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let n = if n == "model.embed_tokens.weight" {
                "model.vision_embed_tokens.wte.weight".to_string()
            } else {
                n
            };
            (n, v)
        })
        .collect();
    let out = safetensors::serialize(renamed, None).unwrap();
    std::fs::write(&shard, out).unwrap();
    ModelDir::resolve(dir.path().to_str().unwrap())
        .unwrap()
        .load_model::<Flex>(&Default::default())
        .unwrap();
}

//! A model dir is checked before use: a mistyped local path is "no such model dir" (never a
//! failed hub download), a folder lacking a file a model needs says which, and the files'
//! errors name the file (and the tensor) at fault.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use phi3v::{ModelDir, Phi3VError};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_phi3v")
}

/// A copy of the fixture model dir (sharded, bf16) without the files named in `except`.
fn copy_fixture(except: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if !except.iter().any(|e| name == *e) {
            std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    dir
}

fn resolve(dir: &Path) -> Result<ModelDir, Phi3VError> {
    ModelDir::resolve(dir.to_str().unwrap())
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(path, json.to_string()).unwrap();
}

#[test]
fn a_mistyped_local_path_is_no_such_model_dir_and_never_a_download() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::create_dir(parent.path().join("tiny")).unwrap();
    let typo = parent.path().join("tiyn");
    // Absolute, `./`-relative, and `folder/name` under a local folder (tests run in the
    // crate's folder, which has `tests/`): the last would pass for an `owner/name` id if
    // `tests` were not a local folder.
    for name in [typo.to_str().unwrap(), "./tiyn", "tests/tiyn"] {
        let err = ModelDir::resolve(name).unwrap_err().to_string();
        assert_eq!(err, format!("no such model dir: {name}"));
        for word in ["hub", "Hugging", "download", "cache"] {
            assert!(!err.contains(word), "{err}");
        }
    }
}

#[test]
fn a_file_is_not_a_model_dir() {
    let err = resolve(&fixture().join("config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("is not a model dir: it is a file"),
        "{err}"
    );
}

#[test]
fn missing_files_are_listed_together() {
    let dir = copy_fixture(&["config.json", "tokenizer.json", "preprocessor_config.json"]);
    let err = resolve(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("missing config.json, tokenizer.json, preprocessor_config.json"),
        "{err}"
    );
    assert!(!err.contains("weights"), "{err}");

    let dir = copy_fixture(&["model.safetensors.index.json"]);
    let err = resolve(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains(&dir.path().display().to_string())
            && err.contains("missing weights (model.safetensors or model.safetensors.index.json)"),
        "{err}"
    );
}

#[test]
fn the_preprocessor_config_is_required_for_images_only() {
    let dir = copy_fixture(&["preprocessor_config.json"]);
    let err = resolve(dir.path()).unwrap_err().to_string();
    assert!(err.contains("missing preprocessor_config.json"), "{err}");
    // Even past the resolve check (a ModelDir built by hand), nothing falls back to defaults.
    let unchecked = ModelDir {
        path: dir.path().to_path_buf(),
    };
    let err = unchecked.preprocessor_config().unwrap_err().to_string();
    assert!(err.contains("preprocessor_config.json"), "{err}");

    // A text-only Phi-3 has no image processor, so it needs no preprocessor config.
    edit_json(&dir.path().join("config.json"), |c| {
        c["model_type"] = "phi3".into()
    });
    resolve(dir.path()).unwrap();
}

#[test]
fn preprocessor_config_errors_name_the_file() {
    let dir = copy_fixture(&[]);
    let path = dir.path().join("preprocessor_config.json");
    let model = resolve(dir.path()).unwrap();
    let config = model.config().unwrap();

    std::fs::write(&path, r#"{"num_crops": "four"}"#).unwrap();
    let err = model.processor_config(&config).unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("invalid type"),
        "{err}"
    );

    // Parsed, but a value the image processor cannot use.
    std::fs::write(&path, r#"{"num_crops": 0}"#).unwrap();
    let err = model.processor_config(&config).unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("num_crops"),
        "{err}"
    );
    std::fs::write(&path, r#"{"image_std": [0.5, 0, 0.5]}"#).unwrap();
    let err = model.processor_config(&config).unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("image_std"),
        "{err}"
    );
}

#[test]
fn an_index_naming_absent_shards_names_them_all_and_the_index() {
    let dir = copy_fixture(&[
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]);
    // The folder looks whole (it has an index), so resolving succeeds; loading names what
    // is missing.
    let model = resolve(dir.path()).unwrap();
    let err = model
        .load_model::<Flex>(&Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors.index.json")
            && err.contains("model-00001-of-00002.safetensors, model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn a_config_that_disagrees_with_the_weights_names_the_tensor_and_its_file() {
    let dir = copy_fixture(&[]);
    // The fixture's MLP is 48 wide; its weights stay so.
    edit_json(&dir.path().join("config.json"), |c| {
        c["intermediate_size"] = 64.into()
    });
    let err = resolve(dir.path())
        .unwrap()
        .load_model::<Flex>(&Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.layers.0.mlp.gate_up_proj.weight")
            && err.contains(".safetensors")
            && err.contains("[96, 32]")
            && err.contains("[128, 32]"),
        "{err}"
    );
}

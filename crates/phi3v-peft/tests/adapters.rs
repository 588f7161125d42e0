//! Adapters leave and re-enter the model intact: PEFT export then import gives identical
//! outputs, a merged model dir equals the adapters applied at run time, files are written
//! atomically, and bad adapter files are errors that name the tensor.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use phi3v::{ImageInput, ModelDir, Phi3V};
use phi3v_nn::{LoraConfig, NamedLinears};
use phi3v_peft::io::{save_tensors, write_atomic, TensorMap};
use phi3v_peft::peft::{export_peft, import_peft, ADAPTER_WEIGHTS};
use phi3v_peft::{AdapterPlan, PeftError};
use phi3v_testkit::{max_diff, TinySpec};

type B = Flex;

fn tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../phi3v-processor/tests/data/tokenizer/tokenizer.json")
}

/// A tiny f32 model dir (f32 so that a merge adds no rounding).
fn tiny_model(dir: &Path) -> PathBuf {
    let spec = TinySpec {
        hidden_size: 32,
        intermediate_size: 48,
        vision_hidden_size: 16,
        vision_intermediate_size: 32,
        init_std: 0.05,
        ..TinySpec::default()
    };
    let path = dir.join("base");
    spec.write(&path, &tokenizer()).unwrap();
    path
}

fn load(dir: &Path) -> Phi3V<B> {
    ModelDir::resolve(dir.to_str().unwrap())
        .unwrap()
        .load_model::<B>(&Default::default())
        .unwrap()
}

/// The reference plan on every target (lm_head and the projection included), with B
/// made non-zero so the adapters change the outputs.
fn adapted(dir: &Path) -> (Phi3V<B>, AdapterPlan) {
    let mut model = load(dir);
    let plan = AdapterPlan {
        lora: LoraConfig {
            rank: 4,
            alpha: 8.0,
            ..LoraConfig::default()
        },
        ..AdapterPlan::reference(true, false)
    };
    let names = plan.apply(&mut model, &Default::default()).unwrap();
    assert_eq!(
        names.len(),
        2 * 4 + 1 + 2 * 6 + 2,
        "every reference target of the tiny model"
    );
    model.for_each_linear("", &mut |_, linear| {
        if let Some(lora) = &mut linear.lora {
            let [r, out] = lora.lora_b.dims();
            let b = Tensor::random(
                [r, out],
                Distribution::Normal(0.0, 0.05),
                &Default::default(),
            );
            lora.lora_b = burn::module::Param::from_tensor(b);
        }
    });
    (model, plan)
}

/// Logits of a one-image prompt with a random image (2x2 crops); see [`seeded_logits`].
fn logits(model: &Phi3V<B>) -> Vec<f32> {
    let device = Default::default();
    let tokens = phi3v::vision::image_token_count(2, 2, 2);
    let mut ids: Vec<i64> = vec![1, 32010];
    ids.extend(std::iter::repeat_n(-1, tokens));
    ids.extend([1, 1724, 338, 4318, 297, 445, 1967, 29973, 32007, 32001]);
    let n = ids.len();
    let images = ImageInput {
        tiles: Tensor::<B, 4>::random([5, 3, 56, 56], Distribution::Normal(0.0, 1.0), &device),
        grids: vec![(2, 2)],
    };
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
    model
        .forward(ids, Some(&images), Default::default())
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap()
}

/// Same images for every call: seed the generator right before drawing them.
fn seeded_logits(model: &Phi3V<B>) -> Vec<f32> {
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), 11);
    logits(model)
}

#[test]
fn peft_export_then_import_gives_identical_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_model(tmp.path());
    let (model, plan) = adapted(&base);
    let with_adapters = seeded_logits(&model);
    let plain = seeded_logits(&load(&base));
    assert!(
        max_diff(&with_adapters, &plain) > 1e-3,
        "the adapters must change the outputs"
    );

    let adapter = tmp.path().join("adapter");
    export_peft(&model, &plan, Some("tiny".into()), &adapter).unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    assert_eq!(config["peft_type"], "LORA");
    let names = phi3v_nn::Weights::open(adapter.join(ADAPTER_WEIGHTS)).unwrap();
    // PEFT's names and PyTorch's layout: A is [r, in], B is [out, r].
    assert_eq!(
        names
            .shape("base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight")
            .unwrap(),
        &[4, 32]
    );
    assert_eq!(
        names
            .shape("base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight")
            .unwrap(),
        &[96, 4]
    );

    let mut reloaded = load(&base);
    import_peft(&mut reloaded, &adapter, &Default::default()).unwrap();
    // The same numbers, up to the summation order of the transposed factors' matmuls.
    let d = max_diff(&seeded_logits(&reloaded), &with_adapters);
    println!("export then import: max logit difference {d:e}");
    assert!(d < 1e-5, "imported adapters change the outputs by {d}");
}

#[test]
fn merged_model_dir_equals_runtime_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_model(tmp.path());
    let (model, plan) = adapted(&base);
    let adapter = tmp.path().join("adapter");
    export_peft(&model, &plan, None, &adapter).unwrap();
    let merged_dir = tmp.path().join("merged");
    let summary = phi3v_peft::merge::merge_adapter(&base, &adapter, &merged_dir).unwrap();
    assert_eq!(summary.merged.len(), 23);
    assert!(
        merged_dir.join("config.json").is_file() && merged_dir.join("tokenizer.json").is_file()
    );
    let merged = load(&merged_dir);
    let d = max_diff(&seeded_logits(&merged), &seeded_logits(&model));
    println!("merged vs runtime adapters: max logit difference {d:e}");
    assert!(d < 1e-4, "merged logits differ by {d}");
}

#[test]
fn adapter_for_another_model_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_model(tmp.path());
    let (model, plan) = adapted(&base);
    let adapter = tmp.path().join("adapter");
    export_peft(&model, &plan, None, &adapter).unwrap();
    // A tensor for a layer the model does not have.
    let path = adapter.join(ADAPTER_WEIGHTS);
    let w = phi3v_nn::Weights::open(&path).unwrap();
    let mut tensors = TensorMap::new();
    for name in w.names() {
        let shape = w.shape(name).unwrap().to_vec();
        tensors.insert(
            name.to_string(),
            (shape.clone(), w.read_f32(name, &shape).unwrap()),
        );
    }
    drop(w);
    tensors.insert(
        "base_model.model.model.layers.9.self_attn.qkv_proj.lora_A.weight".into(),
        (vec![4, 32], vec![0.0; 128]),
    );
    save_tensors(&path, &tensors).unwrap();
    let err = import_peft(&mut load(&base), &adapter, &Default::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("layers.9.self_attn.qkv_proj"), "{text}");

    // A target pattern that selects nothing is refused rather than training nothing.
    let typo = AdapterPlan {
        targets: vec!["qkv_projj".into()],
        ..plan
    };
    let err = typo
        .apply(&mut load(&base), &Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("qkv_projj"), "{err}");
}

#[test]
fn atomic_writes_keep_the_old_file_when_the_writer_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.json");
    std::fs::write(&path, "old").unwrap();
    let result = write_atomic(&path, |tmp_path| {
        std::fs::write(tmp_path, "half of the new conte").unwrap();
        Err(PeftError::Config("killed mid-write".into()))
    });
    assert!(result.is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    write_atomic(&path, |t| {
        std::fs::write(t, "new").map_err(|e| PeftError::io(t, e))
    })
    .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    assert!(!tmp.path().join("state.json.tmp").exists());
    // Neither the failed write nor the good one leaves a temporary sibling behind.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state.json"]);
}

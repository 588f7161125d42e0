//! What the adapter tests share: tiny model dirs, adapters exported from them, edits of
//! and adapter files (folder snapshots are phi3v-testkit's `files::snapshot`).

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use phi3v::{ImageInput, ModelDir, Phi3V};
use phi3v_nn::{LoraConfig, NamedLinears};
use phi3v_peft::io::{save_tensors, TensorMap};
use phi3v_peft::peft::{export_peft, ADAPTER_WEIGHTS};
use phi3v_peft::{AdapterPlan, ADAPTER_CONFIG};
use phi3v_testkit::TinySpec;

pub type B = Flex;

pub fn tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../phi3v-processor/tests/data/tokenizer/tokenizer.json")
}

/// The tiny f32 model the adapter tests use (f32 so that a merge adds no rounding).
pub fn tiny_spec() -> TinySpec {
    TinySpec {
        hidden_size: 32,
        intermediate_size: 48,
        vision_hidden_size: 16,
        vision_intermediate_size: 32,
        init_std: 0.05,
        ..TinySpec::default()
    }
}

/// Writes `spec`'s model dir to `dir/base`.
pub fn write_model(dir: &Path, spec: &TinySpec) -> PathBuf {
    let path = dir.join("base");
    spec.write(&path, &tokenizer()).unwrap();
    path
}

pub fn load(dir: &Path) -> Phi3V<B> {
    ModelDir::resolve(dir.to_str().unwrap())
        .unwrap()
        .load_model::<B>(&Default::default())
        .unwrap()
}

/// `plan`'s adapters on the model of `base`, with B made non-zero so that they change the
/// outputs.
pub fn adapted(base: &Path, plan: &AdapterPlan) -> Phi3V<B> {
    let mut model = load(base);
    plan.apply(&mut model, &Default::default()).unwrap();
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
    model
}

/// The reference plan on every target (lm_head and the projection included), rank 4.
pub fn reference_plan() -> AdapterPlan {
    AdapterPlan {
        lora: LoraConfig {
            rank: 4,
            alpha: 8.0,
            ..LoraConfig::default()
        },
        ..AdapterPlan::reference(true, false)
    }
}

/// A small adapter of `base` in `dir/adapter`: rank 4 on the decoder's attention and MLP
/// and the first projection layer, the second projection layer saved in full.
pub fn small_adapter(dir: &Path, base: &Path) -> PathBuf {
    let plan = AdapterPlan {
        targets: [
            "qkv_proj",
            "o_proj",
            "gate_up_proj",
            "down_proj",
            "img_projection.0",
        ]
        .map(String::from)
        .to_vec(),
        full: vec!["img_projection.2".into()],
        ..reference_plan()
    };
    let adapter = dir.join("adapter");
    export_peft(&adapted(base, &plan), &plan, None, &adapter).unwrap();
    adapter
}

/// Every tensor of a safetensors file, as f32.
pub fn read_tensors(path: &Path) -> TensorMap {
    let w = phi3v_nn::Weights::open(path).unwrap();
    w.names()
        .into_iter()
        .map(|name| {
            let shape = w.shape(name).unwrap().to_vec();
            let values = w.read_f32(name, &shape).unwrap();
            (name.to_string(), (shape, values))
        })
        .collect()
}

/// Rewrites the adapter's tensors with `edit` applied.
pub fn edit_tensors(adapter: &Path, edit: impl FnOnce(&mut TensorMap)) {
    let path = adapter.join(ADAPTER_WEIGHTS);
    let mut tensors = read_tensors(&path);
    edit(&mut tensors);
    save_tensors(&path, &tensors).unwrap();
}

/// Rewrites the adapter's `adapter_config.json` with `edit` applied to its JSON.
pub fn edit_config(adapter: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = adapter.join(ADAPTER_CONFIG);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

/// Logits of a one-image prompt with a random image (2x2 crops), the same image for every
/// call (the generator is seeded right before it is drawn).
pub fn seeded_logits(model: &Phi3V<B>) -> Vec<f32> {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 11);
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

//! Holding a base stored in f32 as bf16 costs only the bf16 rounding of its weights: the
//! logits of the default tiny model (f32 on disk) stay within 1% of their range of the
//! f32-resident logits, and differ from them, so the rounding took effect. (That the mixed
//! product adds nothing beyond the rounding is checked in phi3v's `bf16_resident.rs`.)

#![cfg(feature = "writer")]

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use phi3v::decoder::ForwardOptions;
use phi3v::nn::BaseDtype;
use phi3v::ModelDir;
use phi3v_testkit::TinySpec;

fn logits(dir: &ModelDir, base: BaseDtype) -> Vec<f32> {
    let (model, _) = dir
        .load_model_as::<Flex>(&Default::default(), base)
        .unwrap();
    let ids: Vec<i64> = (0..24).map(|i| (i * 1_337 + 11) % 32_000).collect();
    let ids = Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, [1, 24]), &Default::default());
    model
        .forward(ids, None, ForwardOptions::default())
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap()
}

#[test]
fn bf16_resident_logits_stay_within_bf16_rounding_of_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = tmp.path().join("tokenizer-source.json");
    std::fs::write(&tokenizer, "{}").unwrap();
    let path = tmp.path().join("model");
    TinySpec::default().write(&path, &tokenizer).unwrap();
    let dir = ModelDir { path };

    let exact = logits(&dir, BaseDtype::F32);
    let rounded = logits(&dir, BaseDtype::Bf16);
    let range = exact.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = exact
        .iter()
        .zip(&rounded)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff > 0.0,
        "a bf16 base changed nothing: was it loaded in bf16?"
    );
    assert!(
        diff <= 0.01 * range,
        "bf16 base vs f32: max diff {diff} against logits up to {range}"
    );
}

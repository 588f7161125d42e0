//! The decoder against transformers' `Phi3ForCausalLM` (longrope, eager, f32) on random
//! tiny model dirs made by `scripts/make_decoder_fixtures.py`.
//!
//! Tolerance: 1e-4 absolute on every logit and hidden value, the f32 budget for a few
//! layers of O(1) activations. It is never widened to make a test pass.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use phi3_decoder::{ForwardOptions, LossTargets, Phi3Config, Phi3Model};
use phi3v_nn::Weights;

type B = Flex;
const TOL: f32 = 1e-4;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

struct Fixture {
    model: Phi3Model<B>,
    expected: Weights,
}

fn fixture(name: &str) -> Fixture {
    let device = Default::default();
    let model = Phi3Model::<B>::from_pretrained(data_dir().join(format!("tiny_{name}")), &device)
        .unwrap_or_else(|e| panic!("loading tiny_{name}: {e}"));
    let expected = Weights::open(data_dir().join(format!("expected_{name}.safetensors"))).unwrap();
    Fixture { model, expected }
}

impl Fixture {
    fn ints(&self, name: &str) -> Tensor<B, 2, Int> {
        let shape = self.expected.shape(name).unwrap().to_vec();
        let values = self.expected.read_i64(name, &shape).unwrap();
        Tensor::from_data(
            TensorData::new(values, [shape[0], shape[1]]),
            &Default::default(),
        )
    }

    fn floats(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let shape = self.expected.shape(name).unwrap().to_vec();
        let values = self.expected.read_f32(name, &shape).unwrap();
        (shape, values)
    }
}

fn assert_close(what: &str, actual: Tensor<B, 3>, expected: (Vec<usize>, Vec<f32>)) {
    phi3v_testkit::assert_close(what, actual, expected, TOL);
}

fn check_full_forward(name: &str, case: &str) {
    let f = fixture(name);
    let ids = f.ints(&format!("{case}.input_ids"));
    let mask_name = format!("{case}.attention_mask");
    let attention_mask = f.expected.contains(&mask_name).then(|| f.ints(&mask_name));
    let hidden = f.model.forward_hidden(
        f.model.embed(ids),
        ForwardOptions {
            attention_mask,
            ..Default::default()
        },
    );
    assert_close(
        &format!("tiny_{name} {case} hidden"),
        hidden.clone(),
        f.floats(&format!("{case}.hidden")),
    );
    assert_close(
        &format!("tiny_{name} {case} logits"),
        f.model.logits(hidden),
        f.floats(&format!("{case}.logits")),
    );
}

fn check_cached_decode(name: &str) {
    let f = fixture(name);
    let mut cache = f.model.new_cache();
    let prompt = f.ints("decode.prompt_ids");
    let logits = f.model.forward(
        prompt,
        ForwardOptions {
            cache: Some(&mut cache),
            ..Default::default()
        },
    );
    assert_close(
        &format!("tiny_{name} decode prompt"),
        logits,
        f.floats("decode.prompt_logits"),
    );
    let steps = f.ints("decode.step_ids");
    let [_, n] = steps.dims();
    let mut step_logits = Vec::new();
    for i in 0..n {
        let token = steps.clone().slice([0..1, i..i + 1]);
        step_logits.push(f.model.forward(
            token,
            ForwardOptions {
                cache: Some(&mut cache),
                ..Default::default()
            },
        ));
    }
    assert_close(
        &format!("tiny_{name} decode steps"),
        Tensor::cat(step_logits, 1),
        f.floats("decode.step_logits"),
    );
}

#[test]
fn a_short_sequence_uses_short_factors() {
    check_full_forward("a", "short");
}

#[test]
fn a_long_sequence_uses_long_factors() {
    check_full_forward("a", "long");
}

#[test]
fn a_left_padded_batch() {
    check_full_forward("a", "padded");
}

#[test]
fn a_cached_decode_across_the_factor_switch() {
    check_cached_decode("a");
}

#[test]
fn b_short_sequence_gqa_sharded() {
    check_full_forward("b", "short");
}

#[test]
fn b_long_sequence_past_the_sliding_window() {
    check_full_forward("b", "long");
}

#[test]
fn b_left_padded_batch() {
    check_full_forward("b", "padded");
}

#[test]
fn b_cached_decode() {
    check_cached_decode("b");
}

/// Below `original_max_position_embeddings` nothing changes rotation mid-sequence, so
/// decoding token by token must reproduce one full forward.
#[test]
fn cached_decoding_equals_full_forward() {
    let f = fixture("b");
    let prompt = f.ints("decode.prompt_ids");
    let steps = f.ints("decode.step_ids");
    let all = Tensor::cat(vec![prompt.clone(), steps.clone()], 1);
    let full = f.model.forward(all, ForwardOptions::default());
    let [_, p] = prompt.dims();
    let [_, n] = steps.dims();
    let mut cache = f.model.new_cache();
    let mut pieces = vec![f.model.forward(
        prompt,
        ForwardOptions {
            cache: Some(&mut cache),
            ..Default::default()
        },
    )];
    for i in 0..n {
        pieces.push(f.model.forward(
            steps.clone().slice([0..1, i..i + 1]),
            ForwardOptions {
                cache: Some(&mut cache),
                ..Default::default()
            },
        ));
    }
    assert_eq!(cache.len(), p + n);
    assert_close(
        "cached vs full",
        Tensor::cat(pieces, 1),
        phi3v_testkit::values(full),
    );
}

#[test]
fn configs_read_from_both_spellings() {
    let a = Phi3Config::from_file(data_dir().join("tiny_a/config.json")).unwrap();
    let b = Phi3Config::from_file(data_dir().join("tiny_b/config.json")).unwrap();
    assert!(a.rope_scaling.is_some() && b.rope_scaling.is_some());
    assert_eq!(b.num_key_value_heads, 2);
    assert_eq!(b.sliding_window, Some(20));
}

#[test]
fn loss_ignores_minus_100_like_the_reference() {
    for name in ["a", "b"] {
        let f = fixture(name);
        let logits = f
            .model
            .forward(f.ints("loss.input_ids"), ForwardOptions::default());
        let targets = LossTargets::read_back(&f.ints("loss.labels"));
        let loss = Phi3Model::loss(logits, &targets).into_scalar();
        let expected = f.floats("loss.value").1[0];
        assert!(
            (loss - expected).abs() <= TOL,
            "tiny_{name} loss {loss} vs reference {expected}"
        );
    }
}

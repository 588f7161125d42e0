//! Phi-3-V end to end against the Python reference on a random tiny model dir
//! (`scripts/make_phi3v_fixtures.py`): text-only, one image, and two images with different
//! crop grids. Inputs (ids, tiles) come from the fixture, so this isolates the model; the
//! command-line tests check the tokenizer and the image processor in the same chain.
//! Tolerance: 1e-4 absolute on hidden states and logits, f32.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use phi3_decoder::{generate_from_embeds, ForwardOptions, GenerateOptions};
use phi3v::{ImageInput, ModelDir, Phi3V};
use phi3v_nn::Weights;

type B = Flex;
const TOL: f32 = 1e-4;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn model() -> Phi3V<B> {
    ModelDir::resolve(data().join("tiny_phi3v").to_str().unwrap())
        .unwrap()
        .load_model(&Default::default())
        .unwrap()
}

struct Case {
    ids: Tensor<B, 2, Int>,
    images: Option<ImageInput<B>>,
}

fn case(expected: &Weights, name: &str) -> Case {
    let device = Default::default();
    let shape = expected
        .shape(&format!("{name}.input_ids"))
        .unwrap()
        .to_vec();
    let ids = expected
        .read_i64(&format!("{name}.input_ids"), &shape)
        .unwrap();
    let ids = Tensor::from_data(TensorData::new(ids, [shape[0], shape[1]]), &device);
    let images = expected.contains(&format!("{name}.tiles")).then(|| {
        let tile_shape: [usize; 4] = expected
            .shape(&format!("{name}.tiles"))
            .unwrap()
            .try_into()
            .unwrap();
        let grid_shape = expected.shape(&format!("{name}.grids")).unwrap().to_vec();
        let grids = expected
            .read_i64(&format!("{name}.grids"), &grid_shape)
            .unwrap();
        ImageInput {
            tiles: expected
                .tensor(&format!("{name}.tiles"), tile_shape, &device)
                .unwrap(),
            grids: grids
                .chunks(2)
                .map(|g| (g[0] as usize, g[1] as usize))
                .collect(),
        }
    });
    Case { ids, images }
}

fn assert_close<const D: usize>(what: &str, actual: Tensor<B, D>, expected: &Weights, name: &str) {
    let shape = expected.shape(name).unwrap().to_vec();
    let values = expected.read_f32(name, &shape).unwrap();
    phi3v_testkit::assert_close(what, actual, (shape, values), TOL);
}

fn check(name: &str) {
    let model = model();
    let expected = Weights::open(data().join("expected.safetensors")).unwrap();
    let Case { ids, images } = case(&expected, name);
    let hidden = model
        .forward_hidden(ids.clone(), images.as_ref(), ForwardOptions::default())
        .unwrap();
    assert_close(
        &format!("{name} hidden"),
        hidden.clone(),
        &expected,
        &format!("{name}.hidden"),
    );
    let [b, s, h] = hidden.dims();
    let logits = model.decoder.logits(hidden.slice([0..b, s - 3..s, 0..h]));
    assert_close(
        &format!("{name} logits"),
        logits,
        &expected,
        &format!("{name}.last_logits"),
    );

    let greedy_shape = expected.shape(&format!("{name}.greedy")).unwrap().to_vec();
    let want: Vec<u32> = expected
        .read_i64(&format!("{name}.greedy"), &greedy_shape)
        .unwrap()
        .into_iter()
        .map(|t| t as u32)
        .collect();
    let embeds = model.embed(ids, images.as_ref()).unwrap();
    let options = GenerateOptions {
        max_new_tokens: 8,
        ..GenerateOptions::default()
    };
    let got = generate_from_embeds(&model.decoder, embeds, &options, |_| {});
    assert_eq!(got, want, "{name}: greedy tokens");
}

#[test]
fn text_only_prompt() {
    check("text");
}

#[test]
fn one_image_prompt() {
    check("one_image");
}

#[test]
fn two_images_with_different_grids() {
    check("two_images");
}

#[test]
fn placeholders_without_images_are_an_error() {
    let model = model();
    let expected = Weights::open(data().join("expected.safetensors")).unwrap();
    let Case { ids, .. } = case(&expected, "one_image");
    let err = model.embed(ids, None).unwrap_err().to_string();
    assert!(err.contains("no images"), "{err}");
}

/// A left-padded batch generates, row by row, what each prompt generates alone.
#[test]
fn batched_generation_matches_single_prompts() {
    let model = model();
    let expected = Weights::open(data().join("expected.safetensors")).unwrap();
    let host_ids = |name: &str| {
        let shape = expected
            .shape(&format!("{name}.input_ids"))
            .unwrap()
            .to_vec();
        expected
            .read_i64(&format!("{name}.input_ids"), &shape)
            .unwrap()
    };
    let greedy = |name: &str| -> Vec<u32> {
        let shape = expected.shape(&format!("{name}.greedy")).unwrap().to_vec();
        let tokens = expected
            .read_i64(&format!("{name}.greedy"), &shape)
            .unwrap();
        tokens.into_iter().map(|t| t as u32).collect()
    };
    let images = case(&expected, "one_image").images;
    let options = GenerateOptions {
        max_new_tokens: 8,
        ..GenerateOptions::default()
    };
    let out = phi3v::generate_batch(
        &model,
        &[host_ids("text"), host_ids("one_image")],
        images.as_ref(),
        &options,
        32000,
    )
    .unwrap();
    assert_eq!(out, vec![greedy("text"), greedy("one_image")]);
}

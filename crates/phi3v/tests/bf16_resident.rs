//! A bf16-resident base, on the tiny reference model dir (vision tower, projection and
//! decoder, one image).
//!
//! The mixed product is exact apart from f32 summation order: a bf16-resident model gives
//! the logits of an f32 model that holds the same (bf16-rounded) weights, to 1e-5. That
//! the rounding itself stays small is checked in phi3v-testkit's `bf16_resident.rs`, on a
//! model stored in f32.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use phi3_decoder::ForwardOptions;
use phi3v::nn::{memory, BaseDtype, NamedLinears, ProductDtype};
use phi3v::{ImageInput, ModelDir, Phi3V};
use phi3v_nn::Weights;
use phi3v_testkit::close::max_diff;

type B = Flex;

fn dir() -> ModelDir {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_phi3v");
    ModelDir::resolve(path.to_str().unwrap()).unwrap()
}

fn load(base: BaseDtype) -> Phi3V<B> {
    let (model, dtype) = dir().load_model_as::<B>(&Default::default(), base).unwrap();
    let expected = match base {
        BaseDtype::F32 => None,
        _ => Some(FloatDType::BF16),
    };
    assert_eq!(dtype.matrix_dtype, expected);
    let quantizes = matches!(base, BaseDtype::Q8 | BaseDtype::Q4);
    assert_eq!(dtype.quantization.is_some(), quantizes);
    model
}

/// The one-image case of the reference fixture: ids and tiles.
fn inputs() -> (Tensor<B, 2, Int>, ImageInput<B>) {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let expected = Weights::open(data.join("expected.safetensors")).unwrap();
    let device = Default::default();
    let shape = expected.shape("one_image.input_ids").unwrap().to_vec();
    let ids = expected.read_i64("one_image.input_ids", &shape).unwrap();
    let ids = Tensor::from_data(TensorData::new(ids, [shape[0], shape[1]]), &device);
    let tile_shape: [usize; 4] = expected
        .shape("one_image.tiles")
        .unwrap()
        .try_into()
        .unwrap();
    let grid_shape = expected.shape("one_image.grids").unwrap().to_vec();
    let grids = expected.read_i64("one_image.grids", &grid_shape).unwrap();
    let images = ImageInput {
        tiles: expected
            .tensor("one_image.tiles", tile_shape, &device)
            .unwrap(),
        grids: grids
            .chunks(2)
            .map(|g| (g[0] as usize, g[1] as usize))
            .collect(),
    };
    (ids, images)
}

fn logits(model: &Phi3V<B>) -> Vec<f32> {
    let (ids, images) = inputs();
    model
        .forward(ids, Some(&images), ForwardOptions::default())
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap()
}

/// The largest and the mean absolute difference of `got` from `exact`.
fn errors(got: &[f32], exact: &[f32]) -> (f32, f32) {
    let mean = got
        .iter()
        .zip(exact)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / got.len() as f32;
    (max_diff(got, exact), mean)
}

#[test]
fn bf16_resident_logits_are_the_rounded_weights_logits() {
    let bf16 = load(BaseDtype::Bf16);
    let mut widened = bf16.clone();
    widened.for_each_linear("", &mut |_, linear| linear.cast_weight(FloatDType::F32));
    // Half the bytes of every linear weight.
    assert!(memory::resident_bytes(&bf16) < memory::resident_bytes(&widened));
    let diff = max_diff(&logits(&bf16), &logits(&widened));
    assert!(diff <= 1e-5, "mixed product vs widened weights: {diff}");
}

/// QLoRA bases on the tiny reference model: the logits of q8 and q4 linear weights (with
/// the embedding and head in bf16) against the f32 model's, as max and mean absolute error.
/// The bounds are the measured errors with about 1.5x headroom; bf16 alone is measured
/// beside them, to show how much of the error is quantization. Each quantized base is also
/// smaller than the bf16 one.
#[test]
fn quantized_logits_stay_near_the_f32_logits() {
    let exact = logits(&load(BaseDtype::F32));
    let span = exact.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let bf16_bytes = memory::resident_bytes(&load(BaseDtype::Bf16));
    for (base, max_bound, mean_bound) in [
        (BaseDtype::Bf16, 1e-5, 1e-6),
        (BaseDtype::Q8, 0.17, 0.017),
        (BaseDtype::Q4, 2.1, 0.26),
    ] {
        let model = load(base);
        let (max, mean) = errors(&logits(&model), &exact);
        println!(
            "{base:?}: logits vs f32: max {max:.4}, mean {mean:.5} (f32 logits within ±{span:.2})"
        );
        assert!(max <= max_bound, "{base:?}: max logit error {max}");
        assert!(mean <= mean_bound, "{base:?}: mean logit error {mean}");
        if base != BaseDtype::Bf16 {
            assert!(memory::resident_bytes(&model) < bf16_bytes);
        }
    }
}

/// bf16 products (`--product-dtype bf16`) on the bf16 base: the activations are rounded to
/// bf16 before every product with a frozen weight, so the logits move by bf16 rounding of
/// the activations, and no more. The bounds are the measured error with about 1.5x
/// headroom; the prompt's rows fill the AVX512-BF16 kernel's blocks where the CPU has one
/// (the decoder and vision tower see more rows than its few-row cut-off).
#[test]
fn bf16_products_stay_within_bf16_rounding_of_the_f32_products() {
    let base = load(BaseDtype::Bf16);
    let exact = logits(&base);
    let span = exact.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut rounded = base.clone();
    rounded.set_products(ProductDtype::Bf16);
    let mut kinds = Vec::new();
    rounded.for_each_linear("", &mut |_, linear| kinds.push(linear.products()));
    assert!(kinds.iter().all(|&p| p == ProductDtype::Bf16), "{kinds:?}");
    let (max, mean) = errors(&logits(&rounded), &exact);
    println!("bf16 products: logits vs f32 products: max {max:.5}, mean {mean:.6} (±{span:.2})");
    assert!(max > 0.0, "the products were not rounded");
    assert!(max <= MAX_BOUND, "max logit error {max}");
    assert!(mean <= MEAN_BOUND, "mean logit error {mean}");
}

/// See `bf16_products_stay_within_bf16_rounding_of_the_f32_products`.
const MAX_BOUND: f32 = 0.038;
const MEAN_BOUND: f32 = 0.0045;

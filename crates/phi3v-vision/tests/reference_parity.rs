//! The vision path against transformers' `CLIPVisionModel` and a Python rendering of the
//! reference glue, on a random tiny tower (`scripts/make_vision_fixtures.py`).
//! Tolerance: 1e-4 absolute, f32.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use phi3v_nn::{Weights, WeightsView};
use phi3v_vision::{
    image_token_count, ClipVisionConfig, ClipVisionTower, ImageEmbedding, EMBEDDING_PATH,
};

type B = Flex;
const TOL: f32 = 1e-4;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn config() -> ClipVisionConfig {
    let text = std::fs::read_to_string(data().join("clip_plain/config.json")).unwrap();
    ClipVisionConfig::from_value(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn expected() -> Weights {
    Weights::open(data().join("expected.safetensors")).unwrap()
}

fn float<const D: usize>(w: &Weights, name: &str) -> Tensor<B, D> {
    let shape: [usize; D] = w.shape(name).unwrap().try_into().unwrap();
    w.tensor(name, shape, &Default::default()).unwrap()
}

fn grids(w: &Weights) -> Vec<(usize, usize)> {
    let g = w.read_i64("grids", &[2, 2]).unwrap();
    vec![
        (g[0] as usize, g[1] as usize),
        (g[2] as usize, g[3] as usize),
    ]
}

fn assert_close<const D: usize>(what: &str, actual: Tensor<B, D>, expected: Tensor<B, D>) {
    phi3v_testkit::assert_close(what, actual, phi3v_testkit::values(expected), TOL);
}

#[test]
fn plain_clip_weights_features_of_layer_minus_2() {
    let weights = Weights::open(data().join("clip_plain")).unwrap();
    let tower =
        ClipVisionTower::<B>::load_detect(&weights, &config(), &Default::default()).unwrap();
    let e = expected();
    assert_close(
        "CLIP layer -2",
        tower.forward(float(&e, "pixel_values")),
        float(&e, "features"),
    );
}

#[test]
fn image_embedding_for_two_grids_in_token_order() {
    let weights = Weights::open(data().join("embedding.safetensors")).unwrap();
    let embedding = ImageEmbedding::<B>::new(
        WeightsView::load(&weights).pp(EMBEDDING_PATH),
        &config(),
        48,
        &Default::default(),
    )
    .unwrap();
    let e = expected();
    let grids = grids(&e);
    let out = embedding
        .forward(float(&e, "pixel_values"), &grids)
        .unwrap();
    assert_eq!(out.len(), 2);
    for (i, (tokens, &(h, w))) in out.into_iter().zip(&grids).enumerate() {
        assert_eq!(
            tokens.dims()[0],
            image_token_count(h, w, embedding.merged_side())
        );
        assert_close(
            &format!("image {i} ({h}x{w}) embeddings"),
            tokens,
            float(&e, &format!("image{i}.embeddings")),
        );
    }
}

#[test]
fn token_counts_of_the_released_sizes() {
    assert_eq!(image_token_count(4, 4, 12), 2509);
    assert_eq!(image_token_count(1, 1, 12), 313);
}

#[test]
fn wrong_tile_count_is_an_error() {
    let embedding = ImageEmbedding::<B>::random(&config(), 48, 0.02, &Default::default()).unwrap();
    let tiles = Tensor::<B, 4>::from_data(
        TensorData::new(vec![0.0f32; 2 * 3 * 56 * 56], [2, 3, 56, 56]),
        &Default::default(),
    );
    let err = embedding.forward(tiles, &[(1, 2)]).unwrap_err().to_string();
    assert!(
        err.contains("got 2 tiles") && err.contains("expected 3"),
        "{err}"
    );
}

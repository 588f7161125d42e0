//! The preallocated KV cache against decoding without one.
//!
//! Greedy decoding is compared token for token: with the cache written in place (sized up
//! front by `generate`, or regrown by doubling from a small start), and with every step
//! recomputing the whole sequence by a full forward. Below the LongRoPE switch the two
//! must agree exactly in tokens; the logits only to float rounding (different
//! summation orders), hence the wide weights, which keep greedy choices far from ties.
//!
//! The fixture test pins the tokens the previous cache (concatenation onto the past)
//! produced on `tiny_a`, where decoding crosses the factor switch and cached keys keep
//! their short-factor rotation, so no full recomputation could stand in for it.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use phi3_decoder::{
    generate, generate_from_embeds_chunked, ForwardOptions, GenerateOptions, KvCache, Phi3Config,
    Phi3Model,
};

type B = Flex;

/// A tiny grouped-query decoder (2 key/value heads for 4 query heads), 3 layers.
fn tiny_model() -> Phi3Model<B> {
    let mut config = Phi3Config::tiny(97);
    config.num_hidden_layers = 3;
    config.num_key_value_heads = 2;
    Phi3Model::random(&config, 0.3, &Default::default()).expect("valid config")
}

fn prompt() -> Vec<u32> {
    vec![5, 17, 42, 3, 88, 61, 9]
}

fn ids(tokens: &[u32]) -> Tensor<B, 2, Int> {
    let values: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    Tensor::from_data(
        TensorData::new(values, [1, tokens.len()]),
        &Default::default(),
    )
}

fn argmax_last(logits: Tensor<B, 3>) -> u32 {
    let [_, s, v] = logits.dims();
    let last: Vec<f32> = logits
        .slice([0..1, s - 1..s, 0..v])
        .into_data()
        .to_vec()
        .unwrap();
    // First maximum wins, as in `TokenDecoder`'s greedy pick.
    let mut best = 0;
    for (i, &x) in last.iter().enumerate() {
        if x > last[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding with no cache: each step runs the full sequence again.
fn greedy_without_cache(model: &Phi3Model<B>, prompt: &[u32], new: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    for _ in 0..new {
        let token = argmax_last(model.forward(ids(&seq), ForwardOptions::default()));
        seq.push(token);
    }
    seq[prompt.len()..].to_vec()
}

/// Greedy decoding through `cache`, one token per forward after the prompt.
fn greedy_with(
    model: &Phi3Model<B>,
    mut cache: KvCache<B>,
    prompt: &[u32],
    new: usize,
) -> Vec<u32> {
    let mut out = Vec::new();
    let mut input = prompt.to_vec();
    for _ in 0..new {
        let logits = model.forward(
            ids(&input),
            ForwardOptions {
                cache: Some(&mut cache),
                ..Default::default()
            },
        );
        let token = argmax_last(logits);
        out.push(token);
        input = vec![token];
    }
    assert_eq!(cache.len(), prompt.len() + new - 1);
    out
}

fn greedy_options(new: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: new,
        stop_tokens: vec![],
        ..GenerateOptions::default()
    }
}

#[test]
fn cached_greedy_generation_equals_full_recomputation() {
    let model = tiny_model();
    let new = 12;
    let want = greedy_without_cache(&model, &prompt(), new);
    // The tokens must not be one repeated token, or the check would prove little.
    assert!(want.iter().any(|&t| t != want[0]), "degenerate: {want:?}");

    let sized = generate(&model, &prompt(), &greedy_options(new), |_| {});
    assert_eq!(sized, want, "generate (cache sized up front)");

    let layers = model.layers.len();
    let doubling = greedy_with(&model, KvCache::new(layers), &prompt(), new);
    assert_eq!(
        doubling, want,
        "cache grown by doubling from the prompt length"
    );

    let from_one = greedy_with(&model, KvCache::with_capacity(layers, 1), &prompt(), new);
    assert_eq!(from_one, want, "cache with too small a capacity hint");

    let exact = greedy_with(
        &model,
        model.new_cache_with_capacity(prompt().len() + new - 1),
        &prompt(),
        new,
    );
    assert_eq!(exact, want, "cache filled exactly to its capacity");
}

#[test]
fn cached_logits_match_full_forward_after_regrowth() {
    let model = tiny_model();
    let seq: Vec<u32> = prompt().into_iter().chain([11, 12, 13, 14, 15]).collect();
    let full: Vec<f32> = model
        .forward(ids(&seq), ForwardOptions::default())
        .into_data()
        .to_vec()
        .unwrap();
    // Capacity 2: the prompt forces a first allocation of 7, then steps regrow to 14.
    let mut cache = KvCache::with_capacity(model.layers.len(), 2);
    let mut pieces = vec![model.forward(
        ids(&seq[..7]),
        ForwardOptions {
            cache: Some(&mut cache),
            ..Default::default()
        },
    )];
    for t in &seq[7..] {
        pieces.push(model.forward(
            ids(&[*t]),
            ForwardOptions {
                cache: Some(&mut cache),
                ..Default::default()
            },
        ));
    }
    assert_eq!((cache.len(), cache.capacity()), (seq.len(), 14));
    let cached: Vec<f32> = Tensor::cat(pieces, 1).into_data().to_vec().unwrap();
    let worst = full
        .iter()
        .zip(&cached)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "cached vs full logits differ by {worst}");
}

#[test]
fn greedy_tokens_match_the_previous_cache_across_the_factor_switch() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_a");
    let model = Phi3Model::<B>::from_pretrained(dir, &Default::default()).unwrap();
    let original = model.config().original_max_position_embeddings;
    // The prompt ends just before the switch; decoding runs past it.
    let prompt: Vec<u32> = (0..original as u32 - 3).map(|i| 3 + (i * 7) % 50).collect();
    let got = generate(&model, &prompt, &greedy_options(8), |_| {});
    assert_eq!(got, PREVIOUS_TINY_A, "tokens of the concatenating cache");
}

/// What the concatenating cache (before preallocation) generated in the test above.
const PREVIOUS_TINY_A: &[u32] = &[33, 314, 344, 99, 176, 260, 26, 128];

/// A prompt prefilled a few positions at a time (chunks of 1, 3 and 5 over 7 positions,
/// the last chunk short) generates what the one-shot prefill generates.
#[test]
fn chunked_prefill_equals_one_shot_prefill() {
    let model = tiny_model();
    let new = 10;
    let embeds = || model.embed(ids(&prompt()));
    let one_shot =
        generate_from_embeds_chunked(&model, embeds(), &greedy_options(new), usize::MAX, |_| {});
    assert!(
        one_shot.iter().any(|&t| t != one_shot[0]),
        "degenerate: {one_shot:?}"
    );
    for chunk in [1, 3, 5] {
        let chunked =
            generate_from_embeds_chunked(&model, embeds(), &greedy_options(new), chunk, |_| {});
        assert_eq!(chunked, one_shot, "prefill in chunks of {chunk}");
    }
}

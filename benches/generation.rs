//! Generation speed with the KV cache: tokens per second for greedy decoding on a small
//! random Phi-3 decoder (the same config as `scripts/bench_generate_reference.py`, which
//! times Hugging Face `generate` for comparison; results in docs/benchmarks.md).
//!
//! ```text
//! cargo bench --bench generation
//! ~/venv/bin/python scripts/bench_generate_reference.py
//! ```
//! Config: vocab 32064, hidden 256, 4 layers, 8 heads, MLP 1024, LongRoPE; a 64-token
//! prompt, then 32 new tokens (no early stop).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phi3_decoder::{generate, GenerateOptions, Phi3Config, Phi3Model};
use phi3v_suite::backend::{Selected, NAME};

const PROMPT: usize = 64;
const NEW_TOKENS: usize = 32;

/// The benchmark config, shared with the Python script by value.
fn config() -> Phi3Config {
    let mut c = Phi3Config::tiny(32064);
    c.hidden_size = 256;
    c.intermediate_size = 1024;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 8;
    let half = c.head_dim() / 2;
    let scaling = c.rope_scaling.as_mut().expect("tiny has LongRoPE");
    scaling.short_factor = (0..half).map(|i| 1.0 + i as f64 * 0.1).collect();
    scaling.long_factor = (0..half).map(|i| 1.0 + i as f64 * 2.0).collect();
    c
}

fn bench(c: &mut Criterion) {
    let device = Default::default();
    let model = Phi3Model::<Selected>::random(&config(), 0.02, &device).expect("valid config");
    let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| 100 + i * 7).collect();
    let options = GenerateOptions {
        max_new_tokens: NEW_TOKENS,
        stop_tokens: vec![],
        ..GenerateOptions::default()
    };
    let mut group = c.benchmark_group(format!("generation_{NAME}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(NEW_TOKENS as u64));
    group.bench_function("prefill64_decode32", |b| {
        b.iter(|| {
            let out = generate(&model, &prompt, &options, |_| {});
            assert_eq!(out.len(), NEW_TOKENS);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

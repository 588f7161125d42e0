//! Greedy or sampled generation with the KV cache on a Phi-3 decoder.
//!
//! ```text
//! cargo run --example generate                          # a tiny random model
//! cargo run --example generate -- --model DIR --prompt-ids 1,32010,13
//! cargo run --example generate --features wgpu          # the same on the GPU
//! ```
//! `DIR` is a Hugging Face model dir of a Phi-3 text model (config.json and
//! safetensors, single or sharded). Token ids are printed as they are generated.

use std::io::Write;
use std::time::Instant;

use phi3_decoder::{generate, DecodingConfig, GenerateOptions, Phi3Config, Phi3Model};
use phi3v_suite::backend::{Selected, NAME};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let device = Default::default();
    let model = match value("--model") {
        Some(dir) => Phi3Model::<Selected>::from_pretrained(&dir, &device).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1)
        }),
        None => Phi3Model::random(&Phi3Config::tiny(512), 0.5, &device).expect("valid tiny config"),
    };
    let prompt: Vec<u32> = value("--prompt-ids")
        .map(|s| {
            s.split(',')
                .map(|t| {
                    t.trim().parse().unwrap_or_else(|_| {
                        eprintln!("error: --prompt-ids: `{t}` is not a token id");
                        std::process::exit(2)
                    })
                })
                .collect()
        })
        .unwrap_or_else(|| vec![1, 10, 20, 30]);
    let options = GenerateOptions {
        max_new_tokens: value("--max-new-tokens")
            .and_then(|v| v.parse().ok())
            .unwrap_or(32),
        stop_tokens: vec![model.config().eos_token_id, 32000, 32007],
        decoding: DecodingConfig {
            temperature: value("--temperature")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            top_k: value("--top-k").and_then(|v| v.parse().ok()),
            top_p: value("--top-p").and_then(|v| v.parse().ok()),
            seed: value("--seed").and_then(|v| v.parse().ok()).unwrap_or(0),
        },
    };
    println!("backend: {NAME}; prompt: {prompt:?}");
    let start = Instant::now();
    let tokens = generate(&model, &prompt, &options, |t| {
        print!("{t} ");
        std::io::stdout().flush().ok();
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "\n{} tokens in {secs:.2}s ({:.1} tokens/s)",
        tokens.len(),
        tokens.len() as f64 / secs
    );
}

//! Time and peak memory of one attention call, or of a tiny decoder at long context.
//!
//! Peak memory is the process's high-water resident set (`VmHWM`), printed at the end;
//! run it under `/usr/bin/time -v` for an independent "Maximum resident set size". Run
//! one measurement per process, so that each number is that call's own peak.
//!
//! ```text
//! # causal attention, batch 1, 1 head, head_dim 96, forward + backward
//! cargo run --release --example attention_memory -- --kernel naive --len 4096 --backward
//! cargo run --release --example attention_memory -- --kernel tiled --len 16384 --backward
//! cargo run --release --example attention_memory -- --kernel burn --len 4096 --backward
//! # a 1-layer tiny Phi-3 (head_dim 16) with the memory-efficient kernel
//! cargo run --release --example attention_memory -- --decoder --len 131072
//! cargo run --release --example attention_memory -- --decoder --len 32768 --backward
//! ```
//! Options: `--heads H` (attention: 1; decoder: 2, head_dim stays 16), `--head-dim D`
//! (96), `--block-q N`, `--block-k N`; in decoder mode `--layers L` (1), `--vocab V` (256).
//! `--kernel burn` is burn's built-in `attention` (attention mode only).

use std::time::Instant;

use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use phi3_decoder::{ForwardOptions, LossTargets, Phi3Config, Phi3Model};
use phi3v_nn::attention::{DEFAULT_BLOCK_K, DEFAULT_BLOCK_Q};
use phi3v_nn::{attention, AttentionBackend, AttentionKernel, AttentionMask};
use phi3v_suite::backend::{Selected, SelectedAutodiff, NAME};

struct Args {
    kernel: String,
    len: usize,
    heads: Option<usize>,
    head_dim: usize,
    backward: bool,
    decoder: bool,
    layers: usize,
    vocab: usize,
    block_q: usize,
    block_k: usize,
}

fn parse() -> Args {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let number = |flag: &str| {
        value(flag).map(|v| {
            v.parse::<usize>().unwrap_or_else(|_| {
                eprintln!("error: {flag}: `{v}` is not a number");
                std::process::exit(2)
            })
        })
    };
    Args {
        kernel: value("--kernel").unwrap_or_else(|| "tiled".into()),
        len: number("--len").unwrap_or(4096),
        heads: number("--heads"),
        head_dim: number("--head-dim").unwrap_or(96),
        backward: args.iter().any(|a| a == "--backward"),
        decoder: args.iter().any(|a| a == "--decoder"),
        layers: number("--layers").unwrap_or(1),
        vocab: number("--vocab").unwrap_or(256),
        block_q: number("--block-q").unwrap_or(DEFAULT_BLOCK_Q),
        block_k: number("--block-k").unwrap_or(DEFAULT_BLOCK_K),
    }
}

/// The process's peak resident set in MiB (Linux), or 0 where unknown.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn kernel(args: &Args) -> AttentionKernel {
    match args.kernel.as_str() {
        "naive" => AttentionKernel::Naive,
        "tiled" => AttentionKernel::MemoryEfficient {
            block_q: args.block_q,
            block_k: args.block_k,
        },
        other => {
            eprintln!("error: --kernel {other}: expected naive, tiled or (attention mode) burn");
            std::process::exit(2)
        }
    }
}

fn inputs<B: AttentionBackend>(args: &Args) -> [Tensor<B, 4>; 3] {
    let shape = [1, args.heads.unwrap_or(1), args.len, args.head_dim];
    let device = Default::default();
    [0, 1, 2].map(|_| Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device))
}

/// One causal attention with the chosen kernel.
fn attend<B: AttentionBackend>(args: &Args, [q, k, v]: [Tensor<B, 4>; 3]) -> Tensor<B, 4> {
    let scale = 1.0 / (args.head_dim as f64).sqrt();
    if args.kernel == "burn" {
        let options = AttentionModuleOptions {
            scale: Some(scale),
            softcap: None,
            is_causal: true,
        };
        burn_attention(q, k, v, None, None, options)
    } else {
        attention(q, k, v, &AttentionMask::causal(0), scale, kernel(args))
    }
}

/// Runs the measurement and returns a checksum, so that nothing is optimised away.
fn attention_mode(args: &Args) -> f32 {
    if args.backward {
        let qkv = inputs::<SelectedAutodiff>(args).map(|t| t.require_grad());
        let out = attend(args, qkv.clone());
        let grads = out.sum().backward();
        qkv.iter()
            .map(|t| t.grad(&grads).expect("a gradient").sum().into_scalar())
            .sum()
    } else {
        attend(args, inputs::<Selected>(args)).sum().into_scalar()
    }
}

/// A tiny Phi-3 (head_dim 16, the tiny config's LongRoPE factors) with `args.layers`
/// layers and `args.heads` heads; returns the loss (or the logit sum without backward).
fn decoder_mode(args: &Args) -> f32 {
    let heads = args.heads.unwrap_or(2);
    let mut config = Phi3Config::tiny(args.vocab);
    config.hidden_size = 16 * heads;
    config.intermediate_size = 32 * heads;
    config.num_attention_heads = heads;
    config.num_key_value_heads = heads;
    config.num_hidden_layers = args.layers;
    assert!(
        args.len <= config.max_position_embeddings,
        "--len {} exceeds the context of {}",
        args.len,
        config.max_position_embeddings
    );
    let regime = if args.len > config.original_max_position_embeddings {
        "long"
    } else {
        "short"
    };
    eprintln!(
        "decoder: {} layer(s), hidden {}, {heads} heads of 16, vocab {}; {} tokens ({regime} LongRoPE factors)",
        args.layers, config.hidden_size, args.vocab, args.len
    );
    let ids: Vec<i64> = (0..args.len as i64)
        .map(|i| (i * 7919 + 13) % args.vocab as i64)
        .collect();
    let device = Default::default();
    let kernel = kernel(args);
    if args.backward {
        let model = Phi3Model::<SelectedAutodiff>::random(&config, 0.02, &device)
            .expect("a valid config")
            .with_attention_kernel(kernel);
        let ids = Tensor::<SelectedAutodiff, 2, Int>::from_data(
            TensorData::new(ids, [1, args.len]),
            &device,
        );
        let logits = model.forward(ids.clone(), ForwardOptions::default());
        let loss = Phi3Model::loss(logits, &LossTargets::read_back(&ids));
        let value = loss.clone().into_scalar();
        let grads = loss.backward();
        let g = model.embed_tokens.grad(&grads).expect("embedding gradient");
        eprintln!("embedding gradient |sum| = {}", g.abs().sum().into_scalar());
        value
    } else {
        let model = Phi3Model::<Selected>::random(&config, 0.02, &device)
            .expect("a valid config")
            .with_attention_kernel(kernel);
        let ids =
            Tensor::<Selected, 2, Int>::from_data(TensorData::new(ids, [1, args.len]), &device);
        model
            .forward(ids, ForwardOptions::default())
            .sum()
            .into_scalar()
    }
}

fn main() {
    let args = parse();
    let start = Instant::now();
    let checksum = if args.decoder {
        decoder_mode(&args)
    } else {
        attention_mode(&args)
    };
    let seconds = start.elapsed().as_secs_f64();
    let mode = if args.decoder { "decoder" } else { "attention" };
    let pass = if args.backward {
        "forward+backward"
    } else {
        "forward"
    };
    println!(
        "{mode} {pass} backend={NAME} kernel={} len={} heads={} time={seconds:.2}s peak_rss={:.0}MiB checksum={checksum}",
        args.kernel,
        args.len,
        args.heads.unwrap_or(if args.decoder { 2 } else { 1 }),
        peak_rss_mib()
    );
}

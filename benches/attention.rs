//! Attention kernels compared on causal self-attention, batch 1, head_dim 96 (Phi-3):
//!
//! - `naive`: [`naive_attention`] with a precomputed dense causal mask (its best case:
//!   the mask is built outside the timed loop), the reference path;
//! - `burn`: burn's built-in `burn::tensor::module::attention` with `is_causal`; on flex
//!   its forward is a fused CPU flash attention, under autodiff it is decomposed;
//! - `tiled`: the memory-efficient kernel (`AttentionKernel::memory_efficient()`), with
//!   its own backward under autodiff: tile by tile in tensor ops on the CPU backends, the
//!   fused CubeCL kernels (forward, and FlashAttention-2's backward) on wgpu and CUDA.
//!
//! Two groups: `attention_forward` (plain backend) and `attention_forward_backward`
//! (autodiff backend; the loss is `out.sum()`).
//!
//! ```text
//! cargo bench --bench attention                               # 512..4096 keys, 2 heads
//! ATTN_BENCH_MAX_LEN=16384 ATTN_BENCH_HEADS=1 cargo bench --bench attention
//! cargo bench --bench attention --features wgpu               # on the GPU backend
//! ```
//! `ATTN_BENCH_NAIVE_MAX_LEN` (default: no limit) skips the naive and burn paths above a
//! length, for machines where their `seq x seq` scores do not fit.

use std::time::Duration;

use burn::tensor::backend::Backend;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use phi3v_nn::{attention, naive_attention, AttentionBackend, AttentionKernel, AttentionMask};
use phi3v_suite::backend::{Selected, SelectedAutodiff, NAME};

const HEAD_DIM: usize = 96;
const LENGTHS: [usize; 6] = [512, 1024, 2048, 4096, 8192, 16384];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn lengths() -> Vec<usize> {
    let max = env_usize("ATTN_BENCH_MAX_LEN", 4096);
    LENGTHS.into_iter().filter(|&l| l <= max).collect()
}

#[derive(Clone, Copy, Debug)]
enum Kernel {
    Naive,
    Burn,
    Tiled,
}

const KERNELS: [(Kernel, &str); 3] = [
    (Kernel::Naive, "naive"),
    (Kernel::Burn, "burn"),
    (Kernel::Tiled, "tiled"),
];

fn inputs<B: Backend>(len: usize) -> [Tensor<B, 4>; 3] {
    let heads = env_usize("ATTN_BENCH_HEADS", 2);
    let device = Default::default();
    [0, 1, 2].map(|_| {
        Tensor::random(
            [1, heads, len, HEAD_DIM],
            Distribution::Normal(0.0, 1.0),
            &device,
        )
    })
}

/// One causal attention with `kernel`; `dense` is the naive path's precomputed mask.
fn run<B: AttentionBackend>(
    kernel: Kernel,
    [q, k, v]: [Tensor<B, 4>; 3],
    dense: &Tensor<B, 4, burn::tensor::Bool>,
) -> Tensor<B, 4> {
    let scale = 1.0 / (HEAD_DIM as f64).sqrt();
    match kernel {
        Kernel::Naive => naive_attention(q, k, v, Some(dense.clone()), scale),
        Kernel::Burn => burn_attention(
            q,
            k,
            v,
            None,
            None,
            AttentionModuleOptions {
                scale: Some(scale),
                softcap: None,
                is_causal: true,
            },
        ),
        Kernel::Tiled => attention(
            q,
            k,
            v,
            &AttentionMask::causal(0),
            scale,
            AttentionKernel::memory_efficient(),
        ),
    }
}

fn skip(kernel: Kernel, len: usize) -> bool {
    !matches!(kernel, Kernel::Tiled) && len > env_usize("ATTN_BENCH_NAIVE_MAX_LEN", usize::MAX)
}

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("attention_forward/{NAME}"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    let device = Default::default();
    for len in lengths() {
        let qkv = inputs::<Selected>(len);
        let dense = AttentionMask::<Selected>::causal(0)
            .dense(len, len, &device)
            .expect("a causal mask");
        for (kernel, name) in KERNELS {
            if skip(kernel, len) {
                continue;
            }
            group.bench_with_input(BenchmarkId::new(name, len), &len, |b, _| {
                b.iter(|| {
                    let out = run(kernel, qkv.clone(), &dense);
                    Selected::sync(&device).expect("sync");
                    out
                })
            });
        }
    }
    group.finish();
}

fn forward_backward(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("attention_forward_backward/{NAME}"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    let device = Default::default();
    for len in lengths() {
        let qkv = inputs::<SelectedAutodiff>(len);
        let dense = AttentionMask::<SelectedAutodiff>::causal(0)
            .dense(len, len, &device)
            .expect("a causal mask");
        for (kernel, name) in KERNELS {
            if skip(kernel, len) {
                continue;
            }
            group.bench_with_input(BenchmarkId::new(name, len), &len, |b, _| {
                b.iter(|| {
                    let qkv = qkv.clone().map(|t| t.detach().require_grad());
                    let out = run(kernel, qkv.clone(), &dense);
                    let grads = out.sum().backward();
                    let dq = qkv[0].grad(&grads).expect("a gradient");
                    Selected::sync(&device).expect("sync");
                    dq
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, forward, forward_backward);
criterion_main!(benches);

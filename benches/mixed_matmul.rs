//! The product of f32 activations with a bf16 weight, three ways, at Phi-3's MLP widths
//! (`[rows, 3072] x [3072, 16384]`, the gate/up projection, the largest product per layer):
//!
//! - `widen_each`: the whole weight widened to f32 for the product (what burn-flex's own
//!   bf16 matmul does internally, on top of rounding the activations to bf16);
//! - `flex_bf16`: the activations rounded to bf16 and burn-flex's bf16 matmul
//!   (`phi3v_nn::mixed::rounded_matmul`, the provided `MixedMatmul` method);
//! - `mixed`: `MixedMatmul::mixed_matmul` (flex's own kernel: bf16 read in place for a few
//!   rows, tile-by-tile widening into gemm for many).
//!
//! - `bf16`: `MixedMatmul::bf16_matmul` (`--product-dtype bf16`: the activations rounded
//!   to bf16, AVX512-BF16's dot products where the CPU has them).
//!
//! Rows 1 (decoding one token), 8 and 512 (a prefill chunk). Only on flex: it is the
//! backend with a mixed kernel of its own.
//!
//! The same product over a q4 weight (a QLoRA base, `--base-dtype q4`), two ways:
//! `quantized/burn` is burn-flex's quantized matmul (the whole weight dequantized into an
//! f32 copy, then the product), `quantized/mixed` is `MixedMatmul::mixed_matmul` (tiles
//! dequantized into gemm, `phi3v_nn::mixed` on flex) on burn-flex's unpacked values, one
//! byte each, and `quantized/packed` the same on the values packed two to a byte, as a
//! loaded q4 base holds them.
//!
//! Beside them, the bound a one-row product is held against, over the same 100.7 MB:
//! `bandwidth/read` sums the bytes as u16 on all cores (what the product must at least
//! do), `bandwidth/copy` copies them on all cores. Criterion reports each as bytes of the
//! source per second (a copy also writes as many).
//!
//! ```text
//! cargo bench --bench mixed_matmul
//! ```
//! The weight reads per decode step are 3072 x 16384 x 2 bytes = 100.7 MB; with this
//! machine's measured copy bandwidth that is the bound the one-row case is held against.

use std::time::Duration;

use burn::backend::Flex;
use burn::tensor::{Distribution, FloatDType, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use phi3v_nn::mixed::rounded_matmul;
use phi3v_nn::MixedMatmul;
use rayon::prelude::*;

const K: usize = 3072;
const N: usize = 16384;

fn bench(c: &mut Criterion) {
    let device = Default::default();
    // Stored as PyTorch stores it, `[out, in]`, and used transposed, as `Linear` does.
    let weight = Tensor::<Flex, 2>::random([N, K], Distribution::Normal(0.0, 0.02), &device)
        .cast(FloatDType::BF16)
        .transpose();
    let mut group = c.benchmark_group("mixed_matmul");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for rows in [1usize, 8, 512] {
        let x = Tensor::<Flex, 2>::random([rows, K], Distribution::Normal(0.0, 1.0), &device);
        group.throughput(Throughput::Bytes((K * N * 2) as u64));
        let id = |name: &str| BenchmarkId::new(name, rows);
        group.bench_function(id("widen_each"), |b| {
            b.iter(|| {
                x.clone()
                    .matmul(weight.clone().cast(FloatDType::F32))
                    .into_data()
            })
        });
        group.bench_function(id("flex_bf16"), |b| {
            b.iter(|| rounded_matmul(x.clone(), weight.clone()).into_data())
        });
        group.bench_function(id("mixed"), |b| {
            b.iter(|| Flex::mixed_matmul(x.clone(), weight.clone()).into_data())
        });
        group.bench_function(id("bf16"), |b| {
            b.iter(|| Flex::bf16_matmul(x.clone(), weight.clone()).into_data())
        });
    }
    group.finish();

    let scheme = phi3v_nn::BaseDtype::Q4
        .resolve::<Flex>(&device)
        .expect("flex quantizes")
        .quantization
        .expect("q4 is quantized");
    // Laid out `[in, out]` before quantizing, as the loader does.
    let float =
        Tensor::<Flex, 2>::random([N, K], Distribution::Normal(0.0, 0.02), &device).transpose();
    let quantized = float.clone().quantize_dynamic(&scheme);
    // The same values packed two to a byte, as a loaded q4 base holds them.
    let packed = Flex::quantize_frozen(float, &scheme);
    let mut group = c.benchmark_group("quantized");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for rows in [1usize, 512] {
        let x = Tensor::<Flex, 2>::random([rows, K], Distribution::Normal(0.0, 1.0), &device);
        group.bench_function(BenchmarkId::new("burn", rows), |b| {
            b.iter(|| x.clone().matmul(quantized.clone()).into_data())
        });
        group.bench_function(BenchmarkId::new("mixed", rows), |b| {
            b.iter(|| Flex::mixed_matmul(x.clone(), quantized.clone()).into_data())
        });
        group.bench_function(BenchmarkId::new("packed", rows), |b| {
            b.iter(|| Flex::mixed_matmul(x.clone(), packed.clone()).into_data())
        });
    }
    group.finish();

    let bytes = K * N * 2;
    let source: Vec<u16> = (0..K * N).map(|i| i as u16).collect();
    let mut target = vec![0u16; K * N];
    let mut group = c.benchmark_group("bandwidth");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("read", |b| {
        b.iter(|| {
            source
                .par_chunks(1 << 16)
                .map(|c| c.iter().fold(0u32, |a, &v| a.wrapping_add(v as u32)))
                .reduce(|| 0, u32::wrapping_add)
        })
    });
    group.bench_function("copy", |b| {
        b.iter(|| {
            target
                .par_chunks_mut(1 << 16)
                .zip(source.par_chunks(1 << 16))
                .for_each(|(t, s)| t.copy_from_slice(s))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! One LoRA training step on a tiny random Phi-3-V: tokens per second through forward, loss,
//! backward, gradient collection, global-norm clipping and the AdamW update. The same step in
//! PyTorch + PEFT is `scripts/bench_training_reference.py`; results in docs/benchmarks.md.
//!
//! ```text
//! cargo bench --bench training_step
//! ~/venv/bin/python scripts/bench_training_reference.py
//! ```
//!
//! Config: `phi3v_lora::tiny::TinySpec::default()` (hidden 64, MLP 128, 2 layers, 4 heads,
//! vocab 32064; CLIP hidden 32, 3 layers of which 2 run, 56 px crops), f32, written to
//! `target/bench-tiny-phi3v` (or `$TRAIN_BENCH_MODEL_DIR`) so the Python script trains the
//! very same weights. Adapters: `AdapterPlan::reference(true, false)` (decoder, `lm_head`,
//! CLIP tower and projection), rank 16, alpha 32, gaussian A, zero B, no dropout. AdamW
//! (0.9, 0.95, eps 1e-7, weight decay 0.01), lr 1e-4, clip 1.0. Batch: the gradient-parity
//! fixture's Burberry sequence (`crates/phi3v-lora/tests/data/lora_step`: 67 tokens, 27 image
//! placeholders, 28 answer labels, one 2x2-crop image of 5 tiles of 3x56x56) repeated 8 times
//! (and once, for batch 1). Throughput counts every position of the batch (8 x 67 = 536).
//!
//! Peak memory is not something criterion measures; see docs/benchmarks.md for the
//! `/usr/bin/time -v` run of this binary.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phi3v::{ImageInput, ModelDir, Phi3V};
use phi3v_lora::optim::{AdamW, AdamWConfig};
use phi3v_lora::tiny::TinySpec;
use phi3v_lora::trainer::{apply_gradients, GradientSum};
use phi3v_lora::AdapterPlan;
use phi3v_nn::{LoraConfig, Weights};
use phi3v_suite::backend::{SelectedAutodiff, NAME};

type B = SelectedAutodiff;
type Device = burn::tensor::Device<B>;

const RANK: usize = 16;
const ALPHA: f64 = 32.0;
const LR: f64 = 1e-4;
const MAX_GRAD_NORM: f64 = 1.0;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where the tiny checkpoint is written (and read by the Python reference).
fn model_dir() -> PathBuf {
    std::env::var_os("TRAIN_BENCH_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/bench-tiny-phi3v"))
}

/// The tiny model with fresh adapters; the base is frozen.
fn model(dir: &Path, device: &Device) -> Phi3V<B> {
    let tokenizer = root().join("crates/phi3v-data/tests/data/tokenizer/tokenizer.json");
    TinySpec::default()
        .write(dir, &tokenizer)
        .expect("write the tiny checkpoint");
    let resolved = ModelDir::resolve(dir.to_str().expect("UTF-8 path")).expect("model folder");
    let model = resolved
        .load_model::<B>(device)
        .expect("load the tiny checkpoint");
    let mut model = burn::module::Module::no_grad(model);
    let mut plan = AdapterPlan::reference(true, false);
    plan.lora = LoraConfig {
        rank: RANK,
        alpha: ALPHA,
        ..LoraConfig::default()
    };
    let adapted = plan.apply(&mut model, device).expect("adapter plan");
    // 2 x 4 decoder layers, lm_head, 2 x 6 CLIP layers (the third is not run), 2 projections.
    assert_eq!(adapted.len(), 23, "adapted modules: {adapted:?}");
    model
}

/// One batch: `input_ids`, `labels` (`[batch, 67]`) and `batch` images of 5 tiles each.
struct Batch {
    ids: Tensor<B, 2, Int>,
    labels: Tensor<B, 2, Int>,
    images: ImageInput<B>,
    tokens: usize,
}

fn batch(batch: usize, device: &Device) -> Batch {
    let inputs =
        Weights::open(root().join("crates/phi3v-lora/tests/data/lora_step/inputs.safetensors"))
            .expect("fixture inputs");
    let read_i64 = |name: &str| {
        let shape = inputs.shape(name).expect("tensor").to_vec();
        inputs.read_i64(name, &shape).expect("i64 tensor")
    };
    let (ids, labels, grid) = (
        read_i64("input_ids"),
        read_i64("labels"),
        read_i64("image_grids"),
    );
    let pshape = inputs.shape("pixel_values").expect("pixels").to_vec();
    let pixels = inputs
        .read_f32("pixel_values", &pshape)
        .expect("f32 pixels");
    let seq = ids.len();
    let grid = (grid[0] as usize, grid[1] as usize);
    assert_eq!(grid, (2, 2));
    assert_eq!(
        ids.iter().filter(|&&id| id < 0).count(),
        phi3v::vision::image_token_count(2, 2, 2),
        "the fixture's placeholders fit TinySpec's 56 px crops"
    );
    let tiled = |v: &[i64]| {
        let all: Vec<i64> = (0..batch).flat_map(|_| v.iter().copied()).collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(all, [batch, seq]), device)
    };
    let all_pixels: Vec<f32> = (0..batch).flat_map(|_| pixels.iter().copied()).collect();
    Batch {
        ids: tiled(&ids),
        labels: tiled(&labels),
        images: ImageInput {
            tiles: Tensor::<B, 4>::from_data(
                TensorData::new(
                    all_pixels,
                    [batch * pshape[0], pshape[1], pshape[2], pshape[3]],
                ),
                device,
            ),
            grids: vec![grid; batch],
        },
        tokens: batch * seq,
    }
}

type Inner = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;

/// Forward, loss, backward, gradient collection, clipping and AdamW. Returns the loss (not
/// read back) and the gradient norm before clipping (read back, which also waits for the
/// device on GPU backends).
fn step(model: &mut Phi3V<B>, optimizer: &mut AdamW<Inner>, b: &Batch) -> (Tensor<Inner, 1>, f64) {
    let loss = model
        .loss(b.ids.clone(), Some(&b.images), None, b.labels.clone())
        .expect("loss");
    let value = loss.clone().inner();
    let mut grads = GradientSum::<B>::default();
    grads.add(model, &[], loss);
    let norm = apply_gradients(model, &[], optimizer, grads, LR, MAX_GRAD_NORM);
    (value, norm)
}

/// The process's peak resident set so far (`VmHWM`, Linux), for the log.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l[6..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn bench(c: &mut Criterion) {
    let device = Default::default();
    let dir = model_dir();
    let mut group = c.benchmark_group(format!("training_step_{NAME}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    // Batch 1 first, so the peak printed after it is its own.
    for size in [1, 8] {
        let mut model = model(&dir, &device);
        let mut optimizer = AdamW::new(AdamWConfig::default());
        let input = batch(size, &device);
        eprintln!(
            "batch {size}: peak RSS after loading the model {}",
            peak_rss()
        );
        let (loss, norm) = step(&mut model, &mut optimizer, &input);
        let loss: f32 = loss.into_scalar().elem();
        assert!(
            loss.is_finite() && norm.is_finite(),
            "loss {loss}, gradient norm {norm}"
        );
        eprintln!("batch {size}: first step loss {loss:.4}, gradient norm {norm:.4}");
        group.throughput(Throughput::Elements(input.tokens as u64));
        group.bench_function(format!("batch{size}_seq67"), |bencher| {
            bencher.iter(|| black_box(step(&mut model, &mut optimizer, &input)))
        });
        eprintln!("batch {size}: peak RSS after the bench {}", peak_rss());
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

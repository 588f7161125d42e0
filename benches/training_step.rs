//! One LoRA training step on a tiny random Phi-3-V: tokens per second through forward, loss,
//! backward, gradient collection, global-norm clipping and the AdamW update. The same step in
//! PyTorch + PEFT is `scripts/bench_training_reference.py`; results in docs/benchmarks.md.
//!
//! ```text
//! cargo bench --bench training_step
//! ~/venv/bin/python scripts/bench_training_reference.py
//! ```
//!
//! Config: `phi3v_testkit::TinySpec::default()` (hidden 64, MLP 128, 2 layers, 4 heads,
//! vocab 32064; CLIP hidden 32, 3 layers of which 2 run, 56 px crops), f32, written to
//! `target/bench-tiny-phi3v` (or `$TRAIN_BENCH_MODEL_DIR`) so the Python script trains the
//! very same weights. Adapters: `AdapterPlan::reference(true, false)` (decoder, `lm_head`,
//! CLIP tower and projection), rank 16, alpha 32, gaussian A, zero B, no dropout. AdamW
//! (0.9, 0.95, eps 1e-7, weight decay 0.01), lr 1e-4, clip 1.0. Batch: the gradient-parity
//! fixture's Burberry sequence (`crates/phi3v-train/tests/data/lora_step`: 67 tokens, 27 image
//! placeholders, 28 answer labels, one 2x2-crop image of 5 tiles of 3x56x56) repeated 8 times
//! (and once, for batch 1). Throughput counts every position of the batch (8 x 67 = 536).
//!
//! Variants (criterion ids `training_step_{backend}/{variant}`):
//! - `batch1_seq67`, `batch8_seq67`: the configuration above, f32, compared with PyTorch;
//! - `batch8_seq67_bf16_base`: the frozen base's matrices in bf16, adapters f32;
//! - `batch8_seq67_recompute`: activation recomputation by decoder layer
//!   (`phi3v_train::recompute`);
//! - `wide_batch8_seq67{,_bf16_base,_recompute}`: the same three on a wider model
//!   (hidden 512, MLP 1536, 4 layers, 8 heads: 47M parameters, 46M of them frozen matrices),
//!   where the base, not the logits, dominates the memory.
//!
//! Each variant sets itself up on first use, so a criterion filter naming one variant
//! (`-- --exact training_step_flex/wide_batch8_seq67_bf16_base`) runs only that one, and
//! the process's peak memory is that variant's. Criterion does not measure memory; see
//! docs/benchmarks.md for the `/usr/bin/time -v` runs of this binary.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use phi3v::decoder::LossTargets;
use phi3v::processor::batch::{collate_training, SampleRef};
use phi3v::processor::image_processor::ProcessedImage;
use phi3v::{BatchTensors, ImageInput, InputIds, ModelDir, Phi3V};
use phi3v_nn::{LoraConfig, Weights};
use phi3v_peft::AdapterPlan;
use phi3v_suite::backend::{Selected, NAME};
use phi3v_suite::lora_update::{lora_update, peak_rss, Backprop};
use phi3v_testkit::TinySpec;
use phi3v_train::optim::{AdamW, AdamWConfig};

type B = Autodiff<Selected>;
type Inner = Selected;
type Device = burn::tensor::Device<B>;

const RANK: usize = 16;
const ALPHA: f64 = 32.0;
const LR: f64 = 1e-4;
const MAX_GRAD_NORM: f64 = 1.0;

/// The repository: where the bench was built, or, for a bench binary carried to another
/// machine (scripts/device_check.sh), the folder it runs in.
fn root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    if built.join("crates").is_dir() {
        built.to_path_buf()
    } else {
        std::env::current_dir().expect("the working folder")
    }
}

/// Where the tiny model dir is written (and read by the Python reference).
fn model_dir() -> PathBuf {
    std::env::var_os("TRAIN_BENCH_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/bench-tiny-phi3v"))
}

/// The wider model of the `wide_` variants.
fn wide_spec() -> TinySpec {
    TinySpec {
        hidden_size: 512,
        intermediate_size: 1536,
        num_hidden_layers: 4,
        num_attention_heads: 8,
        ..TinySpec::default()
    }
}

/// The model written to `dir` with fresh adapters, its base frozen and its matrices in
/// `matrix_dtype`.
fn model(
    spec: &TinySpec,
    dir: &Path,
    matrix_dtype: Option<FloatDType>,
    device: &Device,
) -> Phi3V<B> {
    let tokenizer = root().join("crates/phi3v-processor/tests/data/tokenizer/tokenizer.json");
    spec.write(dir, &tokenizer)
        .expect("write the tiny model dir");
    let resolved = ModelDir::resolve(dir.to_str().expect("UTF-8 path")).expect("model folder");
    let model = resolved
        .load_model_with::<B>(device, matrix_dtype)
        .expect("load the tiny model dir");
    let mut model = burn::module::Module::no_grad(model);
    let mut plan = AdapterPlan::reference(true, false);
    plan.lora = LoraConfig {
        rank: RANK,
        alpha: ALPHA,
        ..LoraConfig::default()
    };
    let adapted = plan.apply(&mut model, device).expect("adapter plan");
    // 4 per decoder layer, lm_head, 2 x 6 CLIP layers (the third is not run), 2 projections.
    assert_eq!(
        adapted.len(),
        4 * spec.num_hidden_layers + 15,
        "adapted modules: {adapted:?}"
    );
    model
}

/// One batch: `input_ids` (`[batch, 67]`), where its loss is taken, and `batch` images of
/// 5 tiles each.
struct Batch {
    ids: InputIds<B>,
    targets: LossTargets<B>,
    images: ImageInput<B>,
    tokens: usize,
}

/// The fixture's sample `batch` times, collated and uploaded as the trainer does it
/// (`collate_training`, then `BatchTensors`).
fn batch(batch: usize, device: &Device) -> Batch {
    let inputs =
        Weights::open(root().join("crates/phi3v-train/tests/data/lora_step/inputs.safetensors"))
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
    let grid = (grid[0] as usize, grid[1] as usize);
    assert_eq!(grid, (2, 2));
    let placeholders = ids.iter().filter(|&&id| id < 0).count();
    assert_eq!(
        placeholders,
        phi3v::vision::image_token_count(2, 2, 2),
        "the fixture's placeholders fit TinySpec's 56 px crops"
    );
    // The fixture's 5 tiles are what the processor gives a 2x2-crop image with num_crops 4.
    let image = ProcessedImage {
        pixel_values: pixels,
        shape: [pshape[0], pshape[1], pshape[2], pshape[3]],
        image_size: [grid.0 * pshape[2], grid.1 * pshape[3]],
        crops: grid,
        num_tokens: placeholders,
    };
    let sample = SampleRef {
        input_ids: &ids,
        labels: Some(&labels),
        images: std::slice::from_ref(&image),
    };
    let collated = collate_training(&vec![sample; batch]).expect("collate the fixture");
    let tensors = BatchTensors::new(&collated, device).expect("upload the batch");
    Batch {
        ids: tensors.input_ids,
        targets: tensors.loss_targets.expect("training labels"),
        images: tensors.images.expect("the fixture's image"),
        tokens: tensors.tokens,
    }
}

/// One update of `b` (see [`lora_update`]), recomputing each layer when `recompute`.
fn step(
    model: &mut Phi3V<B>,
    optimizer: &mut AdamW<Inner>,
    b: &Batch,
    recompute: bool,
) -> (f64, f64) {
    let backprop = if recompute {
        Backprop::Recompute
    } else {
        Backprop::HeadLoss
    };
    lora_update(
        model,
        optimizer,
        b.ids.clone(),
        Some(&b.images),
        &b.targets,
        backprop,
        LR,
        MAX_GRAD_NORM,
    )
}

/// A model, its optimizer and a batch, ready to step.
struct Setup {
    model: Phi3V<B>,
    optimizer: AdamW<Inner>,
    input: Batch,
}

/// One bench variant: set up on first use (so a filtered-out variant allocates nothing),
/// checked by a first step, then timed.
fn variant(
    group: &mut BenchmarkGroup<WallTime>,
    name: &str,
    spec: &TinySpec,
    dir: &Path,
    size: usize,
    matrix_dtype: Option<FloatDType>,
    recompute: bool,
) {
    let device = Default::default();
    let tokens = (size * 67) as u64;
    let mut setup: Option<Setup> = None;
    group.throughput(Throughput::Elements(tokens));
    group.bench_function(name, |bencher| {
        let s = setup.get_or_insert_with(|| {
            let mut model = model(spec, dir, matrix_dtype, &device);
            let mut optimizer = AdamW::new(AdamWConfig::default());
            let input = batch(size, &device);
            assert_eq!(input.tokens as u64, tokens);
            eprintln!("{name}: peak RSS after loading the model {}", peak_rss());
            let (loss, norm) = step(&mut model, &mut optimizer, &input, recompute);
            assert!(
                loss.is_finite() && norm.is_finite(),
                "loss {loss}, gradient norm {norm}"
            );
            eprintln!("{name}: first step loss {loss:.4}, gradient norm {norm:.4}");
            Setup {
                model,
                optimizer,
                input,
            }
        });
        bencher.iter(|| black_box(step(&mut s.model, &mut s.optimizer, &s.input, recompute)))
    });
    if setup.is_some() {
        eprintln!("{name}: peak RSS after the bench {}", peak_rss());
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("training_step_{NAME}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    let bf16 = Some(FloatDType::BF16);
    let (tiny, tiny_dir) = (TinySpec::default(), model_dir());
    let (wide, wide_dir) = (wide_spec(), root().join("target/bench-wide-phi3v"));
    // (name, model, batch size, base matrices, recompute). Batch 1 first, so the peak
    // printed after it is its own.
    let variants = [
        ("batch1_seq67", &tiny, &tiny_dir, 1, None, false),
        ("batch8_seq67", &tiny, &tiny_dir, 8, None, false),
        ("batch8_seq67_bf16_base", &tiny, &tiny_dir, 8, bf16, false),
        ("batch8_seq67_recompute", &tiny, &tiny_dir, 8, None, true),
        ("wide_batch8_seq67", &wide, &wide_dir, 8, None, false),
        (
            "wide_batch8_seq67_bf16_base",
            &wide,
            &wide_dir,
            8,
            bf16,
            false,
        ),
        (
            "wide_batch8_seq67_recompute",
            &wide,
            &wide_dir,
            8,
            None,
            true,
        ),
    ];
    // wgpu has no bf16 (WGSL has no such type): its bf16-base variants are skipped.
    let bf16_supported = Selected::supports_dtype(&Default::default(), DType::BF16);
    for (name, spec, dir, size, matrices, recompute) in variants {
        if matrices.is_some() && !bf16_supported {
            eprintln!("{name}: skipped, {NAME} has no bf16");
            continue;
        }
        variant(&mut group, name, spec, dir, size, matrices, recompute);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

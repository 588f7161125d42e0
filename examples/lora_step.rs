//! LoRA training steps on one photo at any model's widths: the Rust side of the "LoRA step"
//! rows of docs/benchmarks.md ("Full size"), timed step by step.
//!
//! ```text
//! # the released widths cut to 2 decoder and 2 CLIP layers, num_crops 4, against PyTorch + PEFT
//! cargo build --release -p phi3v-testkit --example write_random_model
//! target/release/examples/write_random_model --preset wide --seed 0 --out /tmp/wide \
//!     --tokenizer crates/phi3v-processor/tests/data/tokenizer/tokenizer.json
//! cargo run --release --example lora_step -- --model /tmp/wide --num-crops 4
//! cargo run --release --example lora_step -- --model /tmp/wide --num-crops 4 --full-logits
//! (cd scripts && ~/venv/bin/python bench_training_reference.py --model /tmp/wide --num-crops 4)
//! ```
//!
//! The sample is one chat turn, `<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n
//! <|assistant|>\n` followed by a Burberry-style answer and the chat suffix, over
//! `benches/data/photo_800x1000.jpg` (or `--photo`) at `--num-crops`; labels cover the answer
//! only, as in training. scripts/bench_training_reference.py builds the same sample from the
//! same strings, tokenizer and photo.
//!
//! A step is what `phi3v train` does for one update of batch 1: forward, loss, backward
//! (recomputing each layer when `--recompute`), gradient collection, global-norm clipping at 1.0
//! and AdamW. Adapters: the reference recipe's targets (every decoder projection, `lm_head`,
//! the CLIP tower and the image projection), rank `--rank`, alpha twice the rank, no dropout.
//!
//! The loss runs `lm_head` on the answer positions only (`Phi3Model::head_loss`);
//! `--full-logits` computes every position's logits first, as PyTorch does, for a count of
//! equal arithmetic.
//!
//! Prints each step's time, the median after the first (which also pays for first-touch page
//! faults), tokens per second from it, and the peak resident set.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use clap::Parser;
use phi3v::nn::{memory, BaseDtype, LoraConfig, NamedLinears, ProductDtype};
use phi3v::processor::prompt::ANSWER_SUFFIX;
use phi3v::{BatchTensors, ModelDir};
use phi3v_peft::AdapterPlan;
use phi3v_suite::backend::{SelectedAutodiff, NAME};
use phi3v_suite::lora_update::{lora_update, peak_rss, Backprop};
use phi3v_train::optim::{AdamW, AdamWConfig};

type B = SelectedAutodiff;

/// The prompt of the sample (scripts/bench_training_reference.py holds the same text).
const PROMPT: &str = "<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n";
/// The answer of the sample, before the chat suffix.
const ANSWER: &str =
    "Product: Vintage Check Cotton Trench Coat, Category: Coats, Full Price: 2290.0";
const LR: f64 = 4e-5;
const MAX_GRAD_NORM: f64 = 1.0;

#[derive(Parser)]
#[command(about = "Time LoRA training steps on one photo at any model's widths")]
struct Args {
    /// A Hugging Face-layout model folder.
    #[arg(long)]
    model: String,
    /// The photo of the sample.
    #[arg(long, default_value = "benches/data/photo_800x1000.jpg")]
    photo: PathBuf,
    /// Crops of the HD transform.
    #[arg(long, default_value_t = 4)]
    num_crops: usize,
    /// LoRA rank (alpha is twice the rank).
    #[arg(long, default_value_t = 64)]
    rank: usize,
    /// Steps to run; the first is reported apart.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// How the frozen base's matrices are held: f32 (equal arithmetic with PyTorch's f32),
    /// bf16, or auto.
    #[arg(long, default_value = "f32", value_parser = phi3v_cli::train_args::base_dtype_parser())]
    base_dtype: BaseDtype,
    /// The arithmetic of the products with the frozen base: f32 (equal arithmetic with
    /// PyTorch's f32) or bf16 (activations rounded to bf16, as PyTorch's bf16 autocast).
    #[arg(long, default_value = "f32", value_parser = phi3v_cli::train_args::product_dtype_parser())]
    product_dtype: ProductDtype,
    /// Recompute each layer in the backward pass instead of keeping its activations.
    #[arg(long, default_value_t = false)]
    recompute: bool,
    /// Compute every position's logits before the loss, as PyTorch does.
    #[arg(long, default_value_t = false)]
    full_logits: bool,
}

/// The sample's tensors: `input_ids` and `labels` `[1, seq]`, the photo's tiles.
fn sample(dir: &ModelDir, args: &Args, device: &Device<B>) -> BatchTensors<B> {
    let config = dir.config().expect("config.json");
    let mut image_config = dir.processor_config(&config).expect("preprocessor config");
    image_config.num_crops = args.num_crops;
    let processor = phi3v::processor::Processor::new(
        phi3v::processor::tokenize::Phi3Tokenizer::from_file(dir.tokenizer_path())
            .expect("tokenizer"),
        Some(
            phi3v::processor::image_processor::ImageProcessor::new(image_config)
                .expect("num crops"),
        ),
    );
    let photos = std::slice::from_ref(&args.photo);
    let prompt = processor.process_paths(PROMPT, photos).expect("the prompt");
    let text = format!("{PROMPT}{ANSWER}{ANSWER_SUFFIX}");
    let mut batch = processor.process_paths(&text, photos).expect("the sample");
    let prompt_len = prompt.input_ids.len();
    assert_eq!(
        &batch.input_ids[..prompt_len],
        &prompt.input_ids[..],
        "the answer continues the prompt's tokens"
    );
    let labels: Vec<i64> = batch
        .input_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| if i < prompt_len { -100 } else { id })
        .collect();
    batch.labels = Some(labels);
    BatchTensors::new(&batch, device).expect("upload the sample")
}

fn main() {
    let args = Args::parse();
    // As the `phi3v` command does (see `phi3v_nn::heap`).
    phi3v::nn::heap::keep_freed_buffers();
    assert!(
        args.steps >= 2,
        "--steps must be at least 2: the first is reported apart"
    );
    let device = Default::default();
    let dir = ModelDir::resolve(&args.model).expect("model folder");
    let (model, storage) = dir
        .load_trainable::<B>(&device, args.base_dtype)
        .expect("load the model");
    let mut model = model.no_grad();
    model.set_products(args.product_dtype);
    let mut plan = AdapterPlan::reference(true, false);
    plan.lora = LoraConfig {
        rank: args.rank,
        alpha: 2.0 * args.rank as f64,
        ..LoraConfig::default()
    };
    let adapted = plan.apply(&mut model, &device).expect("adapter plan");
    let input = sample(&dir, &args, &device);
    let tokens = input.tokens;
    let answer_tokens = input.target_tokens;
    eprintln!(
        "{NAME}: {} adapted modules, rank {}; weights {} resident, matrices in {}, products in {}; sample {tokens} \
         tokens ({answer_tokens} labelled), num_crops {}, {}, {}",
        adapted.len(),
        args.rank,
        memory::gb(memory::resident_bytes(&model)),
        storage.name(),
        args.product_dtype.name(),
        args.num_crops,
        if args.recompute { "recomputation" } else { "plain backpropagation" },
        if args.full_logits { "every position's logits" } else { "logits of the answer only" },
    );
    let backprop = match (args.recompute, args.full_logits) {
        (true, _) => Backprop::Recompute,
        (false, true) => Backprop::FullLogits,
        (false, false) => Backprop::HeadLoss,
    };
    let mut optimizer = AdamW::new(AdamWConfig::default());
    let mut times = Vec::new();
    for i in 0..args.steps {
        let start = Instant::now();
        let (loss, norm) = lora_update(
            &mut model,
            &mut optimizer,
            input.input_ids.clone(),
            input.images.as_ref(),
            input.loss_targets.as_ref().expect("training labels"),
            backprop,
            LR,
            MAX_GRAD_NORM,
        );
        let secs = start.elapsed().as_secs_f64();
        assert!(
            loss.is_finite() && norm.is_finite(),
            "loss {loss}, gradient norm {norm}"
        );
        eprintln!(
            "step {}: {secs:.2} s, loss {loss:.4}, gradient norm {norm:.4}",
            i + 1
        );
        if i > 0 {
            times.push(secs);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "lora step ({NAME}): median {median:.2} s over {} steps after the first, {:.1} tokens/s \
         ({tokens} tokens), peak RSS {}",
        times.len(),
        tokens as f64 / median,
        peak_rss()
    );
}

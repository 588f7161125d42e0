//! `phi3v`: run Phi-3-Vision model dirs, make sample data, fine-tune with LoRA, evaluate
//! and merge adapters, from the command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use phi3_decoder::{DecodingConfig, GenerateOptions};
use phi3v::nn::{BaseDtype, ProductDtype};
use phi3v_cli::train_args::{base_dtype_parser, product_dtype_parser};
use phi3v_cli::{with_backend, BackendChoice};
use phi3v_data::sample_data::{SampleImageFormat, SamplePreset};

/// Phi-3-Vision in Rust: generate text about images, check a model dir against the
/// Python reference, make sample data, fine-tune, evaluate and merge adapters.
///
/// A MODEL is a folder laid out as Hugging Face lays it out (config.json,
/// preprocessor_config.json, tokenizer.json, safetensors single or sharded), or a model id
/// such as microsoft/Phi-3-vision-128k-instruct already in the local Hugging Face cache.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Tensor backend for generation, training and evaluation (`logits` always runs f32 on
    /// the CPU).
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex, global = true)]
    backend: BackendChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an answer about images, streaming it to the terminal.
    ///
    /// Example: phi3v generate --model ./Phi-3-vision-128k-instruct --image coat.jpg
    ///          --prompt "What is shown in this image?"
    ///
    /// A prompt without chat tags becomes one user turn, with <|image_N|> tags added for
    /// the images it does not mention; a prompt with chat tags is used as it is.
    Generate {
        #[arg(long)]
        model: String,
        #[arg(long)]
        prompt: String,
        /// An image file, or an http(s) URL fetched through the same download cache as
        /// catalogue images; repeat for several (the first is <|image_1|>).
        #[arg(long)]
        image: Vec<String>,
        #[arg(long, default_value_t = 256)]
        max_new_tokens: usize,
        /// Sampling temperature, >= 0; 0 is greedy decoding.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Sample among the K most likely tokens (K >= 1).
        #[arg(long)]
        top_k: Option<usize>,
        /// Sample among the most likely tokens whose probability reaches P, in (0, 1].
        #[arg(long)]
        top_p: Option<f32>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also print the generated token ids.
        #[arg(long)]
        print_ids: bool,
        /// How the model's large matrices are held: bf16 halves the memory (products
        /// still accumulate in f32), f32 keeps the weights exact, auto is bf16 where the
        /// backend can hold it; q8 and q4 quantize the linear weights in blocks of 32.
        #[arg(long, default_value = "auto", value_parser = base_dtype_parser())]
        base_dtype: BaseDtype,
        /// The arithmetic of the products with the base: f32 (the reference's) or bf16
        /// (activations rounded to bf16, sums in f32, as PyTorch's bf16 autocast; twice the
        /// rate on CPUs with AVX512-BF16). Not with a q8 or q4 base.
        #[arg(long, default_value = "f32", value_parser = product_dtype_parser())]
        product_dtype: ProductDtype,
    },
    /// Write the input ids and logits of one forward pass to a safetensors file.
    ///
    /// This is the tool for checking a model dir against the Python reference: the
    /// prompt is tokenized exactly as the reference processor does (each text chunk with
    /// BOS, <|image_N|> replaced by image N's placeholder ids), the forward runs in f32 (on
    /// the CPU unless --backend says otherwise), and the file holds `input_ids` (i64, [seq]) and `logits` (f32, [seq,
    /// vocab]) to compare with the reference's.
    Logits {
        #[arg(long)]
        model: String,
        /// The exact text, chat tags included.
        #[arg(long)]
        prompt: String,
        #[arg(long)]
        image: Vec<String>,
        /// The safetensors file to write (outside the model dir and the images).
        #[arg(long)]
        out: PathBuf,
        /// Replace --out if it exists.
        #[arg(long)]
        overwrite: bool,
        /// How the model's large matrices are held (bf16, f32, auto, q8 or q4). The forward
        /// computes in f32 either way; f32, the default, gives the reference's weights
        /// exactly.
        #[arg(long, default_value = "f32", value_parser = base_dtype_parser())]
        base_dtype: BaseDtype,
        /// The arithmetic of the products with the base: f32 (the reference's) or bf16
        /// (activations rounded to bf16, sums in f32, as PyTorch's bf16 autocast; twice the
        /// rate on CPUs with AVX512-BF16). Not with a q8 or q4 base.
        #[arg(long, default_value = "f32", value_parser = product_dtype_parser())]
        product_dtype: ProductDtype,
    },
    /// Write a synthetic product catalogue (parquet with the Burberry schema, plus drawn
    /// product photos) for testing and learning without real data. The furniture preset
    /// also writes its rows as conversation records (conversations.jsonl).
    SampleData {
        #[arg(long, default_value_t = 200)]
        rows: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder; an existing non-empty one is refused unless --overwrite.
        #[arg(long, default_value = "sample-data")]
        out: PathBuf,
        /// Replace the contents of a non-empty --out as a whole (no old images remain).
        #[arg(long)]
        overwrite: bool,
        /// Share of deliberately broken rows, in [0, 1], to exercise error reporting.
        #[arg(long, default_value_t = 0.0)]
        faults: f64,
        /// Side of the square product photos, in pixels (16 to 4096).
        #[arg(long, default_value_t = 128)]
        image_size: u32,
        /// Picture encoding.
        #[arg(long, default_value = "png", value_parser = PossibleValuesParser::new(SampleImageFormat::NAMES).try_map(|s| s.parse::<SampleImageFormat>()))]
        format: SampleImageFormat,
        /// Which catalogue: burberry (the Burberry schema; the built-in task and
        /// tasks/burberry.toml) or furniture (name, type, width_cm; tasks/furniture.toml).
        #[arg(long, default_value = "burberry", value_parser = PossibleValuesParser::new(SamplePreset::NAMES).try_map(|s| s.parse::<SamplePreset>()))]
        preset: SamplePreset,
    },
    /// Fine-tune with LoRA adapters on a product catalogue.
    ///
    /// Writes a run directory (config, metrics.jsonl, TensorBoard events, evaluation
    /// tables, checkpoints, the PEFT adapter, summary.json and report.html). A run killed
    /// at any point continues with --resume. Without --model a tiny random Phi-3-V is
    /// trained (give --tokenizer); without --data a sample catalogue is generated.
    Train(Box<phi3v_cli::TrainArgs>),
    /// Score a model, optionally with a PEFT adapter, on a catalogue's validation split:
    /// generated answers against the truth and the trivial baselines.
    Eval {
        #[arg(long)]
        model: String,
        /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Catalogue file (parquet, CSV, JSON lines), or conversation records (JSON lines
        /// of {"messages": [...], "images": [...]}, told by the `messages` key).
        #[arg(long)]
        data: PathBuf,
        /// A task file (see docs/tasks.md); without it, the built-in Burberry task.
        #[arg(long)]
        task: Option<PathBuf>,
        /// Crops of the HD image transform, 1 to 64 (overrides the model's preprocessor
        /// config).
        #[arg(long)]
        num_crops: Option<usize>,
        /// Validation items to generate answers for.
        #[arg(long, default_value_t = 64)]
        samples: usize,
        /// Share of products held out for validation, in (0, 1).
        #[arg(long, default_value_t = 0.15)]
        val_fraction: f64,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// Folder for eval.json (outside the model, adapter and catalogue).
        #[arg(long, default_value = "eval")]
        out: PathBuf,
        /// Replace eval.json in a non-empty --out.
        #[arg(long)]
        overwrite: bool,
        /// How the model's large matrices are held: bf16 halves the memory (products
        /// still accumulate in f32), f32 keeps the weights exact, auto is bf16 where the
        /// backend can hold it; q8 and q4 quantize the linear weights in blocks of 32.
        #[arg(long, default_value = "auto", value_parser = base_dtype_parser())]
        base_dtype: BaseDtype,
        /// The arithmetic of the products with the base: f32 (the reference's) or bf16
        /// (activations rounded to bf16, sums in f32, as PyTorch's bf16 autocast; twice the
        /// rate on CPUs with AVX512-BF16). Not with a q8 or q4 base.
        #[arg(long, default_value = "f32", value_parser = product_dtype_parser())]
        product_dtype: ProductDtype,
    },
    /// Fold a PEFT adapter into a model dir: a full model in the Hugging Face layout.
    ///
    /// Tensors the adapter does not touch are copied as stored (bf16 stays bf16); shards,
    /// index and side files keep their layout.
    Merge {
        /// Base model dir.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        adapter: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Replace a non-empty --out folder whole (an older merge, say): without it such a
        /// folder is refused, so that nothing kept there is lost by mistake.
        #[arg(long)]
        overwrite: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Large freed buffers stay in the heap for the next op (see `phi3v_nn::heap`).
    phi3v::nn::heap::keep_freed_buffers();
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Generate {
            model,
            prompt,
            image,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            print_ids,
            base_dtype,
            product_dtype,
        } => {
            let request = cli::generate::Request {
                model,
                prompt,
                images: image,
                options: GenerateOptions {
                    max_new_tokens,
                    stop_tokens: vec![32000, 32007],
                    decoding: DecodingConfig {
                        temperature,
                        top_k,
                        top_p,
                        seed,
                    },
                },
                print_ids,
                base_dtype,
                products: product_dtype,
            };
            run_generate(cli.backend, request).map_err(Into::into)
        }
        Command::Logits {
            model,
            prompt,
            image,
            out,
            overwrite,
            base_dtype,
            product_dtype,
        } => with_backend!(cli.backend, Box::<dyn std::error::Error>::from, B => {
            cli::logits::run::<B>(&model, &prompt, &image, &out, overwrite, (base_dtype, product_dtype), Default::default())
        }),
        Command::SampleData {
            rows,
            seed,
            out,
            overwrite,
            faults,
            image_size,
            format,
            preset,
        } => cli::sample::run(cli::sample::Options {
            rows,
            seed,
            out,
            overwrite,
            faults,
            image_size,
            format,
            preset,
        })
        .map_err(Into::into),
        Command::Train(args) => cli::train::run(cli.backend, &args).map_err(Into::into),
        Command::Eval {
            model,
            adapter,
            data,
            task,
            num_crops,
            samples,
            val_fraction,
            max_new_tokens,
            out,
            overwrite,
            base_dtype,
            product_dtype,
        } => cli::train::eval(
            cli.backend,
            overwrite,
            task.as_deref(),
            &phi3v_train::job::EvalJob {
                model,
                adapter,
                data,
                split: phi3v_data::split::SplitConfig {
                    seed: 42,
                    validation_fraction: val_fraction,
                },
                num_crops,
                samples,
                batch_size: 8,
                max_new_tokens,
                out,
                base_dtype,
                products: product_dtype,
            },
        ),
        Command::Merge {
            model,
            adapter,
            out,
            overwrite,
        } => cli::train::merge(&model, &adapter, &out, overwrite).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_generate(
    backend: BackendChoice,
    request: cli::generate::Request,
) -> Result<(), phi3v::Phi3VError> {
    with_backend!(backend, phi3v::Phi3VError::Input, B => {
        cli::generate::run::<B>(request, Default::default())
    })
}

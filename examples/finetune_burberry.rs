//! Fine-tune Phi-3-V to read a product's title, category and price from its photo.
//!
//! With no arguments (the README's main command) it runs the whole job on the CPU in a few
//! minutes: it generates a synthetic Burberry-style catalogue, writes a tiny random Phi-3-V,
//! fine-tunes adapters on it through the task file `tasks/burberry.toml`, evaluates
//! generated answers field by field against the baselines, and leaves a run directory with
//! metrics, checkpoints, a PEFT adapter and `report.html`. Given `--data` without `--task`,
//! it reads the catalogue with the built-in Burberry task, which scores the same fields.
//!
//! ```text
//! cargo run --example finetune_burberry
//! cargo run --release --example finetune_burberry -- --model ./Phi-3-vision-128k-instruct \
//!     --data burberry_us.parquet --backend cuda --features cuda
//! ```
//!
//! Every flag of `phi3v train` is accepted (`--help` lists them): both parse the same
//! [`TrainArgs`] and run the same job.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use phi3v_cli::summary::{describe_run, format_summary};
use phi3v_cli::training::run_training;
use phi3v_cli::{with_backend, BackendChoice, TrainArgs};
use phi3v_train::TrainError;

#[derive(Debug, Parser)]
#[command(
    about = "Fine-tune Phi-3-V on a product catalogue (sample data and a tiny model by default)"
)]
struct Cli {
    /// Tensor backend; wgpu and cuda need the matching cargo feature.
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
    #[command(flatten)]
    train: TrainArgs,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // Large freed buffers stay in the heap for the next op (see `phi3v_nn::heap`).
    phi3v::nn::heap::keep_freed_buffers();
    if cli.train.model.is_none() && cli.train.tokenizer.is_none() {
        // The real Phi-3 vocabulary, shipped with the repository's test fixtures.
        cli.train.tokenizer = Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("crates/phi3v-processor/tests/data/tokenizer/tokenizer.json"),
        );
    }
    if cli.train.task.is_none() && cli.train.data.is_none() {
        // The reference task as a task file, on the sample catalogue it generates: what a
        // user copies to describe their own catalogue (docs/tasks.md).
        cli.train.task =
            Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tasks/burberry.toml"));
    }
    let run = || -> Result<_, TrainError> {
        let spec = cli.train.job()?;
        with_backend!(cli.backend, TrainError::Config, B => {
            run_training::<B>(spec, Default::default())
        })
    };
    match run() {
        Ok((job, summary)) => {
            print!("{}", format_summary(&summary));
            println!("{}", describe_run(&job.settings.run_dir));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

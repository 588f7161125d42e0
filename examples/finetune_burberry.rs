//! Fine-tune Phi-3-V to read a product's title, category and price from its photo.
//!
//! With no arguments (the README's main command) it runs the whole job on the CPU in a few
//! minutes: it generates a synthetic Burberry-style catalogue, writes a tiny random Phi-3-V,
//! fine-tunes adapters on it, evaluates generated answers against the baselines, and leaves
//! a run directory with metrics, checkpoints, a PEFT adapter and `report.html`.
//!
//! ```text
//! cargo run --example finetune_burberry
//! cargo run --release --example finetune_burberry -- --model ./Phi-3-vision-128k-instruct \
//!     --data burberry_us.parquet --backend cuda --features cuda
//! ```
//!
//! Every flag of `phi3v train` is accepted (`--help` lists them).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use phi3v_lora::cli::TrainArgs;
use phi3v_lora::job::{describe_run, run_job, JobConfig};
use phi3v_lora::trainer::RunSummary;
use phi3v_lora::LoraError;

#[derive(Debug, Parser)]
#[command(
    about = "Fine-tune Phi-3-V on a product catalogue (sample data and a tiny model by default)"
)]
struct Cli {
    /// Tensor backend; wgpu and cuda need the matching cargo feature.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    backend: Backend,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    Flex,
    Wgpu,
    Cuda,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if cli.train.model.is_none() && cli.train.tokenizer.is_none() {
        // The real Phi-3 vocabulary, shipped with the repository's test fixtures.
        cli.train.tokenizer = Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("crates/phi3v-data/tests/data/tokenizer/tokenizer.json"),
        );
    }
    match cli
        .train
        .job()
        .and_then(|job| run(cli.backend, &job).map(|s| (job, s)))
    {
        Ok((job, summary)) => {
            print_summary(&summary);
            println!("{}", describe_run(&job.run_dir));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(backend: Backend, job: &JobConfig) -> Result<RunSummary, LoraError> {
    match backend {
        Backend::Flex => run_job::<burn::backend::Flex>(job, Default::default()),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => run_job::<burn::backend::Wgpu>(job, Default::default()),
        #[cfg(feature = "cuda")]
        Backend::Cuda => run_job::<burn::backend::Cuda>(job, Default::default()),
        #[allow(unreachable_patterns)]
        other => Err(LoraError::Config(format!(
            "--backend {other:?} is not compiled in: add `--features {}`",
            format!("{other:?}").to_lowercase()
        ))),
    }
}

fn print_summary(s: &RunSummary) {
    let b = &s.baselines.scores;
    println!(
        "\n{} after {} updates in {:.0} s",
        s.stop_reason, s.steps, s.elapsed_secs
    );
    if let Some(e) = &s.final_eval {
        let m = &e.scores;
        let mark = |ok: bool| if ok { "beats" } else { "does NOT beat" };
        println!("validation loss     {:.4}", e.val_loss);
        println!(
            "category accuracy   {:.3}  {} the majority class ({}) at {:.3}",
            m.category_accuracy,
            mark(s.beats_category_baseline),
            s.baselines.majority_category,
            b.category_accuracy
        );
        println!(
            "price MAE           {:.1}  {} the mean price ({:.1}) at {:.1}",
            m.price_mae,
            mark(s.beats_price_baseline),
            s.baselines.mean_price,
            b.price_mae
        );
        println!(
            "price MAPE          {:.1}%  (baseline {:.1}%)",
            m.price_mape, b.price_mape
        );
        println!("title exact match   {:.3}", m.title_exact_match);
        println!("unparsable answers  {:.3}", m.unparsable_rate);
    }
}

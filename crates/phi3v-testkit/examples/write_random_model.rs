//! Writes a random Phi-3-V model dir of a named size, streamed tensor by tensor.
//!
//! For exercising loaders, memory limits and export paths on the released shapes without
//! downloading the released weights:
//!
//! ```text
//! cargo run --release -p phi3v-testkit --example write_random_model -- \
//!     --preset full --seed 0 --out /tmp/phi3v-full --tokenizer tokenizer.json
//! ```
//!
//! The dir is written into a hidden sibling and renamed into place when complete, so an
//! interrupted 8 GB write never looks like a model dir. Without `--tokenizer` the dir gets a
//! placeholder `tokenizer.json` (`{}`): enough to load the weights, not to run the processor.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use phi3v_io::StagedDir;
use phi3v_testkit::{Preset, StorageDtype};

#[derive(Parser)]
struct Args {
    /// tiny, wide or full.
    #[arg(long, default_value = "tiny")]
    preset: Preset,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The model dir to write; refused if it holds something, unless --overwrite.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    overwrite: bool,
    /// A `tokenizer.json` to copy in (the released one fits every preset).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Overrides the preset's storage dtype (f32 or bf16).
    #[arg(long)]
    dtype: Option<StorageDtype>,
    /// Overrides the preset's number of weight files.
    #[arg(long)]
    shards: Option<usize>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut spec = args.preset.spec();
    spec.seed = args.seed;
    spec.dtype = args.dtype.unwrap_or(spec.dtype);
    spec.shards = args.shards.unwrap_or(spec.shards);
    let params = spec.parameter_count()?;
    println!(
        "preset {}: {params} parameters ({:.3}B), {:?}, {} shard(s), draws {:?}",
        args.preset.name(),
        params as f64 / 1e9,
        spec.dtype,
        spec.shards,
        spec.draws
    );
    let start = Instant::now();
    let staged = StagedDir::new(&args.out, "--out", args.overwrite)?;
    let placeholder;
    let tokenizer = match &args.tokenizer {
        Some(path) => path.clone(),
        None => {
            placeholder = tempfile::NamedTempFile::new()?;
            std::fs::write(placeholder.path(), "{}")?;
            placeholder.path().to_path_buf()
        }
    };
    let written = spec.write_model(staged.path(), &tokenizer)?;
    let out = staged.commit()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wrote {} in {secs:.1} s: {} weight bytes ({:.2} GB) in {} file(s), {:.0} MB/s",
        out.display(),
        written.weight_bytes,
        written.weight_bytes as f64 / 1e9,
        written.weight_files.len(),
        written.weight_bytes as f64 / 1e6 / secs
    );
    Ok(())
}

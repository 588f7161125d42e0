//! Writes a sample Burberry-shaped catalogue (parquet + product pictures + fault list).
//!
//! ```text
//! phi3v-sample-data --rows 2000 --seed 7 --out data/sample --faults 0.05 --image-size 128
//! ```
//!
//! A thin wrapper over [`phi3v_data::sample_data::generate`], which the `phi3v` command calls
//! too.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use phi3v_data::sample_data::{generate, SampleConfig, SampleImageFormat};

/// Generate a sample product catalogue with procedurally drawn product photos.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Number of products.
    #[arg(long, default_value_t = 200)]
    rows: usize,
    /// Seed: the same seed writes the same catalogue.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (catalogue.parquet, images/, faults.json).
    #[arg(long, default_value = "sample-data")]
    out: PathBuf,
    /// Share of deliberately broken rows, in [0, 1] (listed in faults.json).
    #[arg(long, default_value_t = 0.0)]
    faults: f64,
    /// Side of the square product pictures, in pixels.
    #[arg(long, default_value_t = 128)]
    image_size: u32,
    /// Picture encoding.
    #[arg(long, value_enum, default_value_t = SampleImageFormat::Png)]
    format: SampleImageFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = SampleConfig {
        rows: args.rows,
        seed: args.seed,
        out_dir: args.out,
        faults: args.faults,
        image_size: args.image_size,
        image_format: args.format,
        ..SampleConfig::default()
    };
    let start = Instant::now();
    match generate(&config) {
        Ok(summary) => {
            println!(
                "wrote {} rows ({} images, {} faults) to {} in {:.2} s",
                summary.rows,
                summary.images_written,
                summary.faults.len(),
                summary.catalogue.display(),
                start.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

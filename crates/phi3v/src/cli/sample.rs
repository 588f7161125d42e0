//! `phi3v sample-data`: a synthetic Burberry-shaped catalogue with drawn product photos.

use std::path::PathBuf;
use std::time::Instant;

use phi3v::data::sample_data::{generate, SampleConfig};
use phi3v::Phi3VError;

pub fn run(
    rows: usize,
    seed: u64,
    out: PathBuf,
    faults: f64,
    image_size: u32,
) -> Result<(), Phi3VError> {
    let config = SampleConfig {
        rows,
        seed,
        out_dir: out,
        faults,
        image_size,
        ..SampleConfig::default()
    };
    let start = Instant::now();
    let summary = generate(&config)?;
    println!(
        "wrote {} rows ({} images, {} injected faults) to {} in {:.2} s",
        summary.rows,
        summary.images_written,
        summary.faults.len(),
        summary.catalogue.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

//! `phi3v sample-data`: a synthetic catalogue with drawn product photos, of the Burberry
//! schema or of the furniture preset.

use std::path::PathBuf;
use std::time::Instant;

use phi3v_data::sample_data::{generate, SampleConfig, SampleImageFormat, SamplePreset};
use phi3v_data::DataError;

/// The options of `phi3v sample-data`.
pub struct Options {
    pub rows: usize,
    pub seed: u64,
    pub out: PathBuf,
    /// Replace a non-empty `out` whole.
    pub overwrite: bool,
    pub faults: f64,
    pub image_size: u32,
    pub format: SampleImageFormat,
    pub preset: SamplePreset,
}

pub fn run(o: Options) -> Result<(), DataError> {
    let config = SampleConfig {
        rows: o.rows,
        seed: o.seed,
        out_dir: o.out,
        overwrite: o.overwrite,
        faults: o.faults,
        image_size: o.image_size,
        image_format: o.format,
        preset: o.preset,
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
    if let Some(conversations) = &summary.conversations {
        println!(
            "the same rows as conversation records: {}",
            conversations.display()
        );
    }
    Ok(())
}

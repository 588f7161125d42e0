//! The sample-catalogue generator: a Burberry-shaped catalogue with procedural product photos.
//!
//! [`generate`] writes, under [`SampleConfig::out_dir`]:
//!
//! - `catalogue.parquet`: exactly the 17-column Burberry schema and types
//!   ([`BURBERRY_SCHEMA`](crate::catalogue::BURBERRY_SCHEMA)), `imageurl` holding paths
//!   relative to the folder (`images/80000013.png`);
//! - `images/`: one small product photo per row (128 px by default), drawn procedurally:
//!   coats, bags, scarves, shirts and shoes, in eight colours, plain, check or striped, with a
//!   material texture (wool, cashmere, cotton, canvas, silk, leather, suede) and, for bags and
//!   coats, a visible size;
//! - for the furniture preset, also `conversations.jsonl`: the same rows as conversation
//!   records ([`furniture::CONVERSATIONS_FILE`]);
//! - `faults.json`: the rows deliberately broken by [`SampleConfig::faults`] and the drop
//!   reason each must get ([`FaultList`]); an empty list without faults.
//!
//! The folder is written whole or not at all: everything goes into a hidden sibling of it
//! ([`phi3v_io::StagedDir`]) that is renamed into place at the end. So an interrupted run
//! leaves the folder as it was, and an existing non-empty folder is refused unless
//! [`SampleConfig::overwrite`] is set, and then replaced entirely: no picture of an earlier
//! catalogue is left beside the new one. The catalogue's image paths are relative to the
//! folder, so they hold wherever the folder is renamed or moved.
//!
//! Each title is composed from what the picture shows ("Long Beige Check Wool Coat",
//! "Small Black Leather Bag"), the category is the kind, and the full price is a product of
//! factors of kind, material, pattern and size, so a model can learn the whole answer from the
//! picture. This makes the sample data a real test of the training pipeline: a tiny model
//! should get the category and colour right quickly and the price roughly.
//!
//! Output is a function of the seed (and the settings): the products are drawn from a seeded
//! `StdRng`, faults from a second stream derived from the same seed (so the same seed with and
//! without faults gives the same products), and pictures are rendered in parallel from the
//! drawn attributes only. `StdRng` is stable within the `rand` version pinned by the workspace.
//!
//! ```no_run
//! use phi3v_data::sample_data::{generate, SampleConfig};
//!
//! let summary = generate(&SampleConfig {
//!     rows: 500,
//!     out_dir: "data/sample".into(),
//!     faults: 0.05,
//!     ..SampleConfig::default()
//! })?;
//! println!("{} rows in {}", summary.rows, summary.catalogue.display());
//! # Ok::<(), phi3v_data::DataError>(())
//! ```

mod draw;
mod faults;
pub mod furniture;
mod spec;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::RgbImage;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use faults::{FaultKind, FaultList, InjectedFault};

use phi3v_io::StagedDir;

use crate::catalogue::write_parquet;
use crate::DataError;
use spec::ProductSpec;

/// File name of the generated catalogue.
pub const CATALOGUE_FILE: &str = "catalogue.parquet";
/// File name of the fault sidecar.
pub const FAULTS_FILE: &str = "faults.json";
/// Folder of the generated images.
pub const IMAGES_DIR: &str = "images";

/// The closed local port that unreachable-URL faults point at.
const CLOSED_PORT_URL: &str = "http://127.0.0.1:1";

/// Encoding of the generated pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleImageFormat {
    /// Lossless; keeps thin pattern lines exact.
    Png,
    /// Smaller files, like real product photos (quality 90).
    Jpeg,
}

impl SampleImageFormat {
    /// Every format, by the name [`FromStr`](std::str::FromStr) reads.
    pub const NAMES: [&'static str; 2] = ["png", "jpeg"];

    fn extension(self) -> &'static str {
        match self {
            SampleImageFormat::Png => "png",
            SampleImageFormat::Jpeg => "jpg",
        }
    }
}

impl std::str::FromStr for SampleImageFormat {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "png" => Ok(Self::Png),
            "jpeg" => Ok(Self::Jpeg),
            other => Err(format!(
                "unknown image format `{other}` (expected one of {:?})",
                Self::NAMES
            )),
        }
    }
}

/// Which sample catalogue to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplePreset {
    /// The Burberry schema: clothing and accessories, title, category and price
    /// (`tasks/burberry.toml`, and the built-in task).
    #[default]
    Burberry,
    /// Other columns, answer and types: furniture with a name, a type and a width in
    /// centimetres ([`furniture`], `tasks/furniture.toml`).
    Furniture,
}

impl SamplePreset {
    /// Every preset, by the name [`FromStr`](std::str::FromStr) reads.
    pub const NAMES: [&'static str; 2] = ["burberry", "furniture"];
    /// Every preset.
    pub const ALL: [SamplePreset; 2] = [SamplePreset::Burberry, SamplePreset::Furniture];

    /// The name [`FromStr`](std::str::FromStr) reads.
    pub fn name(self) -> &'static str {
        match self {
            SamplePreset::Burberry => "burberry",
            SamplePreset::Furniture => "furniture",
        }
    }

    /// The columns of the preset's catalogue, in order: what a task over its sample data
    /// may name.
    pub fn columns(self) -> Vec<String> {
        match self {
            SamplePreset::Burberry => crate::catalogue::BURBERRY_SCHEMA
                .iter()
                .map(|(name, _)| name.to_string())
                .collect(),
            SamplePreset::Furniture => furniture::schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        }
    }
}

impl std::str::FromStr for SamplePreset {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "burberry" => Ok(Self::Burberry),
            "furniture" => Ok(Self::Furniture),
            other => Err(format!(
                "unknown sample preset `{other}` (expected one of {:?})",
                Self::NAMES
            )),
        }
    }
}

/// Settings of the generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleConfig {
    /// Number of rows (products).
    pub rows: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Output folder (created if needed). If it exists and holds anything, [`generate`]
    /// refuses it unless [`overwrite`](Self::overwrite) is set.
    pub out_dir: PathBuf,
    /// Replace an `out_dir` that already holds something (`--overwrite`), whole: nothing of
    /// its old contents is left (old pictures beside a new catalogue would look like part of
    /// it). Off by default, so a typo in `--out` cannot delete a folder.
    pub overwrite: bool,
    /// Share of rows to break, in `[0, 1]`, rounded to a whole number of rows and spread
    /// evenly over the [`FaultKind`]s.
    pub faults: f64,
    /// Side of the square pictures in pixels. Small by default so a tiny model trains fast.
    pub image_size: u32,
    /// Picture encoding.
    pub image_format: SampleImageFormat,
    /// Rows per parquet row group (several row groups exercise the streaming reader).
    pub row_group_rows: usize,
    /// Which catalogue: the Burberry schema (the default) or furniture.
    pub preset: SamplePreset,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            rows: 200,
            seed: 0,
            out_dir: PathBuf::from("sample-data"),
            overwrite: false,
            faults: 0.0,
            image_size: 128,
            image_format: SampleImageFormat::Png,
            row_group_rows: 1024,
            preset: SamplePreset::Burberry,
        }
    }
}

impl SampleConfig {
    fn validate(&self) -> Result<(), DataError> {
        if !(0.0..=1.0).contains(&self.faults) {
            return Err(DataError::InvalidConfig(format!(
                "faults (--faults) must be a fraction in [0, 1], got {}",
                self.faults
            )));
        }
        if !(16..=4096).contains(&self.image_size) {
            return Err(DataError::InvalidConfig(format!(
                "image size (--image-size) must be between 16 and 4096 pixels, got {}",
                self.image_size
            )));
        }
        if self.preset != SamplePreset::Burberry && self.faults > 0.0 {
            return Err(DataError::InvalidConfig(
                "faults (--faults) are injected into the burberry preset only".into(),
            ));
        }
        if self.row_group_rows == 0 {
            return Err(DataError::InvalidConfig(
                "row_group_rows must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What [`generate`] wrote (paths in [`SampleConfig::out_dir`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleSummary {
    /// The parquet catalogue.
    pub catalogue: PathBuf,
    /// The same rows as conversation records, for the presets that write them (furniture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<PathBuf>,
    /// The folder of pictures.
    pub images_dir: PathBuf,
    /// The fault sidecar.
    pub faults_file: PathBuf,
    /// Rows written.
    pub rows: usize,
    /// Picture files written (rows minus missing-file and unreachable-URL faults).
    pub images_written: usize,
    /// The injected faults, by row.
    pub faults: Vec<InjectedFault>,
}

/// Writes a sample catalogue, its pictures and its fault list (see the module docs).
///
/// # Errors
/// [`DataError::Output`] when `out_dir` holds something and [`SampleConfig::overwrite`] is
/// off (the folder is left untouched), or is a file; [`DataError::InvalidConfig`] for
/// settings out of range; I/O and encoding errors naming the file.
pub fn generate(config: &SampleConfig) -> Result<SampleSummary, DataError> {
    config.validate()?;
    let staged = StagedDir::new(&config.out_dir, "--out", config.overwrite)?;
    let out = staged.path();
    let images_dir = out.join(IMAGES_DIR);
    std::fs::create_dir_all(&images_dir).map_err(|source| DataError::Io {
        path: images_dir.clone(),
        source,
    })?;

    let mut rng = StdRng::seed_from_u64(config.seed);
    if config.preset == SamplePreset::Furniture {
        return generate_furniture(config, staged, &mut rng);
    }
    let specs: Vec<ProductSpec> = (0..config.rows)
        .map(|i| ProductSpec::random(&mut rng, i))
        .collect();
    let faults = choose_faults(config, &specs);
    let mut fault_of: Vec<Option<FaultKind>> = vec![None; specs.len()];
    for f in &faults {
        fault_of[f.row] = Some(f.fault);
    }

    let ext = config.image_format.extension();
    let written: Vec<bool> = specs
        .par_iter()
        .zip(fault_of.par_iter())
        .map(|(spec, fault)| -> Result<bool, DataError> {
            let path = images_dir.join(format!("{}.{ext}", spec.product_code));
            let bytes = match fault {
                Some(FaultKind::MissingFile | FaultKind::UnreachableUrl) => return Ok(false),
                Some(FaultKind::BadImageBytes) => {
                    junk_image(config.image_format, spec.product_code)
                }
                _ => encode(
                    &draw::render(spec, config.image_size),
                    config.image_format,
                    &path,
                )?,
            };
            std::fs::write(&path, bytes).map_err(|source| DataError::Io { path, source })?;
            Ok(true)
        })
        .collect::<Result<_, _>>()?;

    let products: Vec<_> = specs
        .iter()
        .zip(&fault_of)
        .map(|(spec, fault)| {
            let file = format!("{IMAGES_DIR}/{}.{ext}", spec.product_code);
            let imageurl = match fault {
                Some(FaultKind::UnreachableUrl) => format!("{CLOSED_PORT_URL}/{file}"),
                _ => file,
            };
            let mut product = spec.product(imageurl);
            match fault {
                Some(FaultKind::NanPrice) => {
                    product.full_price = f64::NAN;
                    product.full_price_eur = f64::NAN;
                }
                Some(FaultKind::EmptyTitle) => product.title.clear(),
                _ => {}
            }
            product
        })
        .collect();

    let catalogue = out.join(CATALOGUE_FILE);
    write_parquet(&catalogue, &products, config.row_group_rows)?;
    let faults_file = out.join(FAULTS_FILE);
    FaultList {
        catalogue: PathBuf::from(CATALOGUE_FILE),
        rows: config.rows,
        fraction: config.faults,
        faults: faults.clone(),
    }
    .write(&faults_file)?;
    staged.commit()?;

    let out = &config.out_dir;
    Ok(SampleSummary {
        catalogue: out.join(CATALOGUE_FILE),
        conversations: None,
        images_dir: out.join(IMAGES_DIR),
        faults_file: out.join(FAULTS_FILE),
        rows: config.rows,
        images_written: written.iter().filter(|w| **w).count(),
        faults,
    })
}

/// [`generate`] for the furniture preset, into the staged folder.
fn generate_furniture(
    config: &SampleConfig,
    staged: StagedDir,
    rng: &mut StdRng,
) -> Result<SampleSummary, DataError> {
    let out = staged.path().to_path_buf();
    let specs: Vec<furniture::FurnitureSpec> = (0..config.rows)
        .map(|i| furniture::FurnitureSpec::random(rng, i))
        .collect();
    let ext = config.image_format.extension();
    let photos: Vec<String> = specs
        .iter()
        .map(|s| format!("{IMAGES_DIR}/{}.{ext}", s.sku()))
        .collect();
    specs.par_iter().zip(photos.par_iter()).try_for_each(
        |(spec, photo)| -> Result<(), DataError> {
            let path = out.join(photo);
            let bytes = encode(
                &furniture::render(spec, config.image_size),
                config.image_format,
                &path,
            )?;
            std::fs::write(&path, bytes).map_err(|source| DataError::Io { path, source })
        },
    )?;
    furniture::write_catalogue(&out.join(CATALOGUE_FILE), &specs, &photos)?;
    furniture::write_conversations(&out.join(furniture::CONVERSATIONS_FILE), &specs, &photos)?;
    FaultList {
        catalogue: PathBuf::from(CATALOGUE_FILE),
        rows: config.rows,
        fraction: 0.0,
        faults: Vec::new(),
    }
    .write(&out.join(FAULTS_FILE))?;
    staged.commit()?;
    let out = &config.out_dir;
    Ok(SampleSummary {
        catalogue: out.join(CATALOGUE_FILE),
        conversations: Some(out.join(furniture::CONVERSATIONS_FILE)),
        images_dir: out.join(IMAGES_DIR),
        faults_file: out.join(FAULTS_FILE),
        rows: config.rows,
        images_written: config.rows,
        faults: Vec::new(),
    })
}

/// Picks `round(faults * rows)` rows from a stream seeded apart from the products', and
/// assigns the fault kinds in turn, so every kind appears once there are five faults.
fn choose_faults(config: &SampleConfig, specs: &[ProductSpec]) -> Vec<InjectedFault> {
    let n = ((config.faults * specs.len() as f64).round() as usize).min(specs.len());
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5EED_FA17_0000_0001);
    let mut rows = rand::seq::index::sample(&mut rng, specs.len(), n).into_vec();
    rows.sort_unstable();
    rows.into_iter()
        .enumerate()
        .map(|(k, row)| {
            let fault = FaultKind::ALL[k % FaultKind::ALL.len()];
            InjectedFault {
                row,
                product_code: specs[row].product_code,
                fault,
                expected_drop: fault.expected_drop(),
            }
        })
        .collect()
}

fn encode(image: &RgbImage, format: SampleImageFormat, path: &Path) -> Result<Vec<u8>, DataError> {
    let mut bytes = Vec::new();
    let result = match format {
        SampleImageFormat::Png => image.write_with_encoder(PngEncoder::new_with_quality(
            Cursor::new(&mut bytes),
            CompressionType::Fast,
            FilterType::Adaptive,
        )),
        SampleImageFormat::Jpeg => {
            image.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, 90))
        }
    };
    result.map_err(|source| DataError::ImageEncode {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(bytes)
}

/// The file signature of the format followed by junk: recognised as an image, fails to decode.
fn junk_image(format: SampleImageFormat, code: i64) -> Vec<u8> {
    let mut bytes = match format {
        SampleImageFormat::Png => vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A],
        SampleImageFormat::Jpeg => vec![0xFF, 0xD8, 0xFF, 0xE0],
    };
    let mut x = code as u64 | 1;
    bytes.extend((0..64).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    bytes
}

//! A whole fine-tuning job from a model dir, a catalogue and settings: what `phi3v train`
//! and `phi3v eval` run once the command line has resolved its presets.
//!
//! It loads the catalogue, reports and skips bad rows, splits by the task's group key,
//! loads the base model, attaches the adapters, trains with evaluation and checkpoints, and
//! leaves the run directory complete.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use phi3v::processor::image_processor::ImageProcessor;
use phi3v::processor::tokenize::Phi3Tokenizer;
use phi3v::ModelDir;
use phi3v_data::catalogue::{Catalogue, CatalogueItem};
use phi3v_data::images::{FetchConfig, ImageFetcher};
use phi3v_data::split::{split_by_product, SplitConfig};
use phi3v_nn::AttentionBackend;
use phi3v_track::EvalTable;
use serde::{Deserialize, Serialize};

use crate::dataset::TaskData;
use crate::error::TrainError;
use crate::eval::{evaluate, EvalMetrics};
use crate::task::Task;
use crate::trainer::{RunLabels, RunSummary, TrainConfig, Trainer};

/// A job's inputs. Stored as the run's `job.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobConfig {
    /// The base model: a model dir, or a model id in the local Hugging Face cache.
    pub model: String,
    /// What the report calls the base model (`a tiny random Phi-3-V`).
    pub model_label: String,
    /// The catalogue file (parquet, CSV, JSON lines).
    pub data: PathBuf,
    #[serde(flatten)]
    pub settings: JobSettings,
}

/// Everything of a job but where its model and data come from (which a command line may
/// still have to write, see `phi3v-cli`'s presets).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSettings {
    pub run_dir: PathBuf,
    pub train: TrainConfig,
    pub split: SplitConfig,
    /// Overrides the model's `num_crops` (fewer crops: fewer image tokens, faster steps).
    pub num_crops: Option<usize>,
    /// Longest training sequence; longer examples are skipped and reported.
    pub max_len: Option<usize>,
    /// Continue from the run directory's newest checkpoint.
    pub resume: bool,
}

/// Runs a job on backend `B` (a plain backend: the job wraps it in autodiff).
pub fn run_job<B: AttentionBackend, T: Task<Item = CatalogueItem>>(
    task: T,
    job: &JobConfig,
    device: B::Device,
) -> Result<RunSummary, TrainError> {
    run_job_on::<Autodiff<B>, T>(task, job, device)
}

/// Runs a job on the autodiff backend `B`.
fn run_job_on<B, T>(task: T, job: &JobConfig, device: B::Device) -> Result<RunSummary, TrainError>
where
    B: AutodiffBackend + AttentionBackend,
    B::InnerBackend: AttentionBackend,
    T: Task<Item = CatalogueItem>,
{
    let settings = &job.settings;
    std::fs::create_dir_all(&settings.run_dir).map_err(|e| TrainError::io(&settings.run_dir, e))?;
    let matrix_dtype = settings.train.base_dtype.resolve::<B>(&device)?;
    let (model_label, catalogue_path) = (job.model_label.clone(), job.data.clone());
    let data = load_data(
        &task,
        &job.model,
        &catalogue_path,
        &settings.split,
        settings.num_crops,
        settings.max_len,
        &settings.run_dir,
    )?;
    let (dir, tokenizer, train, val) = (data.dir, data.tokenizer, data.train, data.val);
    let model = dir.load_model_with_matrices::<B>(&device, matrix_dtype)?;
    let labels = RunLabels {
        title: format!("Fine-tuning {}", model_label),
        subtitle: format!(
            "data {} · {} train / {} val · backend {} · base {}{}",
            catalogue_path.display(),
            train.len(),
            val.len(),
            B::name(&device),
            if matrix_dtype.is_some() {
                "bf16"
            } else {
                "f32"
            },
            if settings.train.recompute {
                " · activation recomputation"
            } else {
                ""
            }
        ),
        base_model: Some(model_label),
    };
    let mut trainer = Trainer::new(
        model,
        settings.train.clone(),
        task,
        train,
        val,
        tokenizer,
        &settings.run_dir,
        labels,
        device,
    )?;
    crate::io::write_json(&settings.run_dir.join("job.json"), job)?;
    if settings.resume {
        match trainer.resume()? {
            Some(step) => eprintln!("resuming from step {step}"),
            None => eprintln!(
                "no checkpoint in {}: starting from step 0",
                settings.run_dir.display()
            ),
        }
    }
    trainer.run()
}

/// A model dir with the task's data split and tokenized for it.
pub struct LoadedData<T: Task> {
    pub dir: ModelDir,
    pub tokenizer: Phi3Tokenizer,
    pub train: TaskData<T>,
    pub val: TaskData<T>,
}

/// Opens the model dir's tokenizer and processor, loads the catalogue (bad rows are
/// reported to `report_dir/dropped_rows.json` and skipped), splits it by the task's group
/// key and builds the examples.
#[allow(clippy::too_many_arguments)]
pub fn load_data<T: Task<Item = CatalogueItem>>(
    task: &T,
    model: &str,
    catalogue_path: &Path,
    split: &SplitConfig,
    num_crops: Option<usize>,
    max_len: Option<usize>,
    report_dir: &Path,
) -> Result<LoadedData<T>, TrainError> {
    let dir = ModelDir::resolve(model)?;
    let config = dir.config()?;
    let mut processor_config = dir.processor_config(&config)?;
    if let Some(n) = num_crops {
        processor_config.num_crops = n;
    }
    let processor = ImageProcessor::new(processor_config)?;
    let tokenizer = Phi3Tokenizer::from_file(dir.tokenizer_path())?;
    let fetch = FetchConfig {
        progress: false,
        ..FetchConfig::default()
    };
    let loaded = Catalogue::open(catalogue_path)?.load(&ImageFetcher::new(fetch)?)?;
    if !loaded.report.dropped.is_empty() {
        std::fs::create_dir_all(report_dir).map_err(|e| TrainError::io(report_dir, e))?;
        let path = report_dir.join("dropped_rows.json");
        loaded.report.write_json(&path)?;
        eprintln!(
            "{} (details in {})",
            loaded.report.summary(),
            path.display()
        );
    }
    let split = split_by_product(loaded.items, |i| task.group(i), split);
    let (train, skipped_train) =
        TaskData::new(task, split.train, &tokenizer, processor.clone(), max_len);
    let (val, skipped_val) = TaskData::new(task, split.validation, &tokenizer, processor, max_len);
    for s in skipped_train.iter().chain(&skipped_val) {
        eprintln!("skipped {}: {}", s.origin, s.reason);
    }
    eprintln!(
        "{} training and {} validation items from {}",
        train.len(),
        val.len(),
        catalogue_path.display()
    );
    Ok(LoadedData {
        dir,
        tokenizer,
        train,
        val,
    })
}

/// What `phi3v eval` evaluates.
#[derive(Debug, Clone)]
pub struct EvalJob {
    pub model: String,
    /// A PEFT adapter directory to apply, if any.
    pub adapter: Option<PathBuf>,
    pub data: PathBuf,
    pub split: SplitConfig,
    pub num_crops: Option<usize>,
    /// Validation items to generate answers for.
    pub samples: usize,
    pub batch_size: usize,
    pub max_new_tokens: usize,
    /// Folder for `eval.json` (metrics, baselines and the table).
    pub out: PathBuf,
}

/// The outcome of [`run_eval`].
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport<T: Task> {
    pub task: String,
    pub metrics: EvalMetrics,
    pub baselines: T::Baselines,
    pub table: EvalTable,
}

/// Evaluates a model (with an optional adapter) on the validation split of a catalogue.
pub fn run_eval<B: AttentionBackend, T: Task<Item = CatalogueItem>>(
    task: T,
    job: &EvalJob,
    device: B::Device,
) -> Result<EvalReport<T>, TrainError> {
    let data = load_data(
        &task,
        &job.model,
        &job.data,
        &job.split,
        job.num_crops,
        None,
        &job.out,
    )?;
    let mut model = data.dir.load_model::<B>(&device)?;
    if let Some(adapter) = &job.adapter {
        phi3v_peft::import_peft(&mut model, adapter, &device)?;
    }
    let n = data.val.len().min(job.samples);
    let indices: Vec<usize> = (0..n).collect();
    let baselines = task.fit_baselines(&data.train.truths());
    let (metrics, rows) = evaluate(
        &model,
        &task,
        &baselines,
        &data.val,
        &data.tokenizer,
        &indices,
        &indices,
        job.batch_size,
        job.max_new_tokens,
        &device,
    )?;
    let summary = metrics.scores.iter().map(|s| s.brief()).collect();
    let report = EvalReport {
        task: task.name().to_string(),
        metrics,
        baselines,
        table: EvalTable {
            step: 0,
            rows,
            summary,
        },
    };
    std::fs::create_dir_all(&job.out).map_err(|e| TrainError::io(&job.out, e))?;
    crate::io::write_json(&job.out.join("eval.json"), &report)?;
    Ok(report)
}

//! A whole fine-tuning job from paths and settings: the shared body of
//! `examples/finetune_burberry` and `phi3v train`.
//!
//! It loads (or generates) the catalogue, reports and skips bad rows, splits by product,
//! loads (or writes) the base model, attaches the adapters, trains with evaluation and
//! checkpoints, and leaves the run directory complete.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use phi3v::data::catalogue::Catalogue;
use phi3v::data::image_processor::ImageProcessor;
use phi3v::data::images::{FetchConfig, ImageFetcher};
use phi3v::data::prompt::PromptTemplate;
use phi3v::data::sample_data::{self, SampleConfig};
use phi3v::data::split::{split_by_product, SplitConfig};
use phi3v::data::tokenize::Phi3Tokenizer;
use phi3v::ModelDir;
use phi3v_nn::AttentionBackend;
use serde::{Deserialize, Serialize};

use crate::dataset::TaskData;
use crate::error::LoraError;
use crate::tiny::TinySpec;
use crate::trainer::{RunLabels, RunSummary, TrainConfig, Trainer};

/// Where the base model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// A checkpoint folder or a model id in the local Hugging Face cache.
    Pretrained(String),
    /// A random model written to `{run}/base-model` (with this tokenizer).
    Tiny { spec: TinySpec, tokenizer: PathBuf },
}

/// Where the catalogue comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// A catalogue file (parquet, CSV, JSON lines) with the Burberry columns.
    Catalogue(PathBuf),
    /// A synthetic catalogue generated into `{run}/sample-data`.
    Sample { rows: usize, seed: u64 },
}

/// A job's inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobConfig {
    pub model: ModelSource,
    pub data: DataSource,
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
pub fn run_job<B: AttentionBackend>(
    job: &JobConfig,
    device: B::Device,
) -> Result<RunSummary, LoraError> {
    run_job_on::<Autodiff<B>>(job, device)
}

/// Runs a job on the autodiff backend `B`.
fn run_job_on<B>(job: &JobConfig, device: B::Device) -> Result<RunSummary, LoraError>
where
    B: AutodiffBackend + AttentionBackend,
    B::InnerBackend: AttentionBackend,
{
    std::fs::create_dir_all(&job.run_dir).map_err(|e| LoraError::io(&job.run_dir, e))?;
    let matrix_dtype = job.train.base_dtype.resolve::<B>(&device)?;
    let (model_dir, model_label) = prepare_model(job)?;
    let catalogue_path = prepare_data(job)?;
    let task = load_task(
        &model_dir,
        &catalogue_path,
        &job.split,
        job.num_crops,
        job.max_len,
        &job.run_dir,
    )?;
    let (dir, tokenizer, train, val) = (task.dir, task.tokenizer, task.train, task.val);
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
            if job.train.gradient_checkpointing {
                " · gradient checkpointing"
            } else {
                ""
            }
        ),
        base_model: Some(model_label),
    };
    let mut trainer = Trainer::new(
        model,
        job.train.clone(),
        train,
        val,
        tokenizer,
        &job.run_dir,
        labels,
        device,
    )?;
    crate::io::write_json(&job.run_dir.join("job.json"), job)?;
    if job.resume {
        match trainer.resume()? {
            Some(step) => eprintln!("resuming from step {step}"),
            None => eprintln!(
                "no checkpoint in {}: starting from step 0",
                job.run_dir.display()
            ),
        }
    }
    trainer.run()
}

/// A model folder with the task's data split and tokenized for it.
pub struct Task {
    pub dir: ModelDir,
    pub tokenizer: Phi3Tokenizer,
    pub train: TaskData,
    pub val: TaskData,
}

/// Opens the model folder's tokenizer and processor, loads the catalogue (bad rows are
/// reported to `report_dir/dropped_rows.json` and skipped), splits it by product and
/// builds the examples.
pub fn load_task(
    model_dir: &Path,
    catalogue_path: &Path,
    split: &SplitConfig,
    num_crops: Option<usize>,
    max_len: Option<usize>,
    report_dir: &Path,
) -> Result<Task, LoraError> {
    let dir = ModelDir::resolve(model_dir.to_str().unwrap_or_default())?;
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
        std::fs::create_dir_all(report_dir).map_err(|e| LoraError::io(report_dir, e))?;
        let path = report_dir.join("dropped_rows.json");
        loaded.report.write_json(&path)?;
        eprintln!(
            "{} (details in {})",
            loaded.report.summary(),
            path.display()
        );
    }
    let split = split_by_product(loaded.items, |i| i.product.product_code, split);
    let template = PromptTemplate::burberry();
    let (train, skipped_train) = TaskData::new(
        split.train,
        &tokenizer,
        processor.clone(),
        &template,
        max_len,
    );
    let (val, skipped_val) =
        TaskData::new(split.validation, &tokenizer, processor, &template, max_len);
    for s in skipped_train.iter().chain(&skipped_val) {
        eprintln!("skipped catalogue row {}: {}", s.row, s.reason);
    }
    eprintln!(
        "{} training and {} validation items from {}",
        train.len(),
        val.len(),
        catalogue_path.display()
    );
    Ok(Task {
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub metrics: crate::eval::EvalMetrics,
    pub baselines: crate::answer::Baselines,
    pub table: crate::tracking::EvalTable,
}

/// Evaluates a model (with an optional adapter) on the validation split of a catalogue.
pub fn run_eval<B: AttentionBackend>(
    job: &EvalJob,
    device: B::Device,
) -> Result<EvalReport, LoraError> {
    let task = load_task(
        Path::new(&job.model),
        &job.data,
        &job.split,
        job.num_crops,
        None,
        &job.out,
    )?;
    let mut model = task.dir.load_model::<B>(&device)?;
    if let Some(adapter) = &job.adapter {
        crate::peft::import_peft(&mut model, adapter, &device)?;
    }
    let n = task.val.len().min(job.samples);
    let indices: Vec<usize> = (0..n).collect();
    let (metrics, rows) = crate::eval::evaluate(
        &model,
        &task.val,
        &task.tokenizer,
        &indices,
        &indices,
        job.batch_size,
        job.max_new_tokens,
        &device,
    )?;
    let truths: Vec<_> = task.val.truths().into_iter().take(n).collect();
    let baselines = crate::answer::Baselines::fit(&task.train.truths(), &truths);
    let report = EvalReport {
        metrics,
        baselines,
        table: crate::tracking::EvalTable { step: 0, rows },
    };
    std::fs::create_dir_all(&job.out).map_err(|e| LoraError::io(&job.out, e))?;
    crate::io::write_json(&job.out.join("eval.json"), &report)?;
    Ok(report)
}

/// The base model folder and a label for it.
fn prepare_model(job: &JobConfig) -> Result<(PathBuf, String), LoraError> {
    match &job.model {
        ModelSource::Pretrained(name) => Ok((PathBuf::from(name), name.clone())),
        ModelSource::Tiny { spec, tokenizer } => {
            let dir = job.run_dir.join("base-model");
            if !dir.join("model.safetensors").is_file() {
                spec.write(&dir, tokenizer)?;
            }
            Ok((
                dir.clone(),
                format!("a tiny random Phi-3-V ({})", dir.display()),
            ))
        }
    }
}

/// The catalogue file, generating the sample one if asked.
fn prepare_data(job: &JobConfig) -> Result<PathBuf, LoraError> {
    match &job.data {
        DataSource::Catalogue(path) => Ok(path.clone()),
        DataSource::Sample { rows, seed } => {
            let out_dir = job.run_dir.join("sample-data");
            let catalogue = out_dir.join(sample_data::CATALOGUE_FILE);
            if !catalogue.is_file() {
                sample_data::generate(&SampleConfig {
                    rows: *rows,
                    seed: *seed,
                    out_dir: out_dir.clone(),
                    ..SampleConfig::default()
                })?;
            }
            Ok(catalogue)
        }
    }
}

/// Where a run's files are (for printing).
pub fn describe_run(dir: &Path) -> String {
    format!(
        "run directory {0}\n  report      {0}/report.html\n  summary     {0}/summary.json\n  adapter     {0}/adapter (PEFT)\n  tensorboard --logdir {0}/tensorboard",
        dir.display()
    )
}

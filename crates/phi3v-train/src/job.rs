//! A whole fine-tuning job from a model dir, a catalogue and settings: what `phi3v train`
//! and `phi3v eval` run once the command line has resolved its presets.
//!
//! # Everything is checked before anything is written
//!
//! [`run_job`] is [`check_job`] followed by [`CheckedJob::run`]:
//!
//! 1. [`check_settings`]: every setting ([`JobSettings::validate`]), then the run folder: a
//!    new run refuses a folder that holds another run ([`crate::run_dir::RUN_FILES`]). Needs
//!    neither the model nor the data.
//! 2. With `resume`: the folder's `job.json` is compared with this job (model, catalogue
//!    path and content, settings; see [`crate::job_diff`] for what may change), and the
//!    newest intact checkpoint is chosen ([`crate::checkpoint::newest_intact_checkpoint`]).
//! 3. The model dir's processor and tokenizer are opened, the catalogue is loaded, split
//!    and turned into examples (rows over the token budget and unusable ones are skipped
//!    and reported), and both sides of the split must have examples.
//! 4. [`CheckedJob::run`] loads the weights, and only then writes: `job.json` first, then
//!    `dropped_rows.json`, then the trainer's files.
//!
//! So nothing is written into the run folder until the run starts, and **an `Err` from
//! [`run_job`] while the folder holds no `job.json` (of this run: for a new run, none at
//! all) means the run never started**: a caller that put inputs into the run folder (the
//! command line's tiny model and sample catalogue) may remove them. A caller that wants to
//! check before writing its own inputs calls [`check_settings`] first, and [`check_job`] once
//! the model and the catalogue exist; errors from either leave the folder untouched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use phi3v::processor::image_processor::ImageProcessor;
use phi3v::processor::tokenize::Phi3Tokenizer;
use phi3v::ModelDir;
use phi3v_data::images::{FetchConfig, ImageFetcher};
use phi3v_data::report::{DropReason, Report};
use phi3v_data::split::{split_by_product, SplitConfig};
use phi3v_nn::{AttentionBackend, NamedLinears};
use phi3v_track::EvalTable;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{newest_intact_checkpoint, FileDigest, ResumePoint};
use crate::dataset::{SkipReason, SkippedItem, TaskData};
use crate::error::TrainError;
use crate::eval::{evaluate, EvalMetrics};
use crate::job_diff::{compare, StoredJob};
use crate::precision::{BaseDtype, ProductDtype};
use crate::run_dir::existing_run_files;
use crate::task::{SourceRow, Task, TaskItem};
use crate::trainer::{require, RunLabels, RunSummary, TrainConfig, Trainer};

/// Tokens one example may have at most, unless a job says otherwise: room for the largest
/// image of the released processor (16 crops: about 2,600 placeholders) and a long prompt
/// and answer, while one freak row (a 100 KB title) cannot exhaust memory.
pub const DEFAULT_MAX_TOKENS: usize = 4096;

fn default_max_tokens() -> usize {
    DEFAULT_MAX_TOKENS
}

/// A job's inputs. Stored as the run's `job.json` (with the catalogue's fingerprint, see
/// [`StoredJob`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobConfig {
    /// The base model: a model dir, or a model id in the local Hugging Face cache.
    pub model: String,
    /// What the report calls the base model (`a tiny random Phi-3-V`).
    pub model_label: String,
    /// The data file: a catalogue (parquet, CSV, JSON lines) or conversation records.
    pub data: PathBuf,
    /// The task file (`--task`) and its fingerprint: the task decides what is trained, so a
    /// resume with another task file, or with this one edited, is refused like other data.
    /// Absent for the built-in task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskFileRecord>,
    #[serde(flatten)]
    pub settings: JobSettings,
}

/// A job's task file as `job.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFileRecord {
    pub path: PathBuf,
    /// Size and sha256 of the file when the job was made.
    pub digest: FileDigest,
}

impl TaskFileRecord {
    /// Reads the task file at `path` through sha256.
    pub fn of(path: &Path) -> Result<Self, TrainError> {
        Ok(Self {
            path: path.to_path_buf(),
            digest: FileDigest::of(path).map_err(|e| TrainError::io(path, e))?,
        })
    }
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
    /// Token budget of one example (image placeholders, prompt and answer). Longer
    /// examples are skipped, named in the log and recorded in `dropped_rows.json`, not
    /// truncated: a cut example trains the wrong target, and one huge example can exhaust
    /// memory mid-run. Choose it with `num_crops`: 16 crops are about 2,600 image tokens.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Continue the run the folder holds, from its newest intact checkpoint.
    #[serde(default)]
    pub resume: bool,
    /// With `resume`: continue even though the folder's run was made from another model,
    /// other data or other settings (each change is printed), or has no intact checkpoint
    /// (then it starts over from step 0). Never deletes or overwrites another run without
    /// `resume`.
    #[serde(default)]
    pub force: bool,
}

impl JobSettings {
    /// Checks every setting (see [`TrainConfig::validate`] and [`SplitConfig::validate`]);
    /// reads and writes nothing.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.run_dir.as_os_str().is_empty() {
            return Err(TrainError::Config(
                "run folder (--run-dir) must not be empty".into(),
            ));
        }
        self.train.validate()?;
        self.split.validate()?;
        check_num_crops(self.num_crops)?;
        require(
            self.max_tokens >= 1,
            "token budget (--max-tokens)",
            ">= 1",
            self.max_tokens,
        )?;
        if self.force && !self.resume {
            return Err(TrainError::Config(
                "--force only applies with --resume (it resumes a run despite changes); it \
                 never overwrites another run: choose a new --run-dir for a new run"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn check_num_crops(num_crops: Option<usize>) -> Result<(), TrainError> {
    match num_crops {
        Some(n) => require(n >= 1, "crops (--num-crops)", ">= 1", n),
        None => Ok(()),
    }
}

/// Checks the settings and that the run folder can take the job (a new run refuses a
/// folder holding another run), without the model or the data and without writing.
pub fn check_settings(settings: &JobSettings) -> Result<(), TrainError> {
    settings.validate()?;
    let dir = &settings.run_dir;
    let refuse = |message: String| {
        Err(TrainError::RunDir {
            dir: dir.clone(),
            message,
        })
    };
    if dir.exists() && !dir.is_dir() {
        return refuse("it is not a folder".into());
    }
    let found = existing_run_files(dir);
    if !settings.resume && !found.is_empty() {
        return refuse(format!(
            "it already holds a run ({}): pass --resume to continue it, or choose a new \
             --run-dir",
            found.join(", ")
        ));
    }
    Ok(())
}

/// A job that passed every check of [`check_job`], with its data loaded; nothing has been
/// written yet.
pub struct CheckedJob<T: Task> {
    record: StoredJob,
    data: LoadedData<T>,
    resume_from: Option<ResumePoint>,
}

impl<T: Task> CheckedJob<T> {
    /// The job as `job.json` will record it (with the catalogue's fingerprint).
    pub fn record(&self) -> &StoredJob {
        &self.record
    }

    /// The loaded, split data and the report of every row left out.
    pub fn data(&self) -> &LoadedData<T> {
        &self.data
    }

    /// The checkpoint a resumed run continues from (`None`: step 0).
    pub fn resume_point(&self) -> Option<&ResumePoint> {
        self.resume_from.as_ref()
    }
}

/// Runs every check of a job (see the module documentation) and loads its data; writes
/// nothing.
pub fn check_job<T: Task>(task: &T, job: &JobConfig) -> Result<CheckedJob<T>, TrainError> {
    let settings = &job.settings;
    check_settings(settings)?;
    let fingerprint = FileDigest::of(&job.data).map_err(|e| TrainError::io(&job.data, e))?;
    let record = StoredJob {
        job: job.clone(),
        data_fingerprint: Some(fingerprint),
    };
    let resume_from = if settings.resume {
        check_resume(&record)?
    } else {
        None
    };
    let data = load_data(
        task,
        &job.model,
        &job.data,
        &settings.split,
        settings.num_crops,
        Some(settings.max_tokens),
    )?;
    data.require_both_sides(&job.data, &settings.split)?;
    Ok(CheckedJob {
        record,
        data,
        resume_from,
    })
}

/// The resume checks: the folder's run must be this job's (see [`crate::job_diff`]), and
/// it must have an intact checkpoint if it has any. Returns the checkpoint to continue
/// from (`None`: step 0).
fn check_resume(record: &StoredJob) -> Result<Option<ResumePoint>, TrainError> {
    let settings = &record.job.settings;
    let dir = &settings.run_dir;
    let found = existing_run_files(dir);
    if found.is_empty() {
        return Ok(None);
    }
    let refuse = |message: String| TrainError::RunDir {
        dir: dir.clone(),
        message,
    };
    let job_path = dir.join("job.json");
    let refused: Vec<String> = if job_path.is_file() {
        match crate::io::read_json::<StoredJob>(&job_path) {
            Ok(old) => {
                let (allowed, refused): (Vec<_>, Vec<_>) =
                    compare(&old, record).into_iter().partition(|c| c.allowed);
                if refused.is_empty() || settings.force {
                    for c in allowed {
                        eprintln!("resuming with a changed setting: {c}");
                    }
                }
                refused.iter().map(|c| c.to_string()).collect()
            }
            Err(e) => vec![format!("job.json: cannot be read ({e})")],
        }
    } else {
        vec![format!(
            "job.json: missing beside {} (the run's model and data are unknown)",
            found.join(", ")
        )]
    };
    if !refused.is_empty() {
        if !settings.force {
            return Err(refuse(format!(
                "the run it holds differs from this job:\n  {}\npass --force to resume it \
                 anyway, or choose a new --run-dir",
                refused.join("\n  ")
            )));
        }
        for line in &refused {
            eprintln!("resuming despite a change (--force): {line}");
        }
    }
    let scan = newest_intact_checkpoint(&dir.join("checkpoints"), settings.train.steps);
    for line in scan.skipped_lines() {
        eprintln!("{line}");
    }
    if scan.intact.is_none() && !scan.skipped.is_empty() {
        if !settings.force {
            return Err(refuse(format!(
                "no intact checkpoint to resume from:\n  {}\npass --force to start it over \
                 from step 0, or choose a new --run-dir",
                scan.skipped_lines().join("\n  ")
            )));
        }
        eprintln!("no intact checkpoint: starting over from step 0 (--force)");
    }
    Ok(scan.intact)
}

/// Runs a job on backend `B` (a plain backend: the job wraps it in autodiff): [`check_job`],
/// then [`CheckedJob::run`].
pub fn run_job<B: AttentionBackend, T: Task>(
    task: T,
    job: &JobConfig,
    device: B::Device,
) -> Result<RunSummary, TrainError> {
    check_job(&task, job)?.run::<B>(task, device)
}

impl<T: Task> CheckedJob<T> {
    /// Loads the weights, then writes the run folder (`job.json` first) and trains, on
    /// backend `B` (wrapped in autodiff).
    pub fn run<B: AttentionBackend>(
        self,
        task: T,
        device: B::Device,
    ) -> Result<RunSummary, TrainError> {
        self.run_on::<Autodiff<B>>(task, device)
    }

    fn run_on<B>(self, task: T, device: B::Device) -> Result<RunSummary, TrainError>
    where
        B: AutodiffBackend + AttentionBackend,
        B::InnerBackend: AttentionBackend,
    {
        let job = &self.record.job;
        let settings = &job.settings;
        let run_dir = &settings.run_dir;
        let data = self.data;
        let (mut model, storage) = data
            .dir
            .load_trainable::<B>(&device, settings.train.base_dtype)?;
        model.set_products(settings.train.products);
        // The run starts here: job.json is the first file written.
        std::fs::create_dir_all(run_dir).map_err(|e| TrainError::io(run_dir, e))?;
        crate::io::write_json(&run_dir.join("job.json"), &self.record)?;
        write_drop_report(&data.report, run_dir)?;
        let labels = RunLabels {
            title: format!("Fine-tuning {}", job.model_label),
            subtitle: format!(
                "data {} · {} train / {} val · backend {} · base {}{}",
                job.data.display(),
                data.train.len(),
                data.val.len(),
                B::name(&device),
                storage.name(),
                if settings.train.recompute {
                    " · activation recomputation"
                } else {
                    ""
                }
            ),
            base_model: Some(job.model_label.clone()),
        };
        let mut trainer = Trainer::new(
            model,
            settings.train.clone(),
            task,
            data.train,
            data.val,
            data.tokenizer,
            run_dir,
            labels,
            device,
        )?;
        if settings.resume {
            trainer.resume_from(self.resume_from.as_ref())?;
            match &self.resume_from {
                Some(point) => eprintln!(
                    "resuming from step {} (checkpoint {})",
                    point.state.step,
                    point.dir.display()
                ),
                None => eprintln!(
                    "no checkpoint to resume in {}: starting from step 0",
                    run_dir.display()
                ),
            }
        }
        trainer.run()
    }
}

/// Writes `dropped_rows.json` into `dir` (always, so that a folder's report is this run's
/// even when nothing was dropped) and says so in one line.
fn write_drop_report(report: &Report, dir: &Path) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let path = dir.join("dropped_rows.json");
    report.write_json(&path)?;
    if !report.dropped.is_empty() {
        eprintln!("dropped rows in {}", path.display());
    }
    Ok(())
}

/// A model dir with the task's data split and tokenized for it.
pub struct LoadedData<T: Task> {
    pub dir: ModelDir,
    pub tokenizer: Phi3Tokenizer,
    pub train: TaskData<T>,
    pub val: TaskData<T>,
    /// Every catalogue row that is in neither split, and why: the rows the catalogue
    /// loader dropped and the items skipped while building examples (which are not counted
    /// as kept).
    pub report: Report,
    /// What the split did, for the message of an empty side.
    pub counts: SplitCounts,
}

/// Rows and products on each side of a split, before and after building examples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitCounts {
    /// Usable rows of the catalogue and their distinct products (group keys).
    pub rows: usize,
    pub products: usize,
    pub train_rows: usize,
    pub train_products: usize,
    pub val_rows: usize,
    pub val_products: usize,
    /// Rows of each side skipped while building examples.
    pub train_skipped: usize,
    pub val_skipped: usize,
}

impl<T: Task> LoadedData<T> {
    /// Fails (before any training) when a side of the split has no example, saying how many
    /// rows and products there were and where they went.
    pub fn require_both_sides(
        &self,
        catalogue: &Path,
        split: &SplitConfig,
    ) -> Result<(), TrainError> {
        let c = &self.counts;
        for (side, examples, rows, products, skipped, hint) in [
            (
                "training",
                self.train.len(),
                c.train_rows,
                c.train_products,
                c.train_skipped,
                "a smaller",
            ),
            (
                "validation",
                self.val.len(),
                c.val_rows,
                c.val_products,
                c.val_skipped,
                "a larger",
            ),
        ] {
            if examples > 0 {
                continue;
            }
            let mut message = format!(
                "no {side} examples: {} has {} usable rows of {} products, and validation \
                 fraction {} (--val-fraction) puts {rows} rows of {products} products on the \
                 {side} side",
                catalogue.display(),
                c.rows,
                c.products,
                split.validation_fraction
            );
            if skipped > 0 {
                message.push_str(&format!(
                    ", all {skipped} skipped while building examples (see the skipped rows \
                     above and dropped_rows.json)"
                ));
            } else if c.rows == 0 {
                message.push_str(": the catalogue has no usable row (see its dropped rows)");
            } else if c.products < 2 {
                message.push_str(
                    ": a split needs at least 2 products (distinct product codes), one per side",
                );
            } else {
                message.push_str(&format!(": try {hint} --val-fraction"));
            }
            return Err(TrainError::EmptySplit(message));
        }
        Ok(())
    }
}

/// Opens the model dir's tokenizer and processor, loads the catalogue (bad rows are
/// reported and skipped), splits it by the task's group key and builds the examples,
/// skipping those over `max_tokens` or otherwise unusable. Prints what it left out; writes
/// nothing (the report is in [`LoadedData::report`]).
pub fn load_data<T: Task>(
    task: &T,
    model: &str,
    catalogue_path: &Path,
    split: &SplitConfig,
    num_crops: Option<usize>,
    max_tokens: Option<usize>,
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
    let loaded = task.load(catalogue_path, &ImageFetcher::new(fetch)?)?;
    let mut report = loaded.report;
    let products = |items: &[T::Item]| {
        items
            .iter()
            .map(|i| task.group(i))
            .collect::<HashSet<_>>()
            .len()
    };
    let mut counts = SplitCounts {
        rows: loaded.items.len(),
        products: products(&loaded.items),
        ..SplitCounts::default()
    };
    let sides = split_by_product(loaded.items, |i| task.group(i), split);
    (counts.train_rows, counts.train_products) = (sides.train.len(), products(&sides.train));
    (counts.val_rows, counts.val_products) = (sides.validation.len(), products(&sides.validation));
    let mut build = |items: Vec<T::Item>| -> Result<(TaskData<T>, usize), TrainError> {
        let rows: Vec<SourceRow> = items.iter().map(TaskItem::source_row).collect();
        let (data, skipped) = TaskData::new(task, items, &tokenizer, processor.clone(), max_tokens);
        for s in &skipped {
            eprintln!("skipped {s}");
            let r = rows[s.index];
            report.drop_kept_row(r.row, r.line, r.product_code, drop_reason(s))?;
        }
        Ok((data, skipped.len()))
    };
    let (train, train_skipped) = build(sides.train)?;
    let (val, val_skipped) = build(sides.validation)?;
    (counts.train_skipped, counts.val_skipped) = (train_skipped, val_skipped);
    if !report.dropped.is_empty() {
        eprintln!("{}", report.summary());
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
        report,
        counts,
    })
}

/// How the drop report records an item skipped while building examples.
fn drop_reason(skipped: &SkippedItem) -> DropReason {
    match &skipped.reason {
        SkipReason::OverBudget {
            tokens, max_tokens, ..
        } => DropReason::TooManyTokens {
            tokens: *tokens,
            max_tokens: *max_tokens,
        },
        SkipReason::Unusable(message) => DropReason::NotAnExample {
            message: message.clone(),
        },
    }
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
    /// How the base's large matrices are held.
    pub base_dtype: BaseDtype,
    /// The arithmetic of the products with the base.
    pub products: ProductDtype,
}

impl EvalJob {
    /// Checks every setting; reads and writes nothing. Examples are built with the
    /// [`DEFAULT_MAX_TOKENS`] budget.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.split.validate()?;
        check_num_crops(self.num_crops)?;
        self.products
            .check_base(self.base_dtype)
            .map_err(TrainError::Config)?;
        require(
            self.samples >= 1,
            "evaluation samples (--samples)",
            ">= 1",
            self.samples,
        )?;
        require(
            self.batch_size >= 1,
            "evaluation batch size",
            ">= 1",
            self.batch_size,
        )?;
        require(
            self.max_new_tokens >= 1,
            "generated tokens per answer (--max-new-tokens)",
            ">= 1",
            self.max_new_tokens,
        )
    }
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
///
/// # Errors
/// [`TrainError::EmptySplit`] before the model loads when either side of the split has no
/// example (the baselines are fitted on the training side; the scores need validation
/// items): a score over zero items would read as a perfect 0.
pub fn run_eval<B: AttentionBackend, T: Task>(
    task: T,
    job: &EvalJob,
    device: B::Device,
) -> Result<EvalReport<T>, TrainError> {
    job.validate()?;
    // The adapter is checked against the base's weight names and shapes (headers only)
    // before the catalogue is read and the model loaded.
    if let Some(adapter) = &job.adapter {
        let dir = ModelDir::resolve(&job.model)?;
        phi3v_peft::check_adapter(
            adapter,
            &phi3v_peft::BaseTensors::from_model_dir(&dir.path)?,
        )?;
    }
    let data = load_data(
        &task,
        &job.model,
        &job.data,
        &job.split,
        job.num_crops,
        Some(DEFAULT_MAX_TOKENS),
    )?;
    data.require_both_sides(&job.data, &job.split)?;
    let (mut model, _) = data.dir.load_model_as::<B>(&device, job.base_dtype)?;
    model.set_products(job.products);
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
    write_drop_report(&data.report, &job.out)?;
    crate::io::write_json(&job.out.join("eval.json"), &report)?;
    Ok(report)
}

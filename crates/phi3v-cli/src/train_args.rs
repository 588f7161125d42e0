//! Command-line flags of a fine-tuning job, shared by `phi3v train` and
//! `examples/finetune_burberry` so both accept the same flags with the same meaning.
//!
//! Defaults depend on the model: with `--model` they are the reference recipe (lr 4e-5,
//! 50 warmup steps, accumulation 16, rank 64, every target including the vision tower);
//! without it a tiny random model trains on the sample catalogue with settings that make it
//! learn in minutes on a CPU ([`crate::presets`]). Every flag overrides its preset.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use phi3v::nn::ProductDtype;
use phi3v_data::sample_data::SamplePreset;
use phi3v_data::split::SplitConfig;
use phi3v_peft::targets::{LM_HEAD, VISION_TARGETS};
use phi3v_peft::AdapterPlan;
use phi3v_train::job::{JobSettings, DEFAULT_MAX_TOKENS};
use phi3v_train::{BaseDtype, ScheduleKind, TrainConfig, TrainError};
use phi3v_vision::IMG_PROJECTION;

use phi3v_testkit::TinySpec;

use crate::presets::{sample_preset_for, tiny_preset, DataSource, JobSpec, ModelSource};

/// Flags of a fine-tuning run.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Base model: a Hugging Face model dir or a cached model id. Without it a tiny
    /// random Phi-3-V is written to RUN_DIR/base-model.
    #[arg(long)]
    pub model: Option<String>,
    /// `tokenizer.json` for the tiny random model (the Phi-3 vocabulary).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// A catalogue (parquet, CSV, JSON lines): with the columns --task names, or without
    /// --task the Burberry columns; or conversation records (JSON lines of {"messages":
    /// [...], "images": [...]}, told by the `messages` key). Without it a synthetic
    /// catalogue is generated into RUN_DIR/sample-data: the sample preset whose columns
    /// --task names (Burberry without --task).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A task file (TOML: image and group columns, prompt and answer templates, a type per
    /// answer field; see docs/tasks.md). Without it, the built-in Burberry task.
    #[arg(long)]
    pub task: Option<PathBuf>,
    /// Rows of the generated sample catalogue (about 15% of them become the validation
    /// split, every item of which the tiny preset scores).
    #[arg(long, default_value_t = 1000)]
    pub sample_rows: usize,
    /// Where the run writes its config, metrics, checkpoints, adapter and report.
    #[arg(long, default_value = "runs/finetune")]
    pub run_dir: PathBuf,
    /// Continue the run in RUN_DIR from its newest intact checkpoint (corrupted ones are
    /// skipped and named). Without it a RUN_DIR that holds a run is refused, so two runs
    /// never mix their checkpoints and metrics.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: continue although the run in RUN_DIR was made from another model,
    /// other data or other settings (each change is printed), or has no intact checkpoint
    /// (it starts over from step 0). Without it a resume may only raise --steps and change
    /// the evaluation, logging and checkpoint flags.
    #[arg(long, requires = "resume")]
    pub force: bool,
    /// Tokens one example may have (image placeholders, prompt and answer); longer rows are
    /// skipped, named and listed in RUN_DIR/dropped_rows.json rather than truncated. 16
    /// crops are about 2,600 image tokens.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    /// Crops of the HD image transform (overrides the model's preprocessor config).
    #[arg(long)]
    pub num_crops: Option<usize>,
    /// Optimizer updates.
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA alpha (default 2 x rank).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Keep the vision tower and projection frozen (no adapters there).
    #[arg(long)]
    pub freeze_vision: bool,
    /// Train the image projection in full instead of adapting it (default: true for the
    /// tiny random model, whose random projection must be learnt; false with --model).
    #[arg(long)]
    pub full_projection: Option<bool>,
    /// Also adapt lm_head.
    #[arg(long)]
    pub lm_head: Option<bool>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, value_parser = PossibleValuesParser::new(ScheduleKind::NAMES).try_map(|s| s.parse::<ScheduleKind>()))]
    pub schedule: Option<ScheduleKind>,
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Global gradient-norm clip (0 disables).
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Evaluate every N updates (and at the end).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Validation answers generated and scored per evaluation.
    #[arg(long)]
    pub eval_samples: Option<usize>,
    /// Checkpoint every N updates (and at every evaluation and the end).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Log training metrics every N updates.
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Checkpoints kept besides the best.
    #[arg(long, default_value_t = 2)]
    pub keep_last: usize,
    /// Share of products held out for validation.
    #[arg(long, default_value_t = 0.15)]
    pub val_fraction: f64,
    /// Skip TensorBoard event files.
    #[arg(long)]
    pub no_tensorboard: bool,
    /// Storage of the frozen base's matrices: bf16 halves the model's memory (adapters,
    /// activations and optimizer state stay f32); auto is bf16 where the backend supports
    /// it; q8 and q4 (QLoRA) quantize the linear weights in blocks of 32, with the
    /// embedding and lm_head in bf16. Default: f32 for the tiny random model, auto with
    /// --model.
    #[arg(long, value_parser = base_dtype_parser())]
    pub base_dtype: Option<BaseDtype>,
    /// The arithmetic of the products with the frozen base: f32 (the reference's) or
    /// bf16 (activations rounded to bf16, sums in f32, as PyTorch's bf16 autocast; twice
    /// the rate on CPUs with AVX512-BF16). Not with a q8 or q4 base. Default: f32.
    #[arg(long, value_parser = product_dtype_parser())]
    pub product_dtype: Option<ProductDtype>,
    /// Recompute each decoder layer in the backward pass instead of keeping its
    /// activations (memory of one layer instead of all, for a second forward pass). Needs
    /// lora dropout 0. Default: off for the tiny random model, on with --model.
    #[arg(long)]
    pub recompute: Option<bool>,
}

impl TrainArgs {
    /// The job these flags describe.
    pub fn job(&self) -> Result<JobSpec, TrainError> {
        let model = match (&self.model, &self.tokenizer) {
            (Some(m), _) => ModelSource::Pretrained(m.clone()),
            (None, Some(t)) => ModelSource::Tiny {
                spec: TinySpec {
                    seed: self.seed,
                    ..TinySpec::default()
                },
                tokenizer: t.clone(),
            },
            (None, None) => {
                return Err(TrainError::Config(
                    "give --model DIR, or --tokenizer tokenizer.json for a tiny random model"
                        .into(),
                ))
            }
        };
        let mut train = if self.model.is_some() {
            TrainConfig::default()
        } else {
            tiny_preset()
        };
        let plan = &mut train.plan;
        if let Some(r) = self.lora_rank {
            plan.lora.rank = r;
            plan.lora.alpha = 2.0 * r as f64;
        }
        if let Some(a) = self.lora_alpha {
            plan.lora.alpha = a;
        }
        if let Some(d) = self.lora_dropout {
            plan.lora.dropout = d;
        }
        let lm_head = self
            .lm_head
            .unwrap_or(plan.targets.iter().any(|t| t == LM_HEAD));
        let lora = plan.lora.clone();
        *plan = AdapterPlan::reference(lm_head, self.freeze_vision);
        plan.lora = lora;
        if self.full_projection.unwrap_or(self.model.is_none()) && !self.freeze_vision {
            let projection = |t: &str| t.starts_with(IMG_PROJECTION);
            plan.targets.retain(|t| !projection(t));
            plan.full = VISION_TARGETS
                .iter()
                .filter(|t| projection(t))
                .map(|t| t.to_string())
                .collect();
        }
        set(&mut train.learning_rate, self.lr);
        set(&mut train.schedule, self.schedule);
        set(&mut train.warmup_steps, self.warmup_steps);
        set(&mut train.steps, self.steps);
        set(&mut train.batch_size, self.batch_size);
        set(&mut train.grad_accum, self.grad_accum);
        set(&mut train.max_grad_norm, self.max_grad_norm);
        set(&mut train.eval_every, self.eval_every);
        set(&mut train.eval_samples, self.eval_samples);
        set(&mut train.checkpoint_every, self.checkpoint_every);
        set(&mut train.log_every, self.log_every);
        set(&mut train.base_dtype, self.base_dtype);
        set(&mut train.products, self.product_dtype);
        set(&mut train.recompute, self.recompute);
        train.keep_last = self.keep_last;
        train.seed = self.seed;
        train.tensorboard = !self.no_tensorboard;
        let data = match &self.data {
            Some(path) => DataSource::Catalogue(path.clone()),
            None => DataSource::Sample {
                rows: self.sample_rows,
                seed: self.seed,
                preset: match &self.task {
                    Some(task) => sample_preset_for(task)?,
                    None => SamplePreset::Burberry,
                },
            },
        };
        Ok(JobSpec {
            model,
            data,
            task: self.task.clone(),
            settings: JobSettings {
                run_dir: self.run_dir.clone(),
                train,
                split: SplitConfig {
                    seed: 42,
                    validation_fraction: self.val_fraction,
                },
                num_crops: self.num_crops,
                max_tokens: self.max_tokens,
                resume: self.resume,
                force: self.force,
            },
        })
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// The parser of `--product-dtype`, shared by every command that loads a model.
pub fn product_dtype_parser() -> impl TypedValueParser<Value = ProductDtype> {
    PossibleValuesParser::new(ProductDtype::NAMES).try_map(|s| s.parse::<ProductDtype>())
}

/// The parser of `--base-dtype`, shared by every command that loads a model.
pub fn base_dtype_parser() -> impl TypedValueParser<Value = BaseDtype> {
    PossibleValuesParser::new(BaseDtype::NAMES).try_map(|s| s.parse::<BaseDtype>())
}

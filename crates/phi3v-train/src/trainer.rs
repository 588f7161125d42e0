//! The training loop: micro-batches, gradient accumulation, clipping, AdamW, evaluation,
//! checkpoints and resume, with everything recorded in the run directory.
//!
//! Determinism: the data order is a pure function of the seed and the micro-batch count
//! (one seeded shuffle per epoch), and the backend's generator (adapter dropout) is
//! re-seeded from the seed and the micro-batch count before every forward pass. A run
//! resumed from a checkpoint therefore sees exactly the batches and dropout masks the
//! uninterrupted run would have, and ends with the same adapters.

use std::io::IsTerminal;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use phi3v::processor::tokenize::Phi3Tokenizer;
use phi3v::Phi3V;
use phi3v_nn::{AttentionBackend, NamedLinears};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    load_checkpoint, newest_intact_checkpoint, prune_checkpoints, save_checkpoint, ResumePoint,
    TrainState,
};
use crate::dataset::TaskData;
use crate::error::TrainError;
use crate::eval::{evaluate, EvalMetrics, FieldVerdict};
use crate::optim::{clip_factor, AdamW, AdamWConfig, Schedule, ScheduleKind};
use crate::params::for_each_trainable;
use crate::precision::{BaseDtype, ProductDtype};
use crate::recompute::{recomputed_backward, MicroBatch};
use crate::run_dir::RunDir;
use crate::task::Task;
use phi3v_peft::{export_peft, AdapterPlan};
use phi3v_track::{Comparison, EvalTable};

/// Everything that decides what a run does. Stored as the run's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub plan: AdapterPlan,
    pub optimizer: AdamWConfig,
    /// Peak learning rate.
    pub learning_rate: f64,
    pub schedule: ScheduleKind,
    pub warmup_steps: u64,
    /// Optimizer updates in the run.
    pub steps: u64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per update.
    pub grad_accum: usize,
    /// Global gradient-norm clip (0 disables).
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Evaluate every this many updates (and at the end); 0 only at the end.
    pub eval_every: u64,
    /// Validation items whose answers are generated and scored at each evaluation.
    pub eval_samples: usize,
    /// Validation items in the validation loss (0: all).
    pub val_loss_samples: usize,
    pub eval_batch_size: usize,
    pub max_new_tokens: usize,
    /// Checkpoint every this many updates (and at every evaluation and the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept besides the best one.
    pub keep_last: usize,
    /// Log training metrics every this many updates.
    pub log_every: u64,
    /// Write TensorBoard event files.
    pub tensorboard: bool,
    /// Storage dtype of the frozen base's matrices (applied when the job loads the model).
    pub base_dtype: BaseDtype,
    /// The arithmetic of the products with the frozen base (see [`ProductDtype`]): f32, the
    /// reference's, or bf16, twice the rate where the CPU or GPU multiplies bf16.
    pub products: ProductDtype,
    /// Keep only each decoder layer's input in the forward pass and recompute the layer
    /// in the backward pass (see [`crate::recompute`]): activation memory of one layer
    /// instead of all, for a second forward pass. Needs adapter dropout 0.
    pub recompute: bool,
}

impl Default for TrainConfig {
    /// The reference recipe (lr 4e-5, 50 warmup steps, linear decay, accumulation 16,
    /// clip 1.0, activation recomputation, a bf16 base where the backend supports it), for a
    /// run of 1,000 updates.
    fn default() -> Self {
        Self {
            plan: AdapterPlan::default(),
            optimizer: AdamWConfig::default(),
            learning_rate: 4e-5,
            schedule: ScheduleKind::Linear,
            warmup_steps: 50,
            steps: 1000,
            batch_size: 1,
            grad_accum: 16,
            max_grad_norm: 1.0,
            seed: 0,
            eval_every: 100,
            eval_samples: 32,
            val_loss_samples: 0,
            eval_batch_size: 8,
            max_new_tokens: 64,
            checkpoint_every: 100,
            keep_last: 2,
            log_every: 10,
            tensorboard: true,
            base_dtype: BaseDtype::Auto,
            products: ProductDtype::F32,
            recompute: true,
        }
    }
}

impl TrainConfig {
    pub fn schedule(&self) -> Schedule {
        Schedule {
            kind: self.schedule,
            peak_lr: self.learning_rate,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
        }
    }

    /// Checks every setting before anything is loaded or written, so that a value that
    /// cannot train fails in a moment with its name, its `phi3v train` flag and its value,
    /// instead of as a NaN loss (or a panic) after the model and the data have loaded.
    ///
    /// `eval_every` and `checkpoint_every` may be 0 (only at the end), and
    /// `val_loss_samples` 0 (the whole validation split); everything else that counts must
    /// be at least 1, every real number finite, and the warmup must end within the run.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.plan.lora.validate().map_err(TrainError::Config)?;
        self.products
            .check_base(self.base_dtype)
            .map_err(TrainError::Config)?;
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        let unit = |x: f64| x.is_finite() && (0.0..1.0).contains(&x);
        let at_least_1 = ">= 1";
        require(
            positive(self.learning_rate),
            "learning rate (--lr)",
            "a finite number > 0",
            self.learning_rate,
        )?;
        require(self.steps >= 1, "steps (--steps)", at_least_1, self.steps)?;
        require(
            self.warmup_steps <= self.steps,
            "warmup steps (--warmup-steps)",
            &format!("at most the run's {} steps (--steps)", self.steps),
            self.warmup_steps,
        )?;
        require(
            self.batch_size >= 1,
            "batch size (--batch-size)",
            at_least_1,
            self.batch_size,
        )?;
        require(
            self.grad_accum >= 1,
            "gradient accumulation (--grad-accum)",
            at_least_1,
            self.grad_accum,
        )?;
        require(
            non_negative(self.max_grad_norm),
            "gradient-norm clip (--max-grad-norm)",
            "a finite number >= 0 (0 disables clipping)",
            self.max_grad_norm,
        )?;
        require(
            self.log_every >= 1,
            "logging interval (--log-every)",
            at_least_1,
            self.log_every,
        )?;
        require(
            self.eval_samples >= 1,
            "evaluation samples (--eval-samples)",
            at_least_1,
            self.eval_samples,
        )?;
        require(
            self.eval_batch_size >= 1,
            "evaluation batch size (eval_batch_size)",
            at_least_1,
            self.eval_batch_size,
        )?;
        require(
            self.max_new_tokens >= 1,
            "generated tokens per answer (max_new_tokens)",
            at_least_1,
            self.max_new_tokens,
        )?;
        require(
            self.keep_last >= 1,
            "kept checkpoints (--keep-last)",
            ">= 1 (the newest checkpoint is what --resume continues from)",
            self.keep_last,
        )?;
        let o = &self.optimizer;
        require(
            unit(o.beta1),
            "AdamW beta1 (optimizer.beta1)",
            "in [0, 1)",
            o.beta1,
        )?;
        require(
            unit(o.beta2),
            "AdamW beta2 (optimizer.beta2)",
            "in [0, 1)",
            o.beta2,
        )?;
        require(
            positive(o.eps),
            "AdamW eps (optimizer.eps)",
            "a finite number > 0",
            o.eps,
        )?;
        require(
            non_negative(o.weight_decay),
            "AdamW weight decay (optimizer.weight_decay)",
            "a finite number >= 0",
            o.weight_decay,
        )?;
        if self.plan.targets.is_empty() && self.plan.full.is_empty() {
            return Err(TrainError::Config(
                "nothing to train: the adapter plan has no target and no fully trained layer"
                    .into(),
            ));
        }
        if self.recompute && self.plan.lora.dropout > 0.0 {
            return Err(TrainError::Config(format!(
                "activation recomputation (--recompute) needs lora dropout (--lora-dropout) 0, \
                 got {}: the recomputed forward pass would draw other dropout masks",
                self.plan.lora.dropout
            )));
        }
        Ok(())
    }
}

/// `Ok` if `ok`, else the error `{setting} must be {expected}, got {value}`.
pub(crate) fn require(
    ok: bool,
    setting: &str,
    expected: &str,
    value: impl std::fmt::Display,
) -> Result<(), TrainError> {
    if ok {
        Ok(())
    } else {
        Err(TrainError::Config(format!(
            "{setting} must be {expected}, got {value}"
        )))
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The task's name (`burberry`).
    pub task: String,
    pub steps: u64,
    pub stop_reason: String,
    /// The last evaluation: validation loss and every score beside its baseline.
    pub final_eval: Option<EvalMetrics>,
    pub best_step: Option<u64>,
    pub best_val_loss: Option<f64>,
    pub elapsed_secs: f64,
    pub train_tokens_per_sec: f64,
    /// Every score that has a baseline beats it in the final evaluation.
    pub beats_baselines: bool,
    /// Field by field (for tasks that score by field): whether each beats its baselines in
    /// the final evaluation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldVerdict>,
    pub adapter_dir: String,
    pub report: String,
}

/// Descriptive text for the report.
#[derive(Debug, Clone, Default)]
pub struct RunLabels {
    pub title: String,
    pub subtitle: String,
    /// Where the base model came from (recorded in the adapter config).
    pub base_model: Option<String>,
}

/// A fine-tuning run of task `T` in progress.
pub struct Trainer<B: AutodiffBackend, T: Task> {
    pub config: TrainConfig,
    pub model: Phi3V<B>,
    pub optimizer: AdamW<B::InnerBackend>,
    pub state: TrainState,
    pub task: T,
    pub train: TaskData<T>,
    pub val: TaskData<T>,
    /// The task's trivial predictors, fitted on the training split.
    pub baselines: T::Baselines,
    tokenizer: Phi3Tokenizer,
    run: RunDir,
    labels: RunLabels,
    device: B::Device,
    order: EpochOrder,
}

impl<B, T> Trainer<B, T>
where
    B: AutodiffBackend + AttentionBackend,
    B::InnerBackend: AttentionBackend,
    T: Task,
{
    /// Prepares a run: freezes the base of `model`, attaches the plan's adapters (seeded),
    /// opens the run directory and writes the resolved config.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: Phi3V<B>,
        config: TrainConfig,
        task: T,
        train: TaskData<T>,
        val: TaskData<T>,
        tokenizer: Phi3Tokenizer,
        run_dir: &std::path::Path,
        labels: RunLabels,
        device: B::Device,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        for (data, side) in [(&train, "training"), (&val, "validation")] {
            if data.is_empty() {
                return Err(TrainError::EmptySplit(format!(
                    "the {side} split has no usable item"
                )));
            }
        }
        let mut model = burn::module::Module::no_grad(model);
        B::seed(&device, config.seed);
        config.plan.apply(&mut model, &device)?;
        let run = RunDir::open(run_dir, config.tensorboard)?;
        crate::io::write_json(&run_dir.join("config.json"), &config)?;
        let baselines = task.fit_baselines(&train.truths());
        let order = EpochOrder::new(train.len(), config.seed);
        Ok(Self {
            optimizer: AdamW::new(config.optimizer.clone()),
            config,
            model,
            state: TrainState::default(),
            task,
            train,
            val,
            baselines,
            tokenizer,
            run,
            labels,
            device,
            order,
        })
    }

    /// Continues from the newest intact checkpoint of the run directory (see
    /// [`newest_intact_checkpoint`]), printing each newer one it skips and why. Returns its
    /// step; `None` when the run has no checkpoint (it starts from step 0, and what the
    /// folder logged before is dropped).
    ///
    /// # Errors
    /// [`TrainError::RunDir`] when there are checkpoints but none is intact: starting over
    /// would silently throw the run away (the job's `force` does that on purpose, through
    /// [`Trainer::resume_from`]).
    pub fn resume(&mut self) -> Result<Option<u64>, TrainError> {
        let scan = newest_intact_checkpoint(&self.run.checkpoints(), self.config.steps);
        for line in scan.skipped_lines() {
            eprintln!("{line}");
        }
        if scan.intact.is_none() && !scan.skipped.is_empty() {
            return Err(TrainError::RunDir {
                dir: self.run.root.clone(),
                message: format!(
                    "no intact checkpoint to resume from ({})",
                    scan.skipped_lines().join("; ")
                ),
            });
        }
        self.resume_from(scan.intact.as_ref())
    }

    /// Continues from `point` (a checkpoint [`newest_intact_checkpoint`] verified), or from
    /// step 0 without one; drops what the folder logged after that step, since the run
    /// redoes it. Returns the step, `None` for step 0.
    pub fn resume_from(&mut self, point: Option<&ResumePoint>) -> Result<Option<u64>, TrainError> {
        let Some(point) = point else {
            self.run.truncate_metrics_after(0)?;
            return Ok(None);
        };
        self.state = load_checkpoint(
            &point.dir,
            &mut self.model,
            &self.config.plan.full,
            &mut self.optimizer,
            &self.device,
        )?;
        self.run.truncate_metrics_after(self.state.step)?;
        Ok(Some(self.state.step))
    }

    /// Trains to `config.steps`, evaluating and checkpointing on the way, then exports the
    /// adapter and writes the summary and the report.
    pub fn run(&mut self) -> Result<RunSummary, TrainError> {
        let total = self.config.steps;
        let bar = progress_bar(total, self.state.step);
        let started = Instant::now();
        let elapsed_before = self.state.elapsed_secs;
        let mut final_eval = None;
        let mut window = (Instant::now(), 0u64);
        let mut pending = Pending::<B>::default();
        while self.state.step < total {
            let step = self.state.step;
            let lr = self.config.schedule().lr(step);
            let outcome = match self.train_step(lr) {
                Ok(o) => o,
                Err(e) => {
                    bar.abandon();
                    return Err(self.stop_on_error(e));
                }
            };
            self.state.step += 1;
            self.state.tokens_seen += outcome.tokens;
            window.1 += outcome.tokens;
            let s = self.state.step;
            pending.push(s, outcome);
            let log_now = s.is_multiple_of(self.config.log_every.max(1)) || s == total;
            let eval_now = s == total
                || (self.config.eval_every > 0 && s.is_multiple_of(self.config.eval_every));
            let checkpoint_now =
                self.config.checkpoint_every > 0 && s.is_multiple_of(self.config.checkpoint_every);
            // The only read-back of the step: where the values are logged, and before any
            // evaluation or checkpoint sees the weights.
            let checked = if log_now || eval_now || checkpoint_now {
                match pending.check() {
                    Ok(last) => last,
                    Err((bad_step, value)) => {
                        bar.abandon();
                        // The updates before the bad one passed the check.
                        self.state.step = bad_step - 1;
                        let error = self.non_finite(bad_step, value);
                        return Err(self.stop_on_error(error));
                    }
                }
            } else {
                None
            };
            self.state.elapsed_secs = elapsed_before + started.elapsed().as_secs_f64();
            if let (true, Some((loss, grad_norm))) = (log_now, checked) {
                let tps = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
                window = (Instant::now(), 0);
                self.run.log(s, "train", "loss", loss)?;
                self.run.log(s, "train", "lr", lr)?;
                self.run.log(s, "train", "grad_norm", grad_norm)?;
                self.run.log(s, "train", "tokens_per_sec", tps)?;
                let line = format!("loss {loss:.4}  lr {lr:.2e}  {tps:.0} tok/s");
                if bar.is_hidden() {
                    eprintln!("step {s}/{total}  {line}");
                }
                bar.set_message(line);
            }
            bar.set_position(s);
            if eval_now {
                let metrics = self.evaluate_now()?;
                let loss = metrics.val_loss;
                if self.state.best_val_loss.is_none_or(|b| loss < b) {
                    self.state.best_val_loss = Some(loss);
                    self.state.best_step = Some(s);
                }
                if bar.is_hidden() {
                    let scores: Vec<String> = metrics
                        .scores
                        .iter()
                        .filter(|sc| sc.baseline.is_some())
                        .map(|sc| sc.brief())
                        .collect();
                    eprintln!("eval step {s}: val loss {loss:.4}, {}", scores.join(", "));
                }
                final_eval = Some(metrics);
            }
            if eval_now || checkpoint_now {
                self.checkpoint()?;
            }
        }
        bar.finish();
        let elapsed = self.state.elapsed_secs;
        self.finish("completed", final_eval, elapsed)
    }

    /// One optimizer update: `grad_accum` micro-batches, clip, AdamW. The loss and the
    /// gradient norm stay on the device (see [`Pending`]).
    fn train_step(&mut self, lr: f64) -> Result<StepOutcome<B>, TrainError> {
        let accum = self.config.grad_accum;
        let mut grads = GradientSum::<B>::default();
        let mut loss_sum: Option<Tensor<B::InnerBackend, 1>> = None;
        let mut tokens = 0u64;
        for _ in 0..accum {
            let k = self.state.micro_batches;
            let indices = self.order.micro_batch(k, self.config.batch_size);
            B::seed(&self.device, mix(self.config.seed, k));
            let batch = self.train.training_batch::<B>(&indices, &self.device)?;
            tokens += batch.tokens as u64;
            let targets = batch.loss_targets.expect("training batches have labels");
            let value = if self.config.recompute {
                let micro = MicroBatch {
                    input_ids: batch.input_ids,
                    images: batch.images.as_ref(),
                    attention_mask: Some(batch.attention_mask),
                    targets: &targets,
                };
                let full = &self.config.plan.full;
                recomputed_backward(&mut self.model, full, &mut grads, micro, 1.0 / accum as f64)?
            } else {
                let loss = self.model.loss(
                    batch.input_ids,
                    batch.images.as_ref(),
                    Some(batch.attention_mask),
                    &targets,
                )?;
                let value = loss.clone().inner();
                grads.add(
                    &mut self.model,
                    &self.config.plan.full,
                    loss.div_scalar(accum as f64),
                );
                value
            };
            loss_sum = Some(match loss_sum {
                Some(sum) => sum + value,
                None => value,
            });
            self.state.micro_batches += 1;
        }
        let (epoch, offset) = self
            .order
            .position(self.state.micro_batches * self.config.batch_size as u64);
        self.state.epoch = epoch;
        self.state.epoch_offset = offset;
        let grad_norm = apply_gradients(
            &mut self.model,
            &self.config.plan.full,
            &mut self.optimizer,
            grads,
            lr,
            self.config.max_grad_norm,
        );
        self.state.optimizer_steps = self.optimizer.steps;
        let loss = loss_sum
            .expect("grad_accum is at least 1")
            .div_scalar(accum as f64);
        Ok(StepOutcome {
            loss,
            grad_norm,
            tokens,
        })
    }

    /// The NaN guard's error, naming the checkpoint a `--resume` would continue from: the
    /// newest one that passes verification, not merely the newest folder.
    fn non_finite(&self, step: u64, value: f64) -> TrainError {
        let scan = newest_intact_checkpoint(&self.run.checkpoints(), self.config.steps);
        TrainError::NonFinite {
            step,
            loss: value,
            checkpoint: scan.intact.map_or_else(
                || "none (no intact checkpoint was written)".into(),
                |p| p.dir.display().to_string(),
            ),
        }
    }

    /// Records why the run stopped in the summary and the report, and passes the error on.
    fn stop_on_error(&mut self, error: TrainError) -> TrainError {
        let reason = format!("stopped: {error}");
        let elapsed = self.state.elapsed_secs;
        if let Err(e) = self.finish(&reason, None, elapsed) {
            eprintln!("warning: could not write the summary of the stopped run: {e}");
        }
        error
    }

    /// Runs an evaluation on the current weights and records it.
    pub fn evaluate_now(&mut self) -> Result<EvalMetrics, TrainError> {
        let model = self.model.valid();
        let n = self.val.len();
        let loss_n = if self.config.val_loss_samples == 0 {
            n
        } else {
            self.config.val_loss_samples.min(n)
        };
        let loss_indices: Vec<usize> = (0..loss_n).collect();
        let gen_indices: Vec<usize> = (0..self.config.eval_samples.min(n)).collect();
        if n == 0 {
            return Err(TrainError::Config(
                "the validation split is empty: nothing to evaluate".into(),
            ));
        }
        let (metrics, rows) = evaluate(
            &model,
            &self.task,
            &self.baselines,
            &self.val,
            &self.tokenizer,
            &loss_indices,
            &gen_indices,
            self.config.eval_batch_size,
            self.config.max_new_tokens,
            &self.device,
        )?;
        let s = self.state.step;
        for score in &metrics.scores {
            self.run.log(s, "val", &score.key, score.value)?;
            if let Some(b) = &score.baseline {
                self.run.log(s, "baseline", &score.key, b.value)?;
            }
        }
        self.run.log(s, "val", "loss", metrics.val_loss)?;
        let summary = metrics.scores.iter().map(|sc| sc.brief()).collect();
        self.run.log_eval_table(
            &EvalTable {
                step: s,
                rows,
                summary,
            },
            4,
        )?;
        Ok(metrics)
    }

    fn checkpoint(&mut self) -> Result<(), TrainError> {
        let root = self.run.checkpoints();
        std::fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
        save_checkpoint(
            &root,
            &self.model,
            &self.config.plan.full,
            &self.optimizer,
            &self.state,
        )?;
        prune_checkpoints(&root, self.config.keep_last, self.state.best_step)
    }

    /// Exports the adapter, writes `summary.json` and `report.html`.
    fn finish(
        &mut self,
        reason: &str,
        final_eval: Option<EvalMetrics>,
        elapsed: f64,
    ) -> Result<RunSummary, TrainError> {
        let adapter_dir = self.run.adapter();
        if final_eval.is_some() {
            export_peft(
                &self.model.valid(),
                &self.config.plan,
                self.labels.base_model.clone(),
                &adapter_dir,
            )?;
        }
        let comparisons: Vec<Comparison> = final_eval
            .iter()
            .flat_map(|m| &m.scores)
            .map(|sc| Comparison {
                metric: sc.label.clone(),
                model: sc.value,
                baseline: sc.baseline.as_ref().map_or(f64::NAN, |b| b.value),
                baseline_name: sc
                    .baseline
                    .as_ref()
                    .map_or_else(|| "none".into(), |b| b.name.clone()),
                higher_is_better: sc.higher_is_better,
            })
            .collect();
        let config_json = serde_json::to_string_pretty(&self.config).unwrap_or_default();
        let fields = final_eval
            .as_ref()
            .map(EvalMetrics::field_verdicts)
            .unwrap_or_default();
        let mut notes = vec![format!(
            "{reason} after {} updates ({:.0} s)",
            self.state.step, elapsed
        )];
        notes.extend(fields.iter().map(FieldVerdict::to_string));
        let report = self.run.write_report(
            &self.labels.title,
            &self.labels.subtitle,
            &config_json,
            comparisons,
            notes,
        )?;
        let beats_baselines = final_eval
            .as_ref()
            .is_some_and(EvalMetrics::beats_baselines);
        let summary = RunSummary {
            task: self.task.name().to_string(),
            steps: self.state.step,
            stop_reason: reason.to_string(),
            final_eval,
            best_step: self.state.best_step,
            best_val_loss: self.state.best_val_loss,
            elapsed_secs: elapsed,
            train_tokens_per_sec: self.state.tokens_seen as f64 / elapsed.max(1e-9),
            beats_baselines,
            fields,
            adapter_dir: adapter_dir.display().to_string(),
            report: report.display().to_string(),
        };
        crate::io::write_json(&self.run.root.join("summary.json"), &summary)?;
        Ok(summary)
    }
}

/// What one update leaves: its mean loss and gradient norm, `[1]` each, on the device.
struct StepOutcome<B: AutodiffBackend> {
    loss: Tensor<B::InnerBackend, 1>,
    grad_norm: Tensor<B::InnerBackend, 1>,
    tokens: u64,
}

/// The losses and gradient norms of the updates since the last check, still on the device.
///
/// Reading a value back makes the host wait for the GPU to finish everything queued, so
/// the run reads them once per log, evaluation or checkpoint, in one transfer, and checks
/// that each is finite there: the NaN guard names the first bad update, and no checkpoint,
/// evaluation or export ever sees weights an unchecked update wrote.
struct Pending<B: AutodiffBackend> {
    /// Each update's step and outcome, in order.
    steps: Vec<(u64, StepOutcome<B>)>,
}

impl<B: AutodiffBackend> Pending<B> {
    fn push(&mut self, step: u64, outcome: StepOutcome<B>) {
        self.steps.push((step, outcome));
    }

    /// Reads every pending value back at once, and returns the last update's loss and
    /// gradient norm, or the first update whose loss or norm is not finite (its step and
    /// the bad value).
    fn check(&mut self) -> Result<Option<(f64, f64)>, (u64, f64)> {
        let steps = std::mem::take(&mut self.steps);
        if steps.is_empty() {
            return Ok(None);
        }
        let values: Vec<Tensor<B::InnerBackend, 1>> = steps
            .iter()
            .flat_map(|(_, o)| [o.loss.clone(), o.grad_norm.clone()])
            .collect();
        let host: Vec<f64> = Tensor::cat(values, 0)
            .into_data()
            .convert::<f64>()
            .to_vec()
            .expect("f64 values");
        for ((step, _), pair) in steps.iter().zip(host.chunks(2)) {
            if let Some(&bad) = pair.iter().find(|v| !v.is_finite()) {
                return Err((*step, bad));
            }
        }
        Ok(Some((host[host.len() - 2], host[host.len() - 1])))
    }
}

impl<B: AutodiffBackend> Default for Pending<B> {
    fn default() -> Self {
        Self { steps: Vec::new() }
    }
}

/// Gradients summed over micro-batches, by parameter name, flattened.
pub struct GradientSum<B: AutodiffBackend> {
    pub grads: std::collections::BTreeMap<String, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> Default for GradientSum<B> {
    fn default() -> Self {
        Self {
            grads: Default::default(),
        }
    }
}

impl<B: AutodiffBackend> GradientSum<B> {
    /// Back-propagates `loss` and adds the trainable tensors' gradients.
    pub fn add<M: NamedLinears<B>>(&mut self, model: &mut M, full: &[String], loss: Tensor<B, 1>) {
        self.add_gradients(model, full, &loss.backward());
    }

    /// Adds the trainable tensors' gradients found in `grads` (tensors outside that
    /// backward pass have none and are skipped).
    pub fn add_gradients<M: NamedLinears<B>>(
        &mut self,
        model: &mut M,
        full: &[String],
        grads: &B::Gradients,
    ) {
        for_each_trainable(model, full, &mut |name, slot| {
            if let Some(g) = slot.grad_flat(grads) {
                let sum = match self.grads.remove(name) {
                    Some(prev) => prev + g,
                    None => g,
                };
                self.grads.insert(name.to_string(), sum);
            }
        });
    }
}

/// Clips the summed gradients to `max_norm` (global L2 norm) and applies one AdamW update
/// at `lr`. Tensors without a gradient are left alone (no decay either), as PyTorch does.
/// Returns the norm before clipping, `[1]`, on the device: reading it waits for the whole
/// step on a GPU, so read it only when it is logged.
pub fn apply_gradients<B: AutodiffBackend, M: NamedLinears<B>>(
    model: &mut M,
    full: &[String],
    optimizer: &mut AdamW<B::InnerBackend>,
    mut sum: GradientSum<B>,
    lr: f64,
    max_norm: f64,
) -> Tensor<B::InnerBackend, 1> {
    let all: Vec<_> = sum.grads.values().cloned().collect();
    let device = match all.first() {
        Some(g) => g.device(),
        None => Default::default(),
    };
    let (norm, factor) = clip_factor(&all, max_norm, &device);
    optimizer.begin_step();
    for_each_trainable(model, full, &mut |name, mut slot| {
        if let Some(g) = sum.grads.remove(name) {
            // PyTorch multiplies by the clamped factor whatever it is; by exactly 1 when
            // the norm is within bounds, which changes nothing.
            let g = match &factor {
                Some(factor) => g.mul(factor.clone()),
                None => g,
            };
            let new = optimizer.update(name, slot.flat().inner(), g, lr);
            slot.set_flat_inner(new);
        }
    });
    norm
}

/// A 64-bit mix of the seed and a counter (SplitMix64), for per-step seeds.
fn mix(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The training order: epoch `e` is a shuffle seeded by `(seed, e)`, and micro-batch `k`
/// takes the examples at positions `k * batch ..` of the concatenated epochs.
struct EpochOrder {
    n: usize,
    seed: u64,
    cached: Option<(u64, Vec<usize>)>,
}

impl EpochOrder {
    fn new(n: usize, seed: u64) -> Self {
        Self {
            n,
            seed,
            cached: None,
        }
    }

    fn epoch(&mut self, e: u64) -> &[usize] {
        if self.cached.as_ref().is_none_or(|(c, _)| *c != e) {
            let mut order: Vec<usize> = (0..self.n).collect();
            order.shuffle(&mut StdRng::seed_from_u64(mix(self.seed, e)));
            self.cached = Some((e, order));
        }
        &self.cached.as_ref().expect("just filled").1
    }

    fn micro_batch(&mut self, k: u64, batch: usize) -> Vec<usize> {
        (0..batch as u64)
            .map(|j| {
                let p = k * batch as u64 + j;
                let (e, o) = self.position(p);
                self.epoch(e)[o as usize]
            })
            .collect()
    }

    /// Epoch and offset of example position `p`.
    fn position(&self, p: u64) -> (u64, u64) {
        (p / self.n as u64, p % self.n as u64)
    }
}

/// A progress bar with loss, learning rate, tokens/s and ETA on a terminal; hidden (plain
/// log lines instead) when stderr is not one.
fn progress_bar(total: u64, start: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_position(start);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type B = Autodiff<Flex>;

    fn outcome(loss: f32, grad_norm: f32) -> StepOutcome<B> {
        let device = Default::default();
        StepOutcome {
            loss: Tensor::from_floats([loss], &device),
            grad_norm: Tensor::from_floats([grad_norm], &device),
            tokens: 1,
        }
    }

    /// One read gives the last update's values, and empties the queue.
    #[test]
    fn pending_values_are_read_together_and_the_last_is_logged() {
        let mut pending = Pending::<B>::default();
        assert_eq!(pending.check(), Ok(None));
        pending.push(1, outcome(2.5, 0.5));
        pending.push(2, outcome(2.25, 0.75));
        assert_eq!(pending.check(), Ok(Some((2.25, 0.75))));
        assert!(pending.steps.is_empty());
        assert_eq!(pending.check(), Ok(None));
    }

    /// The first update whose loss or gradient norm is not finite is the one named, even
    /// when a later one is bad too.
    #[test]
    fn pending_values_name_the_first_non_finite_update() {
        let mut pending = Pending::<B>::default();
        pending.push(7, outcome(2.0, 1.0));
        pending.push(8, outcome(2.0, f32::NAN));
        pending.push(9, outcome(f32::INFINITY, 1.0));
        let (step, value) = pending.check().unwrap_err();
        assert_eq!(step, 8);
        assert!(value.is_nan());
        pending.push(10, outcome(f32::NEG_INFINITY, 1.0));
        assert_eq!(pending.check(), Err((10, f64::NEG_INFINITY)));
    }
}

//! # phi3v-train
//!
//! Fine-tuning Phi-3-Vision with low-rank adapters, on any burn backend, for any [`Task`].
//!
//! Owns the training loop and what it needs: the [`Task`] trait (what an example is, its
//! prompt and answer, how a generated answer is scored against which baseline) and the tasks
//! that ship ([`tasks`]); the [`Trainer`] (AdamW with warmup and linear or cosine decay,
//! gradient accumulation, global gradient-norm clipping, evaluation on generated answers, a
//! NaN guard); run [`checkpoint`]s with exact resume; [`recompute`] (activation
//! recomputation by decoder layer) and [`precision`] (a bf16 frozen base under f32
//! adapters); and the [`run_dir`] that ties them to the tracking files. A [`job`] checks
//! everything (settings, the run folder, a resumed run's `job.json` and checkpoints
//! ([`job_diff`], [`checkpoint`]), the data and both sides of its split) before it writes
//! anything.
//!
//! May depend on: `phi3v` (the model and the input processor), `phi3v-data` (catalogues and
//! conversation records), `phi3v-peft` (which layers are adapted, the PEFT export),
//! `phi3v-track` (metrics and the report). Command-line flags and presets belong to
//! `phi3v-cli`.

pub mod checkpoint;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod io;
pub mod job;
pub mod job_diff;
pub mod optim;
pub mod params;
pub mod precision;
pub mod recompute;
pub mod run_dir;
pub mod task;
pub mod tasks;
pub mod trainer;

pub use error::TrainError;
pub use optim::{AdamW, AdamWConfig, Schedule, ScheduleKind};
pub use precision::{BaseDtype, ProductDtype};
pub use task::{Baseline, LoadedItems, Score, SourceRow, Task, TaskItem};
pub use tasks::{BurberryTask, ConversationTask, TaskFile, TemplateTask};
pub use trainer::{RunSummary, TrainConfig, Trainer};

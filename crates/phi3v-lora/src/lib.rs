//! # phi3v-lora
//!
//! Fine-tuning Phi-3-Vision with low-rank adapters, on any burn backend.
//!
//! - [`AdapterPlan`]: which linear layers get adapters (by Hugging Face module name, PEFT's
//!   suffix rule) and which are trained in full; the default is the reference recipe.
//! - [`Trainer`]: AdamW with warmup and linear or cosine decay, gradient accumulation,
//!   global gradient-norm clipping, evaluation on generated answers against trivial
//!   baselines, atomic checkpoints and exact resume, a NaN guard.
//! - [`precision`]: the frozen base in bf16 under f32 adapters, and gradient checkpointing.
//! - [`peft`]: adapters in PEFT's directory format, both ways; [`merge`]: adapters folded
//!   into a Hugging Face checkpoint.
//! - [`tracking`]: the run directory, TensorBoard event files and a self-contained HTML
//!   report, offline first.
//! - [`tiny`]: a small random Phi-3-V checkpoint for examples and tests.

pub mod answer;
pub mod checkpoint;
pub mod checkpointing;
pub mod cli;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod io;
pub mod job;
pub mod merge;
pub mod optim;
pub mod params;
pub mod peft;
pub mod precision;
pub mod run_dir;
pub mod targets;
pub mod tiny;
pub mod tracking;
pub mod trainer;

pub use answer::{parse_answer, AnswerScores, Baselines, ParsedAnswer, Truth};
pub use error::LoraError;
pub use optim::{AdamW, AdamWConfig, Schedule, ScheduleKind};
pub use peft::{export_peft, import_peft, PeftConfig};
pub use precision::BaseDtype;
pub use targets::AdapterPlan;
pub use trainer::{TrainConfig, Trainer};

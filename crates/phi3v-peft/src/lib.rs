//! # phi3v-peft
//!
//! LoRA adapters for Phi-3-V, addressed by Hugging Face module name, and their exchange
//! with Python's PEFT. Nothing here trains: a model can be adapted, exported, imported and
//! merged without the trainer, on any burn backend (autodiff or not).
//!
//! What it owns:
//! - [`targets`]: the [`AdapterPlan`], which linear layers get adapters and which are
//!   trained in full, chosen by PEFT's module-name suffix rule; the reference recipe's
//!   targets.
//! - [`peft`]: [`export_peft`] and [`import_peft`], adapters in PEFT's directory format
//!   both ways; [`config`]: [`PeftConfig`], the one struct that reads and writes
//!   `adapter_config.json`.
//! - [`check`]: [`check_adapter`], the one check an adapter dir passes before a merge or
//!   an import uses it: config values, factor pairs and ranks, shapes against the base,
//!   finite values, `target_modules` against the base's modules.
//! - [`names`]: PEFT's tensor names (`base_model.model.{module}.lora_A.weight`, ...), the
//!   only place that spells them.
//! - [`merge`]: [`merge_adapter`], an adapter folded into a copy of the base model dir,
//!   written to a staged folder that never overlaps its inputs.
//! - [`io`]: atomic file writes and tensors as plain `Vec<f32>`, shared with the trainer's
//!   checkpoints.
//!
//! What it may depend on: `phi3v-nn` (linear layers with LoRA, the walk over named
//! linears, safetensors weights), burn's tensor API (no backend, no autodiff), and
//! safetensors, serde, serde_json, thiserror, half, memmap2 and phi3v-io. It is generic over
//! [`phi3v_nn::NamedLinears`], so it needs neither the `phi3v` facade (its tests use it) nor
//! the trainer, the dataset or the run tracking.

pub mod check;
pub mod config;
pub mod error;
pub mod io;
pub mod merge;
pub mod names;
pub mod peft;
pub mod targets;

pub use check::{check_adapter, BaseTensors, CheckedAdapter};
pub use config::{PeftConfig, ADAPTER_CONFIG};
pub use error::PeftError;
pub use merge::{merge_adapter, MergeOptions, MergeSummary};
pub use peft::{export_peft, import_peft, ADAPTER_WEIGHTS};
pub use targets::AdapterPlan;

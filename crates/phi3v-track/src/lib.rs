//! Offline run tracking: everything a training run records about itself, written to plain
//! files in the run directory.
//!
//! Why offline first: Weights & Biases has no Rust SDK, and a fine-tuning run on a rented GPU
//! or an air-gapped box should not depend on a network service being reachable. So a run
//! writes three things locally, each usable on its own:
//!
//! - [`tensorboard`]: TensorBoard event files (scalars and sample images). `tensorboard
//!   --logdir runs/` shows them live, and `wandb sync --sync-tensorboard runs/<run>` uploads
//!   them to W&B afterwards when an account is wanted.
//! - [`metrics`]: `metrics.jsonl`, one JSON object per logged value — the source of truth,
//!   trivially parsed by scripts, robust to killed and resumed runs.
//! - [`report`]: `report.html`, a single self-contained page (inline CSS, SVG charts, embedded
//!   thumbnails) with the curves, the comparison against baselines and the evaluation
//!   samples, to read or share without any tool.
//!
//! # What this crate owns, and what it may depend on
//!
//! It owns the three file formats above and nothing about training: it takes plain numbers,
//! strings and PNG bytes, so it knows neither the model nor the task. An evaluation row is a
//! generic list of named [`FieldCell`]s; which fields a task scores, and how it formats
//! them, is the caller's business, and this crate must not name them.
//!
//! Allowed dependencies: `serde`/`serde_json` (the JSON files), `image` (thumbnails),
//! `base64` (images embedded in the report and in JSON), `crc32c` (TFRecord framing) and
//! `phi3v-io` (whole-file replacement, the workspace's one implementation). It must never
//! depend on burn or on another crate of this workspace but `phi3v-io`, so it builds in seconds and can be used by any tool that reads run
//! directories. Two things stay hand-written on purpose. The few protobuf fields
//! TensorBoard needs (see [`tensorboard`]): a protobuf crate would bring a code generator or
//! runtime for five messages. And the SVG charts and HTML (see [`report`]): plotters' SVG
//! backend would keep the page self-contained, but it writes inline presentation attributes
//! instead of the page's CSS classes and lays out text by font metrics, and what takes code
//! here (gaps at NaN, lone points, "no data", per-pixel decimation of long runs, integer step
//! ticks) would stay ours, so the code would not shrink; a template crate would only move the
//! ten small sections of the page into another file.

mod json;
pub mod metrics;
pub mod report;
mod svg;
pub mod tensorboard;

pub use metrics::{read_metrics, truncate_after, MetricRecord, MetricsLog};
pub use report::{
    escape, render_report, thumbnail_png, write_report, Comparison, EvalRow, EvalTable, FieldCell,
    ReportData, Series,
};
pub use tensorboard::{masked_crc32c, read_records, EventWriter};

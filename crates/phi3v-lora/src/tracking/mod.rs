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
//! The formats are written by hand (TFRecord framing with CRC-32C, the few protobuf fields
//! TensorBoard needs, base64 for images) rather than through extra dependencies; see
//! [`encode`].

pub mod encode;
pub mod metrics;
pub mod report;
mod svg;
pub mod tensorboard;

pub use encode::{base64_decode, base64_encode, crc32c, masked_crc32c, Base64Error};
pub use metrics::{read_metrics, truncate_after, MetricRecord, MetricsLog};
pub use report::{
    escape, render_report, thumbnail_png, write_report, Comparison, EvalRow, EvalTable, ReportData,
    Series,
};
pub use tensorboard::{read_records, EventWriter};

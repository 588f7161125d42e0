//! What a run folder's `job.json` records, and what changed between it and a job that asks
//! to resume the run.
//!
//! A resumed run must be the same run: the same base model, the same catalogue (by path and
//! by content: its size and sha256 are recorded, so an edited file is caught even under the
//! same name), the same task file (path and content, likewise), and the same settings of everything that shapes the weights. What may change
//! on resume:
//!
//! - `steps` may grow (a run can be extended; the learning-rate schedule is then computed
//!   for the new total from the resumed step on), never shrink (checkpoints beyond the new
//!   end would be orphaned);
//! - what only observes or paces the run: the evaluation interval, samples and batch size,
//!   the generated length, the checkpoint interval and how many are kept, the logging
//!   interval, TensorBoard, and activation recomputation (the same gradients, computed
//!   twice);
//! - how this invocation was asked (`run_dir` spelled another way, `resume`, `force`) and
//!   what the report calls the model.
//!
//! Everything else (model, data, learning rate, schedule, warmup, batch size, accumulation,
//! clipping, seed, adapter plan, optimizer, base dtype, split, crops, token budget) is
//! refused unless the job sets `force`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::FileDigest;
use crate::job::JobConfig;

/// What `job.json` holds: the job, and the fingerprint of its catalogue when the run
/// started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredJob {
    #[serde(flatten)]
    pub job: JobConfig,
    /// Size and sha256 of the catalogue file (absent in runs written before fingerprints:
    /// then only the path is compared).
    #[serde(default)]
    pub data_fingerprint: Option<FileDigest>,
}

/// Keys (dotted paths into `job.json`) that do not describe the run at all.
const IGNORED: [&str; 4] = ["run_dir", "resume", "force", "model_label"];

/// Keys that may change on resume: they pace or observe the run, not its weights.
const FREE_ON_RESUME: [&str; 10] = [
    "train.eval_every",
    "train.eval_samples",
    "train.val_loss_samples",
    "train.eval_batch_size",
    "train.max_new_tokens",
    "train.checkpoint_every",
    "train.keep_last",
    "train.log_every",
    "train.tensorboard",
    "train.recompute",
];

/// The `phi3v train` flag of a key, where it has one.
const FLAGS: &[(&str, &str)] = &[
    ("model", "--model"),
    ("data", "--data"),
    ("task.path", "--task"),
    ("task.digest.bytes", "--task (its content)"),
    ("task.digest.sha256", "--task (its content)"),
    ("train.learning_rate", "--lr"),
    ("train.schedule", "--schedule"),
    ("train.warmup_steps", "--warmup-steps"),
    ("train.steps", "--steps"),
    ("train.batch_size", "--batch-size"),
    ("train.grad_accum", "--grad-accum"),
    ("train.max_grad_norm", "--max-grad-norm"),
    ("train.seed", "--seed"),
    ("train.plan.lora.rank", "--lora-rank"),
    ("train.plan.lora.alpha", "--lora-alpha"),
    ("train.plan.lora.dropout", "--lora-dropout"),
    (
        "train.plan.targets",
        "--freeze-vision, --lm-head, --full-projection",
    ),
    ("train.plan.full", "--full-projection"),
    ("train.base_dtype", "--base-dtype"),
    ("train.products", "--product-dtype"),
    ("train.recompute", "--recompute"),
    ("split.validation_fraction", "--val-fraction"),
    ("num_crops", "--num-crops"),
    ("max_tokens", "--max-tokens"),
    ("train.eval_every", "--eval-every"),
    ("train.eval_samples", "--eval-samples"),
    ("train.checkpoint_every", "--checkpoint-every"),
    ("train.keep_last", "--keep-last"),
    ("train.log_every", "--log-every"),
    ("train.tensorboard", "--no-tensorboard"),
];

/// One difference between the stored job and the new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What changed: a dotted key of `job.json` with its flag (`train.learning_rate
    /// (--lr)`), or `data content`.
    pub what: String,
    pub old: String,
    pub new: String,
    /// Whether a resume may make this change without `force`.
    pub allowed: bool,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: was {}, now {}", self.what, self.old, self.new)
    }
}

/// Every difference between the job a run folder holds and `new`, each marked allowed or
/// not (see the module documentation).
pub fn compare(old: &StoredJob, new: &StoredJob) -> Vec<Change> {
    let mut changes = Vec::new();
    let (old_values, new_values) = (leaves(old), leaves(new));
    let keys: std::collections::BTreeSet<&String> =
        old_values.keys().chain(new_values.keys()).collect();
    for key in keys {
        if IGNORED.contains(&key.as_str()) || key.starts_with("data_fingerprint") {
            continue;
        }
        let (a, b) = (old_values.get(key), new_values.get(key));
        let same = match key.as_str() {
            "model" | "data" => same_location(a, b),
            _ => a == b,
        };
        if same {
            continue;
        }
        let allowed = FREE_ON_RESUME.contains(&key.as_str())
            || (key == "train.steps" && as_u64(b) >= as_u64(a));
        changes.push(Change {
            what: label(key),
            old: show(a),
            new: show(b),
            allowed,
        });
    }
    if let (Some(a), Some(b)) = (&old.data_fingerprint, &new.data_fingerprint) {
        if a != b {
            changes.push(Change {
                what: "data content".into(),
                old: a.brief(),
                new: b.brief(),
                allowed: false,
            });
        }
    }
    changes
}

/// `job.json`'s values by dotted key (`train.plan.lora.rank`); arrays are single values.
fn leaves(job: &StoredJob) -> std::collections::BTreeMap<String, Value> {
    fn walk(prefix: &str, value: Value, out: &mut std::collections::BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other);
            }
        }
    }
    let mut out = Default::default();
    // A job of plain numbers, strings and paths always serialises.
    walk(
        "",
        serde_json::to_value(job).unwrap_or(Value::Null),
        &mut out,
    );
    out
}

/// Whether two paths name the same file: equal as written, or after resolving both (a
/// relative path against another working directory, a link).
fn same_location(a: Option<&Value>, b: Option<&Value>) -> bool {
    if a == b {
        return true;
    }
    let (Some(Value::String(a)), Some(Value::String(b))) = (a, b) else {
        return false;
    };
    match (
        Path::new(a).canonicalize().ok(),
        Path::new(b).canonicalize().ok(),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn as_u64(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "absent".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn label(key: &str) -> String {
    match FLAGS.iter().find(|(k, _)| *k == key) {
        Some((_, flag)) => format!("{key} ({flag})"),
        None => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobSettings, DEFAULT_MAX_TOKENS};
    use crate::TrainConfig;

    fn stored() -> StoredJob {
        StoredJob {
            job: JobConfig {
                model: "models/tiny".into(),
                model_label: "tiny".into(),
                data: "data/shop.csv".into(),
                task: None,
                settings: JobSettings {
                    run_dir: "runs/a".into(),
                    train: TrainConfig::default(),
                    split: Default::default(),
                    num_crops: None,
                    max_tokens: DEFAULT_MAX_TOKENS,
                    resume: false,
                    force: false,
                },
            },
            data_fingerprint: Some(FileDigest {
                bytes: 10,
                sha256: "ab".repeat(32),
            }),
        }
    }

    #[test]
    fn the_same_job_asked_differently_has_no_change() {
        let mut new = stored();
        new.job.settings.run_dir = "./runs/a".into();
        new.job.settings.resume = true;
        new.job.model_label = "renamed".into();
        assert_eq!(compare(&stored(), &new), vec![]);
    }

    #[test]
    fn pacing_and_longer_runs_are_allowed_the_rest_is_refused_and_named() {
        let mut new = stored();
        new.job.settings.train.steps = 2000;
        new.job.settings.train.eval_every = 7;
        new.job.settings.train.plan.lora.rank = 8;
        new.job.settings.max_tokens = 100;
        new.data_fingerprint.as_mut().unwrap().bytes = 11;
        let changes = compare(&stored(), &new);
        let lines: Vec<(String, bool)> =
            changes.iter().map(|c| (c.to_string(), c.allowed)).collect();
        assert_eq!(
            lines,
            vec![
                ("max_tokens (--max-tokens): was 4096, now 100".into(), false),
                (
                    "train.eval_every (--eval-every): was 100, now 7".into(),
                    true
                ),
                (
                    "train.plan.lora.rank (--lora-rank): was 64, now 8".into(),
                    false
                ),
                ("train.steps (--steps): was 1000, now 2000".into(), true),
                (
                    format!(
                        "data content: was 10 bytes, sha256 {0}…, now 11 bytes, sha256 {0}…",
                        "ab".repeat(6)
                    ),
                    false
                ),
            ]
        );
        new.job.settings.train.steps = 10;
        let shorter = compare(&stored(), &new);
        let steps = shorter.iter().find(|c| c.what.starts_with("train.steps"));
        assert!(!steps.unwrap().allowed, "a run cannot shrink");
    }

    /// The task decides what is trained: another task file, or the same one edited, is a
    /// refused change, as is adding one to a run of the built-in task.
    #[test]
    fn another_task_file_is_refused() {
        let with_task = |path: &str, sha: &str| {
            let mut job = stored();
            job.job.task = Some(crate::job::TaskFileRecord {
                path: path.into(),
                digest: FileDigest {
                    bytes: 300,
                    sha256: sha.into(),
                },
            });
            job
        };
        let old = with_task("tasks/furniture.toml", "aa");
        assert_eq!(
            compare(&old, &with_task("tasks/furniture.toml", "aa")),
            vec![]
        );
        let edited = compare(&old, &with_task("tasks/furniture.toml", "bb"));
        assert_eq!(
            edited
                .iter()
                .map(|c| (c.to_string(), c.allowed))
                .collect::<Vec<_>>(),
            [(
                "task.digest.sha256 (--task (its content)): was aa, now bb".to_string(),
                false
            )]
        );
        let other = compare(&old, &with_task("tasks/burberry.toml", "aa"));
        assert!(other
            .iter()
            .any(|c| c.what.starts_with("task.path (--task)") && !c.allowed));
        let added = compare(&stored(), &old);
        assert!(
            !added.is_empty() && added.iter().all(|c| !c.allowed),
            "{added:?}"
        );
    }
}

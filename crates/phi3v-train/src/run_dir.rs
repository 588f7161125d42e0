//! The run directory: everything a run writes, in one place a person can browse.
//!
//! ```text
//! run/
//!   job.json             the job (model, data and its fingerprint, settings): written first
//!   dropped_rows.json    catalogue rows not trained on, and why
//!   config.json          the resolved training configuration
//!   metrics.jsonl        step, time, split, name, value: one line per logged number
//!   evals/step-N.json    each evaluation's table (thumbnail, truth, generated, field cells)
//!   tensorboard/         event files: `tensorboard --logdir run/tensorboard`
//!   checkpoints/step-N/  resumable checkpoints (last K + best)
//!   adapter/             the final adapter, PEFT format
//!   summary.json         final metrics against the baselines, stop reason, timings
//!   report.html          a self-contained report
//! ```
//!
//! A folder holds one run: a new run refuses a folder with any of [`RUN_FILES`] in it
//! (see [`existing_run_files`]), and a resumed one must match the `job.json` it finds
//! (`crate::job`). Other files (the command line's `base-model/` and `sample-data/`) are
//! inputs, not a run.

use std::path::{Path, PathBuf};

use crate::error::TrainError;
use crate::io::{read_json, write_json};
use phi3v_track::{
    read_metrics, truncate_after, write_report, Comparison, EvalTable, EventWriter, MetricsLog,
    ReportData, Series,
};

/// What a run writes into its folder, any of which marks the folder as holding a run.
pub const RUN_FILES: [&str; 7] = [
    "job.json",
    "config.json",
    "metrics.jsonl",
    "checkpoints",
    "adapter",
    "summary.json",
    "report.html",
];

/// The [`RUN_FILES`] present in `root` (none when it does not exist).
pub fn existing_run_files(root: &Path) -> Vec<&'static str> {
    RUN_FILES
        .into_iter()
        .filter(|name| root.join(name).exists())
        .collect()
}

/// Paths of a run directory and its open logs.
pub struct RunDir {
    pub root: PathBuf,
    metrics: MetricsLog,
    events: Option<EventWriter>,
}

impl RunDir {
    /// Opens (creating) the run directory and its logs; `tensorboard` adds event files.
    pub fn open(root: &Path, tensorboard: bool) -> Result<Self, TrainError> {
        std::fs::create_dir_all(root.join("evals")).map_err(|e| TrainError::io(root, e))?;
        let metrics_path = root.join("metrics.jsonl");
        let metrics =
            MetricsLog::open(&metrics_path).map_err(|e| TrainError::io(&metrics_path, e))?;
        let events = if tensorboard {
            let dir = root.join("tensorboard");
            Some(EventWriter::create(&dir).map_err(|e| TrainError::io(&dir, e))?)
        } else {
            None
        };
        Ok(Self {
            root: root.to_path_buf(),
            metrics,
            events,
        })
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    pub fn adapter(&self) -> PathBuf {
        self.root.join("adapter")
    }

    /// Records one number in `metrics.jsonl` and TensorBoard (as `{split}/{name}`).
    pub fn log(
        &mut self,
        step: u64,
        split: &str,
        name: &str,
        value: f64,
    ) -> Result<(), TrainError> {
        let path = self.metrics.path().to_path_buf();
        self.metrics
            .log(step, split, name, value)
            .map_err(|e| TrainError::io(&path, e))?;
        if let Some(events) = &mut self.events {
            let tag = format!("{split}/{name}");
            events
                .add_scalar(&tag, value as f32, step as i64)
                .map_err(|e| TrainError::io(events.path(), e))?;
        }
        Ok(())
    }

    /// Stores an evaluation table and sends its first images to TensorBoard.
    pub fn log_eval_table(&mut self, table: &EvalTable, images: usize) -> Result<(), TrainError> {
        write_json(
            &self
                .root
                .join("evals")
                .join(format!("step-{:08}.json", table.step)),
            table,
        )?;
        if let Some(events) = &mut self.events {
            for (i, row) in table.rows.iter().take(images).enumerate() {
                if row.thumbnail_png.is_empty() {
                    continue;
                }
                let Ok(img) = image::load_from_memory(&row.thumbnail_png) else {
                    continue;
                };
                let tag = format!("eval/sample_{i}");
                events
                    .add_image(
                        &tag,
                        &row.thumbnail_png,
                        img.width(),
                        img.height(),
                        table.step as i64,
                    )
                    .map_err(|e| TrainError::io(events.path(), e))?;
            }
        }
        Ok(())
    }

    /// Drops logged metrics and evaluation tables past `step` (a resumed run redoes those
    /// steps, maybe with another evaluation interval, so a table left there would show an
    /// evaluation that the resumed run never made).
    pub fn truncate_metrics_after(&mut self, step: u64) -> Result<(), TrainError> {
        let path = self.metrics.path().to_path_buf();
        truncate_after(&path, step).map_err(|e| TrainError::io(&path, e))?;
        self.metrics = MetricsLog::open(&path).map_err(|e| TrainError::io(&path, e))?;
        for table in self.eval_table_paths()? {
            let table_step = table
                .file_stem()
                .and_then(|n| n.to_str()?.strip_prefix("step-")?.parse::<u64>().ok());
            if table_step.is_some_and(|s| s > step) {
                std::fs::remove_file(&table).map_err(|e| TrainError::io(&table, e))?;
            }
        }
        Ok(())
    }

    /// The evaluation tables' files, oldest first.
    fn eval_table_paths(&self) -> Result<Vec<PathBuf>, TrainError> {
        let dir = self.root.join("evals");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| TrainError::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// Reads back the evaluation tables, oldest first.
    pub fn eval_tables(&self) -> Result<Vec<EvalTable>, TrainError> {
        Ok(self
            .eval_table_paths()?
            .iter()
            .map(|p| read_json(p))
            .collect::<Result<_, _>>()?)
    }

    /// Writes `report.html` from the logged metrics and evaluation tables.
    pub fn write_report(
        &self,
        title: &str,
        subtitle: &str,
        config_json: &str,
        comparisons: Vec<Comparison>,
        notes: Vec<String>,
    ) -> Result<PathBuf, TrainError> {
        let metrics_path = self.root.join("metrics.jsonl");
        let records = read_metrics(&metrics_path).map_err(|e| TrainError::io(&metrics_path, e))?;
        let mut series: Vec<Series> = Vec::new();
        for r in records {
            let name = format!("{}/{}", r.split, r.name);
            let group = chart_group(&r.split, &r.name);
            match series.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push((r.step, r.value)),
                None => series.push(Series {
                    name,
                    group,
                    points: vec![(r.step, r.value)],
                }),
            }
        }
        let report = ReportData {
            title: title.to_string(),
            subtitle: subtitle.to_string(),
            config_json: config_json.to_string(),
            series,
            comparisons,
            evaluations: self.eval_tables()?,
            notes,
        };
        let path = self.root.join("report.html");
        write_report(&path, &report).map_err(|e| TrainError::io(&path, e))?;
        Ok(path)
    }
}

/// Which chart a metric goes to: the losses together; every other metric on its own chart,
/// with the model's values and the baseline's side by side.
fn chart_group(split: &str, name: &str) -> String {
    match (split, name) {
        (_, "loss") => "loss".into(),
        ("val" | "baseline", name) => name.replace('_', " "),
        (split, name) => format!("{split} {}", name.replace('_', " ")),
    }
}

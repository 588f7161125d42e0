//! What `phi3v train` and the fine-tuning example run when a user gives less than a whole
//! job: the tiny random model and the sample catalogue, each written into the run directory
//! on first use, and the training preset that makes the tiny model learn on a CPU.

use std::path::{Path, PathBuf};

use phi3v_data::sample_data::{self, SampleConfig, SamplePreset};
use phi3v_nn::LoraConfig;
use phi3v_peft::AdapterPlan;
use phi3v_testkit::TinySpec;
use phi3v_train::job::{JobConfig, JobSettings, TaskFileRecord};
use phi3v_train::{BaseDtype, ScheduleKind, TaskFile, TrainConfig, TrainError};
use serde::{Deserialize, Serialize};

/// Where the base model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// A model dir or a model id in the local Hugging Face cache.
    Pretrained(String),
    /// A random model written to `{run}/base-model` (with this tokenizer).
    Tiny { spec: TinySpec, tokenizer: PathBuf },
}

/// Where the catalogue comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// A catalogue file (parquet, CSV, JSON lines) with the Burberry columns.
    Catalogue(PathBuf),
    /// A synthetic catalogue generated into `{run}/sample-data`.
    Sample {
        rows: usize,
        seed: u64,
        /// Which sample catalogue (the one whose columns the task names).
        #[serde(default)]
        preset: SamplePreset,
    },
}

/// The sample catalogue a task file runs on when no `--data` is given: the first preset
/// whose columns include every column the file names (its image, group and template
/// columns), so `tasks/burberry.toml` gets the Burberry sample and `tasks/furniture.toml`
/// the furniture one.
///
/// # Errors
/// The task file's errors, or [`TrainError::Config`] when no preset has its columns.
pub fn sample_preset_for(task: &Path) -> Result<SamplePreset, TrainError> {
    let file = TaskFile::load(task)?;
    let layout = file.record_layout();
    let named: Vec<&str> = std::iter::once(layout.image.as_str())
        .chain(layout.columns.iter().map(|c| c.name.as_str()))
        .collect();
    SamplePreset::ALL
        .into_iter()
        .find(|preset| {
            let columns = preset.columns();
            named.iter().all(|n| columns.iter().any(|c| c == n))
        })
        .ok_or_else(|| {
            TrainError::Config(format!(
                "--task {} names columns ({}) that no sample catalogue has ({}): give the \
                 catalogue with --data",
                task.display(),
                named.join(", "),
                SamplePreset::NAMES.join(", ")
            ))
        })
}

/// A job as the command line describes it, before its model and data exist on disk.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub model: ModelSource,
    pub data: DataSource,
    /// A task file (`--task`); without one, the built-in Burberry task.
    pub task: Option<PathBuf>,
    pub settings: JobSettings,
}

/// A job whose preset files exist, and which of them this call wrote.
#[derive(Debug)]
pub struct Prepared {
    pub job: JobConfig,
    /// Folders written by [`JobSpec::prepare`] (not found from an earlier run).
    written: Vec<PathBuf>,
    /// Whether the run folder itself was created by it.
    created_run_dir: bool,
}

impl Prepared {
    /// Removes what [`JobSpec::prepare`] wrote, for a job that was refused before it started:
    /// a failed command leaves no 17 MB random model behind.
    pub fn abandon(self) {
        for path in &self.written {
            let _ = std::fs::remove_dir_all(path);
        }
        if self.created_run_dir {
            // Only if empty: the run may have written something worth keeping.
            let _ = std::fs::remove_dir(&self.job.settings.run_dir);
        }
    }
}

impl JobSpec {
    /// Writes the tiny model and the sample catalogue where the spec asks for them (once:
    /// a rerun or a resume finds them in the run directory), and returns the job on files.
    pub fn prepare(self) -> Result<Prepared, TrainError> {
        // Read before anything is written: a task file that cannot be read writes nothing.
        let task = self.task.as_deref().map(TaskFileRecord::of).transpose()?;
        let run_dir = &self.settings.run_dir;
        let created_run_dir = !run_dir.exists();
        let mut written = Vec::new();
        let (model, model_label) = match &self.model {
            ModelSource::Pretrained(name) => (name.clone(), name.clone()),
            ModelSource::Tiny { spec, tokenizer } => {
                let dir = run_dir.join("base-model");
                if !dir.join("model.safetensors").is_file() {
                    spec.write(&dir, tokenizer)
                        .map_err(|e| TrainError::io(&dir, e))?;
                    written.push(dir.clone());
                }
                let label = format!("a tiny random Phi-3-V ({})", dir.display());
                (dir.display().to_string(), label)
            }
        };
        let data = match &self.data {
            DataSource::Catalogue(path) => path.clone(),
            DataSource::Sample { rows, seed, preset } => {
                let out_dir = run_dir.join("sample-data");
                let catalogue = out_dir.join(sample_data::CATALOGUE_FILE);
                if !catalogue.is_file() {
                    sample_data::generate(&SampleConfig {
                        rows: *rows,
                        seed: *seed,
                        out_dir: out_dir.clone(),
                        preset: *preset,
                        ..SampleConfig::default()
                    })?;
                    written.push(out_dir);
                }
                catalogue
            }
        };
        Ok(Prepared {
            job: JobConfig {
                model,
                model_label,
                data,
                task,
                settings: self.settings,
            },
            written,
            created_run_dir,
        })
    }
}

/// The preset for the tiny random model on sample data: a high learning rate and every
/// layer adapted (the random base knows nothing, so the adapters must carry everything),
/// and an f32 base (the CPU computes bf16 products through f32 anyway).
///
/// 1,200 updates because the tiny model first learns the answer's format and the marginal
/// distribution of titles and prices, and only then starts reading the image, after 300 to
/// 700 updates depending on the seed: at 300 updates its category accuracy is still at
/// chance.
/// Every evaluation scores the whole validation split of the default sample catalogue
/// (about 150 items), so the comparison with the baselines does not hinge on a few items.
pub fn tiny_preset() -> TrainConfig {
    let mut plan = AdapterPlan::reference(true, false);
    plan.lora = LoraConfig {
        rank: 16,
        alpha: 32.0,
        ..LoraConfig::default()
    };
    TrainConfig {
        plan,
        learning_rate: 3e-3,
        schedule: ScheduleKind::Cosine,
        warmup_steps: 20,
        steps: 1200,
        batch_size: 8,
        grad_accum: 1,
        eval_every: 200,
        eval_samples: 200,
        checkpoint_every: 100,
        max_new_tokens: 40,
        log_every: 10,
        base_dtype: BaseDtype::F32,
        recompute: false,
        ..TrainConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo_file;

    #[test]
    fn a_task_file_without_data_gets_the_sample_preset_of_its_columns() {
        let preset = |path: &Path| sample_preset_for(path);
        assert_eq!(
            preset(&repo_file("tasks/burberry.toml")).unwrap(),
            SamplePreset::Burberry
        );
        assert_eq!(
            preset(&repo_file("tasks/furniture.toml")).unwrap(),
            SamplePreset::Furniture
        );
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("t.toml");
        let text = std::fs::read_to_string(repo_file("tasks/furniture.toml"))
            .unwrap()
            .replace("{type}", "{colour}")
            .replace("type = \"category\"", "colour = \"category\"");
        std::fs::write(&other, text).unwrap();
        let err = preset(&other).unwrap_err().to_string();
        assert!(
            err.contains("names columns (photo, name, colour, width_cm, sku, room)")
                && err.contains("give the catalogue with --data"),
            "{err}"
        );
    }
}

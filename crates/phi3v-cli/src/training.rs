//! One fine-tuning job from the command line, as `phi3v train` and
//! `examples/finetune_burberry` both run it: check the run folder against the inputs, write
//! what the presets need, train, and take back what was written if the run never started.

use std::path::Path;

use phi3v_io::{check_disjoint, Role};
use phi3v_nn::AttentionBackend;
use phi3v_train::job::{check_settings, run_job, JobConfig};
use phi3v_train::{RunSummary, Task, TrainError};

use crate::presets::{DataSource, JobSpec, ModelSource};
use crate::task_choice::TaskChoice;

/// Runs `spec` on backend `B`, for the task its `--task` and `--data` make
/// ([`TaskChoice::choose`]: a task file is checked before anything is written; conversation
/// records are told by their `messages` key).
///
/// Before anything is written, every setting and the run folder are checked
/// ([`check_settings`]: a folder holding another run is refused without `--resume`), and the
/// run folder is checked against the job's inputs: it may not be, contain, or lie inside the
/// model dir, the catalogue or the tokenizer.
///
/// When the job fails before its run started (bad settings, an empty split, a catalogue with
/// no usable row: the trainer writes `job.json` only once every check has passed), the base
/// model and sample catalogue that [`JobSpec::prepare`] wrote for it are removed again, so a
/// refused command leaves nothing behind.
pub fn run_training<B: AttentionBackend>(
    spec: JobSpec,
    device: B::Device,
) -> Result<(JobConfig, RunSummary), TrainError> {
    check_inputs(&spec)?;
    check_settings(&spec.settings)?;
    let data = match &spec.data {
        DataSource::Catalogue(path) => Some(path.as_path()),
        DataSource::Sample { .. } => None,
    };
    let choice = TaskChoice::choose(spec.task.as_deref(), data)?;
    crate::with_task!(choice, task => run_prepared::<B, _>(spec, task, device))
}

/// Writes what the presets need and runs the job for `task`; takes back what was written if
/// the run never started.
fn run_prepared<B: AttentionBackend, T: Task>(
    spec: JobSpec,
    task: T,
    device: B::Device,
) -> Result<(JobConfig, RunSummary), TrainError> {
    let prepared = spec.prepare()?;
    let job = prepared.job.clone();
    match run_job::<B, _>(task, &job, device) {
        Ok(summary) => Ok((job, summary)),
        Err(e) => {
            if !job.settings.run_dir.join("job.json").exists() {
                prepared.abandon();
            }
            Err(e)
        }
    }
}

/// Refuses a run folder that overlaps the job's inputs (names both flags).
fn check_inputs(spec: &JobSpec) -> Result<(), TrainError> {
    let run_dir = &spec.settings.run_dir;
    let mut inputs = Vec::new();
    match &spec.model {
        ModelSource::Pretrained(model) if Path::new(model).exists() => {
            inputs.push(Role::new("--model", Path::new(model)))
        }
        ModelSource::Pretrained(_) => {}
        ModelSource::Tiny { tokenizer, .. } => inputs.push(Role::new("--tokenizer", tokenizer)),
    }
    if let DataSource::Catalogue(data) = &spec.data {
        inputs.push(Role::new("--data", data));
    }
    if let Some(task) = &spec.task {
        inputs.push(Role::new("--task", task));
    }
    Ok(check_disjoint(Role::new("--run-dir", run_dir), &inputs)?)
}

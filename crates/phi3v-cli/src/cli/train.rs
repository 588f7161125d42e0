//! `phi3v train`, `phi3v eval` and `phi3v merge`: thin wrappers over `phi3v-train` and
//! `phi3v-peft`.

use std::error::Error;
use std::path::Path;

use phi3v_io::{check_disjoint, check_replaceable, Role};
use phi3v_peft::PeftError;

use phi3v_cli::summary::{describe_run, format_scores};
use phi3v_cli::task_choice::TaskChoice;
use phi3v_cli::training::run_training;
use phi3v_cli::{with_backend, with_task, BackendChoice, TrainArgs};
use phi3v_nn::AttentionBackend;
use phi3v_train::eval::EvalMetrics;
use phi3v_train::job::{run_eval, EvalJob};
use phi3v_train::{Task, TrainError};

pub fn run(backend: BackendChoice, args: &TrainArgs) -> Result<(), TrainError> {
    let spec = args.job()?;
    let (job, summary) = with_backend!(backend, TrainError::Config, B => {
        run_training::<B>(spec, Default::default())
    })?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    );
    println!("{}", describe_run(&job.settings.run_dir));
    Ok(())
}

pub fn eval(
    backend: BackendChoice,
    overwrite: bool,
    task: Option<&Path>,
    job: &EvalJob,
) -> Result<(), Box<dyn Error>> {
    let mut inputs = vec![Role::new("--data", &job.data)];
    if let Some(task) = task {
        inputs.push(Role::new("--task", task));
    }
    if let Some(adapter) = &job.adapter {
        inputs.push(Role::new("--adapter", adapter));
    }
    let model = Path::new(&job.model);
    if model.exists() {
        inputs.push(Role::new("--model", model));
    }
    check_disjoint(Role::new("--out", &job.out), &inputs)?;
    check_replaceable(&job.out, "--out", overwrite)?;
    // The task file is checked before the model or the data is read.
    let choice = TaskChoice::choose(task, Some(&job.data))?;
    let metrics = with_backend!(backend, TrainError::Config, B => {
        with_task!(choice, task => eval_task::<B, _>(task, job))
    })?;
    print!("{}", format_scores(&metrics));
    println!("details in {}", job.out.join("eval.json").display());
    Ok(())
}

fn eval_task<B: AttentionBackend, T: Task>(
    task: T,
    job: &EvalJob,
) -> Result<EvalMetrics, TrainError> {
    Ok(run_eval::<B, _>(task, job, Default::default())?.metrics)
}

pub fn merge(model: &Path, adapter: &Path, out: &Path, overwrite: bool) -> Result<(), PeftError> {
    let options = phi3v_peft::MergeOptions { overwrite };
    let summary = phi3v_peft::merge_adapter(model, adapter, out, options)?;
    println!(
        "merged {} adapted weights and {} fully trained tensors into {}",
        summary.merged.len(),
        summary.replaced.len(),
        out.display()
    );
    Ok(())
}

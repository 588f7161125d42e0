//! `phi3v train`, `phi3v eval` and `phi3v merge`: thin wrappers over `phi3v-train` and
//! `phi3v-peft`.

use std::error::Error;
use std::path::Path;

use phi3v_io::{check_disjoint, check_replaceable, Role};
use phi3v_peft::PeftError;

use phi3v_cli::summary::{describe_run, format_scores};
use phi3v_cli::training::run_training;
use phi3v_cli::{with_backend, BackendChoice, TrainArgs};
use phi3v_train::job::{run_eval, EvalJob};
use phi3v_train::{BurberryTask, TrainError};

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

pub fn eval(backend: BackendChoice, overwrite: bool, job: &EvalJob) -> Result<(), Box<dyn Error>> {
    let mut inputs = vec![Role::new("--data", &job.data)];
    if let Some(adapter) = &job.adapter {
        inputs.push(Role::new("--adapter", adapter));
    }
    let model = Path::new(&job.model);
    if model.exists() {
        inputs.push(Role::new("--model", model));
    }
    check_disjoint(Role::new("--out", &job.out), &inputs)?;
    check_replaceable(&job.out, "--out", overwrite)?;
    let report = with_backend!(backend, TrainError::Config, B => {
        run_eval::<B, _>(BurberryTask::default(), job, Default::default())
    })?;
    print!("{}", format_scores(&report.metrics));
    println!("details in {}", job.out.join("eval.json").display());
    Ok(())
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

//! `phi3v train`, `phi3v eval` and `phi3v merge`: thin wrappers over `phi3v-train` and
//! `phi3v-peft`.

use std::path::Path;

use phi3v_cli::summary::{describe_run, format_scores};
use phi3v_cli::{with_backend, BackendChoice, TrainArgs};
use phi3v_train::job::{run_eval, run_job, EvalJob};
use phi3v_train::{BurberryTask, TrainError};

pub fn run(backend: BackendChoice, args: &TrainArgs) -> Result<(), TrainError> {
    let job = args.job()?.prepare()?;
    let summary = with_backend!(backend, TrainError::Config, B => {
        run_job::<B, _>(BurberryTask::default(), &job, Default::default())
    })?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    );
    println!("{}", describe_run(&job.settings.run_dir));
    Ok(())
}

pub fn eval(backend: BackendChoice, job: &EvalJob) -> Result<(), TrainError> {
    let report = with_backend!(backend, TrainError::Config, B => {
        run_eval::<B, _>(BurberryTask::default(), job, Default::default())
    })?;
    print!("{}", format_scores(&report.metrics));
    println!("details in {}", job.out.join("eval.json").display());
    Ok(())
}

pub fn merge(model: &Path, adapter: &Path, out: &Path) -> Result<(), TrainError> {
    let summary = phi3v_peft::merge_adapter(model, adapter, out)
        .map_err(|e| TrainError::Config(e.to_string()))?;
    println!(
        "merged {} adapted weights and {} fully trained tensors into {}",
        summary.merged.len(),
        summary.replaced.len(),
        out.display()
    );
    Ok(())
}

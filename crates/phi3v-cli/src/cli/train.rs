//! `phi3v train`, `phi3v eval` and `phi3v merge`: thin wrappers over `phi3v-lora`.

use std::path::Path;

use phi3v_lora::cli::TrainArgs;
use phi3v_lora::job::{describe_run, run_eval, run_job, EvalJob};
use phi3v_lora::LoraError;

use crate::BackendChoice;

pub fn run(backend: BackendChoice, args: &TrainArgs) -> Result<(), LoraError> {
    let job = args.job()?;
    let summary = crate::with_backend!(backend, LoraError::Config, B => {
        run_job::<B>(&job, Default::default())
    })?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).unwrap_or_default()
    );
    println!("{}", describe_run(&job.run_dir));
    Ok(())
}

pub fn eval(backend: BackendChoice, job: &EvalJob) -> Result<(), LoraError> {
    let report = crate::with_backend!(backend, LoraError::Config, B => {
        run_eval::<B>(job, Default::default())
    })?;
    let (m, b) = (&report.metrics.scores, &report.baselines.scores);
    println!("validation loss     {:.4}", report.metrics.val_loss);
    println!(
        "category accuracy   {:.3}  (majority class {:?}: {:.3})",
        m.category_accuracy, report.baselines.majority_category, b.category_accuracy
    );
    println!(
        "price MAE           {:.1}  (mean price {:.1}: {:.1})",
        m.price_mae, report.baselines.mean_price, b.price_mae
    );
    println!(
        "price MAPE          {:.1}%  (baseline {:.1}%)",
        m.price_mape, b.price_mape
    );
    println!("title exact match   {:.3}", m.title_exact_match);
    println!("unparsable answers  {:.3}", m.unparsable_rate);
    println!("details in {}", job.out.join("eval.json").display());
    Ok(())
}

pub fn merge(model: &Path, adapter: &Path, out: &Path) -> Result<(), LoraError> {
    let summary = phi3v_lora::merge::merge_adapter(model, adapter, out)?;
    println!(
        "merged {} adapted weights and {} fully trained tensors into {}",
        summary.merged.len(),
        summary.replaced.len(),
        out.display()
    );
    Ok(())
}

//! What a finished run or an evaluation prints: every score beside its baseline, in the
//! task's own words.

use std::path::Path;

use phi3v_train::eval::EvalMetrics;
use phi3v_train::trainer::RunSummary;

/// The scores of an evaluation, one line each:
/// `category accuracy   0.965  beats majority class (Scarves) at 0.245`.
pub fn format_scores(metrics: &EvalMetrics) -> String {
    // 20 columns, or more for a task's longer labels (`width_cm parse failures`).
    let w = metrics
        .scores
        .iter()
        .map(|s| s.label.chars().count() + 1)
        .fold(20, usize::max);
    let mut out = format!("{:<w$}{:.4}\n", "validation loss", metrics.val_loss);
    for s in &metrics.scores {
        let d = s.decimals;
        let value = format!("{:.d$}", s.value);
        let line = match (&s.baseline, s.beats_baseline()) {
            (Some(b), Some(beats)) => format!(
                "{value}  {} {} at {:.d$}",
                if beats { "beats" } else { "does NOT beat" },
                b.name,
                b.value
            ),
            _ => value,
        };
        out.push_str(&format!("{:<w$}{line}\n", s.label));
    }
    for verdict in metrics.field_verdicts() {
        out.push_str(&format!("field {verdict}\n"));
    }
    out
}

/// How the run ended, then its final scores.
pub fn format_summary(summary: &RunSummary) -> String {
    let mut out = format!(
        "\n{} after {} updates in {:.0} s\n",
        summary.stop_reason, summary.steps, summary.elapsed_secs
    );
    if let Some(eval) = &summary.final_eval {
        out.push_str(&format_scores(eval));
    }
    out
}

/// Where a run's files are.
pub fn describe_run(dir: &Path) -> String {
    format!(
        "run directory {0}\n  report      {0}/report.html\n  summary     {0}/summary.json\n  adapter     {0}/adapter (PEFT)\n  tensorboard --logdir {0}/tensorboard",
        dir.display()
    )
}

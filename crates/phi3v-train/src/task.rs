//! What the trainer is generic over: a fine-tuning task.
//!
//! The loop, the optimizer, checkpoints and the run directory do not know what the model is
//! being taught. A [`Task`] says it: what one example is, the prompt and the answer it
//! becomes, what a generated answer is scored against, and which trivial predictors every
//! score must beat. The Burberry catalogue task ([`crate::tasks::burberry`]) is one
//! implementation; nothing outside it knows about titles, categories or prices.

use std::path::Path;

use phi3v::processor::prompt::RenderedPrompt;
use phi3v_data::catalogue::{Catalogue, CatalogueItem};
use phi3v_data::images::ReadyImage;
use phi3v_track::FieldCell;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// One example as a data source gives it: where it came from and its image.
pub trait TaskItem: Send + Sync {
    /// Where the item came from, for messages (`catalogue row 12`).
    fn origin(&self) -> String;
    /// The item's image (`<|image_1|>` of its prompt).
    fn image(&self) -> &ReadyImage;
}

impl TaskItem for CatalogueItem {
    fn origin(&self) -> String {
        format!("catalogue row {}", self.row)
    }

    fn image(&self) -> &ReadyImage {
        &self.image
    }
}

/// A fine-tuning task.
///
/// Scores are computed from generated text, never from teacher-forced argmax: what a user
/// gets is what the model writes on its own. Each score that has a trivial predictor carries
/// that predictor's value on the same items, so a number always means something.
pub trait Task: Send + Sync {
    /// One example, as read from the data.
    type Item: TaskItem;
    /// What a generated answer is scored against.
    type Truth: Clone + Send + Sync;
    /// The trivial predictors, fitted on the training split.
    type Baselines: Clone + Serialize;

    /// A short name for logs and the report (`burberry`).
    fn name(&self) -> &str;
    /// The catalogue at `path` as this task reads it: which columns, and what each must
    /// hold. The default reads the data crate's default column mapping; a task over other
    /// columns says which (see [`crate::tasks::TemplateTask`]). Errors of the file as a
    /// whole (a column the task needs is missing) surface when its rows are read, before
    /// any training.
    fn catalogue(&self, path: &Path) -> Result<Catalogue, TrainError> {
        Ok(Catalogue::open(path)?)
    }
    /// The prompt (with `<|image_1|>`) and the answer the model is trained to write.
    fn render(&self, item: &Self::Item) -> Result<RenderedPrompt, TrainError>;
    /// The item's truth.
    fn truth(&self, item: &Self::Item) -> Self::Truth;
    /// The key that keeps related items on one side of the train/validation split.
    fn group(&self, item: &Self::Item) -> i64;
    /// Fits the trivial predictors on the training truths.
    fn fit_baselines(&self, train: &[Self::Truth]) -> Self::Baselines;
    /// Scores `answers` against `truths` (pairwise), each beside its baseline on the same
    /// items. The first scores are the ones a person reads first.
    fn score(
        &self,
        answers: &[String],
        truths: &[Self::Truth],
        baselines: &Self::Baselines,
    ) -> Vec<Score>;
    /// One row of an evaluation table: the truth as the answer would read, and a cell per
    /// field of the generated answer.
    fn table_row(&self, answer: &str, truth: &Self::Truth) -> (String, Vec<FieldCell>);
}

/// One number of an evaluation, beside the trivial predictor it must beat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Name in `metrics.jsonl` and TensorBoard (`category_accuracy`).
    pub key: String,
    /// What a person reads (`category accuracy`).
    pub label: String,
    pub value: f64,
    pub higher_is_better: bool,
    /// Decimals when printed.
    pub decimals: usize,
    /// The trivial predictor on the same items, when the score has one.
    pub baseline: Option<Baseline>,
    /// The field of the answer the score is about (`title`), when the task scores field by
    /// field: the summary says for each field whether all its scores beat their baselines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A trivial predictor's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// What the predictor is (`majority class (Scarves)`).
    pub name: String,
    pub value: f64,
}

impl Score {
    /// Whether the score is strictly better than its baseline (`None` without one). A NaN
    /// on either side does not beat anything.
    pub fn beats_baseline(&self) -> Option<bool> {
        self.baseline.as_ref().map(|b| {
            if self.higher_is_better {
                self.value > b.value
            } else {
                self.value < b.value
            }
        })
    }

    /// `category accuracy 0.965 (baseline 0.245)`.
    pub fn brief(&self) -> String {
        let d = self.decimals;
        match &self.baseline {
            Some(b) => format!(
                "{} {:.d$} (baseline {:.d$})",
                self.label, self.value, b.value
            ),
            None => format!("{} {:.d$}", self.label, self.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(value: f64, higher: bool, baseline: Option<f64>) -> Score {
        Score {
            key: "k".into(),
            label: "k".into(),
            value,
            higher_is_better: higher,
            decimals: 3,
            baseline: baseline.map(|value| Baseline {
                name: "b".into(),
                value,
            }),
            field: None,
        }
    }

    #[test]
    fn beating_a_baseline_respects_direction_ties_and_nan() {
        assert_eq!(score(0.9, true, Some(0.5)).beats_baseline(), Some(true));
        assert_eq!(score(0.5, true, Some(0.5)).beats_baseline(), Some(false));
        assert_eq!(score(10.0, false, Some(20.0)).beats_baseline(), Some(true));
        assert_eq!(
            score(f64::NAN, false, Some(20.0)).beats_baseline(),
            Some(false)
        );
        assert_eq!(score(0.4, true, None).beats_baseline(), None);
    }
}

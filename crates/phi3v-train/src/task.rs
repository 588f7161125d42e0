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
use phi3v_data::conversations::ConversationItem;
use phi3v_data::images::{ImageFetcher, ReadyImage};
use phi3v_data::report::Report;
use phi3v_track::FieldCell;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// One example as a data source gives it: where it came from and its images.
pub trait TaskItem: Send + Sync {
    /// Where the item came from, for messages (`catalogue row 12`).
    fn origin(&self) -> String;
    /// The item's images, in tag order (`images()[0]` is `<|image_1|>` of its prompt).
    fn images(&self) -> &[ReadyImage];
    /// Where the item is in its file, for the report of items left out.
    fn source_row(&self) -> SourceRow;
}

/// Where an item is in its data file: what the drop report records of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRow {
    /// 0-based index of the row or record.
    pub row: usize,
    /// Its 1-based line, for line-based files.
    pub line: Option<u64>,
    /// Its product code, when the data has one (a catalogue read through the product
    /// mapping); `None` for records of named columns and conversations, whose rows the
    /// report finds by line or row alone.
    pub product_code: Option<i64>,
}

impl TaskItem for CatalogueItem {
    fn origin(&self) -> String {
        format!("catalogue row {}", self.row)
    }

    fn images(&self) -> &[ReadyImage] {
        std::slice::from_ref(&self.image)
    }

    fn source_row(&self) -> SourceRow {
        SourceRow {
            row: self.row,
            line: self.line,
            // Read as records (a task file's columns), the product holds defaults: code 0.
            product_code: self.record.is_empty().then_some(self.product.product_code),
        }
    }
}

impl TaskItem for ConversationItem {
    fn origin(&self) -> String {
        format!("conversation line {}", self.line)
    }

    fn images(&self) -> &[ReadyImage] {
        &self.images
    }

    fn source_row(&self) -> SourceRow {
        SourceRow {
            row: self.row,
            line: Some(self.line),
            product_code: None,
        }
    }
}

/// The usable items of a data file, and the report of those left out.
#[derive(Debug, Clone)]
pub struct LoadedItems<I> {
    pub items: Vec<I>,
    pub report: Report,
}

/// Loads `catalogue` as a catalogue task's items (bad rows reported, not fatal).
pub fn load_catalogue(
    catalogue: Catalogue,
    fetcher: &ImageFetcher,
) -> Result<LoadedItems<CatalogueItem>, TrainError> {
    let loaded = catalogue.load(fetcher)?;
    Ok(LoadedItems {
        items: loaded.items,
        report: loaded.report,
    })
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
    /// The items of the data file at `path`, read as this task reads it (which columns, or
    /// conversation records), with images fetched and checked through `fetcher`; rows that
    /// cannot be used are in the report, not errors. Errors are for the file as a whole (a
    /// column the task needs is missing), before any training. A catalogue task reads
    /// through [`load_catalogue`].
    fn load(
        &self,
        path: &Path,
        fetcher: &ImageFetcher,
    ) -> Result<LoadedItems<Self::Item>, TrainError>;
    /// The prompt (with `<|image_N|>` tags, one per image of the item) and the answer the
    /// model is trained to write.
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

    /// A row read through a task file's columns has no product code (its `product` holds
    /// defaults): the drop report lists it by line, not as "product code 0".
    #[test]
    fn only_rows_of_the_product_mapping_report_a_product_code() {
        use phi3v::processor::prompt::FieldValue;
        use phi3v_data::catalogue::Product;
        use phi3v_data::images::ImageData;

        let mut item = CatalogueItem {
            row: 4,
            line: Some(6),
            product: Product {
                product_code: 80012,
                ..Product::default()
            },
            record: Default::default(),
            image: ReadyImage {
                data: ImageData::Bytes(std::sync::Arc::from(Vec::new())),
                width: 1,
                height: 1,
            },
        };
        let place = |item: &CatalogueItem| item.source_row();
        assert_eq!(place(&item).product_code, Some(80012));
        item.record
            .insert("name".into(), FieldValue::from("Oak Chair"));
        assert_eq!(
            place(&item),
            SourceRow {
                row: 4,
                line: Some(6),
                product_code: None
            }
        );
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

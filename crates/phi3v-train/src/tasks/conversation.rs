//! A [`Task`] over a conversation dataset ([`phi3v_data::conversations`]): JSON lines of
//! `{messages, images}`, the form ms-swift and LLaMA-Factory accept.
//!
//! Every assistant turn is trained (see [`phi3v::processor::prompt::conversation`]); the
//! model is evaluated on the last one, generated from everything before it. Its scores:
//!
//! - exact match of the last assistant turn, against the trivial predictor that always
//!   writes the most frequent last turn of the training split;
//! - with a task file ([`ConversationTask::with_fields`]), the per-field scores of
//!   [`TemplateTask`]: the last turn is read through the file's `[prompt] answer` template
//!   as a generated answer is, each field scored by its type against that type's baseline.
//!   A record whose last turn the template cannot read is skipped and reported (its fields
//!   have no truth to score against).
//!
//! Records sharing their images (the same photos asked about twice) stay on one side of
//! the split: the group key is a hash of the image list as the record writes it.

use std::path::Path;

use phi3v::processor::prompt::{conversation, RenderedPrompt};
use phi3v_data::conversations::{ConversationFile, ConversationItem};
use phi3v_data::images::ImageFetcher;
use phi3v_track::FieldCell;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fields::{exact_match, most_frequent};
use super::template_task::{TemplateBaselines, TemplateTask, TemplateTruth};
use crate::error::TrainError;
use crate::task::{Baseline, LoadedItems, Score, Task};

/// The task of a conversation file, with the per-field scores of a task file if one is
/// given.
#[derive(Debug, Clone, Default)]
pub struct ConversationTask {
    fields: Option<TemplateTask>,
}

impl ConversationTask {
    /// Scores the last assistant turn by exact match only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also scores each field of the last assistant turn, read through `task`'s answer
    /// template (its `[data]` and `[prompt] user` do not apply: the records hold the turns).
    pub fn with_fields(task: TemplateTask) -> Self {
        Self { fields: Some(task) }
    }
}

/// The truth of a record: its last assistant turn, and its fields when a task file reads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationTruth {
    pub answer: String,
    pub fields: Option<TemplateTruth>,
}

/// The trivial predictors, fitted on the training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationBaselines {
    /// The most frequent last assistant turn.
    pub most_frequent_answer: String,
    /// Each field's, with a task file.
    pub fields: Option<TemplateBaselines>,
}

impl Task for ConversationTask {
    type Item = ConversationItem;
    type Truth = ConversationTruth;
    type Baselines = ConversationBaselines;

    fn name(&self) -> &str {
        match &self.fields {
            Some(task) => task.name(),
            None => "conversations",
        }
    }

    fn load(
        &self,
        path: &Path,
        fetcher: &ImageFetcher,
    ) -> Result<LoadedItems<ConversationItem>, TrainError> {
        let loaded = ConversationFile::open(path).load(fetcher)?;
        Ok(LoadedItems {
            items: loaded.items,
            report: loaded.report,
        })
    }

    /// The whole conversation; a record whose last turn the task file cannot read is
    /// refused here, so that it is skipped and reported rather than scored without a truth.
    fn render(&self, item: &ConversationItem) -> Result<RenderedPrompt, TrainError> {
        if let Some(task) = &self.fields {
            let file = task.file();
            task.truth_of_answer(item.last_answer())
                .map_err(|e| TrainError::TaskFile {
                    path: file.path.clone(),
                    message: format!(
                        "[prompt] answer {:?} does not fit the last assistant turn {:?}: {e}",
                        file.answer.as_str(),
                        item.last_answer()
                    ),
                })?;
        }
        let exchanges: Vec<(&str, &str)> = item
            .exchanges
            .iter()
            .map(|(user, reply)| (user.as_str(), reply.as_str()))
            .collect();
        Ok(conversation(item.system.as_deref(), &exchanges)
            .expect("a loaded record has an exchange"))
    }

    fn truth(&self, item: &ConversationItem) -> ConversationTruth {
        let answer = item.last_answer().to_string();
        ConversationTruth {
            fields: self
                .fields
                .as_ref()
                .and_then(|task| task.truth_of_answer(&answer).ok()),
            answer,
        }
    }

    fn group(&self, item: &ConversationItem) -> i64 {
        if item.image_refs.is_empty() {
            return item.row as i64;
        }
        let mut hasher = Sha256::new();
        for image in &item.image_refs {
            hasher.update(image.as_bytes());
            hasher.update([0]);
        }
        let digest = hasher.finalize();
        i64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    fn fit_baselines(&self, train: &[ConversationTruth]) -> ConversationBaselines {
        ConversationBaselines {
            most_frequent_answer: most_frequent(train.iter().map(|t| t.answer.as_str()))
                .unwrap_or_default(),
            fields: self
                .fields
                .as_ref()
                .map(|task| task.fit_baselines(&field_truths(train))),
        }
    }

    fn score(
        &self,
        answers: &[String],
        truths: &[ConversationTruth],
        baselines: &ConversationBaselines,
    ) -> Vec<Score> {
        let generated: Vec<Option<&str>> = answers.iter().map(|a| Some(a.trim())).collect();
        let true_answers: Vec<&str> = truths.iter().map(|t| t.answer.as_str()).collect();
        let m = &baselines.most_frequent_answer;
        let constant = vec![Some(m.as_str()); truths.len()];
        let mut scores = vec![Score {
            key: "answer_exact_match".into(),
            label: "last answer exact match".into(),
            value: exact_match(&generated, &true_answers),
            higher_is_better: true,
            decimals: 3,
            baseline: Some(Baseline {
                name: format!("most frequent training answer ({m})"),
                value: exact_match(&constant, &true_answers),
            }),
            field: None,
        }];
        if let (Some(task), Some(field_baselines)) = (&self.fields, &baselines.fields) {
            scores.extend(task.score(answers, &field_truths(truths), field_baselines));
        }
        scores
    }

    fn table_row(&self, answer: &str, truth: &ConversationTruth) -> (String, Vec<FieldCell>) {
        match (&self.fields, &truth.fields) {
            (Some(task), Some(fields)) => task.table_row(answer, fields),
            _ => (
                truth.answer.clone(),
                vec![FieldCell::judged(
                    "answer",
                    answer.to_string(),
                    answer.trim() == truth.answer,
                )],
            ),
        }
    }
}

/// The field truths of `truths` (every record that became an example has them when a task
/// file is given: see [`ConversationTask::render`]).
fn field_truths(truths: &[ConversationTruth]) -> Vec<TemplateTruth> {
    truths.iter().filter_map(|t| t.fields.clone()).collect()
}

//! A [`Task`] driven by a [task file](super::task_file): any catalogue, any answer.
//!
//! The catalogue is read as records of the columns the task file names
//! ([`TaskFile::record_layout`]). The prompt and the answer are its templates rendered from
//! a row. A generated answer is read back through the answer template
//! ([`Template::captures`]), and each field is scored by its type ([`super::fields`]) beside
//! that type's trivial predictor, fitted on the training split. Every score carries its
//! field's name, so the summary can say field by field whether the model beats its
//! baselines.

use std::path::Path;

use phi3v::processor::prompt::{generation_prompt, FieldValue, RenderedPrompt};
use phi3v_data::catalogue::{Catalogue, CatalogueItem};
use phi3v_data::images::ImageFetcher;
use phi3v_track::FieldCell;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fields::{
    character_error_rate, exact_match, macro_f1, mean_and_median, most_frequent, number_scores,
    parse_number, FieldKind,
};
use super::task_file::{AnswerField, TaskFile};
use super::template::format_value;
use crate::error::TrainError;
use crate::task::{load_catalogue, Baseline, LoadedItems, Score, Task};

/// The task a [`TaskFile`] describes.
#[derive(Debug, Clone)]
pub struct TemplateTask {
    file: TaskFile,
}

impl TemplateTask {
    pub fn new(file: TaskFile) -> Self {
        Self { file }
    }

    /// Reads and checks the task file at `path`.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        Ok(Self::new(TaskFile::load(path)?))
    }

    pub fn file(&self) -> &TaskFile {
        &self.file
    }

    /// The catalogue at `path` read as records of the columns the task file names.
    pub fn catalogue(&self, path: &Path) -> Result<Catalogue, TrainError> {
        Ok(Catalogue::open(path)?.with_record_layout(self.file.record_layout()))
    }

    /// The truth of an answer written out (the last assistant turn of a conversation): the
    /// answer and each field read back from it as a generated answer is read.
    ///
    /// # Errors
    /// A message naming the first field the answer template cannot read from it.
    pub fn truth_of_answer(&self, answer: &str) -> Result<TemplateTruth, String> {
        let fields = self
            .read_fields(answer)
            .into_iter()
            .zip(&self.file.fields)
            .map(|(read, field)| match (read.ok(field.kind), read.text) {
                (true, Some(text)) => Ok(FieldTruth {
                    text,
                    number: read.number,
                }),
                _ => Err(format!(
                    "field {{{}}} ({}) cannot be read from it",
                    field.name(),
                    field.kind.name()
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(TemplateTruth {
            answer: answer.to_string(),
            fields,
        })
    }

    /// What each field says in `answer`: its text, and for a number field the number read
    /// from it (`None` where the field could not be read).
    fn read_fields(&self, answer: &str) -> Vec<Read> {
        self.file
            .answer
            .captures(answer)
            .into_iter()
            .zip(&self.file.fields)
            .map(|(text, field)| {
                let number = match field.kind {
                    FieldKind::Number => text.and_then(|t| read_number(field, t)),
                    _ => None,
                };
                Read {
                    text: text.map(str::to_string),
                    number,
                }
            })
            .collect()
    }
}

/// One field of a generated answer.
struct Read {
    text: Option<String>,
    number: Option<f64>,
}

impl Read {
    /// Whether the field was read: a number for number fields, any text otherwise.
    fn ok(&self, kind: FieldKind) -> bool {
        match kind {
            FieldKind::Number => self.number.is_some(),
            _ => self.text.is_some(),
        }
    }
}

/// A number written under `field`'s format (a `%` spec writes a hundredth).
fn read_number(field: &AnswerField, text: &str) -> Option<f64> {
    let value = parse_number(text)?;
    let percent = field
        .placeholder
        .spec
        .as_ref()
        .is_some_and(|s| s.is_percent());
    Some(if percent { value / 100.0 } else { value })
}

/// The truth of one item: the answer it trains, and each field's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateTruth {
    pub answer: String,
    /// One per field of the answer, in order.
    pub fields: Vec<FieldTruth>,
}

/// A field's true value: the text the answer writes, and the number for number fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldTruth {
    pub text: String,
    pub number: Option<f64>,
}

/// Each field's trivial predictor, fitted on the training truths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateBaselines {
    pub fields: Vec<FieldBaseline>,
}

/// One field's trivial predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FieldBaseline {
    /// Always the most frequent training text.
    Text { most_frequent: String },
    /// Always the majority training class.
    Category { majority: String },
    /// Always the training mean (or, for MAE, the median when it does better).
    Number { mean: f64, median: f64 },
}

impl Task for TemplateTask {
    type Item = CatalogueItem;
    type Truth = TemplateTruth;
    type Baselines = TemplateBaselines;

    fn name(&self) -> &str {
        &self.file.name
    }

    fn load(
        &self,
        path: &Path,
        fetcher: &ImageFetcher,
    ) -> Result<LoadedItems<CatalogueItem>, TrainError> {
        load_catalogue(self.catalogue(path)?, fetcher)
    }

    fn render(&self, item: &CatalogueItem) -> Result<RenderedPrompt, TrainError> {
        let err = |key: &str, e: super::template::TemplateError| TrainError::TaskFile {
            path: self.file.path.clone(),
            message: format!("[prompt] {key} for catalogue row {}: {e}", item.row),
        };
        let system = match &self.file.system {
            Some(t) => Some(t.render(&item.record).map_err(|e| err("system", e))?),
            None => None,
        };
        let user = self
            .file
            .user
            .render(&item.record)
            .map_err(|e| err("user", e))?;
        Ok(RenderedPrompt::new(
            generation_prompt(system.as_deref(), &user),
            self.file
                .answer
                .render(&item.record)
                .map_err(|e| err("answer", e))?,
        ))
    }

    fn truth(&self, item: &CatalogueItem) -> TemplateTruth {
        // Called on items whose answer rendered (see `render`), so every value is there.
        let value = |name: &str| item.record.get(name).cloned().unwrap_or(FieldValue::Null);
        TemplateTruth {
            answer: self.file.answer.render(&item.record).unwrap_or_default(),
            fields: self
                .file
                .fields
                .iter()
                .map(|f| {
                    let v = value(f.name());
                    FieldTruth {
                        text: format_value(&v, f.placeholder.spec.as_ref())
                            .unwrap_or_else(|_| v.to_string()),
                        number: match v {
                            FieldValue::Int(i) => Some(i as f64),
                            FieldValue::Float(x) => Some(x),
                            _ => None,
                        }
                        .filter(|_| f.kind == FieldKind::Number),
                    }
                })
                .collect(),
        }
    }

    /// The group column's value: an integer as itself (so a product code groups as the
    /// built-in Burberry task groups it), anything else by a stable hash of its text; each
    /// row alone without a group column.
    fn group(&self, item: &CatalogueItem) -> i64 {
        let Some(column) = &self.file.group else {
            return item.row as i64;
        };
        match item.record.get(column) {
            Some(FieldValue::Int(v)) => *v,
            Some(other) => {
                let digest = Sha256::digest(other.to_string().as_bytes());
                i64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
            }
            None => item.row as i64,
        }
    }

    fn fit_baselines(&self, train: &[TemplateTruth]) -> TemplateBaselines {
        let fields = self
            .file
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let texts = || train.iter().map(|t| t.fields[i].text.as_str());
                match f.kind {
                    FieldKind::Text => FieldBaseline::Text {
                        most_frequent: most_frequent(texts()).unwrap_or_default(),
                    },
                    FieldKind::Category => FieldBaseline::Category {
                        majority: most_frequent(texts()).unwrap_or_default(),
                    },
                    FieldKind::Number => {
                        let values: Vec<f64> =
                            train.iter().filter_map(|t| t.fields[i].number).collect();
                        let (mean, median) = mean_and_median(&values);
                        FieldBaseline::Number { mean, median }
                    }
                }
            })
            .collect();
        TemplateBaselines { fields }
    }

    fn score(
        &self,
        answers: &[String],
        truths: &[TemplateTruth],
        baselines: &TemplateBaselines,
    ) -> Vec<Score> {
        let reads: Vec<Vec<Read>> = answers.iter().map(|a| self.read_fields(a)).collect();
        let mut scores = Vec::new();
        for (i, (field, baseline)) in self.file.fields.iter().zip(&baselines.fields).enumerate() {
            let name = field.name();
            let score = |metric: &str, label: &str, value: f64, higher, baseline| Score {
                key: format!("{name}_{metric}"),
                label: format!("{name} {label}"),
                value,
                higher_is_better: higher,
                decimals: 3,
                baseline,
                field: Some(name.to_string()),
            };
            let texts: Vec<Option<&str>> = reads.iter().map(|r| r[i].text.as_deref()).collect();
            let true_texts: Vec<&str> = truths.iter().map(|t| t.fields[i].text.as_str()).collect();
            match baseline {
                FieldBaseline::Text { most_frequent: m } => {
                    let b = vec![Some(m.as_str()); truths.len()];
                    let base =
                        |value| Some(named(format!("most frequent training value ({m})"), value));
                    scores.push(score(
                        "exact_match",
                        "exact match",
                        exact_match(&texts, &true_texts),
                        true,
                        base(exact_match(&b, &true_texts)),
                    ));
                    scores.push(score(
                        "cer",
                        "character error rate",
                        character_error_rate(&texts, &true_texts),
                        false,
                        base(character_error_rate(&b, &true_texts)),
                    ));
                }
                FieldBaseline::Category { majority } => {
                    let b = vec![Some(majority.as_str()); truths.len()];
                    let base = |value| Some(named(format!("majority class ({majority})"), value));
                    scores.push(score(
                        "accuracy",
                        "accuracy",
                        exact_match(&texts, &true_texts),
                        true,
                        base(exact_match(&b, &true_texts)),
                    ));
                    scores.push(score(
                        "macro_f1",
                        "macro-F1",
                        macro_f1(&texts, &true_texts),
                        true,
                        base(macro_f1(&b, &true_texts)),
                    ));
                }
                FieldBaseline::Number { mean, median } => {
                    let numbers: Vec<Option<f64>> = reads.iter().map(|r| r[i].number).collect();
                    let true_numbers: Vec<f64> = truths
                        .iter()
                        .map(|t| t.fields[i].number.unwrap_or(f64::NAN))
                        .collect();
                    let model = number_scores(&numbers, &true_numbers);
                    let by_mean = number_scores(&vec![Some(*mean); truths.len()], &true_numbers);
                    let by_median =
                        number_scores(&vec![Some(*median); truths.len()], &true_numbers);
                    let mean_name = format!("mean training value ({mean:.1})");
                    // MAE is held to the better of the two constant predictors: the median
                    // minimises it, the mean is what the other metrics compare with.
                    let mae_baseline = if by_median.mae < by_mean.mae {
                        named(
                            format!("median training value ({median:.1})"),
                            by_median.mae,
                        )
                    } else {
                        named(mean_name.clone(), by_mean.mae)
                    };
                    let mut number = |metric: &str, label: &str, value, higher, baseline| {
                        let mut s = score(metric, label, value, higher, Some(baseline));
                        s.decimals = 1;
                        scores.push(s);
                    };
                    number("mae", "MAE", model.mae, false, mae_baseline);
                    number(
                        "mape",
                        "MAPE (%)",
                        model.mape,
                        false,
                        named(mean_name.clone(), by_mean.mape),
                    );
                    scores.push(score(
                        "within_10pct",
                        "within 10%",
                        model.within_10pct,
                        true,
                        Some(named(mean_name, by_mean.within_10pct)),
                    ));
                }
            }
            let failures = reads.iter().filter(|r| !r[i].ok(field.kind)).count();
            scores.push(score(
                "parse_failures",
                "parse failures",
                failures as f64 / reads.len().max(1) as f64,
                false,
                None,
            ));
        }
        scores
    }

    fn table_row(&self, answer: &str, truth: &TemplateTruth) -> (String, Vec<FieldCell>) {
        let reads = self.read_fields(answer);
        let mut cells = Vec::new();
        for ((field, read), true_field) in self.file.fields.iter().zip(&reads).zip(&truth.fields) {
            let name = field.name();
            match (field.kind, true_field.number) {
                (FieldKind::Number, Some(t)) => {
                    let shown =
                        |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}"));
                    cells.push(FieldCell::shown(format!("true {name}"), shown(Some(t))));
                    cells.push(FieldCell::shown(format!("read {name}"), shown(read.number)));
                    cells.push(FieldCell::shown(
                        format!("{name} error"),
                        shown(read.number.map(|v| (v - t).abs())),
                    ));
                }
                _ => cells.push(FieldCell::judged(
                    name,
                    read.text.clone().unwrap_or_default(),
                    read.text.as_deref() == Some(true_field.text.as_str()),
                )),
            }
        }
        (truth.answer.clone(), cells)
    }
}

fn named(name: String, value: f64) -> Baseline {
    Baseline { name, value }
}

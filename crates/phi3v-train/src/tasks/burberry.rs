//! The reference task: a Burberry product's title, category and full price from its photo.
//!
//! - prompt: `<|image_1|>What is shown in this image?`
//! - answer: `Product: {title}, Category: {category3_code}, Full Price: {full_price}`
//!
//! Generated answers are read back into fields ([`parse_answer`]) and scored against the
//! truth: title exact match, category accuracy, price MAE and MAPE, and the share of answers
//! without a parsable price; category and price beside the trivial predictors (the majority
//! training category, the mean training price).

use phi3v::processor::prompt::python_float_repr;
use phi3v::processor::prompt::{PromptTemplate, RenderedPrompt};
use std::path::Path;

use phi3v_data::catalogue::{Catalogue, CatalogueItem};
use phi3v_data::images::ImageFetcher;
use phi3v_track::FieldCell;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::task::{load_catalogue, Baseline, LoadedItems, Score, Task};

/// The user turn: the image, then the question.
pub const USER: &str = "<|image_1|>What is shown in this image?";
/// The answer, with the catalogue's column names.
pub const ANSWER: &str = "Product: {title}, Category: {category3_code}, Full Price: {full_price}";

/// The Burberry catalogue task.
#[derive(Debug, Clone)]
pub struct BurberryTask {
    template: PromptTemplate,
}

impl Default for BurberryTask {
    fn default() -> Self {
        Self {
            template: PromptTemplate::new(USER, ANSWER).expect("the Burberry templates parse"),
        }
    }
}

impl Task for BurberryTask {
    type Item = CatalogueItem;
    type Truth = Truth;
    type Baselines = Baselines;

    fn name(&self) -> &str {
        "burberry"
    }

    fn load(
        &self,
        path: &Path,
        fetcher: &ImageFetcher,
    ) -> Result<LoadedItems<CatalogueItem>, TrainError> {
        load_catalogue(Catalogue::open(path)?, fetcher)
    }

    fn render(&self, item: &CatalogueItem) -> Result<RenderedPrompt, TrainError> {
        Ok(self.template.render(&item.product)?)
    }

    fn truth(&self, item: &CatalogueItem) -> Truth {
        let p = &item.product;
        Truth {
            title: p.title.clone(),
            category: p.category3_code.clone(),
            price: p.full_price,
        }
    }

    fn group(&self, item: &CatalogueItem) -> i64 {
        item.product.product_code
    }

    fn fit_baselines(&self, train: &[Truth]) -> Baselines {
        Baselines::fit(train)
    }

    fn score(&self, answers: &[String], truths: &[Truth], baselines: &Baselines) -> Vec<Score> {
        let parsed: Vec<ParsedAnswer> = answers.iter().map(|a| parse_answer(a)).collect();
        let model = score(&parsed, truths);
        let base = score(&vec![baselines.guess(); truths.len()], truths);
        let majority = format!("majority class ({})", baselines.majority_category);
        let mean = format!("mean training price ({:.1})", baselines.mean_price);
        let entry = |key: &str,
                     label: &str,
                     value: f64,
                     higher,
                     decimals,
                     baseline: Option<(&str, f64)>| Score {
            key: key.into(),
            label: label.into(),
            value,
            higher_is_better: higher,
            decimals,
            baseline: baseline.map(|(name, value)| Baseline {
                name: name.into(),
                value,
            }),
            field: None,
        };
        vec![
            entry(
                "category_accuracy",
                "category accuracy",
                model.category_accuracy,
                true,
                3,
                Some((&majority, base.category_accuracy)),
            ),
            entry(
                "price_mae",
                "price MAE",
                model.price_mae,
                false,
                1,
                Some((&mean, base.price_mae)),
            ),
            entry(
                "price_mape",
                "price MAPE (%)",
                model.price_mape,
                false,
                1,
                Some((&mean, base.price_mape)),
            ),
            entry(
                "title_exact_match",
                "title exact match",
                model.title_exact_match,
                true,
                3,
                None,
            ),
            entry(
                "unparsable_rate",
                "unparsable answers",
                model.unparsable_rate,
                false,
                3,
                None,
            ),
        ]
    }

    fn table_row(&self, answer: &str, truth: &Truth) -> (String, Vec<FieldCell>) {
        let p = parse_answer(answer);
        let text = format!(
            "Product: {}, Category: {}, Full Price: {}",
            truth.title,
            truth.category,
            python_float_repr(truth.price)
        );
        let money = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}"));
        let cells = vec![
            FieldCell::shown("true price", money(Some(truth.price))),
            FieldCell::shown("parsed price", money(p.price)),
            FieldCell::shown("abs error", money(p.price.map(|x| (x - truth.price).abs()))),
            FieldCell::judged(
                "category",
                p.category.clone().unwrap_or_default(),
                p.category.as_deref() == Some(truth.category.as_str()),
            ),
            FieldCell::judged(
                "title",
                "",
                p.title.as_deref() == Some(truth.title.as_str()),
            ),
        ];
        (text, cells)
    }
}

/// The fields of a `Product: {title}, Category: {category}, Full Price: {price}` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedAnswer {
    pub title: Option<String>,
    pub category: Option<String>,
    pub price: Option<f64>,
}

const PRODUCT: &str = "Product:";
const CATEGORY: &str = ", Category:";
const PRICE: &str = ", Full Price:";

/// Parses an answer. Titles may contain commas: the field markers are searched from the
/// right. A price is the leading number after `Full Price:` (`1,890.0` and `$1890` read
/// as 1890); anything else leaves the field `None`.
pub fn parse_answer(text: &str) -> ParsedAnswer {
    let text = text.trim();
    let mut out = ParsedAnswer::default();
    let (head, price) = match text.rfind(PRICE) {
        Some(i) => (&text[..i], Some(&text[i + PRICE.len()..])),
        None => (text, None),
    };
    out.price = price.and_then(parse_price);
    let (head, category) = match head.rfind(CATEGORY) {
        Some(i) => (&head[..i], Some(head[i + CATEGORY.len()..].trim())),
        None => (head, None),
    };
    out.category = category.filter(|c| !c.is_empty()).map(str::to_string);
    out.title = head
        .trim()
        .strip_prefix(PRODUCT)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    out
}

fn parse_price(text: &str) -> Option<f64> {
    let number: String = text
        .trim()
        .trim_start_matches('$')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    let number = number.trim_end_matches('.');
    number.parse::<f64>().ok().filter(|p| p.is_finite())
}

/// The truth of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub title: String,
    pub category: String,
    pub price: f64,
}

/// Scores of a set of generated answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldScores {
    pub count: usize,
    /// Share of answers whose title equals the truth exactly.
    pub title_exact_match: f64,
    pub category_accuracy: f64,
    /// Mean absolute price error over the answers with a parsable price.
    pub price_mae: f64,
    /// Mean absolute percentage error (in %) over the same answers.
    pub price_mape: f64,
    /// Share of answers without a parsable price.
    pub unparsable_rate: f64,
}

/// Scores `answers` against `truths` (pairwise).
pub fn score(answers: &[ParsedAnswer], truths: &[Truth]) -> FieldScores {
    let n = answers.len().min(truths.len());
    if n == 0 {
        return FieldScores::default();
    }
    let (mut titles, mut categories, mut parsed) = (0usize, 0usize, 0usize);
    let (mut abs, mut pct) = (0.0, 0.0);
    for (a, t) in answers.iter().zip(truths) {
        titles += usize::from(a.title.as_deref() == Some(t.title.as_str()));
        categories += usize::from(a.category.as_deref() == Some(t.category.as_str()));
        if let Some(p) = a.price {
            parsed += 1;
            abs += (p - t.price).abs();
            pct += 100.0 * (p - t.price).abs() / t.price.abs().max(1e-9);
        }
    }
    let per = |x: usize| x as f64 / n as f64;
    FieldScores {
        count: n,
        title_exact_match: per(titles),
        category_accuracy: per(categories),
        price_mae: if parsed > 0 {
            abs / parsed as f64
        } else {
            f64::NAN
        },
        price_mape: if parsed > 0 {
            pct / parsed as f64
        } else {
            f64::NAN
        },
        unparsable_rate: per(n - parsed),
    }
}

/// The trivial predictors every score is compared with: always the most frequent training
/// category, always the mean training price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    pub majority_category: String,
    pub mean_price: f64,
}

impl Baselines {
    /// Fits the baselines on the training truths.
    pub fn fit(train: &[Truth]) -> Self {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for t in train {
            *counts.entry(t.category.as_str()).or_default() += 1;
        }
        // Ties go to the alphabetically first category, so the baseline is deterministic.
        let majority_category = counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(c, _)| c.to_string())
            .unwrap_or_default();
        let mean_price = train.iter().map(|t| t.price).sum::<f64>() / train.len().max(1) as f64;
        Self {
            majority_category,
            mean_price,
        }
    }

    /// The answer the baselines give for every item (no title).
    pub fn guess(&self) -> ParsedAnswer {
        ParsedAnswer {
            title: None,
            category: Some(self.majority_category.clone()),
            price: Some(self.mean_price),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_titles_with_commas_and_formatted_prices() {
        let a = parse_answer("Product: Coat, Long, Beige, Category: Coats, Full Price: 1,890.0");
        assert_eq!(a.title.as_deref(), Some("Coat, Long, Beige"));
        assert_eq!(a.category.as_deref(), Some("Coats"));
        assert_eq!(a.price, Some(1890.0));
        let b = parse_answer("Product: Bag, Category: Bags, Full Price: $450.");
        assert_eq!(b.price, Some(450.0));
    }

    #[test]
    fn missing_fields_stay_none() {
        let a = parse_answer("Product: Scarf, Category: Scarves");
        assert_eq!(a.price, None);
        assert_eq!(a.category.as_deref(), Some("Scarves"));
        let b = parse_answer("gibberish, Full Price: about ten");
        assert_eq!(b.price, None);
        assert_eq!(b.title, None);
    }

    #[test]
    fn scores_and_baselines() {
        let truth = |c: &str, p: f64| Truth {
            title: format!("{c} item"),
            category: c.into(),
            price: p,
        };
        let train = [
            truth("Coats", 1000.0),
            truth("Coats", 2000.0),
            truth("Bags", 600.0),
        ];
        let eval = [truth("Coats", 1500.0), truth("Bags", 500.0)];
        let base = Baselines::fit(&train);
        assert_eq!(base.majority_category, "Coats");
        assert!((base.mean_price - 1200.0).abs() < 1e-9);
        let base_scores = score(&vec![base.guess(); eval.len()], &eval);
        assert_eq!(base_scores.category_accuracy, 0.5);
        assert!((base_scores.price_mae - 500.0).abs() < 1e-9);
        let answers = [
            parse_answer("Product: Coats item, Category: Coats, Full Price: 1400.0"),
            parse_answer("Product: x, Category: Bags, Full Price: ?"),
        ];
        let s = score(&answers, &eval);
        assert_eq!(s.title_exact_match, 0.5);
        assert_eq!(s.category_accuracy, 1.0);
        assert_eq!(s.unparsable_rate, 0.5);
        assert!((s.price_mae - 100.0).abs() < 1e-9);
    }
}

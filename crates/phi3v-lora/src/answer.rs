//! Reading the generated answer back into fields, and scoring it against the truth.
//!
//! Scores come from generated text, never from teacher-forced argmax: what a user gets is
//! what the model writes on its own. Every score sits beside the trivial baselines (the
//! majority category, the mean training price), so a number means something.

use serde::{Deserialize, Serialize};

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
pub struct AnswerScores {
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
pub fn score(answers: &[ParsedAnswer], truths: &[Truth]) -> AnswerScores {
    let n = answers.len().min(truths.len());
    if n == 0 {
        return AnswerScores::default();
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
    AnswerScores {
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
    /// Their scores on the evaluated items (title match is 0 by construction).
    pub scores: AnswerScores,
}

impl Baselines {
    /// Fits the baselines on the training truths and scores them on `eval`.
    pub fn fit(train: &[Truth], eval: &[Truth]) -> Self {
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
        let guess = ParsedAnswer {
            title: None,
            category: Some(majority_category.clone()),
            price: Some(mean_price),
        };
        let scores = score(&vec![guess; eval.len()], eval);
        Self {
            majority_category,
            mean_price,
            scores,
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
        let base = Baselines::fit(&train, &eval);
        assert_eq!(base.majority_category, "Coats");
        assert!((base.mean_price - 1200.0).abs() < 1e-9);
        assert_eq!(base.scores.category_accuracy, 0.5);
        assert!((base.scores.price_mae - 500.0).abs() < 1e-9);
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

//! The field types of a task file, how a generated value of each is read, and how each is
//! scored against the truth and against its trivial predictor.
//!
//! | type | metrics | trivial predictor |
//! |---|---|---|
//! | `text` | exact match; character error rate | the most frequent training value |
//! | `category` | accuracy; macro-F1 | the majority class |
//! | `number` | MAE; MAPE; share within 10% | the training mean (and median for MAE) |
//!
//! Every type also reports its parse-failure rate: the share of answers in which the field
//! could not be read at all. A failure counts as a wrong answer in exact match, accuracy,
//! macro-F1, CER (an empty text) and within-10%; MAE and MAPE are over the answers whose
//! number was read, as the parse-failure rate beside them says how many those are.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What a field of the answer is, which decides how it is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// Free text (a product name): exact match and character error rate.
    Text,
    /// One of a set of labels: accuracy and macro-F1.
    Category,
    /// A quantity: MAE, MAPE and the share within 10%.
    Number,
}

impl FieldKind {
    /// The names a task file uses.
    pub const NAMES: [&'static str; 3] = ["text", "category", "number"];

    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::Category => "category",
            FieldKind::Number => "number",
        }
    }
}

/// Reads a number the way people write one: `1240`, `1240.0`, `$1,240.00`, `1.240,00 €`,
/// `1 240`, `12,5`, `-3`, `1e+16`.
///
/// The text must hold exactly one number; currency signs, units and words around it are
/// ignored. Separators: with both `,` and `.`, the last one is the decimal point; a lone `,`
/// is a decimal comma unless exactly three digits follow it (`1,240` is 1240, as the grouping
/// of Python's `{:,}` writes it), and a lone `.` is a decimal point unless it repeats
/// (`1.240.000`); a space, `'` or `_` groups thousands. Grouping must come in threes. Anything
/// else (two numbers, `1,24,0`) is ambiguous and gives `None`.
pub fn parse_number(text: &str) -> Option<f64> {
    let tokens = number_tokens(text);
    let [token] = tokens.as_slice() else {
        return None;
    };
    read_token(token)
}

/// The number-like runs of `text`: a digit (or a sign or point right before one), then
/// digits, separators followed by a digit, and an exponent.
fn number_tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let digit_at = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let is_sep = |c: char| matches!(c, ',' | '.' | ' ' | '\'' | '_' | '\u{a0}' | '\u{202f}');
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !digit_at(i) {
            i += 1;
            continue;
        }
        let mut start = i;
        if i > 0 && chars[i - 1] == '.' {
            start -= 1;
        }
        if start > 0 && matches!(chars[start - 1], '-' | '+' | '\u{2212}') {
            start -= 1;
        }
        let mut end = i;
        while end < chars.len() {
            if digit_at(end) || (is_sep(chars[end]) && digit_at(end + 1)) {
                end += 1;
            } else {
                break;
            }
        }
        // An exponent: e, an optional sign, digits.
        if matches!(chars.get(end), Some('e' | 'E')) {
            let mut k = end + 1;
            if matches!(chars.get(k), Some('+' | '-')) {
                k += 1;
            }
            if digit_at(k) {
                while digit_at(k) {
                    k += 1;
                }
                end = k;
            }
        }
        tokens.push(chars[start..end].iter().collect());
        i = end;
    }
    tokens
}

/// One token of [`number_tokens`] as a number, by the separator rules of [`parse_number`].
fn read_token(token: &str) -> Option<f64> {
    let token = token.replace('\u{2212}', "-");
    let (sign, body) = match token.strip_prefix(['-', '+']) {
        Some(body) => (if token.starts_with('-') { -1.0 } else { 1.0 }, body),
        None => (1.0, token.as_str()),
    };
    if body.contains(['e', 'E']) {
        return body.parse::<f64>().ok().map(|v| sign * v);
    }
    let spaces = |c: char| matches!(c, ' ' | '\'' | '_' | '\u{a0}' | '\u{202f}');
    let commas = body.matches(',').count();
    let points = body.matches('.').count();
    let decimal = match (commas, points) {
        (0, 0) => None,
        (_, 0) if commas == 1 && body.split(',').nth(1).is_some_and(|d| d.len() != 3) => Some(','),
        (_, 0) => None,
        (0, 1) => Some('.'),
        (0, _) => None,
        _ => body.rfind([',', '.']).map(|i| body.as_bytes()[i] as char),
    };
    let (int, frac) = match decimal {
        Some(d) => {
            let i = body.rfind(d).expect("the decimal separator is in the text");
            (&body[..i], &body[i + 1..])
        }
        None => (body, ""),
    };
    if frac.chars().any(|c| !c.is_ascii_digit()) {
        return None;
    }
    // The integer part: digits in groups of three after the first, one separator kind.
    let groups: Vec<&str> = int
        .split(|c: char| c == ',' || c == '.' || spaces(c))
        .collect();
    let separators: BTreeSet<char> = int.chars().filter(|c| !c.is_ascii_digit()).collect();
    let grouped_well = groups.len() == 1
        || (separators.len() == 1
            && (1..=3).contains(&groups[0].len())
            && groups[1..].iter().all(|g| g.len() == 3));
    if !grouped_well || groups.iter().any(|g| g.is_empty() && groups.len() > 1) {
        return None;
    }
    let digits: String = groups.concat();
    let text = if frac.is_empty() {
        digits
    } else {
        format!("{digits}.{frac}")
    };
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| sign * v)
}

/// Share of `preds` equal to their truth (a missing prediction is wrong).
pub fn exact_match(preds: &[Option<&str>], truths: &[&str]) -> f64 {
    mean(
        preds
            .iter()
            .zip(truths)
            .map(|(p, t)| f64::from(u8::from(*p == Some(*t)))),
    )
}

/// Mean character error rate: the edit distance (in characters) from the prediction to the
/// truth over the truth's length, averaged over items; a missing prediction is the empty
/// text (rate 1).
pub fn character_error_rate(preds: &[Option<&str>], truths: &[&str]) -> f64 {
    mean(preds.iter().zip(truths).map(|(p, t)| {
        let truth: Vec<char> = t.chars().collect();
        let pred: Vec<char> = p.unwrap_or("").chars().collect();
        edit_distance(&pred, &truth) as f64 / truth.len().max(1) as f64
    }))
}

/// Levenshtein distance.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Macro-averaged F1 over the classes seen among the truths and the predictions (a missing
/// prediction is in no class, so it only costs its truth's class a false negative).
pub fn macro_f1(preds: &[Option<&str>], truths: &[&str]) -> f64 {
    let classes: BTreeSet<&str> = truths
        .iter()
        .copied()
        .chain(preds.iter().flatten().copied())
        .collect();
    mean(classes.iter().map(|&c| {
        let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
        for (p, t) in preds.iter().zip(truths) {
            match (*p == Some(c), *t == c) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                (false, false) => {}
            }
        }
        let denominator = 2 * tp + fp + fn_;
        if denominator == 0 {
            0.0
        } else {
            2.0 * tp as f64 / denominator as f64
        }
    }))
}

/// Scores of a number field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberScores {
    /// Mean absolute error over the read numbers (NaN when none was read).
    pub mae: f64,
    /// Mean absolute percentage error, in %, over the same numbers.
    pub mape: f64,
    /// Share of all items whose number is within 10% of the truth.
    pub within_10pct: f64,
}

pub fn number_scores(preds: &[Option<f64>], truths: &[f64]) -> NumberScores {
    let read: Vec<(f64, f64)> = preds
        .iter()
        .zip(truths)
        .filter_map(|(p, t)| p.map(|p| (p, *t)))
        .collect();
    let mean_or_nan = |values: Vec<f64>| {
        if values.is_empty() {
            f64::NAN
        } else {
            mean(values.into_iter())
        }
    };
    NumberScores {
        mae: mean_or_nan(read.iter().map(|(p, t)| (p - t).abs()).collect()),
        mape: mean_or_nan(
            read.iter()
                .map(|(p, t)| 100.0 * (p - t).abs() / t.abs().max(1e-9))
                .collect(),
        ),
        within_10pct: mean(
            preds.iter().zip(truths).map(|(p, t)| {
                f64::from(u8::from(p.is_some_and(|p| (p - t).abs() <= 0.1 * t.abs())))
            }),
        ),
    }
}

/// The most frequent value; ties go to the one first in sort order, so the predictor does
/// not depend on the order of the training items.
pub fn most_frequent<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(v, _)| v.to_string())
}

/// The mean and the median (the mean of the middle two for an even count).
pub fn mean_and_median(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if !n.is_multiple_of(2) {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (mean(values.iter().copied()), median)
}

/// The mean of `values` (0 for none: a rate over no item).
fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_leniently() {
        for (text, want) in [
            ("1240", 1240.0),
            ("1240.0", 1240.0),
            ("$1,240.00", 1240.0),
            ("1.240,00 €", 1240.0),
            ("EUR 1 240,50", 1240.5),
            ("1'240.5", 1240.5),
            ("12,5", 12.5),
            ("1,240", 1240.0),
            ("1.240.000", 1_240_000.0),
            ("-3 cm", -3.0),
            ("1e+16", 1e16),
            ("$450.", 450.0),
            (".5", 0.5),
            ("about 200 cm", 200.0),
        ] {
            assert_eq!(parse_number(text), Some(want), "{text:?}");
        }
        for text in [
            "",
            "about ten",
            "10-20",
            "1,24,0",
            "1.2.3",
            "12 and 13",
            "1,2345.6",
        ] {
            assert_eq!(parse_number(text), None, "{text:?}");
        }
    }

    #[test]
    fn text_metrics_match_hand_computed_values() {
        let truths = ["Oak Chair", "Pine Table"];
        let preds = [Some("Oak Chair"), Some("Pine Tabel")];
        assert_eq!(exact_match(&preds, &truths), 0.5);
        // "Pine Tabel" -> "Pine Table": 2 substitutions over 10 characters.
        assert!((character_error_rate(&preds, &truths) - 0.1).abs() < 1e-12);
        // A missing answer is the empty text: rate 1.
        assert_eq!(character_error_rate(&[None], &["abc"]), 1.0);
        assert_eq!(edit_distance(&['a', 'b'], &['b']), 1);
    }

    #[test]
    fn category_metrics_match_hand_computed_values() {
        let truths = ["A", "A", "B", "C"];
        let preds = [Some("A"), Some("B"), Some("B"), None];
        assert_eq!(exact_match(&preds, &truths), 0.5);
        // A: tp 1, fn 1 -> 2/3; B: tp 1, fp 1 -> 2/3; C: fn 1 -> 0. Mean 4/9.
        assert!((macro_f1(&preds, &truths) - 4.0 / 9.0).abs() < 1e-12);
        // The majority predictor: A everywhere: A 2*2/(4+2) = 2/3, B 0, C 0.
        let majority = [Some("A"); 4];
        assert!((macro_f1(&majority, &truths) - 2.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn number_metrics_match_hand_computed_values() {
        let truths = [100.0, 200.0, 50.0];
        let preds = [Some(110.0), Some(150.0), None];
        let s = number_scores(&preds, &truths);
        assert!((s.mae - 30.0).abs() < 1e-12); // (10 + 50) / 2
        assert!((s.mape - 17.5).abs() < 1e-12); // (10% + 25%) / 2
        assert!((s.within_10pct - 1.0 / 3.0).abs() < 1e-12); // only 110 vs 100
        assert!(number_scores(&[None], &[1.0]).mae.is_nan());
    }

    #[test]
    fn trivial_predictors() {
        assert_eq!(
            most_frequent(["b", "a", "b", "a", "c"]).as_deref(),
            Some("a"),
            "ties go to the first in sort order"
        );
        assert_eq!(mean_and_median(&[1.0, 2.0, 9.0]), (4.0, 2.0));
        assert_eq!(mean_and_median(&[4.0, 1.0, 2.0, 9.0]), (4.0, 3.0));
    }
}

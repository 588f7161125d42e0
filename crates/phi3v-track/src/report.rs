//! `report.html`: one self-contained page summarising a run.
//!
//! Everything is inline — CSS in a `<style>` block, charts as `<svg>`, thumbnails as
//! `data:image/png;base64,…` URIs — and there is no JavaScript, so the file can be mailed,
//! attached to an issue or opened from an air-gapped machine and look the same. All text
//! that comes from the run (its name, config, model generations, field names and values) is
//! HTML-escaped: a model can generate `<script>`, and the report must show it, not run it.
//!
//! The HTML is written with `write!` rather than through a template crate: the page is ten
//! small sections, and a template would only move them into another file while the escaping
//! and number formatting stayed here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::io::{self, Cursor};
use std::path::Path;

use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};
use serde::{Deserialize, Serialize};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::json::{base64_bytes, non_finite_f64, non_finite_points};
use crate::svg::{line_chart, series_color};
use phi3v_io::replace_file;

/// Everything the report shows. Serialisable so a run can store it next to the report and
/// re-render it later (e.g. after a styling change) without rerunning anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportData {
    /// Page heading, e.g. the run name.
    pub title: String,
    /// One summary line under the heading: model, data, backend.
    pub subtitle: String,
    /// The resolved configuration, pretty-printed JSON, shown collapsed.
    pub config_json: String,
    /// Curves: loss, validation loss, learning rate, tokens/s...
    pub series: Vec<Series>,
    /// Final metrics against baselines.
    pub comparisons: Vec<Comparison>,
    /// One table per evaluation, oldest first (newest last).
    pub evaluations: Vec<EvalTable>,
    /// Free-form lines, e.g. "stopped: NaN loss at step 12".
    pub notes: Vec<String>,
}

/// One curve.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Chart title; series with the same group share a chart.
    pub group: String,
    /// `(step, value)`; non-finite values leave a gap (and survive JSON, see
    /// [`MetricRecord`](crate::MetricRecord)).
    #[serde(with = "non_finite_points")]
    pub points: Vec<(u64, f64)>,
}

/// A final metric of the fine-tuned model next to a baseline (e.g. the base model, or a
/// heuristic such as "always predict the training mean").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// Metric name, e.g. "val loss" or "accuracy".
    pub metric: String,
    /// The fine-tuned model's value.
    #[serde(with = "non_finite_f64")]
    pub model: f64,
    /// The baseline's value.
    #[serde(with = "non_finite_f64")]
    pub baseline: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// Direction of improvement: accuracy goes up, error goes down.
    pub higher_is_better: bool,
}

impl Comparison {
    /// Whether the model is strictly better than the baseline. A tie, or a NaN on either
    /// side, does not count as beating it.
    pub fn beats_baseline(&self) -> bool {
        if self.higher_is_better {
            self.model > self.baseline
        } else {
            self.model < self.baseline
        }
    }
}

/// The generations of one evaluation pass.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EvalTable {
    /// The step the evaluated weights come from.
    pub step: u64,
    /// One row per evaluated sample.
    pub rows: Vec<EvalRow>,
    /// Aggregates over the rows that only the task can compute (a parse rate, a mean error),
    /// already formatted, e.g. `"mean abs error 5.49"`. Shown after the accuracies the report
    /// counts itself from the judged cells (see [`FieldCell::correct`]).
    #[serde(default)]
    pub summary: Vec<String>,
}

/// One evaluated sample: the image, the reference and generated text, and what the task
/// scored of it as named cells. The table's columns are the cells' names, in order of first
/// appearance over the rows, so every task chooses its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EvalRow {
    /// PNG thumbnail (see [`thumbnail_png`]); empty for none. Base64 in JSON.
    #[serde(with = "base64_bytes", default)]
    pub thumbnail_png: Vec<u8>,
    /// The reference answer.
    pub truth: String,
    /// What the model generated.
    pub generated: String,
    /// One cell per scored field. Older files without them load with none.
    #[serde(default)]
    pub fields: Vec<FieldCell>,
}

/// One scored field of an [`EvalRow`]: a column name, the text shown, and whether it is right.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldCell {
    /// Column name; cells of the same name across rows form one column.
    pub name: String,
    /// What the cell shows, already formatted (the task knows the precision and unit);
    /// numbers are right-aligned.
    pub value: String,
    /// `Some(true)` or `Some(false)` marks the cell right (✓) or wrong (✗) and makes the
    /// column count towards the evaluation's accuracies; `None` for a value that is only shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
}

impl FieldCell {
    /// A cell that is only shown, e.g. a parsed number or an error.
    pub fn shown(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            correct: None,
        }
    }

    /// A cell judged right or wrong, e.g. a generated label against the reference.
    pub fn judged(name: impl Into<String>, value: impl Into<String>, correct: bool) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            correct: Some(correct),
        }
    }
}

impl EvalRow {
    /// The cell named `name`, if the row has one.
    pub fn field(&self, name: &str) -> Option<&FieldCell> {
        self.fields.iter().find(|cell| cell.name == name)
    }
}

/// Downscales `image` so its longer side is at most `max_side` pixels (keeping the aspect
/// ratio, never upscaling) and encodes it as PNG — small enough to embed dozens in a report
/// or log them to TensorBoard every evaluation. `max_side` 0 is treated as 1. An empty
/// (0-pixel) image gives an empty vector, which [`EvalRow`] reads as "no thumbnail".
pub fn thumbnail_png(image: &RgbImage, max_side: u32) -> Vec<u8> {
    if image.width() == 0 || image.height() == 0 {
        return Vec::new();
    }
    let (width, height) = thumbnail_size(image.width(), image.height(), max_side.max(1));
    let mut png = Cursor::new(Vec::new());
    if (width, height) == image.dimensions() {
        image.write_to(&mut png, ImageFormat::Png)
    } else {
        image::imageops::resize(image, width, height, FilterType::Triangle)
            .write_to(&mut png, ImageFormat::Png)
    }
    .expect("encoding an RGB image as PNG into memory cannot fail");
    png.into_inner()
}

fn thumbnail_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side {
        return (width, height);
    }
    let scale = |side: u32| {
        ((u64::from(side) * u64::from(max_side) + u64::from(longest) / 2) / u64::from(longest))
            .max(1) as u32
    };
    (scale(width), scale(height))
}

/// Writes [`render_report`]'s output to `path` through a temporary file and a rename, so a
/// browser refreshing the report mid-run never sees half a page.
pub fn write_report(path: &Path, report: &ReportData) -> io::Result<()> {
    let html = render_report(report);
    replace_file(path, |out| io::Write::write_all(out, html.as_bytes()))?;
    Ok(())
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the whole report as one HTML document. Sections without data are left out,
/// so an empty [`ReportData`] gives a valid page with just the heading.
pub fn render_report(report: &ReportData) -> String {
    let mut html = String::with_capacity(64 * 1024);
    render_head(&mut html, &report.title);
    render_header(&mut html, report);
    render_notes(&mut html, &report.notes);
    render_comparisons(&mut html, &report.comparisons);
    render_charts(&mut html, &report.series);
    render_evaluations(&mut html, &report.evaluations);
    render_config(&mut html, &report.config_json);
    html.push_str("<footer>Generated by phi3v-track. Self-contained: no scripts, no external resources.</footer>\n</main>\n</body>\n</html>\n");
    html
}

const STYLE: &str = r#"
:root { --fg:#1f2328; --muted:#656d76; --border:#d0d7de; --bg:#ffffff; --panel:#f6f8fa;
        --good:#1a7f37; --bad:#cf222e; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width:1180px; margin:0 auto; padding:24px 20px 40px; }
h1 { font-size:26px; margin:0 0 4px; }
h2 { font-size:18px; margin:32px 0 12px; padding-bottom:6px; border-bottom:1px solid var(--border); }
.subtitle { color:var(--muted); margin:0; }
.notes li { margin:2px 0; }
table { border-collapse:collapse; width:100%; }
th, td { border:1px solid var(--border); padding:6px 10px; text-align:left; vertical-align:top; }
th { background:var(--panel); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
.win .verdict, .ok { color:var(--good); font-weight:600; }
.lose .verdict, .bad { color:var(--bad); font-weight:600; }
.charts { display:grid; grid-template-columns:repeat(auto-fill, minmax(460px, 1fr)); gap:16px; }
figure { margin:0; padding:12px; border:1px solid var(--border); border-radius:6px; }
figcaption { font-weight:600; margin-bottom:6px; }
svg.chart { width:100%; height:auto; display:block; }
svg .grid { stroke:#eaeef2; }
svg .axis, svg .tickmark { stroke:#8c959f; fill:none; }
svg .tick, svg .axis-label, svg .empty { fill:var(--muted); font-size:11px; }
svg .empty { font-size:14px; }
.legend { list-style:none; margin:6px 0 0; padding:0; display:flex; flex-wrap:wrap; gap:4px 16px;
          color:var(--muted); font-size:12px; }
.swatch { display:inline-block; width:12px; height:3px; margin-right:6px; vertical-align:middle; }
details { border:1px solid var(--border); border-radius:6px; margin:10px 0; }
summary { cursor:pointer; padding:8px 12px; background:var(--panel); font-weight:600; }
details > table, details > pre, details > .eval-summary { margin:0; }
.eval-summary { padding:8px 12px; color:var(--muted); }
.text { white-space:pre-wrap; word-break:break-word; max-width:380px; }
img.thumb { display:block; max-width:96px; max-height:96px; border-radius:3px; }
pre { padding:12px; overflow:auto; background:var(--panel); font-size:12px; }
footer { margin-top:36px; color:var(--muted); font-size:12px; }
"#;

fn render_head(html: &mut String, title: &str) {
    let title = if title.is_empty() {
        "Training report"
    } else {
        title
    };
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(title)
    );
}

fn render_header(html: &mut String, report: &ReportData) {
    let title = if report.title.is_empty() {
        "Training report"
    } else {
        &report.title
    };
    let _ = writeln!(html, "<header><h1>{}</h1>", escape(title));
    if !report.subtitle.is_empty() {
        let _ = write!(
            html,
            "<p class=\"subtitle\">{}</p>",
            escape(&report.subtitle)
        );
    }
    html.push_str("</header>\n");
}

fn render_notes(html: &mut String, notes: &[String]) {
    if notes.is_empty() {
        return;
    }
    html.push_str("<section><h2>Notes</h2><ul class=\"notes\">");
    for note in notes {
        let _ = write!(html, "<li>{}</li>", escape(note));
    }
    html.push_str("</ul></section>\n");
}

fn render_comparisons(html: &mut String, comparisons: &[Comparison]) {
    if comparisons.is_empty() {
        return;
    }
    html.push_str(
        "<section><h2>Against baselines</h2><table><thead><tr><th>Metric</th><th>Better</th>\
         <th>Model</th><th>Baseline</th><th>Δ</th><th>Beats baseline</th></tr></thead><tbody>",
    );
    for c in comparisons {
        render_comparison_row(html, c);
    }
    html.push_str("</tbody></table></section>\n");
}

fn render_comparison_row(html: &mut String, c: &Comparison) {
    let beats = c.beats_baseline();
    let (class, verdict) = if beats {
        ("win", "✓ yes")
    } else {
        ("lose", "✗ no")
    };
    let direction = if c.higher_is_better {
        "↑ higher"
    } else {
        "↓ lower"
    };
    let _ = write!(
        html,
        "<tr class=\"{class}\"><td>{}</td><td>{direction}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{} <span class=\"subtitle\">({})</span></td><td class=\"num\">{}</td>\
         <td class=\"verdict\">{verdict}</td></tr>",
        escape(&c.metric),
        format_number(c.model),
        format_number(c.baseline),
        escape(&c.baseline_name),
        format_delta(c.model - c.baseline),
    );
}

/// Series grouped by `group`, in order of first appearance (so the caller controls the
/// order of the charts).
fn group_series(series: &[Series]) -> Vec<(&str, Vec<&Series>)> {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for s in series {
        let members = groups.entry(s.group.as_str()).or_default();
        if members.is_empty() {
            order.push(s.group.as_str());
        }
        members.push(s);
    }
    order
        .into_iter()
        .map(|g| (g, groups.remove(g).unwrap_or_default()))
        .collect()
}

fn render_charts(html: &mut String, series: &[Series]) {
    if series.is_empty() {
        return;
    }
    html.push_str("<section><h2>Curves</h2><div class=\"charts\">");
    for (group, members) in group_series(series) {
        let title = if group.is_empty() { "metrics" } else { group };
        let _ = write!(html, "<figure><figcaption>{}</figcaption>", escape(title));
        html.push_str(&line_chart(title, &members));
        render_legend(html, &members);
        html.push_str("</figure>");
    }
    html.push_str("</div></section>\n");
}

/// The legend, with each series' last finite value: usually the number one is looking for.
fn render_legend(html: &mut String, members: &[&Series]) {
    html.push_str("<ul class=\"legend\">");
    for (index, s) in members.iter().enumerate() {
        let last = s
            .points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .max_by_key(|(step, _)| *step);
        let last = last.map_or_else(
            || "no data".to_owned(),
            |(step, v)| format!("{} @ step {step}", format_number(*v)),
        );
        let _ = write!(
            html,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{} — {}</li>",
            series_color(index),
            escape(&s.name),
            last
        );
    }
    html.push_str("</ul>");
}

fn render_evaluations(html: &mut String, evaluations: &[EvalTable]) {
    if evaluations.is_empty() {
        return;
    }
    html.push_str("<section><h2>Evaluations</h2>");
    // Newest first and open: it is the one that matters; older ones stay a click away.
    for (index, eval) in evaluations.iter().rev().enumerate() {
        render_evaluation(html, eval, index == 0);
    }
    html.push_str("</section>\n");
}

fn render_evaluation(html: &mut String, eval: &EvalTable, open: bool) {
    let _ = write!(
        html,
        "<details{}><summary>Step {} — {} sample{}</summary>",
        if open { " open" } else { "" },
        eval.step,
        eval.rows.len(),
        if eval.rows.len() == 1 { "" } else { "s" }
    );
    let columns = field_columns(&eval.rows);
    let summary = eval_summary(eval, &columns);
    if !summary.is_empty() {
        let _ = write!(
            html,
            "<div class=\"eval-summary\">{}</div>",
            escape(&summary)
        );
    }
    html.push_str("<table><thead><tr><th>#</th><th>Image</th><th>Truth</th><th>Generated</th>");
    for column in &columns {
        let _ = write!(html, "<th>{}</th>", escape(column));
    }
    html.push_str("</tr></thead><tbody>");
    for (index, row) in eval.rows.iter().enumerate() {
        render_eval_row(html, index, row, &columns);
    }
    html.push_str("</tbody></table></details>\n");
}

/// The field names of `rows`, in order of first appearance: the table's extra columns.
fn field_columns(rows: &[EvalRow]) -> Vec<&str> {
    let mut columns: Vec<&str> = Vec::new();
    for cell in rows.iter().flat_map(|r| &r.fields) {
        if !columns.contains(&cell.name.as_str()) {
            columns.push(&cell.name);
        }
    }
    columns
}

/// One line of aggregate numbers for an evaluation: for each judged column, the share of
/// rows whose cell is right (a row without the cell counts as wrong), then the table's own
/// [`EvalTable::summary`] items.
fn eval_summary(eval: &EvalTable, columns: &[&str]) -> String {
    if eval.rows.is_empty() {
        return "no samples".to_owned();
    }
    let n = eval.rows.len() as f64;
    let accuracies = columns.iter().filter_map(|&column| {
        let marks: Vec<Option<bool>> = eval
            .rows
            .iter()
            .filter_map(|r| r.field(column))
            .map(|c| c.correct)
            .collect();
        if marks.iter().all(Option::is_none) {
            return None;
        }
        let right = marks.iter().filter(|&&m| m == Some(true)).count();
        Some(format!("{column} {:.0}%", 100.0 * right as f64 / n))
    });
    accuracies
        .chain(eval.summary.iter().cloned())
        .collect::<Vec<_>>()
        .join(" · ")
}

fn render_eval_row(html: &mut String, index: usize, row: &EvalRow, columns: &[&str]) {
    let image = if row.thumbnail_png.is_empty() {
        "—".to_owned()
    } else {
        format!(
            "<img class=\"thumb\" alt=\"sample {}\" src=\"data:image/png;base64,{}\">",
            index + 1,
            BASE64.encode(&row.thumbnail_png)
        )
    };
    let _ = write!(
        html,
        "<tr><td class=\"num\">{}</td><td>{image}</td><td class=\"text\">{}</td>\
         <td class=\"text\">{}</td>",
        index + 1,
        escape(&row.truth),
        escape(&row.generated),
    );
    for column in columns {
        render_field_cell(html, row.field(column));
    }
    html.push_str("</tr>");
}

/// A judged cell gets its ✓/✗ before the value (alone if the value is empty); a number is right-aligned; a row without
/// the column shows a dash.
fn render_field_cell(html: &mut String, cell: Option<&FieldCell>) {
    let Some(cell) = cell else {
        html.push_str("<td>—</td>");
        return;
    };
    let class = if cell.value.trim().parse::<f64>().is_ok() {
        " class=\"num\""
    } else {
        ""
    };
    let mark = match cell.correct {
        Some(true) => "<span class=\"ok\">✓</span>",
        Some(false) => "<span class=\"bad\">✗</span>",
        None => "",
    };
    let gap = if mark.is_empty() || cell.value.is_empty() {
        ""
    } else {
        " "
    };
    let _ = write!(html, "<td{class}>{mark}{gap}{}</td>", escape(&cell.value));
}

fn render_config(html: &mut String, config_json: &str) {
    if config_json.trim().is_empty() {
        return;
    }
    let _ = writeln!(
        html,
        "<section><h2>Configuration</h2><details><summary>Resolved configuration</summary>\
         <pre>{}</pre></details></section>",
        escape(config_json)
    );
}

/// A metric value with four significant-ish digits; scientific for the very small or large.
fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let magnitude = value.abs();
    if value != 0.0 && !(1e-3..1e6).contains(&magnitude) {
        let text = format!("{value:.3e}");
        let (mantissa, exponent) = text.split_once('e').expect("scientific format has an e");
        return format!("{}e{exponent}", trim_zeros(mantissa));
    }
    trim_zeros(&format!("{value:.4}")).to_owned()
}

/// `"1.2500"` → `"1.25"`, `"2.0000"` → `"2"`; integers are left alone.
fn trim_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

fn format_delta(delta: f64) -> String {
    if delta > 0.0 {
        format!("+{}", format_number(delta))
    } else {
        format_number(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnail_sizes_keep_aspect() {
        assert_eq!(thumbnail_size(200, 100, 64), (64, 32));
        assert_eq!(thumbnail_size(100, 300, 60), (20, 60));
        assert_eq!(thumbnail_size(30, 20, 64), (30, 20));
        assert_eq!(thumbnail_size(1000, 1, 10), (10, 1));
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(2.0), "2");
        assert_eq!(format_number(1.23456), "1.2346");
        assert_eq!(format_number(2e-5), "2e-5");
        assert_eq!(format_number(9.8e-5), "9.8e-5");
        assert_eq!(format_number(1234567.0), "1.235e6");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_delta(0.25), "+0.25");
        assert_eq!(format_delta(-0.25), "-0.25");
    }
}

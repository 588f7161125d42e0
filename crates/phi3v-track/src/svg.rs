//! Inline SVG line charts for `report.html`: axes, "nice" ticks, step on x, one polyline per
//! series. No JavaScript and no external fonts, so the report opens anywhere, offline.
//!
//! Degenerate inputs are normal in training runs (a run stopped after one step, a NaN loss,
//! a validation series not yet evaluated), so every one of them renders something sensible:
//! non-finite values break the line instead of poisoning the scale, a single point is drawn
//! as a dot on a padded axis, and a chart with no finite point says "no data".

use std::fmt::Write;

use super::report::{escape, Series};

/// Series colours (colour-blind friendly "Tableau 10" subset), cycled per chart.
pub(crate) const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 280.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 14.0;
const MARGIN_BOTTOM: f64 = 42.0;
/// Roughly how many ticks an axis gets; the nice-number rounding decides the exact count.
const TARGET_TICKS: usize = 6;
/// Series with at most this many points get a dot on every point, so sparse validation
/// curves stay readable.
const MARKER_LIMIT: usize = 40;
/// Polylines longer than this are reduced to the minimum and maximum of each pixel column:
/// a 100k-step run would otherwise put megabytes of invisible detail into the report.
const DECIMATE_ABOVE: usize = 2000;

/// The colour of the `index`-th series of a chart, shared by the SVG and the HTML legend.
pub(crate) fn series_color(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// A linear mapping from data values to pixels along one axis.
#[derive(Debug, Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    px_lo: f64,
    px_hi: f64,
}

impl Scale {
    fn map(&self, v: f64) -> f64 {
        self.px_lo + (v - self.lo) / (self.hi - self.lo) * (self.px_hi - self.px_lo)
    }
}

/// Ticks covering a value range, with the step they were built from (for label precision).
#[derive(Debug, Clone)]
struct Ticks {
    values: Vec<f64>,
    step: f64,
}

/// Renders one chart for `series` (all from the same group) as an `<svg>` element.
pub(crate) fn line_chart(title: &str, series: &[&Series]) -> String {
    let finite: Vec<(f64, f64)> = series.iter().flat_map(|s| finite_points(s)).collect();
    let mut svg = open_svg(title);
    if finite.is_empty() {
        let _ = write!(
            svg,
            r#"<text class="empty" x="{}" y="{}" text-anchor="middle">no data</text>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
    } else {
        let (x_ticks, x_scale) = x_axis(&finite);
        let (y_ticks, y_scale) = y_axis(&finite);
        draw_grid_and_axes(&mut svg, &x_ticks, x_scale, &y_ticks, y_scale);
        for (index, s) in series.iter().enumerate() {
            draw_series(&mut svg, s, series_color(index), x_scale, y_scale);
        }
    }
    svg.push_str("</svg>");
    svg
}

fn open_svg(title: &str) -> String {
    format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}"><title>{}</title>"#,
        escape(title),
        escape(title)
    )
}

fn finite_points(series: &Series) -> impl Iterator<Item = (f64, f64)> + '_ {
    series
        .points
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|&(step, v)| (step as f64, v))
}

/// Steps are integers, so the x ticks are too (never "12.5"); one step is padded on both
/// sides so a single point sits in the middle.
fn x_axis(points: &[(f64, f64)]) -> (Ticks, Scale) {
    let (lo, hi) = min_max(points.iter().map(|p| p.0));
    let (lo, hi) = if lo == hi {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let step = nice_step(hi - lo).max(1.0);
    let ticks = ticks_within(lo, hi, step);
    let scale = Scale {
        lo,
        hi,
        px_lo: MARGIN_LEFT,
        px_hi: WIDTH - MARGIN_RIGHT,
    };
    (ticks, scale)
}

/// The y range is widened to whole ticks, so the curve never touches the frame and the top
/// and bottom gridlines are labelled.
fn y_axis(points: &[(f64, f64)]) -> (Ticks, Scale) {
    let (lo, hi) = min_max(points.iter().map(|p| p.1));
    let (lo, hi) = if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    } else {
        (lo, hi)
    };
    let step = nice_step(hi - lo);
    let lo = (lo / step).floor() * step;
    let hi = (hi / step).ceil() * step;
    let ticks = ticks_within(lo, hi, step);
    let scale = Scale {
        lo,
        hi,
        px_lo: HEIGHT - MARGIN_BOTTOM,
        px_hi: MARGIN_TOP,
    };
    (ticks, scale)
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The classic "nice number" tick step: 1, 2 or 5 times a power of ten, giving about
/// [`TARGET_TICKS`] ticks over `span`.
fn nice_step(span: f64) -> f64 {
    let raw = span / TARGET_TICKS as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Multiples of `step` inside `[lo, hi]` (with a little slack for rounding error).
/// Capped, so a pathological range (values near `f64::MAX`) cannot produce endless ticks.
fn ticks_within(lo: f64, hi: f64, step: f64) -> Ticks {
    const MAX_TICKS: usize = 4 * TARGET_TICKS;
    let eps = step * 1e-9;
    let first = (lo / step - 1e-9).ceil();
    let values = (0..MAX_TICKS)
        .map(|k| (first + k as f64) * step)
        .take_while(|&v| v <= hi + eps)
        .collect();
    Ticks { values, step }
}

/// Tick labels with just enough decimals for the tick step, the same number on every tick
/// of an axis; scientific notation for the very small and very large values learning rates
/// and token counts produce.
fn tick_labels(ticks: &Ticks) -> Vec<String> {
    let step_exponent = ticks.step.log10().floor();
    let nonzero = || ticks.values.iter().filter(|v| **v != 0.0);
    let scientific = nonzero().any(|v| !(1e-3..1e6).contains(&v.abs()));
    if scientific {
        let digits = nonzero()
            .map(|v| (v.abs().log10().floor() - step_exponent).clamp(0.0, 3.0) as usize)
            .max()
            .unwrap_or(0);
        let label = |v: f64| {
            if v == 0.0 {
                "0".to_owned()
            } else {
                format!("{v:.digits$e}")
            }
        };
        return ticks.values.iter().map(|&v| label(v)).collect();
    }
    let decimals = (-step_exponent).clamp(0.0, 6.0) as usize;
    ticks
        .values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect()
}

fn draw_grid_and_axes(svg: &mut String, xt: &Ticks, xs: Scale, yt: &Ticks, ys: Scale) {
    let (left, right) = (xs.px_lo, xs.px_hi);
    let (bottom, top) = (ys.px_lo, ys.px_hi);
    for (&v, label) in yt.values.iter().zip(tick_labels(yt)) {
        let y = ys.map(v);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            left - 6.0,
            y + 4.0,
        );
    }
    for (&v, label) in xt.values.iter().zip(tick_labels(xt)) {
        let x = xs.map(v);
        let _ = write!(
            svg,
            r#"<line class="tickmark" x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            bottom + 5.0,
            bottom + 18.0,
        );
    }
    let _ = write!(
        svg,
        r#"<path class="axis" d="M{left:.1},{top:.1}V{bottom:.1}H{right:.1}"/><text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle">step</text>"#,
        (left + right) / 2.0,
        HEIGHT - 6.0
    );
}

/// Draws `series` as polylines broken at non-finite values, with dots on isolated points
/// (and on every point of a short series).
fn draw_series(svg: &mut String, series: &Series, color: &str, xs: Scale, ys: Scale) {
    let mut points = series.points.clone();
    // A resumed run can log steps out of order; sorting keeps the line from zig-zagging.
    points.sort_by_key(|&(step, _)| step);
    let segments = finite_segments(&points);
    let total: usize = segments.iter().map(Vec::len).sum();
    let _ = write!(
        svg,
        r#"<g class="series"><title>{}</title>"#,
        escape(&series.name)
    );
    for segment in &segments {
        let coords: Vec<(f64, f64)> = segment
            .iter()
            .map(|&(step, v)| (xs.map(step as f64), ys.map(v)))
            .collect();
        if coords.len() > 1 {
            draw_polyline(svg, &decimate(&coords), color);
        }
        if coords.len() == 1 || total <= MARKER_LIMIT {
            draw_markers(svg, &coords, color);
        }
    }
    svg.push_str("</g>");
}

/// Splits points into runs of consecutive finite values.
fn finite_segments(points: &[(u64, f64)]) -> Vec<Vec<(u64, f64)>> {
    points
        .split(|(_, v)| !v.is_finite())
        .filter(|run| !run.is_empty())
        .map(<[(u64, f64)]>::to_vec)
        .collect()
}

/// Keeps, per whole-pixel x column, the lowest and highest point (in x order), which draws
/// the same picture as all the points: spikes survive, only invisible detail goes.
fn decimate(coords: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if coords.len() <= DECIMATE_ABOVE {
        return coords.to_vec();
    }
    let mut out = Vec::new();
    for column in coords.chunk_by(|a, b| a.0.floor() == b.0.floor()) {
        let by_y = |a: &&(f64, f64), b: &&(f64, f64)| a.1.total_cmp(&b.1);
        let lo = *column.iter().min_by(by_y).expect("chunks are non-empty");
        let hi = *column.iter().max_by(by_y).expect("chunks are non-empty");
        let (first, second) = if lo.0 <= hi.0 { (lo, hi) } else { (hi, lo) };
        out.push(first);
        if second != first {
            out.push(second);
        }
    }
    out
}

fn draw_polyline(svg: &mut String, coords: &[(f64, f64)], color: &str) {
    svg.push_str(r#"<polyline fill="none" stroke-width="1.8" stroke-linejoin="round" stroke=""#);
    svg.push_str(color);
    svg.push_str(r#"" points=""#);
    for (i, (x, y)) in coords.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(svg, "{sep}{x:.1},{y:.1}");
    }
    svg.push_str(r#""/>"#);
}

fn draw_markers(svg: &mut String, coords: &[(f64, f64)], color: &str) {
    for (x, y) in coords {
        let _ = write!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_one_two_five() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(100.0), 20.0);
        assert!((nice_step(0.003) - 0.0005).abs() < 1e-12);
        assert_eq!(nice_step(6.0), 1.0);
    }

    #[test]
    fn ticks_cover_the_range() {
        let t = ticks_within(0.0, 1.0, 0.2);
        assert_eq!(t.values.len(), 6);
        assert!((t.values[5] - 1.0).abs() < 1e-9);
        let t = ticks_within(3.0, 17.0, 5.0);
        assert_eq!(t.values, vec![5.0, 10.0, 15.0]);
    }

    #[test]
    fn tick_labels_fit_their_step() {
        let labels = |lo, hi, step| tick_labels(&ticks_within(lo, hi, step));
        assert_eq!(labels(0.0, 0.3, 0.05)[1..4], ["0.05", "0.10", "0.15"]);
        assert_eq!(labels(0.0, 1000.0, 500.0), ["0", "500", "1000"]);
        assert_eq!(labels(0.0, 1e-4, 5e-5), ["0", "5.0e-5", "1.0e-4"]);
        assert_eq!(labels(0.0, 1.0, 0.5), ["0.0", "0.5", "1.0"]);
    }

    #[test]
    fn long_lines_keep_their_extremes_per_pixel() {
        let coords: Vec<(f64, f64)> = (0..10_000)
            .map(|i| {
                (
                    i as f64 / 100.0,
                    if i == 4321 { -50.0 } else { (i % 7) as f64 },
                )
            })
            .collect();
        let reduced = decimate(&coords);
        assert!(reduced.len() <= 2 * 100, "{}", reduced.len());
        assert!(reduced.contains(&(43.21, -50.0)), "the spike survives");
        assert!(reduced.windows(2).all(|w| w[0].0 <= w[1].0), "x order kept");
        assert_eq!(decimate(&coords[..10]), coords[..10]);
    }

    #[test]
    fn segments_break_at_nan() {
        let points = [
            (0, 1.0),
            (1, f64::NAN),
            (2, 2.0),
            (3, 3.0),
            (4, f64::INFINITY),
        ];
        let segments = finite_segments(&points);
        assert_eq!(segments, vec![vec![(0, 1.0)], vec![(2, 2.0), (3, 3.0)]]);
    }
}

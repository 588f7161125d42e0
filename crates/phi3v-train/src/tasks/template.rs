//! The templates of a task file: literal text and `{column}` placeholders, rendered the way
//! the reference recipe's Python f-strings render them, and parsed back from generated text.
//!
//! # Rendering
//!
//! A placeholder without a format spec writes its value as Python's `str()` does, because the
//! reference answers are f-strings over a pandas row: a float price `1240.0` is written
//! `1240.0` (not Rust's `1240`), an integer `4` is written `4`, a boolean `True`, a missing
//! value `None`. A format spec (`{price:.2f}`, `{price:,.0f}`, `{code:>8}`) is honoured as
//! Python's format mini-language does; the subset supported is fill and align, sign, `0`,
//! width, `,` or `_` grouping, precision, and the types `f`, `F`, `e`, `E`, `%`, `d`, `s`.
//! Anything else is refused when the template is parsed, so a template never renders
//! differently from what its author expects.
//!
//! # Parsing back
//!
//! Scoring reads each field back out of a generated answer by matching the template's
//! literal text as written: each placeholder becomes the text between the literal before it
//! and the literal after it. Literals are found from the right (a value may contain the text
//! of an earlier literal, `Coat, Long` in `Product: {title}, Category: ...`, but rarely that
//! of a later one), and a field whose delimiting literal is missing from the answer is not
//! captured, while the others still are. Two placeholders with no literal between them could
//! not be told apart, so [`Template::parse`] refuses them.

use std::fmt;

use phi3v::processor::prompt::{python_float_repr, FieldValue, Fields};

/// A template that cannot be parsed or rendered: the reason, naming the placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

/// A placeholder: the column it names and how its value is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Placeholder {
    pub name: String,
    /// The format spec after `:`, when one is given.
    pub spec: Option<FormatSpec>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Field(Placeholder),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `source`: `{name}` and `{name:spec}` placeholders, `{{` and `}}` for literal
    /// braces.
    ///
    /// # Errors
    /// An unclosed `{`, a lone `}`, an empty name, a conversion (`!r`), an unsupported
    /// format spec, or two placeholders with no literal text between them (the generated
    /// answer could not be split between them).
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts: Vec<Part> = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(c) = rest.chars().next() {
            let at = source.len() - rest.len();
            if rest.starts_with("{{") || rest.starts_with("}}") {
                literal.push(c);
                rest = &rest[2..];
                continue;
            }
            match c {
                '}' => {
                    return Err(TemplateError(format!(
                        "lone '}}' at byte {at} (write '}}}}' for a literal brace)"
                    )))
                }
                '{' => {
                    let Some(close) = rest.find('}') else {
                        return Err(TemplateError(format!("'{{' at byte {at} is never closed")));
                    };
                    let inner = &rest[1..close];
                    let placeholder = parse_placeholder(inner, at)?;
                    if literal.is_empty() {
                        if let Some(Part::Field(previous)) = parts.last() {
                            return Err(TemplateError(format!(
                                "placeholders {{{}}} and {{{}}} are adjacent: put literal text \
                                 between them, or the generated answer cannot be split into \
                                 the two fields",
                                previous.name, placeholder.name
                            )));
                        }
                    } else {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(placeholder));
                    rest = &rest[close + 1..];
                }
                c => {
                    literal.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Its placeholders, in order (repeats included).
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(p) => Some(p),
            Part::Literal(_) => None,
        })
    }

    /// Fills the placeholders from `row`.
    ///
    /// # Errors
    /// A placeholder the row has no value for, or a value its format spec cannot write (a
    /// text under `.2f`), naming the placeholder.
    pub fn render(&self, row: &(impl Fields + ?Sized)) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Field(p) => {
                    let value = row.field(&p.name).ok_or_else(|| {
                        TemplateError(format!("no value for placeholder {{{}}}", p.name))
                    })?;
                    out.push_str(&format_value(&value, p.spec.as_ref()).map_err(|reason| {
                        TemplateError(format!("placeholder {{{}}}: {reason}", p.name))
                    })?);
                }
            }
        }
        Ok(out)
    }

    /// Reads the placeholders' text back out of `text` (see the module documentation):
    /// one entry per placeholder, in order, trimmed; `None` where the literals around it
    /// are not found or nothing is between them.
    pub fn captures<'t>(&self, text: &'t str) -> Vec<Option<&'t str>> {
        let text = text.trim();
        // The template as: lead literal, then (placeholder, following literal) pairs.
        let mut lead = "";
        let mut fields: Vec<&str> = Vec::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) if fields.is_empty() => lead = s.as_str(),
                Part::Literal(s) => *fields.last_mut().expect("a field precedes") = s.as_str(),
                Part::Field(_) => fields.push(""),
            }
        }
        let n = fields.len();
        // ends[i]: where field i ends; starts[i]: where it starts. Literals are found from
        // the right, each before the one after it.
        let mut ends: Vec<Option<usize>> = vec![None; n];
        let mut starts: Vec<Option<usize>> = vec![None; n];
        let mut limit = text.len();
        for i in (0..n).rev() {
            let after = fields[i].trim_end();
            let found = if i + 1 == n {
                // The last literal ends the answer (trailing whitespace aside).
                text[..limit].ends_with(after).then(|| limit - after.len())
            } else {
                text[..limit].rfind(after)
            };
            if let Some(pos) = found {
                ends[i] = Some(pos);
                if i + 1 < n {
                    starts[i + 1] = Some(pos + after.len());
                }
                limit = pos;
            }
        }
        if n > 0 && text[..limit].starts_with(lead.trim_start()) {
            starts[0] = Some(lead.trim_start().len());
        }
        (0..n)
            .map(|i| match (starts[i], ends[i]) {
                (Some(s), Some(e)) if s <= e => Some(text[s..e].trim()).filter(|c| !c.is_empty()),
                _ => None,
            })
            .collect()
    }
}

/// `name` or `name:spec` (the text between the braces of the placeholder at byte `at`).
fn parse_placeholder(inner: &str, at: usize) -> Result<Placeholder, TemplateError> {
    let (name, spec) = match inner.split_once(':') {
        Some((name, spec)) => (name, Some(spec)),
        None => (inner, None),
    };
    if name.trim().is_empty() {
        return Err(TemplateError(format!(
            "empty placeholder name at byte {at}"
        )));
    }
    if let Some(bad) = name.chars().find(|c| matches!(c, '{' | '!' | '[' | '.')) {
        return Err(TemplateError(format!(
            "placeholder {{{inner}}} at byte {at}: '{bad}' is not supported (write \
             {{column}} or {{column:format}})"
        )));
    }
    let spec = spec
        .map(|s| {
            FormatSpec::parse(s).map_err(|reason| {
                TemplateError(format!("placeholder {{{inner}}} at byte {at}: {reason}"))
            })
        })
        .transpose()?;
    Ok(Placeholder {
        name: name.to_string(),
        spec,
    })
}

/// A Python format spec: `[[fill]align][sign][0][width][,|_][.precision][type]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatSpec {
    fill: char,
    align: Option<char>,
    sign: char,
    width: usize,
    grouping: Option<char>,
    precision: Option<usize>,
    /// `f`, `F`, `e`, `E`, `%`, `d`, `s`, or none.
    kind: Option<char>,
}

impl FormatSpec {
    /// Parses the text after `:`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let chars: Vec<char> = spec.chars().collect();
        let mut i = 0;
        let is_align = |c: char| matches!(c, '<' | '>' | '^' | '=');
        let (mut fill, mut align) = (' ', None);
        if chars.len() >= 2 && is_align(chars[1]) {
            (fill, align) = (chars[0], Some(chars[1]));
            i = 2;
        } else if chars.first().is_some_and(|&c| is_align(c)) {
            align = Some(chars[0]);
            i = 1;
        }
        let mut sign = '-';
        if let Some(&c) = chars.get(i).filter(|c| matches!(c, '+' | '-' | ' ')) {
            sign = c;
            i += 1;
        }
        if chars.get(i) == Some(&'0') {
            if align.is_none() {
                (fill, align) = ('0', Some('='));
            }
            i += 1;
        }
        let digits = |i: &mut usize| {
            let start = *i;
            while chars.get(*i).is_some_and(char::is_ascii_digit) {
                *i += 1;
            }
            chars[start..*i]
                .iter()
                .collect::<String>()
                .parse::<usize>()
                .ok()
        };
        let width = digits(&mut i).unwrap_or(0);
        let mut grouping = None;
        if let Some(&c) = chars.get(i).filter(|c| matches!(c, ',' | '_')) {
            grouping = Some(c);
            i += 1;
        }
        let mut precision = None;
        if chars.get(i) == Some(&'.') {
            i += 1;
            precision = Some(digits(&mut i).ok_or("'.' must be followed by a precision")?);
        }
        let kind = chars.get(i).copied();
        if let Some(k) = kind {
            if !matches!(k, 'f' | 'F' | 'e' | 'E' | '%' | 'd' | 's') {
                return Err(format!(
                    "format type '{k}' is not supported (use f, F, e, E, %, d or s)"
                ));
            }
            i += 1;
        }
        if i < chars.len() {
            return Err(format!(
                "format spec '{spec}' is not supported past '{}' (the supported form is \
                 [[fill]align][sign][0][width][,|_][.precision][type])",
                chars[..i].iter().collect::<String>()
            ));
        }
        if precision.is_some() && kind.is_none() {
            return Err(format!(
                "a precision needs a type: write '{spec}f' for a fixed-point number"
            ));
        }
        Ok(Self {
            fill,
            align,
            sign,
            width,
            grouping,
            precision,
            kind,
        })
    }

    /// Whether the spec writes a percentage (`%`): the value read back is divided by 100.
    pub fn is_percent(&self) -> bool {
        self.kind == Some('%')
    }
}

/// Writes `value` as Python's `format(value, spec)` does (`str(value)` without a spec).
pub fn format_value(value: &FieldValue, spec: Option<&FormatSpec>) -> Result<String, String> {
    let Some(spec) = spec else {
        return Ok(python_str(value));
    };
    let number = match value {
        FieldValue::Int(v) => Some(*v as f64),
        FieldValue::Float(v) => Some(*v),
        _ => None,
    };
    let (sign, body, numeric) = match (spec.kind, value, number) {
        (None | Some('s'), FieldValue::Str(s), _)
            if spec.sign == '-' && spec.grouping.is_none() =>
        {
            (String::new(), s.clone(), false)
        }
        (None, FieldValue::Bool(_) | FieldValue::Null, _) => {
            (String::new(), python_str(value), false)
        }
        (Some('d') | None, FieldValue::Int(v), _) => {
            let digits = group(&v.unsigned_abs().to_string(), spec.grouping);
            (sign_of(*v < 0, spec.sign), digits, true)
        }
        (None, FieldValue::Float(v), _) => {
            // str() of the float, grouped if asked.
            let repr = python_float_repr(v.abs());
            let body = match repr.split_once('.') {
                Some((int, frac)) => format!("{}.{frac}", group(int, spec.grouping)),
                None => repr,
            };
            (sign_of(v.is_sign_negative(), spec.sign), body, true)
        }
        (Some(k @ ('f' | 'F' | 'e' | 'E' | '%')), _, Some(x)) => {
            let p = spec.precision.unwrap_or(6);
            let x = if k == '%' { x * 100.0 } else { x };
            let body = match k {
                'e' | 'E' => {
                    let s = python_exp(x.abs(), p);
                    if k == 'E' {
                        s.to_uppercase()
                    } else {
                        s
                    }
                }
                _ => {
                    let fixed = format!("{:.p$}", x.abs());
                    let (int, frac) = match fixed.split_once('.') {
                        Some((int, frac)) => (int.to_string(), format!(".{frac}")),
                        None => (fixed.clone(), String::new()),
                    };
                    let pct = if k == '%' { "%" } else { "" };
                    format!("{}{frac}{pct}", group(&int, spec.grouping))
                }
            };
            (sign_of(x.is_sign_negative(), spec.sign), body, true)
        }
        (kind, value, _) => {
            return Err(format!(
                "the format '{}' cannot write the value {}",
                kind.map_or_else(|| "(no type)".to_string(), String::from),
                python_str(value)
            ))
        }
    };
    let len = sign.chars().count() + body.chars().count();
    let pad = spec.width.saturating_sub(len);
    let fill = |n: usize| spec.fill.to_string().repeat(n);
    let align = spec.align.unwrap_or(if numeric { '>' } else { '<' });
    Ok(match align {
        '<' => format!("{sign}{body}{}", fill(pad)),
        '^' => format!("{}{sign}{body}{}", fill(pad / 2), fill(pad - pad / 2)),
        '=' => format!("{sign}{}{body}", fill(pad)),
        _ => format!("{}{sign}{body}", fill(pad)),
    })
}

/// Python's `str()` of a value.
pub fn python_str(value: &FieldValue) -> String {
    value.to_string()
}

fn sign_of(negative: bool, sign: char) -> String {
    match (negative, sign) {
        (true, _) => "-".into(),
        (false, '+') => "+".into(),
        (false, ' ') => " ".into(),
        _ => String::new(),
    }
}

/// `digits` with `sep` every three digits from the right.
fn group(digits: &str, sep: Option<char>) -> String {
    let Some(sep) = sep else {
        return digits.to_string();
    };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

/// `x` (not negative) as Python's `e` format with `p` decimals: `1.240000e+03`.
fn python_exp(x: f64, p: usize) -> String {
    let s = format!("{x:.p$e}");
    let (mantissa, exp) = s.split_once('e').expect("LowerExp writes an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[(&str, FieldValue)]) -> std::collections::BTreeMap<String, FieldValue> {
        values
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn fmt(value: FieldValue, spec: &str) -> String {
        format_value(&value, Some(&FormatSpec::parse(spec).unwrap())).unwrap()
    }

    #[test]
    fn values_render_as_python_str_does() {
        let t = Template::parse("{name} costs {price}, seats {seats}, {flag} {none}").unwrap();
        let r = row(&[
            ("name", "Oak Chair".into()),
            ("price", 1240.0.into()),
            ("seats", 4_i64.into()),
            ("flag", true.into()),
            ("none", FieldValue::Null),
        ]);
        assert_eq!(
            t.render(&r).unwrap(),
            "Oak Chair costs 1240.0, seats 4, True None"
        );
    }

    #[test]
    fn format_specs_follow_python() {
        // Each expected value is Python's format(value, spec).
        assert_eq!(fmt(1240.0.into(), ".2f"), "1240.00");
        assert_eq!(fmt(1240.5.into(), ",.2f"), "1,240.50");
        assert_eq!(fmt(1234567_i64.into(), ","), "1,234,567");
        assert_eq!(fmt(1234567_i64.into(), "_d"), "1_234_567");
        assert_eq!(fmt(42_i64.into(), "05d"), "00042");
        assert_eq!(fmt((-42_i64).into(), "05d"), "-0042");
        assert_eq!(fmt(3.0.into(), "+.1f"), "+3.0");
        assert_eq!(fmt(0.125.into(), ".1%"), "12.5%");
        assert_eq!(fmt(1240.0.into(), ".2e"), "1.24e+03");
        assert_eq!(fmt(1240.0.into(), "E"), "1.240000E+03");
        assert_eq!(fmt("ab".into(), ">5"), "   ab");
        assert_eq!(fmt("ab".into(), "*^6"), "**ab**");
        assert_eq!(fmt(7_i64.into(), "<4"), "7   ");
        assert_eq!(fmt(1240.0.into(), ","), "1,240.0");
        assert_eq!(fmt(12_i64.into(), ".1f"), "12.0");
    }

    #[test]
    fn unsupported_specs_and_mismatched_values_are_refused() {
        for (spec, needle) in [
            ("x", "format type 'x'"),
            (".2", "a precision needs a type"),
            ("#x", "not supported"),
            (".f", "precision"),
        ] {
            let err = FormatSpec::parse(spec).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
        let err = Template::parse("{price:.2f}")
            .unwrap()
            .render(&row(&[("price", "n/a".into())]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "placeholder {price}: the format 'f' cannot write the value n/a"
        );
        assert!(format_value(&1.5.into(), Some(&FormatSpec::parse("d").unwrap())).is_err());
    }

    #[test]
    fn adjacent_placeholders_are_refused_with_both_names() {
        let err = Template::parse("Item: {name}{price:.2f} EUR").unwrap_err();
        assert_eq!(
            err.to_string(),
            "placeholders {name} and {price} are adjacent: put literal text between them, or \
             the generated answer cannot be split into the two fields"
        );
        assert!(
            Template::parse("{a}{{}}{b}").is_ok(),
            "an escaped brace is literal text"
        );
    }

    #[test]
    fn parse_errors_name_the_place() {
        assert!(Template::parse("{a")
            .unwrap_err()
            .0
            .contains("never closed"));
        assert!(Template::parse("a}").unwrap_err().0.contains("lone '}'"));
        assert!(Template::parse("{}")
            .unwrap_err()
            .0
            .contains("empty placeholder"));
        assert!(Template::parse("{a!r}").unwrap_err().0.contains("'!'"));
    }

    #[test]
    fn rendered_answers_parse_back_to_their_values() {
        let t = Template::parse(
            "Product: {title}, Category: {category3_code}, Full Price: {full_price}",
        )
        .unwrap();
        let r = row(&[
            ("title", "Coat, Long, Beige".into()),
            ("category3_code", "Coats".into()),
            ("full_price", 1890.0.into()),
        ]);
        let text = t.render(&r).unwrap();
        assert_eq!(
            t.captures(&text),
            [Some("Coat, Long, Beige"), Some("Coats"), Some("1890.0")]
        );
        let t = Template::parse("{name} | {type} | {width_cm} cm wide").unwrap();
        let r = row(&[
            ("name", "Large Oak Table".into()),
            ("type", "Table".into()),
            ("width_cm", 200_i64.into()),
        ]);
        assert_eq!(
            t.render(&r).unwrap(),
            "Large Oak Table | Table | 200 cm wide"
        );
        assert_eq!(
            t.captures(&t.render(&r).unwrap()),
            [Some("Large Oak Table"), Some("Table"), Some("200")]
        );
    }

    #[test]
    fn a_missing_literal_loses_only_the_fields_it_delimits() {
        let t = Template::parse("Product: {title}, Category: {cat}, Full Price: {price}").unwrap();
        // Cut before the price: the price's literal is missing, so the category has no end.
        assert_eq!(
            t.captures("Product: Scarf, Category: Scarves"),
            [Some("Scarf"), None, None]
        );
        assert_eq!(
            t.captures("Product: Scarf, Category: , Full Price: 450.0"),
            [Some("Scarf"), None, Some("450.0")]
        );
        assert_eq!(
            t.captures("gibberish, Full Price: about ten"),
            [None, None, Some("about ten")]
        );
        let t = Template::parse("{name} | {width} cm").unwrap();
        assert_eq!(t.captures("Oak Chair | 45"), [Some("Oak Chair"), None]);
    }
}

//! Prompt templates: from a catalogue row to the chat-formatted prompt and the answer.
//!
//! # Chat format
//!
//! Phi-3-Vision's chat template (its `tokenizer_config.json`) renders each message as
//! `<|{role}|>\n{content}<|end|>\n` and, for generation, appends `<|assistant|>\n`:
//!
//! ```text
//! <|user|>\n<|image_1|>What is shown in this image?<|end|>\n<|assistant|>\n
//! ```
//!
//! The BOS token is not part of the text: the tokenizer adds it to every text chunk (see
//! [`crate::tokenize`]). In training, the answer is followed by [`ANSWER_SUFFIX`]
//! (`<|end|>\n<|endoftext|>`), as in the Phi-3 Cookbook's vision fine-tuning collator, so the
//! model learns to close its turn and to stop.
//!
//! # Templates
//!
//! A [`Template`] is text with `{field}` placeholders filled from a row ([`Fields`]); `{{` and
//! `}}` are literal braces, as in Python's `str.format`. Values are written the way Python's
//! `str()` writes them, because the reference prompts were made with f-strings: a float
//! `890.0` is written `890.0`, not `890` ([`python_float_repr`]). Tasks own their templates;
//! the reference Burberry task's, for example:
//!
//! ```
//! use std::collections::HashMap;
//! use phi3v_processor::prompt::{FieldValue, PromptTemplate};
//!
//! let row: HashMap<String, FieldValue> = [
//!     ("title".to_string(), FieldValue::from("Check Cotton Shirt")),
//!     ("category3_code".to_string(), FieldValue::from("Shirts")),
//!     ("full_price".to_string(), FieldValue::from(890.0)),
//! ]
//! .into_iter()
//! .collect();
//! let template = PromptTemplate::new(
//!     "<|image_1|>What is shown in this image?",
//!     "Product: {title}, Category: {category3_code}, Full Price: {full_price}",
//! )
//! .unwrap();
//! let rendered = template.render(&row).unwrap();
//! assert_eq!(
//!     rendered.prompt,
//!     "<|user|>\n<|image_1|>What is shown in this image?<|end|>\n<|assistant|>\n"
//! );
//! assert_eq!(rendered.answer, "Product: Check Cotton Shirt, Category: Shirts, Full Price: 890.0");
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;

use crate::ProcessorError;

/// Opens a user turn.
pub const USER: &str = "<|user|>";
/// Opens an assistant turn.
pub const ASSISTANT: &str = "<|assistant|>";
/// Opens a system turn.
pub const SYSTEM: &str = "<|system|>";
/// Closes a turn (id 32007). Generation should stop on it as well as on [`ENDOFTEXT`].
pub const END: &str = "<|end|>";
/// The tokenizer's EOS and the pad token (id 32000).
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// What follows the answer in a training text. Its `\n` is swallowed by `<|end|>` (which strips
/// the whitespace on its right), so the trained tail is `<|end|>` `<|endoftext|>`.
pub const ANSWER_SUFFIX: &str = "<|end|>\n<|endoftext|>";

/// `<|{role}|>\n{content}<|end|>\n`, one message of the chat template.
pub fn turn(role_tag: &str, content: &str) -> String {
    format!("{role_tag}\n{content}{END}\n")
}

/// The generation prompt for one user message, with an optional system message first:
/// `[<|system|>\n{system}<|end|>\n]<|user|>\n{user}<|end|>\n<|assistant|>\n`. This is
/// `apply_chat_template(messages, add_generation_prompt=True)` of the released model, and the
/// prompt part of a training text.
pub fn generation_prompt(system: Option<&str>, user: &str) -> String {
    let mut out = String::new();
    if let Some(system) = system {
        out.push_str(&turn(SYSTEM, system));
    }
    push_user_turn(&mut out, user);
    out
}

/// `<|user|>\n{user}<|end|>\n<|assistant|>\n`: a user turn and the tag that opens the reply.
fn push_user_turn(out: &mut String, user: &str) {
    out.push_str(&turn(USER, user));
    out.push_str(ASSISTANT);
    out.push('\n');
}

/// A conversation of one or more exchanges (a user message and the assistant's reply, in
/// order), with an optional system message first, as a training text: the prompt holds every
/// turn up to the last `<|assistant|>\n`, the answer is the last reply, and each earlier reply
/// is marked in the prompt ([`RenderedPrompt::replies`]) so that it is trained too.
///
/// One exchange gives exactly what [`generation_prompt`] and a single answer give. Returns
/// `None` for no exchange (there is no answer to train).
///
/// ```
/// use phi3v_processor::prompt::conversation;
///
/// let chat = conversation(None, &[("<|image_1|>What is it?", "A coat."), ("Its colour?", "Beige.")])
///     .unwrap();
/// assert_eq!(
///     chat.prompt,
///     "<|user|>\n<|image_1|>What is it?<|end|>\n<|assistant|>\nA coat.<|end|>\n\
///      <|user|>\nIts colour?<|end|>\n<|assistant|>\n"
/// );
/// assert_eq!(&chat.prompt[chat.replies()[0].clone()], "A coat.<|end|>\n");
/// assert_eq!(chat.answer, "Beige.");
/// ```
pub fn conversation(system: Option<&str>, exchanges: &[(&str, &str)]) -> Option<RenderedPrompt> {
    let ((last_user, answer), earlier) = exchanges.split_last()?;
    let mut prompt = String::new();
    if let Some(system) = system {
        prompt.push_str(&turn(SYSTEM, system));
    }
    let mut replies = Vec::with_capacity(earlier.len());
    for (user, reply) in earlier {
        push_user_turn(&mut prompt, user);
        let start = prompt.len();
        // The `\n` after `<|end|>` belongs to the reply: `<|end|>` swallows it when the reply is
        // tokenized alone, as it does in the whole text.
        prompt.push_str(&format!("{reply}{END}\n"));
        replies.push(start..prompt.len());
    }
    push_user_turn(&mut prompt, last_user);
    Some(RenderedPrompt {
        prompt,
        answer: answer.to_string(),
        replies,
    })
}

/// A value of a row, written into a template as Python's `str()` writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// Written as is.
    Str(String),
    /// Written in decimal.
    Int(i64),
    /// Written as Python's `repr(float)` ([`python_float_repr`]): `890.0`, `1e+16`.
    Float(f64),
    /// `True` / `False`.
    Bool(bool),
    /// A missing value (a null cell): `None`, as an f-string would write it.
    Null,
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Str(s) => f.write_str(s),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Float(x) => f.write_str(&python_float_repr(*x)),
            FieldValue::Bool(true) => f.write_str("True"),
            FieldValue::Bool(false) => f.write_str("False"),
            FieldValue::Null => f.write_str("None"),
        }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        FieldValue::Str(s.to_string())
    }
}

impl From<String> for FieldValue {
    fn from(s: String) -> Self {
        FieldValue::Str(s)
    }
}

impl From<i64> for FieldValue {
    fn from(i: i64) -> Self {
        FieldValue::Int(i)
    }
}

impl From<f64> for FieldValue {
    fn from(x: f64) -> Self {
        FieldValue::Float(x)
    }
}

impl From<bool> for FieldValue {
    fn from(b: bool) -> Self {
        FieldValue::Bool(b)
    }
}

impl<T: Into<FieldValue>> From<Option<T>> for FieldValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(FieldValue::Null, Into::into)
    }
}

/// Something with named fields that a [`Template`] can read: a catalogue row, a map.
///
/// Implement it for a row type to render prompts from it without building a map.
pub trait Fields {
    /// The value of `name`, or `None` if the row has no such field (a null value is
    /// `Some(FieldValue::Null)`).
    fn field(&self, name: &str) -> Option<FieldValue>;
}

impl<S: BuildHasher> Fields for HashMap<String, FieldValue, S> {
    fn field(&self, name: &str) -> Option<FieldValue> {
        self.get(name).cloned()
    }
}

impl Fields for BTreeMap<String, FieldValue> {
    fn field(&self, name: &str) -> Option<FieldValue> {
        self.get(name).cloned()
    }
}

impl Fields for [(&str, FieldValue)] {
    fn field(&self, name: &str) -> Option<FieldValue> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
}

impl<const N: usize> Fields for [(&str, FieldValue); N] {
    fn field(&self, name: &str) -> Option<FieldValue> {
        self.as_slice().field(name)
    }
}

impl<T: Fields + ?Sized> Fields for &T {
    fn field(&self, name: &str) -> Option<FieldValue> {
        (**self).field(name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(String),
}

/// Text with `{field}` placeholders, parsed once and rendered per row.
///
/// Syntax: `{name}` is replaced by the row's field `name`; `{{` and `}}` are literal braces.
/// Format specs (`{price:.2f}`) and conversions (`{name!r}`) are rejected rather than silently
/// ignored, so a template never renders differently from what its author expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `source`.
    ///
    /// # Errors
    /// [`ProcessorError::Template`] for an unclosed `{`, a lone `}`, an empty name, or a format spec.
    pub fn parse(source: &str) -> Result<Self, ProcessorError> {
        let err = |reason: String| ProcessorError::Template {
            template: source.to_string(),
            reason,
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(err(format!("lone '}}' at byte {i} (write '}}}}')"))),
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(close) = rest.find('}') else {
                        return Err(err(format!("'{{' at byte {i} is never closed")));
                    };
                    let name = &rest[..close];
                    if name.is_empty() {
                        return Err(err(format!("empty field name at byte {i}")));
                    }
                    if let Some(bad) = name.chars().find(|c| matches!(c, '{' | ':' | '!')) {
                        return Err(err(format!(
                            "field {{{name}}} at byte {i}: '{bad}' is not supported \
                             (only plain {{name}} placeholders)"
                        )));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(name.to_string()));
                    // Skip the name and the closing brace.
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                c => literal.push(c),
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

    /// The names of the fields it reads, in order of appearance (repeats included).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Fills the placeholders from `row`.
    ///
    /// # Errors
    /// [`ProcessorError::MissingField`] naming the first field the row does not have.
    pub fn render(&self, row: &(impl Fields + ?Sized)) -> Result<String, ProcessorError> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Field(name) => {
                    let value = row
                        .field(name)
                        .ok_or_else(|| ProcessorError::MissingField {
                            template: self.source.clone(),
                            field: name.clone(),
                        })?;
                    out.push_str(&value.to_string());
                }
            }
        }
        Ok(out)
    }
}

impl std::str::FromStr for Template {
    type Err = ProcessorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Template::parse(s)
    }
}

/// The prompt of a task: an optional system message, the user message (with its
/// `<|image_N|>` tags) and the expected answer, each a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    /// System message, if any (the Burberry task has none).
    pub system: Option<Template>,
    /// User message; image tags `<|image_1|>`, `<|image_2|>`.. mark where the images go.
    pub user: Template,
    /// The answer the model is trained to give.
    pub answer: Template,
}

impl PromptTemplate {
    /// A task from a user template and an answer template.
    ///
    /// # Errors
    /// [`ProcessorError::Template`] if either does not parse.
    pub fn new(user: &str, answer: &str) -> Result<Self, ProcessorError> {
        Ok(Self {
            system: None,
            user: Template::parse(user)?,
            answer: Template::parse(answer)?,
        })
    }

    /// The same task with a system message.
    ///
    /// # Errors
    /// [`ProcessorError::Template`] if `system` does not parse.
    pub fn with_system(mut self, system: &str) -> Result<Self, ProcessorError> {
        self.system = Some(Template::parse(system)?);
        Ok(self)
    }

    /// Renders the chat-formatted prompt (ending with `<|assistant|>\n`) and the answer.
    ///
    /// # Errors
    /// [`ProcessorError::MissingField`] if the row lacks a field a template names.
    pub fn render(&self, row: &(impl Fields + ?Sized)) -> Result<RenderedPrompt, ProcessorError> {
        let system = self.system.as_ref().map(|t| t.render(row)).transpose()?;
        let user = self.user.render(row)?;
        Ok(RenderedPrompt::new(
            generation_prompt(system.as_deref(), &user),
            self.answer.render(row)?,
        ))
    }

    /// Renders only the generation prompt (the answer template is not evaluated, so rows
    /// without an answer, at inference, work).
    ///
    /// # Errors
    /// [`ProcessorError::MissingField`] if the row lacks a field the user or system template names.
    pub fn render_prompt(&self, row: &(impl Fields + ?Sized)) -> Result<String, ProcessorError> {
        let system = self.system.as_ref().map(|t| t.render(row)).transpose()?;
        Ok(generation_prompt(
            system.as_deref(),
            &self.user.render(row)?,
        ))
    }
}

/// A rendered prompt and answer of one row (or one conversation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPrompt {
    /// Chat-formatted prompt ending with `<|assistant|>\n`: what the model sees before it
    /// answers, and, but for its [`replies`](Self::replies), the masked (-100) part of a
    /// training example.
    pub prompt: String,
    /// The bare answer, without the chat suffix (what generation should reproduce).
    pub answer: String,
    /// Byte ranges of `prompt` that hold earlier assistant replies of a conversation, each
    /// the reply and its `<|end|>\n`. Private so that only [`conversation`] marks them, and a
    /// range always lies on a turn's boundaries outside any image tag.
    replies: Vec<std::ops::Range<usize>>,
}

impl RenderedPrompt {
    /// A prompt (ending with `<|assistant|>\n`) and its answer: one exchange, nothing in the
    /// prompt trained.
    pub fn new(prompt: impl Into<String>, answer: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            answer: answer.into(),
            replies: Vec::new(),
        }
    }

    /// The earlier assistant replies inside [`prompt`](Self::prompt), as byte ranges in
    /// order (each a reply's text and its `<|end|>\n`): trained like the answer. Empty for
    /// one exchange.
    pub fn replies(&self) -> &[std::ops::Range<usize>] {
        &self.replies
    }

    /// The trained text: the answer followed by [`ANSWER_SUFFIX`].
    pub fn training_answer(&self) -> String {
        format!("{}{ANSWER_SUFFIX}", self.answer)
    }

    /// Prompt and trained answer as one text, the form the original Burberry script wrote.
    /// Tokenized through the processor it gives the same ids as prompt and answer tokenized
    /// apart (special tokens split the text either way), which the fixtures check.
    pub fn full_text(&self) -> String {
        format!("{}{}", self.prompt, self.training_answer())
    }
}

/// Formats a float as Python's `repr(x)` (and `str(x)`, the same since Python 3.2).
///
/// Why: the reference answers are f-strings, so a price is written `890.0`, `1250.5`, `1e+16`;
/// Rust's `Display` would write `890` and `10000000000000000`, and the model would be trained on
/// a different text than the reference recipe uses.
///
/// Python's rule (`float_repr_style = 'short'`): take the shortest digit string that rounds
/// back to `x` (Rust's `{:e}` gives the same digits); with `decpt` the position of the decimal
/// point relative to those digits, use scientific notation if `decpt <= -4 || decpt > 16`
/// (exponent with a sign and at least two digits: `1e-05`, `1e+16`), else fixed notation with
/// at least one digit after the point (`890.0`). Special values: `nan`, `inf`, `-inf`, `-0.0`.
///
/// ```
/// use phi3v_processor::prompt::python_float_repr;
/// assert_eq!(python_float_repr(890.0), "890.0");
/// assert_eq!(python_float_repr(1250.5), "1250.5");
/// assert_eq!(python_float_repr(1e16), "1e+16");
/// assert_eq!(python_float_repr(1e15), "1000000000000000.0");
/// assert_eq!(python_float_repr(0.0001), "0.0001");
/// assert_eq!(python_float_repr(0.00001), "1e-05");
/// assert_eq!(python_float_repr(0.1 + 0.2), "0.30000000000000004");
/// ```
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    // Shortest round-trip digits, as "d.ddde<exp>" or "de<exp>".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci
        .split_once('e')
        .expect("LowerExp always writes an exponent");
    let exp: i32 = exp.parse().expect("LowerExp writes an integer exponent");
    let digits: String = mantissa.chars().filter(|&c| c != '.').collect();
    let n = digits.len() as i32;
    let decpt = exp + 1;
    if decpt <= -4 || decpt > 16 {
        let (head, tail) = digits.split_at(1);
        let frac = if tail.is_empty() {
            String::new()
        } else {
            format!(".{tail}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{head}{frac}e{exp_sign}{:02}", exp.unsigned_abs())
    } else if decpt <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt >= n {
        format!("{sign}{digits}{}.0", "0".repeat((decpt - n) as usize))
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_escapes_and_errors() {
        let t = Template::parse("{{literal}} {a}-{b}{a}").unwrap();
        assert_eq!(t.fields().collect::<Vec<_>>(), ["a", "b", "a"]);
        let row = [("a", FieldValue::from(1_i64)), ("b", FieldValue::from("x"))];
        assert_eq!(t.render(&row).unwrap(), "{literal} 1-x1");
        for bad in ["{a", "a}", "{}", "{a:.2f}", "{a!r}"] {
            assert!(
                matches!(Template::parse(bad), Err(ProcessorError::Template { .. })),
                "{bad}"
            );
        }
        let err = t.render(&[("a", FieldValue::Null)]).unwrap_err();
        assert!(err.to_string().contains("{b}"), "{err}");
    }

    #[test]
    fn unicode_around_placeholders() {
        let t = Template::parse("é{a}–{b}ü").unwrap();
        let row = [("a", FieldValue::from("ß")), ("b", FieldValue::Null)];
        assert_eq!(t.render(&row).unwrap(), "éß–Noneü");
    }
}

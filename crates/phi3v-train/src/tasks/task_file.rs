//! The task file: a TOML description of a task over any catalogue, checked whole before any
//! data is read.
//!
//! ```toml
//! [data]
//! image = "imageurl"              # the column holding the image (URL, relative path or bytes)
//! group = "product_code"          # optional: rows sharing it stay on one side of the split
//!
//! [prompt]
//! user = "<|image_1|>What is shown in this image?"   # may use {column} placeholders too
//! answer = "Product: {title}, Category: {category3_code}, Full Price: {full_price}"
//! # system = "..."                # optional system message
//!
//! [fields]                        # one entry for each placeholder in `answer`
//! title = "text"
//! category3_code = "category"
//! full_price = "number"
//! ```
//!
//! What can be checked without the catalogue is checked here, each error naming the file and
//! the key at fault: the templates parse (see [`super::template`], which refuses adjacent
//! placeholders), every placeholder of the answer has a type and every typed field is a
//! placeholder of the answer, the types are known, and the user message shows the image.
//! What needs the catalogue (a placeholder naming no column, a column that cannot hold its
//! type) is checked when the catalogue is opened, before any training
//! ([`TaskFile::record_layout`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use phi3v_data::catalogue::{CellKind, RecordColumn, RecordLayout};
use serde::Deserialize;

use super::fields::FieldKind;
use super::template::{Placeholder, Template};
use crate::error::TrainError;

/// The image tag the user message must contain.
pub const IMAGE_TAG: &str = "<|image_1|>";

/// The file as TOML gives it, before any check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    data: RawData,
    prompt: RawPrompt,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    image: String,
    group: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrompt {
    system: Option<String>,
    user: String,
    answer: String,
}

/// One field of the answer: its placeholder and its type.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerField {
    pub placeholder: Placeholder,
    pub kind: FieldKind,
}

impl AnswerField {
    pub fn name(&self) -> &str {
        &self.placeholder.name
    }
}

/// A checked task file.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFile {
    /// Where it was read from (errors and the run's labels name it).
    pub path: PathBuf,
    /// The task's name: the file's stem (`furniture` for `tasks/furniture.toml`).
    pub name: String,
    /// The image column.
    pub image: String,
    /// The column whose equal values stay on one side of the split (each row alone without).
    pub group: Option<String>,
    pub system: Option<Template>,
    pub user: Template,
    pub answer: Template,
    /// The answer's fields, in the order of their placeholders.
    pub fields: Vec<AnswerField>,
}

impl TaskFile {
    /// Reads and checks the task file at `path`.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Checks the task file `text`, read from `path` (see the module documentation).
    pub fn parse(text: &str, path: &Path) -> Result<Self, TrainError> {
        let err = |message: String| TrainError::TaskFile {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let template = |key: &str, source: &str| {
            Template::parse(source).map_err(|e| err(format!("[prompt] {key}: {e}")))
        };
        let answer = template("answer", &raw.prompt.answer)?;
        let user = template("user", &raw.prompt.user)?;
        let system = raw
            .prompt
            .system
            .as_deref()
            .map(|s| template("system", s))
            .transpose()?;
        if !raw.prompt.user.contains(IMAGE_TAG) {
            return Err(err(format!(
                "[prompt] user must contain {IMAGE_TAG} where the image goes"
            )));
        }
        let mut fields: Vec<AnswerField> = Vec::new();
        for placeholder in answer.placeholders() {
            let name = &placeholder.name;
            if fields.iter().any(|f| f.name() == name) {
                return Err(err(format!(
                    "[prompt] answer: placeholder {{{name}}} appears twice; each field may be \
                     written once"
                )));
            }
            let kind = match raw.fields.get(name) {
                None => {
                    return Err(err(format!(
                        "[prompt] answer: placeholder {{{name}}} has no type: add \
                         `{name} = \"text\"` (or \"category\" or \"number\") under [fields]"
                    )))
                }
                Some(kind) => parse_kind(kind)
                    .ok_or_else(|| err(format!("[fields] {name} = {kind:?}: {}", unknown(kind))))?,
            };
            fields.push(AnswerField {
                placeholder: placeholder.clone(),
                kind,
            });
        }
        if let Some(extra) = raw
            .fields
            .keys()
            .find(|k| !fields.iter().any(|f| f.name() == *k))
        {
            let names: Vec<String> = fields.iter().map(|f| format!("{{{}}}", f.name())).collect();
            return Err(err(format!(
                "[fields] {extra} is not a placeholder of [prompt] answer (its placeholders: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
        if fields.is_empty() {
            return Err(err(
                "[prompt] answer has no placeholder: there is nothing to score".into(),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            name: path
                .file_stem()
                .map_or_else(|| "task".into(), |s| s.to_string_lossy().into_owned()),
            image: raw.data.image,
            group: raw.data.group,
            system,
            user,
            answer,
            fields,
        })
    }

    /// The columns a catalogue must have for this task, and what each must hold: the
    /// answer's fields (a number, or a value that is not blank), the group column, and the
    /// columns the prompt mentions (anything). Opening a catalogue without one of them fails,
    /// naming the column and the placeholder or key that wants it.
    pub fn record_layout(&self) -> RecordLayout {
        let file = self.path.display();
        let mut columns: Vec<RecordColumn> = self
            .fields
            .iter()
            .map(|f| RecordColumn {
                name: f.name().to_string(),
                kind: match f.kind {
                    FieldKind::Number => CellKind::Number,
                    FieldKind::Text | FieldKind::Category => CellKind::Value,
                },
                role: format!("placeholder {{{}}} of [prompt] answer in {file}", f.name()),
            })
            .collect();
        if let Some(group) = &self.group {
            columns.push(RecordColumn {
                name: group.clone(),
                kind: CellKind::Value,
                role: format!("[data] group in {file}"),
            });
        }
        for (key, template) in [("user", Some(&self.user)), ("system", self.system.as_ref())] {
            for p in template.into_iter().flat_map(Template::placeholders) {
                columns.push(RecordColumn {
                    name: p.name.clone(),
                    kind: CellKind::Any,
                    role: format!("placeholder {{{}}} of [prompt] {key} in {file}", p.name),
                });
            }
        }
        RecordLayout {
            image: self.image.clone(),
            columns,
        }
    }
}

fn parse_kind(name: &str) -> Option<FieldKind> {
    FieldKind::NAMES
        .iter()
        .zip([FieldKind::Text, FieldKind::Category, FieldKind::Number])
        .find(|(n, _)| **n == name)
        .map(|(_, k)| k)
}

fn unknown(kind: &str) -> String {
    format!(
        "unknown type {kind:?} (a field is one of {})",
        FieldKind::NAMES
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[data]
image = "photo"
group = "sku"

[prompt]
user = "<|image_1|>Describe this piece of furniture."
answer = "{name} | type: {type} | width: {width_cm} cm"

[fields]
name = "text"
type = "category"
width_cm = "number"
"#;

    fn error(text: &str) -> String {
        TaskFile::parse(text, Path::new("tasks/t.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_good_file_gives_its_fields_in_answer_order_and_its_columns() {
        let t = TaskFile::parse(GOOD, Path::new("tasks/furniture.toml")).unwrap();
        assert_eq!(t.name, "furniture");
        let fields: Vec<(&str, FieldKind)> = t.fields.iter().map(|f| (f.name(), f.kind)).collect();
        assert_eq!(
            fields,
            [
                ("name", FieldKind::Text),
                ("type", FieldKind::Category),
                ("width_cm", FieldKind::Number)
            ]
        );
        let layout = t.record_layout();
        assert_eq!(layout.image, "photo");
        let columns: Vec<(&str, CellKind)> = layout
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            columns,
            [
                ("name", CellKind::Value),
                ("type", CellKind::Value),
                ("width_cm", CellKind::Number),
                ("sku", CellKind::Value)
            ]
        );
    }

    #[test]
    fn each_mistake_names_its_key() {
        assert_eq!(
            error(&GOOD.replace("type = \"category\"\n", "")),
            "task file tasks/t.toml: [prompt] answer: placeholder {type} has no type: add \
             `type = \"text\"` (or \"category\" or \"number\") under [fields]"
        );
        assert_eq!(
            error(&GOOD.replace("name = \"text\"", "name = \"text\"\ncolour = \"category\"")),
            "task file tasks/t.toml: [fields] colour is not a placeholder of [prompt] answer \
             (its placeholders: {name}, {type}, {width_cm})"
        );
        assert_eq!(
            error(&GOOD.replace("\"number\"", "\"float\"")),
            "task file tasks/t.toml: [fields] width_cm = \"float\": unknown type \"float\" (a \
             field is one of \"text\", \"category\", \"number\")"
        );
        assert_eq!(
            error(&GOOD.replace("{name} | type: {type}", "{name}{type}")),
            "task file tasks/t.toml: [prompt] answer: placeholders {name} and {type} are \
             adjacent: put literal text between them, or the generated answer cannot be split \
             into the two fields"
        );
        assert_eq!(
            error(&GOOD.replace("<|image_1|>", "")),
            "task file tasks/t.toml: [prompt] user must contain <|image_1|> where the image goes"
        );
        let unknown_key = error(&GOOD.replace("[fields]", "imgae = \"x\"\n[fields]"));
        assert!(unknown_key.contains("imgae"), "{unknown_key}");
        let missing = error(&GOOD.replace("image = \"photo\"\n", ""));
        assert!(missing.contains("image"), "{missing}");
    }
}

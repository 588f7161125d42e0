//! Conversation datasets: JSON lines in the form ms-swift and LLaMA-Factory accept.
//!
//! ```json
//! {"messages": [{"role": "user", "content": "<image>What is this?"},
//!               {"role": "assistant", "content": "A trench coat."}],
//!  "images": ["img/001.jpg"]}
//! ```
//!
//! (one record per line). A record may have a `system` message first, then user and
//! assistant turns alternating, starting with a user turn and ending with an assistant turn:
//! every assistant turn is trained, the last one is what evaluation generates. Each `<image>`
//! in a user message is one entry of `images`, in order: the N-th tag becomes `<|image_N|>`,
//! Phi-3-V's tag. An image is an `http(s)` URL (downloaded through the
//! [`ImageFetcher`] and its cache) or a path, absolute or relative to the file's folder, read
//! under the same rules as a catalogue's image files ([`LoadOptions`]: by default a path that
//! leads outside the file's folder is refused).
//!
//! A record that cannot be trained is dropped and reported with its line, never fatal, as a
//! bad catalogue row is ([`Report`]): a line that is not a JSON object or has no `messages`
//! list (malformed), roles out of order or a message without text content
//! ([`DropReason::BadConversation`]), `<image>` tags that do not match `images` in number
//! ([`DropReason::ImageCountMismatch`]), an image that cannot be read, downloaded or decoded.
//! Only a file that cannot be read at all is an error.
//!
//! [`is_conversation_file`] tells this form from a JSON-lines catalogue by the `messages` key
//! of the first record.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::catalogue::{
    fetch_urls, folder_of, image_from_str, is_blank, read_line, ready_image, without_position,
    CatalogueFormat, ImageRules, ImageSource, Line, LoadOptions, MAX_ROW_BYTES,
};
use crate::images::{ImageFetcher, ReadyImage};
use crate::report::{DropReason, Report};
use crate::DataError;

/// How a conversation record marks where an image goes.
pub const IMAGE_TAG: &str = "<image>";

/// Records checked together: their downloads run concurrently and their images decode in
/// parallel, while memory stays bounded by one chunk.
const CHUNK_RECORDS: usize = 256;

/// A usable conversation record: checked turns and images that decode.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationItem {
    /// 0-based index of the record (non-blank lines, in file order).
    pub row: usize,
    /// Its line in the file (1-based).
    pub line: u64,
    /// The system message, if the record has one.
    pub system: Option<String>,
    /// The user message and the assistant's reply of each exchange, in order, with
    /// `<image>` already written as `<|image_N|>`. Never empty.
    pub exchanges: Vec<(String, String)>,
    /// The `images` entries as the record writes them (for grouping: records that share
    /// their images stay on one side of a split).
    pub image_refs: Vec<String>,
    /// The images, fetched and checked, `images[k]` being `<|image_{k+1}|>`.
    pub images: Vec<ReadyImage>,
}

impl ConversationItem {
    /// The last assistant turn: what evaluation asks the model to write.
    pub fn last_answer(&self) -> &str {
        &self.exchanges.last().expect("a record has an exchange").1
    }
}

/// The usable records of a conversation file and the report of the dropped ones.
#[derive(Debug, Clone)]
pub struct LoadedConversations {
    /// Usable records, in file order.
    pub items: Vec<ConversationItem>,
    /// Every dropped record and why (by line).
    pub report: Report,
}

/// Whether `path` holds conversation records: its first non-blank line is a JSON object with a
/// `messages` key. A parquet or CSV file (by its name) is not, unread; a file that cannot be
/// opened is an error naming it.
pub fn is_conversation_file(path: &Path) -> Result<bool, DataError> {
    if matches!(
        CatalogueFormat::from_path(path),
        Some(CatalogueFormat::Parquet | CatalogueFormat::Csv)
    ) {
        return Ok(false);
    }
    let io_err = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut buf = Vec::new();
    while let Some(line) = read_line(&mut reader, &mut buf).map_err(io_err)? {
        if let Line::TooLong = line {
            return Ok(false);
        }
        let text = buf.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&buf);
        if is_blank(text) {
            continue;
        }
        return Ok(serde_json::from_slice::<Map<String, Value>>(text)
            .is_ok_and(|object| object.contains_key("messages")));
    }
    Ok(false)
}

/// A conversation file and the rules its images are read under.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationFile {
    path: PathBuf,
    options: LoadOptions,
}

/// One record as read, before its images are fetched.
struct Parsed {
    row: usize,
    line: u64,
    system: Option<String>,
    exchanges: Vec<(String, String)>,
    image_refs: Vec<String>,
    sources: Vec<ImageSource>,
}

impl ConversationFile {
    /// The file at `path` with the default [`LoadOptions`] (image files must be inside its
    /// folder). Nothing is read until [`load`](Self::load).
    pub fn open(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            options: LoadOptions::default(),
        }
    }

    /// Uses other path rules (only [`LoadOptions::allow_outside_paths`] applies here).
    pub fn with_options(mut self, options: LoadOptions) -> Self {
        self.options = options;
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder relative image paths resolve against: the file's folder.
    pub fn base_dir(&self) -> &Path {
        folder_of(&self.path)
    }

    /// Reads every record, drops (and reports) those that cannot be trained, and returns the
    /// rest with their images fetched and checked (see the module documentation).
    ///
    /// # Errors
    /// Only for the file as a whole (it cannot be opened or read) and invalid options.
    pub fn load(&self, fetcher: &ImageFetcher) -> Result<LoadedConversations, DataError> {
        self.options.validate()?;
        let rules = ImageRules::new(&self.options, fetcher, self.base_dir())?;
        let io_err = |source| DataError::Io {
            path: self.path.clone(),
            source,
        };
        let mut reader = BufReader::new(File::open(&self.path).map_err(io_err)?);
        let mut report = Report::new(&self.path);
        let mut items = Vec::new();
        let mut buf = Vec::new();
        let (mut line_no, mut rows) = (0u64, 0usize);
        let mut chunk = Vec::new();
        loop {
            let line = read_line(&mut reader, &mut buf).map_err(io_err)?;
            if let Some(line) = line {
                line_no += 1;
                if line_no == 1 && buf.starts_with("\u{feff}".as_bytes()) {
                    buf.drain(..3);
                }
                if matches!(line, Line::Whole) && is_blank(&buf) {
                    continue;
                }
                let row = rows;
                rows += 1;
                let parsed = match line {
                    Line::Whole => self.parse(row, line_no, &buf),
                    Line::TooLong => Err(malformed(format!("longer than {MAX_ROW_BYTES} bytes"))),
                };
                match parsed {
                    Ok(parsed) => chunk.push(parsed),
                    Err(reason) => report.drop_row(row, Some(line_no), None, reason),
                }
            }
            if chunk.len() >= CHUNK_RECORDS || (line.is_none() && !chunk.is_empty()) {
                let records = std::mem::take(&mut chunk);
                load_chunk(records, fetcher, &rules, &mut report, &mut items);
            }
            if line.is_none() {
                break;
            }
        }
        report.finish(rows);
        Ok(LoadedConversations { items, report })
    }

    /// Reads one record: its turns and where its images are.
    fn parse(&self, row: usize, line: u64, bytes: &[u8]) -> Result<Parsed, DropReason> {
        let object: Map<String, Value> = serde_json::from_slice(bytes)
            .map_err(|e| malformed(format!("not a JSON object: {}", without_position(&e))))?;
        let Some(Value::Array(messages)) = object.get("messages") else {
            return Err(malformed(
                "no `messages` list (a conversation record is {\"messages\": [...], \"images\": [...]})"
                    .into(),
            ));
        };
        let image_refs: Vec<String> = match object.get("images") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(k, v)| match v {
                    Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                    other => Err(malformed(format!(
                        "images[{k}] is {}, not a path or URL",
                        brief(other)
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(malformed(format!(
                    "`images` is {}, not a list",
                    brief(other)
                )))
            }
        };
        let Turns {
            system,
            exchanges,
            tags,
        } = turns(messages)?;
        if tags != image_refs.len() {
            return Err(DropReason::ImageCountMismatch {
                tags,
                images: image_refs.len(),
            });
        }
        let sources = image_refs
            .iter()
            .map(|r| image_from_str(r, self.base_dir()))
            .collect();
        Ok(Parsed {
            row,
            line,
            system,
            exchanges,
            image_refs,
            sources,
        })
    }
}

/// Fetches the URLs of `records`, checks every image (in parallel), and keeps the records
/// whose images are all usable; a record with an unusable image is dropped for the first one.
fn load_chunk(
    records: Vec<Parsed>,
    fetcher: &ImageFetcher,
    rules: &ImageRules,
    report: &mut Report,
    items: &mut Vec<ConversationItem>,
) {
    let fetched = fetch_urls(fetcher, records.iter().flat_map(|r| &r.sources));
    let checked: Vec<Result<Vec<ReadyImage>, DropReason>> = records
        .par_iter()
        .map(|r| {
            r.sources
                .iter()
                .map(|s| ready_image(s, &fetched, rules))
                .collect()
        })
        .collect();
    for (record, images) in records.into_iter().zip(checked) {
        match images {
            Ok(images) => items.push(ConversationItem {
                row: record.row,
                line: record.line,
                system: record.system,
                exchanges: record.exchanges,
                image_refs: record.image_refs,
                images,
            }),
            Err(reason) => report.drop_row(record.row, Some(record.line), None, reason),
        }
    }
}

/// The turns of a record's `messages`, checked.
struct Turns {
    system: Option<String>,
    /// With `<image>` written `<|image_N|>`.
    exchanges: Vec<(String, String)>,
    /// `<image>` tags across the messages.
    tags: usize,
}

/// The turns of `messages`, or why they cannot be trained.
fn turns(messages: &[Value]) -> Result<Turns, DropReason> {
    let bad = |message: String| DropReason::BadConversation { message };
    let mut system = None;
    let mut exchanges: Vec<(String, String)> = Vec::new();
    let mut pending_user: Option<String> = None;
    let mut tags = 0;
    for (i, message) in messages.iter().enumerate() {
        let n = i + 1;
        let field = |key: &str| match message.get(key) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(other) => Err(bad(format!(
                "message {n}: `{key}` is {}, not text",
                brief(other)
            ))),
            None => Err(bad(format!("message {n} has no `{key}`"))),
        };
        let (role, content) = (field("role")?, field("content")?);
        if content.contains("<|image_") {
            return Err(bad(format!(
                "message {n} holds a Phi-3-V image tag (<|image_N|>): write {IMAGE_TAG} where an \
                 image goes"
            )));
        }
        let expected = if pending_user.is_some() {
            "assistant"
        } else {
            "user"
        };
        match role {
            "system" if i == 0 => {
                no_image(content, n, role)?;
                system = Some(content.to_string());
            }
            "user" | "assistant" if role != expected => {
                let article = |role: &str| if role == "user" { "a" } else { "an" };
                return Err(bad(format!(
                    "message {n} is {} {role} turn where {} {expected} turn belongs (after an \
                     optional system message, user and assistant turns alternate, starting with \
                     user)",
                    article(role),
                    article(expected)
                )));
            }
            "user" => {
                let mut text = String::with_capacity(content.len());
                let mut pieces = content.split(IMAGE_TAG);
                text.push_str(pieces.next().unwrap_or_default());
                for piece in pieces {
                    tags += 1;
                    text.push_str(&format!("<|image_{tags}|>{piece}"));
                }
                pending_user = Some(text);
            }
            "assistant" => {
                no_image(content, n, role)?;
                let user = pending_user
                    .take()
                    .expect("an assistant turn follows a user turn");
                exchanges.push((user, content.to_string()));
            }
            "system" => {
                return Err(bad(format!(
                    "message {n} is a system turn: only the first message may be one"
                )))
            }
            other => {
                return Err(bad(format!(
                    "message {n} has role {other:?} (roles are \"system\", \"user\", \"assistant\")"
                )))
            }
        }
    }
    if pending_user.is_some() || exchanges.is_empty() {
        return Err(bad(format!(
            "the last message must be an assistant turn (the answer that is trained), but {}",
            match messages.len() {
                0 => "there are no messages".to_string(),
                n => format!("message {n} is not"),
            }
        )));
    }
    Ok(Turns {
        system,
        exchanges,
        tags,
    })
}

/// Refuses an image tag in a system or assistant message: images go in user turns.
fn no_image(content: &str, n: usize, role: &str) -> Result<(), DropReason> {
    if content.contains(IMAGE_TAG) {
        return Err(DropReason::BadConversation {
            message: format!("message {n} ({role}) holds {IMAGE_TAG}: images go in user turns"),
        });
    }
    Ok(())
}

fn malformed(message: String) -> DropReason {
    DropReason::Malformed { message }
}

/// A JSON value in a few words, for messages: `a number`, `null`.
fn brief(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

//! Catalogues read as records of named columns (a task file's columns), from CSV and JSON
//! lines alike: values keep their type, number text becomes numbers, a cell that does not
//! hold what its column must drops its row naming the line and column, a column none of
//! whose cells is a number is refused, and rows sharing a value are all kept.
//!
//! Conversation records (`{messages, images}` JSON lines) too: multi-turn and multi-image
//! records with their tags numbered, images by relative path, absolute path and URL, and
//! each kind of bad record dropped naming its line.

use crate::common;

use std::path::Path;

use phi3v_data::catalogue::{Catalogue, CellKind, LoadOptions, RecordColumn, RecordLayout};
use phi3v_data::conversations::{is_conversation_file, ConversationFile};
use phi3v_data::images::{FetchConfig, ImageFetcher};
use phi3v_data::report::{DropKind, DropReason};
use phi3v_processor::prompt::FieldValue;

fn layout() -> RecordLayout {
    let column = |name: &str, kind| RecordColumn {
        name: name.into(),
        kind,
        role: format!("placeholder {{{name}}}"),
    };
    RecordLayout {
        image: "photo".into(),
        columns: vec![
            column("name", CellKind::Value),
            column("width", CellKind::Number),
            column("note", CellKind::Any),
        ],
    }
}

fn fetcher() -> ImageFetcher {
    ImageFetcher::new(FetchConfig {
        progress: false,
        ..FetchConfig::default()
    })
    .unwrap()
}

fn png(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]))
        .save(&path)
        .unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn csv_records_keep_types_and_drop_rows_naming_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    png(dir.path(), "a.png");
    let csv = "name,width,note,photo\n\
               Oak Chair,45,,a.png\n\
               Oak Chair,45.5,hi,a.png\n\
               ,60,,a.png\n\
               Pine Table,wide,,a.png\n";
    let path = dir.path().join("c.csv");
    std::fs::write(&path, csv).unwrap();
    let loaded = Catalogue::open(&path)
        .unwrap()
        .with_record_layout(layout())
        .load(&fetcher())
        .unwrap();
    // Two rows share every value: both are kept (records are not deduplicated).
    assert_eq!(loaded.items.len(), 2);
    let r0 = &loaded.items[0].record;
    assert_eq!(r0["name"], FieldValue::from("Oak Chair"));
    assert_eq!(r0["width"], FieldValue::Int(45));
    assert_eq!(r0["note"], FieldValue::Null);
    assert_eq!(loaded.items[1].record["width"], FieldValue::Float(45.5));
    let dropped: Vec<(Option<u64>, &DropReason)> = loaded
        .report
        .dropped
        .iter()
        .map(|d| (d.line, &d.reason))
        .collect();
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert_eq!(
        loaded.report.dropped[0].message,
        "line 4: column `name`: null is not a value (it is part of the answer)"
    );
    match dropped[1] {
        (Some(5), DropReason::InvalidValue { column, value, .. }) => {
            assert_eq!(column, "width");
            assert_eq!(value, "\"wide\"");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn jsonl_records_read_hugging_face_image_structs_and_refuse_a_column_without_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = png(dir.path(), "b.png");
    let line = |name: &str, width: &str| {
        format!(
            "{{\"name\": \"{name}\", \"width\": {width}, \"photo\": {{\"bytes\": {bytes:?}, \"path\": \"b.png\"}}}}\n"
        )
    };
    let path = dir.path().join("c.jsonl");
    std::fs::write(&path, line("Lamp", "30") + &line("Lamp", "30.0")).unwrap();
    let mut layout = layout();
    layout.columns.pop(); // no `note` column in this file
    let loaded = Catalogue::open(&path)
        .unwrap()
        .with_record_layout(layout.clone())
        .load(&fetcher())
        .unwrap();
    assert_eq!(loaded.items.len(), 2);
    assert_eq!(loaded.items[0].record["width"], FieldValue::Int(30));
    assert_eq!(loaded.items[1].record["width"], FieldValue::Float(30.0));

    std::fs::write(&path, line("Lamp", "\"tall\"") + &line("Sofa", "\"long\"")).unwrap();
    let err = Catalogue::open(&path)
        .unwrap()
        .with_record_layout(layout)
        .load(&fetcher())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "catalogue {}, column `width` cannot hold numbers: no row has one (for example \
             line 1: \"tall\")",
            path.display()
        )
    );
}

/// A user and an assistant message, as a conversation record writes them.
fn exchange(user: &str, assistant: &str) -> String {
    format!(
        r#"{{"role": "user", "content": {user:?}}}, {{"role": "assistant", "content": {assistant:?}}}"#
    )
}

#[test]
fn conversation_records_number_their_images_and_drop_bad_records_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start();
    png(dir.path(), "a.png");
    std::fs::create_dir(dir.path().join("img")).unwrap();
    png(&dir.path().join("img"), "b.png");
    let absolute = dir.path().join("img/b.png").display().to_string();
    let url = server.url("/ok/c.png");
    let lines = [
        // 1: one exchange, a relative path.
        format!(r#"{{"messages": [{}], "images": ["a.png"]}}"#, exchange("<image>What is this?", "A chair.")),
        // 2: blank (not a record).
        String::new(),
        // 3: a system message, two exchanges, three images: relative, absolute and a URL.
        format!(
            r#"{{"messages": [{{"role": "system", "content": "Be brief."}}, {}, {}], "images": ["img/b.png", {absolute:?}, {url:?}]}}"#,
            exchange("<image>and <image>: which is wider?", "The first."),
            exchange("And this?<image>", "A lamp.")
        ),
        // 4: two tags, one image.
        format!(r#"{{"messages": [{}], "images": ["a.png"]}}"#, exchange("<image><image>Same?", "Yes.")),
        // 5: roles out of order.
        r#"{"messages": [{"role": "assistant", "content": "Hi."}, {"role": "user", "content": "<image>?"}], "images": ["a.png"]}"#.to_string(),
        // 6: ends with a user turn.
        format!(
            r#"{{"messages": [{}, {{"role": "user", "content": "Sure?"}}], "images": ["a.png"]}}"#,
            exchange("<image>What?", "A chair.")
        ),
        // 7: not JSON.
        "{\"messages\": [".to_string(),
        // 8: a missing image file.
        format!(r#"{{"messages": [{}], "images": ["gone.png"]}}"#, exchange("<image>What?", "A chair.")),
        // 9: an image in an assistant turn.
        format!(r#"{{"messages": [{}], "images": ["a.png"]}}"#, exchange("What?", "<image>")),
        // 10: no images at all: a text-only record is fine.
        format!(r#"{{"messages": [{}]}}"#, exchange("Say hi.", "Hi.")),
        // 11: no messages.
        r#"{"images": ["a.png"]}"#.to_string(),
        // 12: Phi-3-V's own tag written out.
        format!(r#"{{"messages": [{}], "images": ["a.png"]}}"#, exchange("<|image_1|>What?", "A chair.")),
    ];
    let path = dir.path().join("chat.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    assert!(is_conversation_file(&path).unwrap());

    let fetcher = common::quick_fetcher(&dir.path().join("cache"));
    // The absolute path is inside the file's folder, so the default rules read it.
    let loaded = ConversationFile::open(&path).load(&fetcher).unwrap();
    let report = &loaded.report;
    assert_eq!((report.rows_read, report.rows_kept), (11, 3), "{report:#?}");

    let lines_kept: Vec<u64> = loaded.items.iter().map(|i| i.line).collect();
    assert_eq!(lines_kept, [1, 3, 10]);
    let first = &loaded.items[0];
    assert_eq!(
        first.exchanges,
        [(
            "<|image_1|>What is this?".to_string(),
            "A chair.".to_string()
        )]
    );
    assert_eq!(first.images.len(), 1);
    let multi = &loaded.items[1];
    assert_eq!(multi.system.as_deref(), Some("Be brief."));
    assert_eq!(
        multi.exchanges,
        [
            (
                "<|image_1|>and <|image_2|>: which is wider?".to_string(),
                "The first.".to_string()
            ),
            ("And this?<|image_3|>".to_string(), "A lamp.".to_string()),
        ]
    );
    assert_eq!(multi.last_answer(), "A lamp.");
    // 8x8 files and the server's 4x3 PNG, in order.
    let sizes: Vec<(u32, u32)> = multi.images.iter().map(|i| (i.width, i.height)).collect();
    assert_eq!(sizes, [(8, 8), (8, 8), (4, 3)]);
    assert_eq!(multi.image_refs[2], url);
    assert!(loaded.items[2].images.is_empty());

    let dropped: Vec<(Option<u64>, DropKind)> = report
        .dropped
        .iter()
        .map(|d| (d.line, d.reason.kind()))
        .collect();
    assert_eq!(
        dropped,
        [
            (Some(4), DropKind::ImageCountMismatch),
            (Some(5), DropKind::BadConversation),
            (Some(6), DropKind::BadConversation),
            (Some(7), DropKind::Malformed),
            (Some(8), DropKind::ImageFileUnreadable),
            (Some(9), DropKind::BadConversation),
            (Some(11), DropKind::Malformed),
            (Some(12), DropKind::BadConversation),
        ]
    );
    let message = |line: u64| {
        report
            .dropped
            .iter()
            .find(|d| d.line == Some(line))
            .unwrap()
            .message
            .clone()
    };
    assert_eq!(
        message(4),
        "line 4: 2 <image> tags in the messages but 1 entry in `images`: each image needs \
         exactly one tag where it goes"
    );
    assert!(
        message(5).starts_with(
            "line 5: bad conversation: message 1 is an assistant turn where a user turn belongs"
        ),
        "{}",
        message(5)
    );
    assert!(
        message(6).contains("the last message must be an assistant turn"),
        "{}",
        message(6)
    );
    assert!(
        message(7).starts_with("line 7: malformed row: not a JSON object"),
        "{}",
        message(7)
    );
    assert!(message(8).contains("gone.png"), "{}", message(8));
    assert!(
        message(9).contains("message 2 (assistant) holds <image>"),
        "{}",
        message(9)
    );
    assert!(
        message(11).starts_with("line 11: malformed row: no `messages` list"),
        "{}",
        message(11)
    );
    assert_eq!(
        message(12),
        "line 12: bad conversation: message 1 holds a Phi-3-V image tag (<|image_N|>): write \
         <image> where an image goes"
    );
    assert!(report.dropped.iter().all(|d| d.product_code.is_none()));
}

#[test]
fn conversation_images_outside_the_folder_follow_the_catalogue_rule() {
    let outside = tempfile::tempdir().unwrap();
    png(outside.path(), "x.png");
    let dir = tempfile::tempdir().unwrap();
    let absolute = outside.path().join("x.png").display().to_string();
    let path = dir.path().join("chat.jsonl");
    std::fs::write(
        &path,
        format!(
            r#"{{"messages": [{}], "images": [{absolute:?}]}}"#,
            exchange("<image>?", "X.")
        ),
    )
    .unwrap();
    let refused = ConversationFile::open(&path).load(&fetcher()).unwrap();
    assert!(refused.items.is_empty());
    assert!(
        refused.report.dropped[0]
            .message
            .contains("outside the catalogue's folder"),
        "{}",
        refused.report.dropped[0].message
    );
    let allowed = ConversationFile::open(&path)
        .with_options(LoadOptions {
            allow_outside_paths: true,
            ..LoadOptions::default()
        })
        .load(&fetcher())
        .unwrap();
    assert_eq!(allowed.items.len(), 1);

    // A catalogue in JSON lines is not a conversation file; parquet is not even read.
    let catalogue = dir.path().join("c.jsonl");
    std::fs::write(&catalogue, "\n{\"name\": \"Oak\", \"photo\": \"a.png\"}\n").unwrap();
    assert!(!is_conversation_file(&catalogue).unwrap());
    assert!(!is_conversation_file(&dir.path().join("missing.parquet")).unwrap());
    assert!(is_conversation_file(&dir.path().join("missing.jsonl")).is_err());
}

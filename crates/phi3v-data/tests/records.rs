//! Catalogues read as records of named columns (a task file's columns), from CSV and JSON
//! lines alike: values keep their type, number text becomes numbers, a cell that does not
//! hold what its column must drops its row naming the line and column, a column none of
//! whose cells is a number is refused, and rows sharing a value are all kept.

use std::path::Path;

use phi3v_data::catalogue::{Catalogue, CellKind, RecordColumn, RecordLayout};
use phi3v_data::images::{FetchConfig, ImageFetcher};
use phi3v_data::report::DropReason;
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

//! Offline run tracking: TensorBoard event files, `metrics.jsonl` and `report.html`.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use crc32c::crc32c;
use image::{Rgb, RgbImage};
use phi3v_track::{
    masked_crc32c, read_metrics, read_records, render_report, thumbnail_png, truncate_after,
    write_report, Comparison, EvalRow, EvalTable, EventWriter, FieldCell, MetricRecord, MetricsLog,
    ReportData, Series,
};

/// The engine the crate embeds images with; the tests pin that it is the strict, padded,
/// standard-alphabet one that `data:` URIs and the JSON thumbnails expect.
fn base64_encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn base64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    BASE64.decode(text)
}

// ---------------------------------------------------------------------------------------
// A minimal protobuf reader, so the tests check what was encoded, not just that it framed.
// ---------------------------------------------------------------------------------------

/// One decoded protobuf field value.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(Vec<u8>),
    Fixed32([u8; 4]),
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = bytes[*pos];
        *pos += 1;
        value |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes");
}

/// Decodes a message into `(field number, value)` pairs, in wire order.
fn decode(bytes: &[u8]) -> Vec<(u32, Field)> {
    let mut pos = 0;
    let mut fields = Vec::new();
    while pos < bytes.len() {
        let key = read_varint(bytes, &mut pos);
        let field = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Field::Varint(read_varint(bytes, &mut pos)),
            1 => {
                pos += 8;
                Field::Fixed64(bytes[pos - 8..pos].try_into().unwrap())
            }
            2 => {
                let len = read_varint(bytes, &mut pos) as usize;
                pos += len;
                Field::Bytes(bytes[pos - len..pos].to_vec())
            }
            5 => {
                pos += 4;
                Field::Fixed32(bytes[pos - 4..pos].try_into().unwrap())
            }
            other => panic!("unexpected wire type {other}"),
        };
        fields.push((field, value));
    }
    fields
}

fn field(fields: &[(u32, Field)], number: u32) -> Option<&Field> {
    fields.iter().find(|(n, _)| *n == number).map(|(_, v)| v)
}

fn bytes_field(fields: &[(u32, Field)], number: u32) -> Vec<u8> {
    match field(fields, number) {
        Some(Field::Bytes(b)) => b.clone(),
        other => panic!("field {number}: expected bytes, got {other:?}"),
    }
}

fn varint_field(fields: &[(u32, Field)], number: u32) -> u64 {
    match field(fields, number) {
        Some(Field::Varint(v)) => *v,
        other => panic!("field {number}: expected varint, got {other:?}"),
    }
}

/// `(step, Summary.Value fields)` of an event holding one summary value.
fn summary_value(event: &[u8]) -> (i64, Vec<(u32, Field)>) {
    let event = decode(event);
    let step = varint_field(&event, 2) as i64;
    let summary = decode(&bytes_field(&event, 5));
    assert_eq!(summary.len(), 1, "one value per summary");
    (step, decode(&bytes_field(&summary, 1)))
}

fn wall_time(event: &[u8]) -> f64 {
    match field(&decode(event), 1) {
        Some(Field::Fixed64(b)) => f64::from_le_bytes(*b),
        other => panic!("wall_time: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------------------

#[test]
fn crc32c_matches_known_vectors() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
    // RFC 3720 (iSCSI) B.4: 32 zero bytes and 32 0xFF bytes.
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
}

#[test]
fn masked_crc32c_matches_tensorboard() {
    // Values from tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c.
    assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    assert_eq!(masked_crc32c(b""), 0xA282_EAD8);
    assert_eq!(masked_crc32c(&13u64.to_le_bytes()), 0x34B8_373C);
}

#[test]
fn base64_matches_rfc4648_vectors() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(base64_encode(plain.as_bytes()), encoded);
        assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
    }
}

#[test]
fn base64_round_trips_every_byte_and_rejects_garbage() {
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    for len in [0, 1, 2, 3, 254, 255, 256, all.len()] {
        let encoded = base64_encode(&all[..len]);
        assert_eq!(encoded.len(), len.div_ceil(3) * 4);
        assert_eq!(base64_decode(&encoded).unwrap(), &all[..len]);
    }
    assert!(base64_decode("Zm9").is_err(), "length not a multiple of 4");
    assert!(
        base64_decode("Zm9v!A==").is_err(),
        "byte outside the alphabet"
    );
    assert!(base64_decode("Zg==Zm9v").is_err(), "padding in the middle");
    assert!(base64_decode("Z===").is_err(), "three padding bytes");
}

// ---------------------------------------------------------------------------------------
// TensorBoard
// ---------------------------------------------------------------------------------------

fn only_event_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

fn write_sample_events(dir: &Path) -> PathBuf {
    let mut writer = EventWriter::create(dir).unwrap();
    writer.add_scalar("train/loss", 2.5, 0).unwrap();
    writer.add_scalar("train/loss", 1.25, 10).unwrap();
    writer.add_scalar("train/lr", 1e-4, -1).unwrap();
    let png = thumbnail_png(&gradient(40, 20), 64);
    writer.add_image("eval/sample", &png, 40, 20, 10).unwrap();
    writer.path().to_owned()
}

#[test]
fn event_file_round_trips_with_verified_crcs() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("tb/run-1");
    let path = write_sample_events(&logdir);

    assert_eq!(
        only_event_file(&logdir),
        path,
        "writer creates its directory"
    );
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    assert!(
        name.ends_with(&format!(".{}", std::process::id())),
        "{name}"
    );

    let records = read_records(&path).unwrap();
    assert_eq!(records.len(), 5);
    let header = decode(&records[0]);
    assert_eq!(bytes_field(&header, 3), b"brain.Event:2");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((wall_time(&records[1]) - now).abs() < 60.0);

    let (step, value) = summary_value(&records[2]);
    assert_eq!(step, 10);
    assert_eq!(bytes_field(&value, 1), b"train/loss");
    assert_eq!(
        field(&value, 2),
        Some(&Field::Fixed32(1.25f32.to_le_bytes()))
    );

    let (step, _) = summary_value(&records[3]);
    assert_eq!(step, -1, "negative steps survive the int64 varint");
}

#[test]
fn event_file_image_carries_png_and_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample_events(dir.path());
    let records = read_records(&path).unwrap();
    let (step, value) = summary_value(&records[4]);
    assert_eq!(step, 10);
    assert_eq!(bytes_field(&value, 1), b"eval/sample");
    let image = decode(&bytes_field(&value, 4));
    assert_eq!(varint_field(&image, 1), 20, "height");
    assert_eq!(varint_field(&image, 2), 40, "width");
    assert_eq!(varint_field(&image, 3), 3, "RGB colorspace");
    let png = bytes_field(&image, 4);
    let decoded = image::load_from_memory(&png).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (40, 20));
}

#[test]
fn event_file_is_complete_without_drop() {
    // A killed run never drops its writer: every add must already be on disk.
    let dir = tempfile::tempdir().unwrap();
    let mut writer = EventWriter::create(dir.path()).unwrap();
    writer.add_scalar("loss", 1.0, 1).unwrap();
    writer.add_scalar("loss", 0.5, 2).unwrap();
    let records = read_records(writer.path()).unwrap();
    assert_eq!(records.len(), 3);
    std::mem::forget(writer);
}

#[test]
fn writers_in_the_same_directory_get_distinct_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = EventWriter::create(dir.path()).unwrap();
    let b = EventWriter::create(dir.path()).unwrap();
    assert_ne!(a.path(), b.path());
    assert!(b
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .contains("tfevents"));
}

#[test]
fn corrupted_byte_is_detected_with_file_and_record_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample_events(dir.path());
    let pristine = fs::read(&path).unwrap();
    let first_len = u64::from_le_bytes(pristine[..8].try_into().unwrap()) as usize;
    let second_start = 8 + 4 + first_len + 4;
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();

    // A flipped bit inside record 1's data.
    let mut bytes = pristine.clone();
    bytes[second_start + 12 + 3] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let err = read_records(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let message = err.to_string();
    assert!(message.contains(&name), "{message}");
    assert!(message.contains("record 1"), "{message}");
    assert!(message.contains("data CRC"), "{message}");

    // A flipped bit in record 0's length.
    let mut bytes = pristine.clone();
    bytes[0] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    let message = read_records(&path).unwrap_err().to_string();
    assert!(
        message.contains("record 0") && message.contains("length CRC"),
        "{message}"
    );

    // A file cut short mid-record.
    fs::write(&path, &pristine[..pristine.len() - 3]).unwrap();
    let message = read_records(&path).unwrap_err().to_string();
    assert!(
        message.contains("record 4") && message.contains("truncated"),
        "{message}"
    );
}

/// Writes a sample event file for the manual TensorBoard compatibility check documented at
/// the top of `src/tensorboard.rs`. Run with
/// `TB_SAMPLE_DIR=/tmp/tb-check cargo test -p phi3v-track --test tracking -- --ignored`.
#[test]
#[ignore = "writes into $TB_SAMPLE_DIR for a manual check with Python TensorBoard"]
fn write_tensorboard_sample() {
    let dir = PathBuf::from(std::env::var("TB_SAMPLE_DIR").expect("set TB_SAMPLE_DIR"));
    let mut writer = EventWriter::create(&dir).unwrap();
    let png = thumbnail_png(&gradient(96, 48), 48);
    for step in 0..5 {
        writer
            .add_scalar("train/loss", 2.5 - 0.25 * step as f32, step)
            .unwrap();
        writer.add_scalar("train/lr", 1e-4, step).unwrap();
        if step % 4 == 0 {
            writer.add_image("eval/sample", &png, 48, 24, step).unwrap();
        }
    }
    assert_eq!(read_records(writer.path()).unwrap().len(), 1 + 10 + 2);
}

// ---------------------------------------------------------------------------------------
// metrics.jsonl
// ---------------------------------------------------------------------------------------

#[test]
fn metrics_round_trip_and_append_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/metrics.jsonl");
    {
        let mut log = MetricsLog::open(&path).unwrap();
        log.log(1, "train", "loss", 2.0).unwrap();
        log.log(1, "train", "lr", 1e-4).unwrap();
    }
    let mut log = MetricsLog::open(&path).unwrap();
    log.log(2, "val", "loss", 1.5).unwrap();

    let records = read_metrics(&path).unwrap();
    let summary: Vec<(u64, &str, &str, f64)> = records
        .iter()
        .map(|r| (r.step, r.split.as_str(), r.name.as_str(), r.value))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "train", "loss", 2.0),
            (1, "train", "lr", 1e-4),
            (2, "val", "loss", 1.5)
        ]
    );
    assert!(records.iter().all(|r| r.time > 1.6e9), "unix seconds");
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.ends_with('\n'));
}

#[test]
fn metrics_keep_non_finite_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut log = MetricsLog::open(&path).unwrap();
    log.log(1, "train", "loss", f64::NAN).unwrap();
    log.log(2, "train", "loss", f64::INFINITY).unwrap();
    log.log(3, "train", "loss", f64::NEG_INFINITY).unwrap();
    let values: Vec<f64> = read_metrics(&path)
        .unwrap()
        .iter()
        .map(|r| r.value)
        .collect();
    assert!(values[0].is_nan());
    assert_eq!(values[1..], [f64::INFINITY, f64::NEG_INFINITY]);
    // A `null` written by another tool reads as NaN rather than failing the whole file.
    fs::write(
        &path,
        "{\"step\":1,\"time\":0,\"split\":\"train\",\"name\":\"loss\",\"value\":null}\n",
    )
    .unwrap();
    assert!(read_metrics(&path).unwrap()[0].value.is_nan());
}

/// The steps of every record in a metrics log, in file order.
fn logged_steps(path: &std::path::Path) -> Vec<u64> {
    read_metrics(path).unwrap().iter().map(|r| r.step).collect()
}

fn line(step: u64) -> String {
    let record = MetricRecord {
        step,
        time: 1.7e9,
        split: "train".into(),
        name: "loss".into(),
        value: step as f64,
    };
    serde_json::to_string(&record).unwrap()
}

#[test]
fn truncated_final_line_is_skipped_but_malformed_middle_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let full = format!("{}\n{}\n", line(1), line(2));
    let cut = &line(3)[..20];
    fs::write(&path, format!("{full}{cut}")).unwrap();
    assert_eq!(logged_steps(&path), [1, 2]);

    fs::write(&path, format!("{}\n{cut}\n{}\n", line(1), line(3))).unwrap();
    let err = read_metrics(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let message = err.to_string();
    assert!(message.contains("metrics.jsonl"), "{message}");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn reopening_after_a_kill_drops_the_partial_line_before_appending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    fs::write(&path, format!("{}\n{}", line(1), &line(2)[..25])).unwrap();
    let mut log = MetricsLog::open(&path).unwrap();
    log.log(2, "train", "loss", 0.5).unwrap();
    assert_eq!(logged_steps(&path), [1, 2]);
}

#[test]
fn truncate_after_keeps_earlier_steps_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let lines: Vec<String> = [1, 2, 3, 2, 4, 5].iter().map(|&s| line(s)).collect();
    fs::write(&path, lines.join("\n") + "\n").unwrap();

    assert_eq!(truncate_after(&path, 3).unwrap(), 2);
    let steps: Vec<u64> = read_metrics(&path)
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, [1, 2, 3, 2]);
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");

    // The resumed run appends after the kept records.
    MetricsLog::open(&path)
        .unwrap()
        .log(4, "train", "loss", 0.1)
        .unwrap();
    assert_eq!(read_metrics(&path).unwrap().len(), 5);
    assert_eq!(
        truncate_after(&dir.path().join("absent.jsonl"), 3).unwrap(),
        0
    );
}

// ---------------------------------------------------------------------------------------
// report.html
// ---------------------------------------------------------------------------------------

fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
    })
}

/// A row scored on two judged fields (one right, one wrong) and two shown numbers; the
/// names are arbitrary, as a task's would be.
fn eval_row(generated: &str, png: Vec<u8>) -> EvalRow {
    EvalRow {
        thumbnail_png: png,
        truth: "Name: kettle\nColour: red\nWeight: 24.99".into(),
        generated: generated.into(),
        fields: vec![
            FieldCell::judged("name", "kettle", true),
            FieldCell::judged("colour", "<blue>", false),
            FieldCell::shown("weight", "19.50"),
            FieldCell::shown("abs error", "5.49"),
        ],
    }
}

fn sample_report() -> ReportData {
    let png = thumbnail_png(&gradient(64, 32), 32);
    ReportData {
        title: "run <7>".into(),
        subtitle: "phi-3-vision · LoRA r=16 · flex".into(),
        config_json: "{\n  \"lr\": 0.0001,\n  \"note\": \"</pre><b>x</b>\"\n}".into(),
        series: vec![
            Series {
                name: "train loss".into(),
                group: "loss".into(),
                points: (0..50).map(|s| (s, 3.0 / (1.0 + s as f64))).collect(),
            },
            Series {
                name: "lr".into(),
                group: "learning rate".into(),
                points: (0..50).map(|s| (s, 1e-4 * (s as f64 / 50.0))).collect(),
            },
            Series {
                name: "val loss".into(),
                group: "loss".into(),
                points: vec![(0, 3.1), (25, f64::NAN), (49, 0.4)],
            },
        ],
        comparisons: vec![
            Comparison {
                metric: "weight MAE".into(),
                model: 4.0,
                baseline: 9.0,
                baseline_name: "mean weight".into(),
                higher_is_better: false,
            },
            Comparison {
                metric: "colour accuracy".into(),
                model: 0.6,
                baseline: 0.8,
                baseline_name: "base model".into(),
                higher_is_better: true,
            },
        ],
        evaluations: vec![
            EvalTable {
                step: 10,
                rows: vec![eval_row("an older answer", png.clone())],
                summary: Vec::new(),
            },
            EvalTable {
                step: 50,
                rows: vec![
                    eval_row("<script>alert('x')</script> & more", png.clone()),
                    eval_row("Weight: 19.50", png),
                    eval_row("no image", Vec::new()),
                ],
                summary: vec!["weight parsed 100%".into(), "mean abs error 5.49".into()],
            },
        ],
        notes: vec!["stopped: NaN loss at step 12 <oops>".into()],
    }
}

#[test]
fn report_escapes_generated_text() {
    let html = render_report(&sample_report());
    assert!(!html.contains("<script"), "no script element may appear");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
    assert!(html.contains("run &lt;7&gt;"), "title escaped");
    assert!(
        html.contains("&lt;/pre&gt;&lt;b&gt;x&lt;/b&gt;"),
        "config escaped"
    );
    assert!(html.contains("&lt;oops&gt;"), "notes escaped");
}

#[test]
fn report_has_one_svg_per_chart_group_and_one_data_uri_per_thumbnail() {
    let report = sample_report();
    let html = render_report(&report);
    assert_eq!(
        html.matches("<svg").count(),
        2,
        "groups: loss, learning rate"
    );
    assert_eq!(html.matches("data:image/png;base64,").count(), 3);
    // The embedded image is the thumbnail itself.
    let start = html.find("data:image/png;base64,").unwrap() + "data:image/png;base64,".len();
    let end = start + html[start..].find('"').unwrap();
    let png = base64_decode(&html[start..end]).unwrap();
    assert_eq!(png, report.evaluations[0].rows[0].thumbnail_png);
    // Legend entries with the last finite value.
    assert!(html.contains("val loss — 0.4 @ step 49"), "legend");
}

/// The `<tr>` of the comparison table that names `metric`.
fn comparison_row<'a>(html: &'a str, metric: &str) -> &'a str {
    let at = html.find(&format!("<td>{metric}</td>")).expect(metric);
    let start = html[..at].rfind("<tr").unwrap();
    let end = at + html[at..].find("</tr>").unwrap();
    &html[start..end]
}

#[test]
fn comparisons_mark_the_right_winner() {
    let report = sample_report();
    assert!(report.comparisons[0].beats_baseline(), "lower MAE wins");
    assert!(
        !report.comparisons[1].beats_baseline(),
        "lower accuracy loses"
    );
    let html = render_report(&report);
    let mae = comparison_row(&html, "weight MAE");
    assert!(mae.contains("✓") && !mae.contains("✗"), "{mae}");
    assert!(mae.contains("-5"), "delta shown: {mae}");
    let accuracy = comparison_row(&html, "colour accuracy");
    assert!(
        accuracy.contains("✗") && !accuracy.contains("✓"),
        "{accuracy}"
    );

    let tie = Comparison {
        metric: "tie".into(),
        model: 1.0,
        baseline: 1.0,
        baseline_name: "b".into(),
        higher_is_better: true,
    };
    assert!(!tie.beats_baseline(), "a tie does not beat the baseline");
    let nan = Comparison {
        model: f64::NAN,
        ..tie
    };
    assert!(!nan.beats_baseline());
}

#[test]
fn report_is_self_contained() {
    let html = render_report(&sample_report());
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no remote URL"
    );
    assert!(!html.contains("<link") && !html.contains("@import") && !html.contains("url("));
    for (at, _) in html.match_indices(" src=\"") {
        let value = &html[at + 6..];
        assert!(
            value.starts_with("data:"),
            "src must be inline: {}",
            &value[..40]
        );
    }
    assert!(!html.contains(" href="), "no links to follow");
}

#[test]
fn newest_evaluation_is_open_and_older_ones_collapsed() {
    let html = render_report(&sample_report());
    let newest = html.find("Step 50 — 3 samples").unwrap();
    let older = html.find("Step 10 — 1 sample<").unwrap();
    assert!(newest < older, "newest first");
    assert!(html[..newest].ends_with("<details open><summary>"));
    assert!(html[..older].ends_with("<details><summary>"));
    assert!(html.contains("name 100% · colour 0% · weight parsed 100% · mean abs error 5.49"));
}

/// The `<tr>` of the evaluation table whose generated text is `generated`.
fn eval_row_html<'a>(html: &'a str, generated: &str) -> &'a str {
    let at = html
        .find(&format!("<td class=\"text\">{generated}</td>"))
        .expect(generated);
    let start = html[..at].rfind("<tr>").unwrap();
    let end = at + html[at..].find("</tr>").unwrap();
    &html[start..end]
}

#[test]
fn eval_columns_come_from_the_field_names_and_marks_from_correct() {
    let html = render_report(&sample_report());
    assert!(
        html.contains(
            "<th>Generated</th><th>name</th><th>colour</th><th>weight</th><th>abs error</th></tr>"
        ),
        "one column per field name, in row order"
    );
    let row = eval_row_html(&html, "Weight: 19.50");
    assert!(
        row.contains("<td><span class=\"ok\">✓</span> kettle</td>"),
        "Some(true) is shown right: {row}"
    );
    assert!(
        row.contains("<td><span class=\"bad\">✗</span> &lt;blue&gt;</td>"),
        "Some(false) is shown wrong, its value escaped: {row}"
    );
    assert!(
        row.contains("<td class=\"num\">19.50</td><td class=\"num\">5.49</td>"),
        "None shows the bare value, numbers right-aligned: {row}"
    );
    assert_eq!(row.matches('✓').count() + row.matches('✗').count(), 2);

    // Rows with different fields: the columns are their union, a missing cell is a dash, and
    // a row without a judged cell counts as wrong in that column's accuracy.
    let mut other = eval_row("other fields", Vec::new());
    other.fields = vec![
        FieldCell::judged("colour", "red", true),
        FieldCell::shown("<size>", "L"),
        FieldCell::judged("fit", "", false),
    ];
    let report = ReportData {
        evaluations: vec![EvalTable {
            step: 7,
            rows: vec![eval_row("first", Vec::new()), other],
            summary: Vec::new(),
        }],
        ..ReportData::default()
    };
    let html = render_report(&report);
    assert!(html.contains(
        "<th>name</th><th>colour</th><th>weight</th><th>abs error</th><th>&lt;size&gt;</th><th>fit</th></tr>"
    ));
    let first = eval_row_html(&html, "first");
    assert!(
        first.ends_with("<td class=\"num\">5.49</td><td>—</td><td>—</td>"),
        "{first}"
    );
    let second = eval_row_html(&html, "other fields");
    assert!(
        second.contains(
            "<td>—</td><td><span class=\"ok\">✓</span> red</td><td>—</td><td>—</td><td>L</td><td><span class=\"bad\">✗</span></td>"
        ),
        "{second}"
    );
    assert!(html.contains("<div class=\"eval-summary\">name 50% · colour 50% · fit 0%</div>"));
}

#[test]
fn empty_report_renders() {
    let html = render_report(&ReportData::default());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert!(html.contains("<h1>Training report</h1>"));
    assert!(!html.contains("<svg") && !html.contains("<table"));
}

#[test]
fn charts_survive_empty_single_point_and_nan_series() {
    let report = ReportData {
        series: vec![
            Series {
                name: "empty".into(),
                group: "a".into(),
                points: vec![],
            },
            Series {
                name: "nan only".into(),
                group: "b".into(),
                points: vec![(3, f64::NAN)],
            },
            Series {
                name: "one".into(),
                group: "c".into(),
                points: vec![(7, 0.25)],
            },
            Series {
                name: "flat".into(),
                group: "d".into(),
                points: vec![(0, 0.0), (1, 0.0), (2, f64::NAN), (3, 0.0)],
            },
        ],
        ..ReportData::default()
    };
    let html = render_report(&report);
    assert_eq!(html.matches("<svg").count(), 4);
    assert_eq!(html.matches(">no data</text>").count(), 2, "groups a and b");
    let svgs: Vec<&str> = html.split("<svg").skip(1).collect();
    for svg in &svgs {
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
    assert!(
        svgs[2].contains("<circle"),
        "a single point is drawn as a dot"
    );
    assert_eq!(
        svgs[3].matches("<polyline").count(),
        1,
        "the NaN splits off a lone dot"
    );
    assert_eq!(
        svgs[3].matches("<circle").count(),
        3,
        "every point of a short series"
    );
}

#[test]
fn report_data_serializes_thumbnails_as_base64() {
    let report = sample_report();
    let json = serde_json::to_string(&report).unwrap();
    let png = &report.evaluations[0].rows[0].thumbnail_png;
    assert!(json.contains(&format!("\"thumbnail_png\":\"{}\"", base64_encode(png))));
    let back: ReportData = serde_json::from_str(&json).unwrap();
    assert_eq!(&back.evaluations[0].rows[0].thumbnail_png, png);
    // Within an ulp or so: serde_json parses floats exactly only with `float_roundtrip`.
    for (a, b) in back.series[0].points.iter().zip(&report.series[0].points) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() <= 1e-15 * b.1.abs(), "{a:?} vs {b:?}");
    }
    assert_eq!(back.series[0].points.len(), report.series[0].points.len());
    assert!(
        back.series[2].points[1].1.is_nan(),
        "a NaN point survives JSON"
    );
    assert_eq!(back.comparisons[0].model, 4.0);
    assert_eq!(
        back.evaluations[1].rows[0].fields,
        report.evaluations[1].rows[0].fields
    );
    assert_eq!(back.evaluations[1].summary, report.evaluations[1].summary);
    // Rows stored without a thumbnail still load; a cell without `correct` is only shown.
    let row: EvalRow = serde_json::from_str(
        r#"{"truth":"t","generated":"g","fields":[{"name":"colour","value":"red","correct":true},
            {"name":"weight","value":"2"}]}"#,
    )
    .unwrap();
    assert!(row.thumbnail_png.is_empty() && row.field("colour").unwrap().correct == Some(true));
    assert_eq!(row.field("weight").unwrap().correct, None);
    // So do rows and tables stored before fields existed (their unknown keys are ignored).
    let table: EvalTable = serde_json::from_str(
        r#"{"step":3,"rows":[{"truth":"t","generated":"g","retired_score":true}]}"#,
    )
    .unwrap();
    assert!(table.rows[0].fields.is_empty() && table.summary.is_empty());
}

#[test]
fn thumbnails_keep_aspect_and_never_upscale() {
    let png = thumbnail_png(&gradient(200, 100), 64);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!((img.width(), img.height()), (64, 32));
    let small = image::load_from_memory(&thumbnail_png(&gradient(30, 40), 64)).unwrap();
    assert_eq!((small.width(), small.height()), (30, 40));
    let tall = image::load_from_memory(&thumbnail_png(&gradient(50, 400), 80)).unwrap();
    assert_eq!((tall.width(), tall.height()), (10, 80));
    assert!(
        thumbnail_png(&RgbImage::new(0, 5), 64).is_empty(),
        "no pixels, no PNG"
    );
}

#[test]
fn write_report_replaces_the_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    fs::write(&path, "stale").unwrap();
    let report = sample_report();
    write_report(&path, &report).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), render_report(&report));
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left behind");
}

/// Whole-file replacement goes through a private temporary file, but the result must stay as
/// readable as a plainly created file: a report is meant to be shared.
#[cfg(unix)]
#[test]
fn replaced_files_keep_shareable_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    write_report(&report, &ReportData::default()).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&report), 0o644, "a new report is world-readable");

    let metrics = dir.path().join("metrics.jsonl");
    fs::write(&metrics, format!("{}\n{}\n", line(1), line(2))).unwrap();
    fs::set_permissions(&metrics, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(truncate_after(&metrics, 1).unwrap(), 1);
    assert_eq!(mode(&metrics), 0o640, "a replaced file keeps its mode");
}

/// Writes the sample report to `$REPORT_SAMPLE` for looking at it in a browser.
#[test]
#[ignore = "writes $REPORT_SAMPLE for a manual look"]
fn write_report_sample() {
    let path = PathBuf::from(std::env::var("REPORT_SAMPLE").expect("set REPORT_SAMPLE"));
    write_report(&path, &sample_report()).unwrap();
    assert!(fs::metadata(&path).unwrap().len() > 1000);
}

//! What a hostile or broken catalogue can make the loader do: outlandish values are dropped
//! with a message naming the row (as a person finds it in the file) and the column; image
//! reads are capped and confined to the catalogue's folder; one user-named image is fetched
//! under the same limits.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::{png_bytes, quick_fetcher, Server};
use phi3v_data::catalogue::{Catalogue, LoadOptions, LoadedCatalogue, MAX_FIELD_BYTES};
use phi3v_data::images::{FetchConfig, ImageFetcher, MAX_IMAGE_BYTES};
use phi3v_data::report::DropKind;
use phi3v_data::DataError;

const HEADER: &str = "product_code,title,category3_code,full_price,imageurl";

/// A folder with `good.png` (a 4x3 PNG) and a cache folder beside the catalogue.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.png"), png_bytes(1)).unwrap();
    dir
}

/// Loads `name` (written with `text`) from `dir` with `options`.
fn load_text(dir: &Path, name: &str, text: &str, options: LoadOptions) -> LoadedCatalogue {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    load(&path, options)
}

fn load(path: &Path, options: LoadOptions) -> LoadedCatalogue {
    let cache = path.parent().unwrap().join("cache");
    Catalogue::open(path)
        .unwrap()
        .with_options(options)
        .load(&quick_fetcher(&cache))
        .unwrap()
}

/// The product codes kept.
fn kept(loaded: &LoadedCatalogue) -> Vec<i64> {
    loaded
        .items
        .iter()
        .map(|i| i.product.product_code)
        .collect()
}

/// The drop messages, in row order.
fn messages(loaded: &LoadedCatalogue) -> Vec<String> {
    loaded
        .report
        .dropped
        .iter()
        .map(|d| d.message.clone())
        .collect()
}

#[test]
fn outlandish_prices_are_dropped_naming_line_and_column() {
    let dir = folder();
    let text = [
        HEADER,
        "1,Good Bag,Bags,100,good.png",
        "2,Negative,Bags,-5,good.png",
        "3,Zero,Bags,0,good.png",
        "4,Huge,Bags,1e308,good.png",
        "5,Not a number,Bags,NaN,good.png",
        "6,Minus infinity,Bags,-inf,good.png",
        "7,At the ceiling,Bags,10000000,good.png",
        "8,Above the ceiling,Bags,10000000.5,good.png",
        "9,Negative zero,Bags,-0.0,good.png",
    ]
    .join("\n");
    let loaded = load_text(dir.path(), "c.csv", &text, LoadOptions::default());
    assert_eq!(kept(&loaded), vec![1, 7]);
    let range = "is not a price above 0 and at most 10000000 (max_price)";
    assert_eq!(
        messages(&loaded),
        vec![
            format!("line 3: column `full_price`: -5 {range}"),
            format!("line 4: column `full_price`: 0 {range}"),
            format!("line 5: column `full_price`: 1e308 {range}"),
            "line 6: price is NaN (column `full_price`)".to_string(),
            "line 7: price is -inf (column `full_price`)".to_string(),
            format!("line 9: column `full_price`: 10000000.5 {range}"),
            format!("line 10: column `full_price`: -0 {range}"),
        ]
    );
    use DropKind::*;
    let kinds: Vec<_> = loaded
        .report
        .dropped_kinds()
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let invalid = InvalidValue;
    assert_eq!(
        kinds,
        vec![
            invalid,
            invalid,
            invalid,
            NonFinitePrice,
            NonFinitePrice,
            invalid,
            invalid
        ]
    );

    // The ceiling is a setting: raised, the row just above the default is kept; off, even
    // 1e308 is (but never a price that is not finite or not positive).
    let raised = LoadOptions {
        max_price: 1e9,
        ..LoadOptions::default()
    };
    let path = dir.path().join("c.csv");
    assert_eq!(kept(&load(&path, raised)), vec![1, 7, 8]);
    let off = LoadOptions {
        max_price: f64::INFINITY,
        ..LoadOptions::default()
    };
    assert_eq!(kept(&load(&path, off)), vec![1, 4, 7, 8]);

    // A ceiling that keeps nothing is refused, naming the setting.
    for bad in [0.0, -1.0, f64::NAN] {
        let err = Catalogue::open(&path)
            .unwrap()
            .with_options(LoadOptions {
                max_price: bad,
                ..LoadOptions::default()
            })
            .load(&quick_fetcher(&dir.path().join("cache")))
            .unwrap_err();
        assert!(matches!(err, DataError::InvalidConfig(_)), "{err}");
        assert!(err.to_string().contains("max_price"), "{err}");
    }
}

#[test]
fn jsonl_cells_of_the_wrong_type_and_null_categories_are_dropped_per_row() {
    let dir = folder();
    let text = r#"{"product_code": 1, "title": "Good", "category3_code": "Bags", "full_price": 100, "flg_discount": 0, "imageurl": "good.png"}
{"product_code": 2, "title": "Bool price", "category3_code": "Bags", "full_price": true, "imageurl": "good.png"}
{"product_code": 3, "title": ["an", "array"], "category3_code": "Bags", "full_price": 5, "imageurl": "good.png"}
{"product_code": 4, "title": "Null category", "category3_code": null, "full_price": 5, "imageurl": "good.png"}

{"product_code": 5, "title": "Bool category", "category3_code": false, "full_price": 5, "imageurl": "good.png"}
{"product_code": 6, "title": "Flag", "category3_code": "Bags", "full_price": 5, "flg_discount": true, "imageurl": "good.png"}
{"product_code": 7, "title": "Object price", "category3_code": "Bags", "full_price": {"usd": 5}, "imageurl": "good.png"}
{"product_code": 8, "title": "Blank category", "category3_code": "  ", "full_price": 5, "imageurl": "good.png"}
"#;
    let loaded = load_text(dir.path(), "c.jsonl", text, LoadOptions::default());
    assert_eq!(kept(&loaded), vec![1, 6]);
    assert_eq!(loaded.items[1].product.flg_discount, 1, "a boolean flag");
    let category = "is not a category (it is part of the answer)";
    assert_eq!(
        messages(&loaded),
        vec![
            "line 2: column `full_price`: true is not a number".to_string(),
            r#"line 3: column `title`: ["an","array"] is not a string"#.to_string(),
            format!("line 4: column `category3_code`: null {category}"),
            "line 6: column `category3_code`: false is not a string".to_string(),
            r#"line 8: column `full_price`: {"usd":5} is not a number"#.to_string(),
            format!(r#"line 9: column `category3_code`: "  " {category}"#),
        ]
    );
}

#[test]
fn csv_null_and_blank_categories_are_dropped() {
    let dir = folder();
    let text = [
        HEADER,
        "1,Good,Bags,100,good.png",
        "2,No category,,100,good.png",
        "3,Blank category,   ,100,good.png",
    ]
    .join("\n");
    let loaded = load_text(dir.path(), "c.csv", &text, LoadOptions::default());
    assert_eq!(kept(&loaded), vec![1]);
    assert_eq!(
        messages(&loaded),
        vec![
            "line 3: column `category3_code`: null is not a category (it is part of the answer)",
            r#"line 4: column `category3_code`: "   " is not a category (it is part of the answer)"#,
        ]
    );
}

/// A parquet file of the five mapped columns, `full_price` of the type of `price`.
fn write_parquet_file(path: &Path, price: ArrayRef, categories: Vec<Option<&str>>) {
    let n = categories.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new("product_code", DataType::Int64, true),
        Field::new("title", DataType::Utf8, true),
        Field::new("category3_code", DataType::Utf8, true),
        Field::new("full_price", price.data_type().clone(), true),
        Field::new("imageurl", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(1..=n as i64)),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("Bag {i}")),
        )),
        Arc::new(StringArray::from(categories)),
        price,
        Arc::new(StringArray::from_iter_values((0..n).map(|_| "good.png"))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn parquet_rows_are_named_by_index_and_a_boolean_price_column_is_a_file_error() {
    let dir = folder();
    let path = dir.path().join("c.parquet");
    let prices = Float64Array::from(vec![100.0, -1.0, 5.0, 1e300]);
    let categories = vec![Some("Bags"), Some("Bags"), None, Some("Bags")];
    write_parquet_file(&path, Arc::new(prices), categories);
    let loaded = load(&path, LoadOptions::default());
    assert_eq!(kept(&loaded), vec![1]);
    assert_eq!(
        messages(&loaded),
        vec![
            "row 1: column `full_price`: -1 is not a price above 0 and at most 10000000 \
             (max_price)",
            "row 2: column `category3_code`: null is not a category (it is part of the answer)",
            "row 3: column `full_price`: 1e300 is not a price above 0 and at most 10000000 \
             (max_price)",
        ]
    );

    // A column has one type for the whole file: a boolean price column would fail every row,
    // so the file is refused, naming the column and its type.
    let flags = BooleanArray::from(vec![true, false]);
    write_parquet_file(&path, Arc::new(flags), vec![Some("Bags"), Some("Bags")]);
    let err = Catalogue::open(&path).unwrap().rows().err().unwrap();
    assert!(matches!(err, DataError::ColumnType { .. }), "{err}");
    let message = err.to_string();
    for needle in ["c.parquet", "`full_price`", "Boolean", "a number"] {
        assert!(message.contains(needle), "{message}");
    }
}

#[test]
fn csv_lines_are_right_for_crlf_cr_and_quoted_line_ends() {
    for end in ["\r\n", "\n", "\r"] {
        let dir = folder();
        let two_lines = format!("\"Two{end}Line Title\"");
        let text = [
            HEADER.to_string(),
            "1,Good,Bags,100,good.png".into(),
            format!("2,{two_lines},Bags,-1,good.png"),
            String::new(),
            "3,Bad,Bags,abc,good.png".into(),
            "4,too,few".into(),
            "5,Zero,Bags,0,good.png".into(),
            String::new(),
        ]
        .join(end);
        let loaded = load_text(dir.path(), "c.csv", &text, LoadOptions::default());
        assert_eq!(kept(&loaded), vec![1], "line end {end:?}");
        let range = "is not a price above 0 and at most 10000000 (max_price)";
        assert_eq!(
            messages(&loaded),
            vec![
                format!("line 3: column `full_price`: -1 {range}"),
                "line 6: column `full_price`: \"abc\" is not a number".to_string(),
                "line 7: malformed row: 3 fields, but the header has 5".to_string(),
                format!("line 8: column `full_price`: 0 {range}"),
            ],
            "line end {end:?}"
        );
    }
}

#[test]
fn an_absurdly_long_cell_is_dropped_without_copying_it_into_the_report() {
    let dir = folder();
    let long = "x".repeat(MAX_FIELD_BYTES + 1);
    let under = "y".repeat(MAX_FIELD_BYTES - 10);
    let text = [
        HEADER.to_string(),
        format!("1,{long},Bags,100,good.png"),
        format!("2,{under},Bags,100,good.png"),
        format!("3,Price,Bags,{long},good.png"),
    ]
    .join("\n");
    let loaded = load_text(dir.path(), "c.csv", &text, LoadOptions::default());
    assert_eq!(
        kept(&loaded),
        vec![2],
        "titles are not limited below the cap"
    );
    let messages = messages(&loaded);
    assert_eq!(messages.len(), 2);
    for (message, line, column) in [(&messages[0], 2, "title"), (&messages[1], 4, "full_price")] {
        assert!(
            message.starts_with(&format!("line {line}: column `{column}`: \"xxx")),
            "{message}"
        );
        assert!(
            message.ends_with(&format!(
                "... ({} bytes) is not a text of at most {MAX_FIELD_BYTES} bytes",
                MAX_FIELD_BYTES + 1
            )),
            "{message}"
        );
        assert!(message.len() < 300, "{} bytes", message.len());
    }
}

/// A file of `len` bytes that takes no disk space.
fn sparse_file(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

#[test]
fn oversized_files_and_devices_are_refused_without_reading_them() {
    let dir = folder();
    sparse_file(&dir.path().join("huge.png"), MAX_IMAGE_BYTES + 1);
    let mut lines = vec![
        HEADER.to_string(),
        "1,Good,Bags,100,good.png".into(),
        "2,Huge,Bags,100,huge.png".into(),
        "3,Folder,Bags,100,cache".into(),
    ];
    if cfg!(target_os = "linux") {
        lines.push("4,Zeros,Bags,100,/dev/zero".into());
    }
    let outside_allowed = LoadOptions {
        allow_outside_paths: true,
        ..LoadOptions::default()
    };
    let start = Instant::now();
    let loaded = load_text(dir.path(), "c.csv", &lines.join("\n"), outside_allowed);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(kept(&loaded), vec![1]);
    let messages = messages(&loaded);
    let huge = dir.path().join("huge.png");
    assert_eq!(
        messages[0],
        format!(
            "line 3: cannot read image file {}: larger than the image size limit of {} bytes \
             (max_bytes)",
            huge.display(),
            MAX_IMAGE_BYTES
        )
    );
    assert!(
        messages[1].starts_with("line 4: cannot read image file "),
        "{}",
        messages[1]
    );
    assert!(
        messages[1].contains("not a regular file"),
        "{}",
        messages[1]
    );
    if cfg!(target_os = "linux") {
        assert_eq!(
            messages[2],
            "line 5: cannot read image file /dev/zero: not a regular file (a device, FIFO or \
             folder), so it is not read"
        );
    }

    // The same limit for one image a user names.
    let fetcher = quick_fetcher(&dir.path().join("cache"));
    let err = fetcher.fetch_one(huge.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(err.to_string().contains("huge.png"), "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");
    if cfg!(target_os = "linux") {
        let err = fetcher.fetch_one("/dev/zero").unwrap_err();
        assert!(err.to_string().contains("/dev/zero"), "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}

/// Opening a FIFO for reading waits for a writer: it must be refused before it is opened.
#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = folder();
    let fifo = dir.path().join("pipe.png");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo is not available: skipped");
        return;
    }
    let (send, receive) = std::sync::mpsc::channel();
    let cache = dir.path().join("cache");
    let path = fifo.clone();
    std::thread::spawn(move || {
        let result = quick_fetcher(&cache).fetch_one(path.to_str().unwrap());
        let _ = send.send(result.map(|b| b.len()).map_err(|e| e.to_string()));
    });
    let result = receive
        .recv_timeout(Duration::from_secs(10))
        .expect("fetch_one waited on the FIFO");
    let err = result.unwrap_err();
    assert!(
        err.contains("pipe.png") && err.contains("not a regular file"),
        "{err}"
    );
}

#[test]
fn a_smaller_limit_applies_to_local_files_and_downloads() {
    let server = Server::start();
    let dir = folder();
    let fetcher = ImageFetcher::new(FetchConfig {
        max_bytes: 16,
        ..quick_fetcher(&dir.path().join("cache")).config().clone()
    })
    .unwrap();
    let local = dir.path().join("good.png");
    let err = fetcher.fetch_one(local.to_str().unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than the image size limit of 16 bytes"),
        "{err}"
    );
    let url = server.url("/ok/a.png");
    let err = fetcher.fetch_one(&url).unwrap_err();
    assert!(matches!(err, DataError::Download { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(err.to_string().contains("larger than 16 bytes"), "{err}");

    let csv = format!("{HEADER}\n1,Good,Bags,100,good.png\n2,Remote,Bags,100,{url}\n");
    std::fs::write(dir.path().join("c.csv"), csv).unwrap();
    let loaded = Catalogue::open(dir.path().join("c.csv"))
        .unwrap()
        .load(&fetcher)
        .unwrap();
    assert_eq!(
        loaded.report.dropped_kinds(),
        vec![
            (0, DropKind::ImageFileUnreadable),
            (1, DropKind::DownloadFailed)
        ]
    );

    let zero = FetchConfig {
        max_bytes: 0,
        ..fetcher.config().clone()
    };
    let err = ImageFetcher::new(zero).unwrap_err();
    assert!(err.to_string().contains("max_bytes"), "{err}");
}

/// `outside/secret.png`, and a catalogue folder `cat/` beside it with `good.png`, a link to
/// the secret and a link to `good.png`.
struct Layout {
    _root: tempfile::TempDir,
    cat: PathBuf,
    secret: PathBuf,
}

fn layout() -> Layout {
    let root = tempfile::tempdir().unwrap();
    let cat = root.path().join("cat");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(cat.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(cat.join("good.png"), png_bytes(1)).unwrap();
    let secret = outside.join("secret.png");
    std::fs::write(&secret, png_bytes(2)).unwrap();
    std::fs::write(root.path().join("escape.png"), png_bytes(3)).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&secret, cat.join("link.png")).unwrap();
        std::os::unix::fs::symlink(cat.join("good.png"), cat.join("inner.png")).unwrap();
    }
    Layout {
        _root: root,
        cat,
        secret,
    }
}

#[cfg(unix)]
#[test]
fn image_paths_outside_the_catalogue_folder_are_refused_unless_allowed() {
    let layout = layout();
    let secret = layout.secret.display();
    let text = [
        HEADER.to_string(),
        format!("1,Absolute,Bags,100,{secret}"),
        "2,Dots inside,Bags,100,../cat/good.png".into(),
        "3,Escape,Bags,100,../escape.png".into(),
        "4,Link out,Bags,100,link.png".into(),
        "5,Link in,Bags,100,inner.png".into(),
        format!("6,File URL,Bags,100,file://{secret}"),
        "7,Missing escape,Bags,100,../../nowhere.png".into(),
        "8,Down and up,Bags,100,sub/../good.png".into(),
    ]
    .join("\n");
    let loaded = load_text(&layout.cat, "c.csv", &text, LoadOptions::default());
    assert_eq!(kept(&loaded), vec![2, 5, 8]);
    let folder = layout.cat.display();
    let rule =
        format!("outside the catalogue's folder {folder} (set allow_outside_paths to read it)");
    let real_secret = layout.secret.canonicalize().unwrap();
    assert_eq!(
        messages(&loaded),
        vec![
            format!("line 2: cannot read image file {secret}: it is {rule}"),
            format!("line 4: cannot read image file {folder}/../escape.png: it is {rule}"),
            format!(
                "line 5: cannot read image file {folder}/link.png: it is a link to {}, which is \
                 {rule}",
                real_secret.display()
            ),
            format!("line 7: cannot read image file {secret}: it is {rule}"),
            format!("line 8: cannot read image file {folder}/../../nowhere.png: it is {rule}"),
        ]
    );
    assert!(loaded
        .report
        .dropped
        .iter()
        .all(|d| d.reason.kind() == DropKind::ImageFileUnreadable));

    // Allowed, they are read; a missing file is still reported as missing.
    let allowed = LoadOptions {
        allow_outside_paths: true,
        ..LoadOptions::default()
    };
    let loaded = load(&layout.cat.join("c.csv"), allowed);
    assert_eq!(kept(&loaded), vec![1, 2, 3, 4, 5, 6, 8]);
    let messages = messages(&loaded);
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].starts_with("line 8: cannot read image file "),
        "{}",
        messages[0]
    );
    assert!(messages[0].contains("No such file"), "{}", messages[0]);
}

#[test]
fn fetch_one_reads_urls_through_the_cache_and_paths_as_given() {
    let server = Server::start();
    let dir = folder();
    let cache = dir.path().join("cache");
    let url = server.url("/ok/one.png");
    let first = quick_fetcher(&cache).fetch_one(&url).unwrap();
    assert_eq!(first, png_bytes("/ok/one.png".len() as u8));
    // A new fetcher over the same cache makes no request.
    let again = quick_fetcher(&cache);
    assert_eq!(again.fetch_one(&url).unwrap(), first);
    assert_eq!(server.hits("/ok/one.png"), 1);
    assert_eq!(again.stats().cache_hits, 1);

    // Local paths, plain or as file URLs, anywhere: the user named the file.
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("mine.png");
    std::fs::write(&file, png_bytes(7)).unwrap();
    let fetcher = quick_fetcher(&cache);
    assert_eq!(
        fetcher.fetch_one(file.to_str().unwrap()).unwrap(),
        png_bytes(7)
    );
    let file_url = format!("file://{}", file.display());
    assert_eq!(fetcher.fetch_one(&file_url).unwrap(), png_bytes(7));

    // Errors name the culprit.
    let missing = outside.path().join("absent.png");
    let err = fetcher.fetch_one(missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(err.to_string().contains("absent.png"), "{err}");
    let not_found = server.url("/missing/x.png");
    let err = fetcher.fetch_one(&not_found).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot download {not_found}: HTTP status 404 (1 attempt)")
    );
    let err = fetcher.fetch_one("  ").unwrap_err();
    assert!(matches!(err, DataError::InvalidConfig(_)), "{err}");
}

//! Catalogue readers (parquet, CSV, JSONL), the column mapping, Hugging Face image structs,
//! and the report of dropped rows (every reason).

use crate::common;

use std::path::{Path, PathBuf};

use common::{png_bytes, quick_fetcher, Server};
use phi3v_data::catalogue::{
    Catalogue, CatalogueFormat, CatalogueRow, ColumnMapping, ImageSource, BURBERRY_SCHEMA,
};
use phi3v_data::images::ImageData;
use phi3v_data::report::{DropKind, DropReason, Report};
use phi3v_data::sample_data::{generate, SampleConfig};
use phi3v_data::DataError;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/catalogue")
}

fn rows(catalogue: &Catalogue) -> Vec<CatalogueRow> {
    catalogue.rows().unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn parquet_is_streamed_across_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&SampleConfig {
        rows: 50,
        seed: 1,
        out_dir: dir.path().to_path_buf(),
        image_size: 32,
        row_group_rows: 8,
        ..SampleConfig::default()
    })
    .unwrap();
    let catalogue = Catalogue::open(&summary.catalogue).unwrap();
    assert_eq!(catalogue.format(), CatalogueFormat::Parquet);
    let stream = catalogue.rows().unwrap();
    assert_eq!(stream.total(), Some(50));
    let rows: Vec<CatalogueRow> = stream.collect::<Result<_, _>>().unwrap();
    assert_eq!(rows.len(), 50);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.index, i);
        assert!(row.problems.is_empty(), "{:?}", row.problems);
        let p = &row.product;
        assert_eq!(row.product_code, Some(p.product_code));
        assert_eq!(
            (
                p.website_name.as_str(),
                p.country_code.as_str(),
                p.currency_code.as_str()
            ),
            ("BURBERRY", "USA", "USD")
        );
        assert_eq!(p.competence_date, "2023-11-17");
        assert!(!p.title.is_empty() && !p.category3_code.is_empty());
        assert!(p.full_price > 0.0 && p.price <= p.full_price);
        assert_eq!(p.flg_discount, i64::from(p.price < p.full_price));
        assert_eq!(p.imageurl, format!("images/{}.png", p.product_code));
        assert_eq!(row.image, ImageSource::File(dir.path().join(&p.imageurl)));
    }
}

#[test]
fn csv_reader_reads_values_and_keeps_going_after_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.csv");
    std::fs::write(
        &path,
        "product_code,title,category3_code,full_price,price,flg_discount,imageurl,extra\n\
         1,\"Check Scarf, Beige\",Scarves,450,400.5,1,img/a.png,x\n\
         2,Bag,Bags,1e3,,0,https://example.com/b.jpg,y\n\
         3,too,few\n\
         4,Coat,Coats,NaN,12,0,/abs/c.png,z\n",
    )
    .unwrap();
    let rows = rows(&Catalogue::open(&path).unwrap());
    assert_eq!(rows.len(), 4);
    let p = &rows[0].product;
    assert_eq!(p.title, "Check Scarf, Beige");
    assert_eq!(
        (p.product_code, p.full_price, p.price, p.flg_discount),
        (1, 450.0, 400.5, 1)
    );
    assert_eq!(
        rows[0].image,
        ImageSource::File(dir.path().join("img/a.png"))
    );
    assert_eq!(p.imageurl, "img/a.png", "imageurl keeps the file's text");
    assert_eq!(rows[1].product.full_price, 1000.0);
    assert_eq!(
        rows[1].product.price, 0.0,
        "a missing non-mapped value keeps its default"
    );
    assert!(rows[1].problems.is_empty());
    assert_eq!(
        rows[1].image,
        ImageSource::Url("https://example.com/b.jpg".into())
    );
    assert_eq!(rows[2].index, 2);
    assert_eq!(
        (rows[2].line, rows[2].location()),
        (Some(4), "line 4".into())
    );
    assert_eq!(
        rows[2].problems,
        vec![DropReason::Malformed {
            message: "3 fields, but the header has 8".into()
        }]
    );
    assert!(rows[3].product.full_price.is_nan());
    assert_eq!(rows[3].image, ImageSource::File("/abs/c.png".into()));
}

#[test]
fn jsonl_reader_reads_values_nulls_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.jsonl");
    // Starts with a byte-order mark, as some editors write.
    std::fs::write(
        &path,
        "\u{feff}".to_string()
            + r#"{"product_code": 1, "title": "Scarf", "category3_code": "Scarves", "full_price": 450.0, "imageurl": "a.png"}

{"product_code": "2", "title": "Bag", "category3_code": "Bags", "full_price": "99.5", "imageurl": "//cdn.example.com/b.jpg"}
{"product_code": 3, "title": "Coat", "category3_code": null, "full_price": null, "imageurl": "c.png"}
{not json
{"product_code": 5, "title": "Shoes", "full_price": 10}
"#,
    )
    .unwrap();
    let rows = rows(&Catalogue::open(&path).unwrap());
    assert_eq!(rows.len(), 5, "the blank line is not a row");
    assert_eq!(rows[0].product.full_price, 450.0);
    assert_eq!(rows[0].image, ImageSource::File(dir.path().join("a.png")));
    assert_eq!(
        (rows[1].product.product_code, rows[1].product.full_price),
        (2, 99.5)
    );
    assert_eq!(
        rows[1].image,
        ImageSource::Url("https://cdn.example.com/b.jpg".into())
    );
    assert_eq!(
        rows[2].problems,
        vec![DropReason::MissingPrice {
            column: "full_price".into()
        }]
    );
    assert_eq!(rows[2].product.category3_code, "");
    assert_eq!(rows[3].line, Some(5), "blank lines count as lines");
    assert_eq!(
        rows[3].problems,
        vec![DropReason::Malformed {
            message: "not a JSON object: key must be a string (column 2)".into()
        }]
    );
    assert_eq!(
        rows[4].image,
        ImageSource::Missing,
        "a missing key is a missing value"
    );
}

#[test]
fn mapping_routes_other_column_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.csv");
    std::fs::write(
        &path,
        "sku,name,kind,list_price,picture,brand\n17,Red Boot,Boots,89.9,p/17.jpg,ACME\n",
    )
    .unwrap();
    let mapping = ColumnMapping {
        product_id: "sku".into(),
        title: "name".into(),
        category: Some("kind".into()),
        price: "list_price".into(),
        image: "picture".into(),
    };
    let rows = rows(
        &Catalogue::open(&path)
            .unwrap()
            .with_mapping(mapping.clone()),
    );
    let p = &rows[0].product;
    assert_eq!(
        (
            p.product_code,
            p.title.as_str(),
            p.category3_code.as_str(),
            p.full_price
        ),
        (17, "Red Boot", "Boots", 89.9)
    );
    assert_eq!(
        (p.imageurl.as_str(), p.brand.as_str()),
        ("p/17.jpg", "ACME")
    );
    assert_eq!(
        rows[0].image,
        ImageSource::File(dir.path().join("p/17.jpg"))
    );

    // The Burberry mapping (the default) does not fit this file: the error names the file,
    // the column, its role and the columns there are.
    let err = Catalogue::open(&path).unwrap().rows().err().unwrap();
    assert!(matches!(err, DataError::MissingColumn { .. }));
    let message = err.to_string();
    for needle in [
        "shop.csv",
        "`product_code`",
        "product id",
        "sku, name, kind",
    ] {
        assert!(message.contains(needle), "{message}");
    }

    // A mapping from JSON, missing keys defaulting to Burberry's.
    let partial: ColumnMapping = serde_json::from_str(r#"{"title": "name"}"#).unwrap();
    assert_eq!(partial.title, "name");
    assert_eq!(partial.price, ColumnMapping::burberry().price);
}

#[test]
fn hugging_face_image_structs_work_as_is() {
    let cache = tempfile::tempdir().unwrap();
    let catalogue = Catalogue::open(fixtures().join("hf_images.parquet"))
        .unwrap()
        .with_mapping(ColumnMapping {
            image: "image".into(),
            ..ColumnMapping::burberry()
        });
    let loaded = catalogue.load(&quick_fetcher(cache.path())).unwrap();
    let sizes: Vec<_> = loaded
        .items
        .iter()
        .map(|i| (i.row, i.product.product_code, i.image.width, i.image.height))
        .collect();
    assert_eq!(sizes, vec![(0, 101, 6, 4), (1, 102, 8, 8), (2, 103, 5, 5)]);
    assert!(matches!(loaded.items[0].image.data, ImageData::Bytes(_)));
    assert_eq!(loaded.items[0].product.imageurl, "red.png");
    assert_eq!(loaded.items[1].product.full_price, 200.5);
    assert_eq!(
        loaded.items[2].image.data,
        ImageData::File(fixtures().join("local.png"))
    );
    assert_eq!(loaded.items[0].image.decode().unwrap().width(), 6);
    assert_eq!(
        loaded.report.dropped_kinds(),
        vec![(3, DropKind::UndecodableImage), (4, DropKind::MissingImage)]
    );
}

#[test]
fn parquet_types_are_converted() {
    let rows = rows(&Catalogue::open(fixtures().join("typed.parquet")).unwrap());
    assert_eq!(rows.len(), 3);
    let p = &rows[0].product;
    assert_eq!(p.competence_date, "2023-11-17", "date32");
    assert_eq!(p.category3_code, "Bags", "dictionary");
    assert_eq!(p.product_code, 7, "int32");
    assert_eq!(p.title, "A Bag", "large string");
    assert_eq!(p.full_price, 1234.5, "decimal");
    assert_eq!(p.price, 1000.25, "float32");
    assert_eq!(p.flg_discount, 1, "bool");
    assert_eq!(rows[1].product.category3_code, "Coats");
    assert_eq!(
        rows[1].image,
        ImageSource::File(fixtures().join("./local.png"))
    );
    assert_eq!(
        rows[2].problems,
        vec![DropReason::MissingPrice {
            column: "full_price".into()
        }]
    );
    // Columns of the Burberry schema that the file lacks keep their defaults.
    assert!(BURBERRY_SCHEMA.iter().any(|(c, _)| *c == "brand"));
    assert_eq!(p.brand, "");
}

/// One row per drop reason (and three usable rows), through the whole loader.
#[test]
fn every_drop_reason_is_reported() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.png"), png_bytes(1)).unwrap();
    std::fs::write(dir.path().join("junk.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    let url = |p: &str| server.url(p);
    let csv = format!(
        "product_code,title,category3_code,full_price,imageurl\n\
         1,Good Bag,Bags,100,good.png\n\
         2,Too,Many,Fields,here,extra\n\
         3,Bad Value,Bags,abc,good.png\n\
         ,No Code,Bags,100,good.png\n\
         5,,Bags,100,good.png\n\
         6,No Price,Bags,,good.png\n\
         7,NaN Price,Bags,NaN,good.png\n\
         8,No Image,Bags,100,\n\
         9,Missing File,Bags,100,nowhere.png\n\
         10,Junk File,Bags,100,junk.png\n\
         11,Not Found,Bags,100,{}\n\
         1,Duplicate,Bags,100,good.png\n\
         12,Remote,Bags,100,{}\n\
         13,   ,Bags,100,good.png\n\
         14,Infinite,Bags,inf,good.png\n\
         15,Junk URL,Bags,100,{}\n\
         5,Second Five,Bags,100,good.png\n",
        url("/missing/x.png"),
        url("/ok/r.png"),
        url("/junk/j.png"),
    );
    let path = dir.path().join("catalogue.csv");
    std::fs::write(&path, csv).unwrap();
    let cache = dir.path().join("cache");
    let loaded = Catalogue::open(&path)
        .unwrap()
        .load(&quick_fetcher(&cache))
        .unwrap();
    let report = &loaded.report;

    use DropKind::*;
    assert_eq!(
        report.dropped_kinds(),
        vec![
            (1, Malformed),
            (2, InvalidValue),
            (3, MissingProductCode),
            (4, EmptyTitle),
            (5, MissingPrice),
            (6, NonFinitePrice),
            (7, MissingImage),
            (8, ImageFileUnreadable),
            (9, UndecodableImage),
            (10, DownloadFailed),
            (11, DuplicateProductCode),
            (13, EmptyTitle),
            (14, NonFinitePrice),
            (15, UndecodableImage),
        ]
    );
    let kept: Vec<_> = loaded
        .items
        .iter()
        .map(|i| (i.row, i.product.product_code))
        .collect();
    assert_eq!(
        kept,
        vec![(0, 1), (12, 12), (16, 5)],
        "row 16 is the first usable code 5"
    );
    assert!(matches!(loaded.items[1].image.data, ImageData::File(ref p) if p.starts_with(&cache)));

    // Product codes: absent where the row has none.
    let codes: Vec<_> = report.dropped.iter().map(|d| d.product_code).collect();
    assert_eq!(codes[..4], [None, Some(3), None, Some(5)]);
    // Reasons carry the details, and their messages say them.
    let by_row = |row: usize| report.dropped.iter().find(|d| d.row == row).unwrap();
    assert_eq!(
        by_row(2).reason,
        DropReason::InvalidValue {
            column: "full_price".into(),
            value: "\"abc\"".into(),
            expected: "a number".into()
        }
    );
    assert_eq!(
        by_row(6).reason,
        DropReason::NonFinitePrice {
            column: "full_price".into(),
            value: "NaN".into()
        }
    );
    assert_eq!(
        by_row(14).message,
        "line 16: price is inf (column `full_price`)"
    );
    assert_eq!(
        by_row(1).message,
        "line 3: malformed row: 6 fields, but the header has 5"
    );
    assert_eq!(
        by_row(11).reason,
        DropReason::DuplicateProductCode { first_row: 0 }
    );
    match &by_row(10).reason {
        DropReason::DownloadFailed {
            url: u,
            error,
            attempts,
        } => {
            assert_eq!(u, &url("/missing/x.png"));
            assert_eq!(error, "HTTP status 404");
            assert_eq!(*attempts, 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        by_row(8).message.contains("nowhere.png"),
        "{}",
        by_row(8).message
    );
    assert!(
        by_row(15).message.contains("/junk/j.png"),
        "{}",
        by_row(15).message
    );

    // Counts, the one-line summary, and the JSON file.
    assert_eq!((report.rows_read, report.rows_kept), (17, 3));
    assert_eq!(report.counts[&EmptyTitle], 2);
    let summary = report.summary();
    assert!(
        summary.starts_with("catalogue.csv: 17 rows read, 3 kept, 14 dropped ("),
        "{summary}"
    );
    assert!(summary.contains("2 empty title") && summary.contains("1 download failed"));
    let json = dir.path().join("report.json");
    report.write_json(&json).unwrap();
    assert_eq!(&Report::read_json(&json).unwrap(), report);
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(
        text.contains(r#""kind": "duplicate_product_code""#),
        "{text}"
    );
}

#[test]
fn file_level_problems_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Catalogue::open(dir.path().join("catalogue.xlsx")).unwrap_err();
    assert!(
        matches!(err, DataError::UnknownCatalogueFormat { .. }),
        "{err}"
    );

    let missing = dir.path().join("absent.parquet");
    let err = Catalogue::open(&missing).unwrap().rows().err().unwrap();
    assert!(err.to_string().contains("absent.parquet"), "{err}");

    let not_parquet = dir.path().join("table.csv");
    std::fs::write(&not_parquet, "a,b\n1,2\n").unwrap();
    let err = Catalogue::open(&not_parquet)
        .unwrap()
        .with_format(CatalogueFormat::Parquet)
        .rows()
        .err()
        .unwrap();
    assert!(matches!(err, DataError::Parquet { .. }), "{err}");
    assert!(err.to_string().contains("table.csv"), "{err}");
}

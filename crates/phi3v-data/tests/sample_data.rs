//! The sample-catalogue generator: schema, read-back with zero drops, determinism, injected
//! faults reported exactly, and the train/validation split.

use crate::common;

use phi3v_testkit::files::snapshot;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use phi3v_data::catalogue::{burberry_arrow_schema, Catalogue, LoadedCatalogue};
use phi3v_data::sample_data::{
    generate, FaultKind, FaultList, SampleConfig, SampleImageFormat, CATALOGUE_FILE,
};
use phi3v_data::split::{split_by_product, SplitConfig};

use common::quick_fetcher;

fn config(out: &Path, rows: usize, seed: u64) -> SampleConfig {
    SampleConfig {
        rows,
        seed,
        out_dir: out.to_path_buf(),
        image_size: 48,
        ..SampleConfig::default()
    }
}

fn load(catalogue: &Path, cache: &Path) -> LoadedCatalogue {
    Catalogue::open(catalogue)
        .unwrap()
        .load(&quick_fetcher(cache))
        .unwrap()
}

#[test]
fn output_has_the_burberry_schema_and_reads_back_without_drops() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&config(dir.path(), 60, 3)).unwrap();
    assert_eq!(summary.catalogue, dir.path().join(CATALOGUE_FILE));
    assert_eq!((summary.rows, summary.images_written), (60, 60));
    assert!(summary.faults.is_empty());

    let builder =
        ParquetRecordBatchReaderBuilder::try_new(File::open(&summary.catalogue).unwrap()).unwrap();
    assert_eq!(builder.schema().fields(), burberry_arrow_schema().fields());

    let loaded = load(&summary.catalogue, &dir.path().join("cache"));
    assert_eq!(loaded.report.dropped, vec![], "{}", loaded.report.summary());
    assert_eq!(loaded.items.len(), 60);
    let categories: HashSet<_> = loaded
        .items
        .iter()
        .map(|i| i.product.category3_code.as_str())
        .collect();
    assert_eq!(categories.len(), 5, "{categories:?}");
    for item in &loaded.items {
        assert_eq!((item.image.width, item.image.height), (48, 48));
        let p = &item.product;
        let noun = match p.category3_code.as_str() {
            "Coats" => "Coat",
            "Bags" => "Bag",
            "Scarves" => "Scarf",
            "Shirts" => "Shirt",
            "Shoes" => "Shoes",
            other => panic!("unexpected category {other}"),
        };
        assert!(
            p.title.ends_with(noun),
            "{} / {}",
            p.title,
            p.category3_code
        );
        assert_eq!(p.full_price % 10.0, 0.0);
        assert!((p.full_price_eur - p.full_price * 0.92).abs() < 0.01);
    }
    // The price depends only on what the picture shows, all of which the title names.
    let mut price_of_title = HashMap::new();
    for item in &loaded.items {
        let p = &item.product;
        let previous = price_of_title.insert(p.title.clone(), p.full_price);
        assert!(previous.is_none_or(|v| v == p.full_price), "{}", p.title);
    }
}

#[test]
fn same_seed_same_files_other_seed_other_files() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(&config(a.path(), 25, 11)).unwrap();
    generate(&config(b.path(), 25, 11)).unwrap();
    generate(&config(c.path(), 25, 12)).unwrap();
    let read = |d: &Path| std::fs::read(d.join(CATALOGUE_FILE)).unwrap();
    assert_eq!(read(a.path()), read(b.path()));
    assert_ne!(read(a.path()), read(c.path()));
    let images = |d: &Path| {
        let mut files: Vec<_> = std::fs::read_dir(d.join("images"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    assert_eq!(images(a.path()), images(b.path()));
}

#[test]
fn injected_faults_are_exactly_the_dropped_rows() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&SampleConfig {
        faults: 0.2,
        ..config(dir.path(), 50, 5)
    })
    .unwrap();
    let faults = FaultList::read(&summary.faults_file).unwrap();
    assert_eq!(faults.faults, summary.faults);
    assert_eq!(faults.faults.len(), 10);
    for kind in FaultKind::ALL {
        assert_eq!(
            faults.faults.iter().filter(|f| f.fault == kind).count(),
            2,
            "{kind:?}"
        );
    }
    assert_eq!(
        summary.images_written,
        50 - 4,
        "no file for missing-file and URL faults"
    );

    let loaded = load(&summary.catalogue, &dir.path().join("cache"));
    assert_eq!(loaded.report.dropped_kinds(), faults.expected_drops());
    let codes: Vec<_> = loaded
        .report
        .dropped
        .iter()
        .map(|d| d.product_code)
        .collect();
    let expected: Vec<_> = faults.faults.iter().map(|f| Some(f.product_code)).collect();
    assert_eq!(codes, expected);
    assert_eq!(loaded.items.len(), 40);

    // The same seed without faults draws the same products.
    let clean = tempfile::tempdir().unwrap();
    generate(&config(clean.path(), 50, 5)).unwrap();
    let clean = load(
        &clean.path().join(CATALOGUE_FILE),
        &dir.path().join("cache2"),
    );
    for item in &loaded.items {
        assert_eq!(item.product, clean.items[item.row].product);
    }
}

#[test]
fn jpeg_pictures_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&SampleConfig {
        image_format: SampleImageFormat::Jpeg,
        image_size: 96,
        ..config(dir.path(), 10, 2)
    })
    .unwrap();
    let loaded = load(&summary.catalogue, &dir.path().join("cache"));
    assert_eq!(loaded.items.len(), 10);
    for item in &loaded.items {
        assert!(item.product.imageurl.ends_with(".jpg"));
        assert_eq!((item.image.width, item.image.height), (96, 96));
    }
    assert!(generate(&SampleConfig {
        faults: 1.5,
        ..config(dir.path(), 1, 0)
    })
    .is_err());
}

#[test]
fn split_is_deterministic_and_disjoint_by_product() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&config(dir.path(), 120, 9)).unwrap();
    let loaded = load(&summary.catalogue, &dir.path().join("cache"));
    // Two rows per product: the split must keep both on one side.
    let items: Vec<_> = loaded.items.iter().chain(&loaded.items).cloned().collect();
    let split_config = SplitConfig {
        seed: 3,
        validation_fraction: 0.25,
    };
    let code = |i: &phi3v_data::catalogue::CatalogueItem| i.product.product_code;
    let a = split_by_product(items.clone(), code, &split_config);
    let b = split_by_product(items.clone(), code, &split_config);
    assert_eq!(a, b);
    let train: HashSet<_> = a.train.iter().map(code).collect();
    let validation: HashSet<_> = a.validation.iter().map(code).collect();
    assert!(train.is_disjoint(&validation));
    assert_eq!(train.len() + validation.len(), 120);
    assert!(
        (15..=45).contains(&validation.len()),
        "{}",
        validation.len()
    );
    // Another seed, another split; the row order does not matter.
    let other = split_by_product(
        items.clone(),
        code,
        &SplitConfig {
            seed: 4,
            ..split_config.clone()
        },
    );
    assert_ne!(other.validation, a.validation);
    let reversed = split_by_product(items.into_iter().rev(), code, &split_config);
    let reversed_validation: HashSet<_> = reversed.validation.iter().map(code).collect();
    assert_eq!(reversed_validation, validation);
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_non_empty_output_folder_is_refused_and_left_as_it_was() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("sample");
    generate(&config(&out, 12, 1)).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let before = snapshot(&out);
    assert_eq!(
        before.len(),
        12 + 3,
        "12 pictures, catalogue, faults, notes"
    );

    let err = generate(&config(&out, 4, 2)).unwrap_err();
    assert!(matches!(err, phi3v_data::DataError::Output(_)), "{err}");
    let message = err.to_string();
    for needle in ["--out", "sample", "--overwrite", "catalogue.parquet"] {
        assert!(message.contains(needle), "{message}");
    }
    assert_eq!(
        snapshot(&out),
        before,
        "the folder is byte for byte as it was"
    );
    assert_eq!(
        names(root.path()),
        vec!["sample"],
        "no staging folder is left"
    );

    // A file in the way is never replaced, even with overwrite.
    let file = root.path().join("file");
    std::fs::write(&file, "keep").unwrap();
    let err = generate(&SampleConfig {
        overwrite: true,
        ..config(&file, 4, 2)
    })
    .unwrap_err();
    assert!(err.to_string().contains("is a file"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}

#[test]
fn overwrite_replaces_the_whole_folder_leaving_no_old_pictures() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("sample");
    let old = generate(&config(&out, 12, 1)).unwrap();
    std::fs::write(out.join("notes.txt"), "stale").unwrap();

    let summary = generate(&SampleConfig {
        overwrite: true,
        image_format: SampleImageFormat::Jpeg,
        ..config(&out, 4, 2)
    })
    .unwrap();
    assert_eq!(summary.catalogue, out.join(CATALOGUE_FILE));
    assert_eq!(summary.images_dir, out.join("images"));
    assert_eq!(
        names(&out),
        vec!["catalogue.parquet", "faults.json", "images"]
    );
    assert_eq!(
        names(root.path()),
        vec!["sample"],
        "no staging or replaced folder is left"
    );
    let pictures = names(&summary.images_dir);
    assert_eq!(pictures.len(), 4, "{pictures:?}");
    assert!(pictures.iter().all(|p| p.ends_with(".jpg")), "{pictures:?}");
    assert_ne!(old.images_written, summary.images_written);

    // The image paths of the catalogue are relative, so they hold after the staging folder
    // was renamed into place.
    let loaded = load(&summary.catalogue, &root.path().join("cache"));
    assert_eq!(loaded.items.len(), 4, "{}", loaded.report.summary());
    let expected: Vec<String> = loaded
        .items
        .iter()
        .map(|i| i.product.imageurl.trim_start_matches("images/").to_string())
        .collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(pictures, expected_sorted);
    assert!(loaded
        .items
        .iter()
        .all(|i| i.product.imageurl.starts_with("images/")));
}

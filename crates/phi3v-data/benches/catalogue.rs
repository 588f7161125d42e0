//! Rows per second through the dataset builder, on sample data (128 px PNG product pictures,
//! written once before timing):
//!
//! - `read_rows`: parquet to typed rows (streamed record batches, projection, conversion);
//! - `load_decoded`: rows to checked items with images read and fully decoded
//!   ([`Catalogue::load`]): what a training run pays before its first step;
//! - `to_batches/num_crops=N`: the whole path to ready training batches of 8: load, decode,
//!   HD transform ([`ImageProcessor`], rayon), prompt rendering, tokenization with the Phi-3
//!   tokenizer (the `phi3v-processor/tests/data/tokenizer` fixture), labels, collation. `num_crops` 16 is the
//!   released model's setting (a 128 px picture becomes 1344x1344, 17 tiles); 1 shows the
//!   cost of everything but the transform;
//! - `generate`: the sample-data generator itself (drawing, PNG encoding, parquet).
//!
//! Run: `cargo bench -p phi3v-data --bench catalogue -- --warm-up-time 1 --measurement-time 5`
//! Results are recorded in `docs/benchmarks.md` ("Catalogue reading").

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phi3v_data::catalogue::{Catalogue, CatalogueRow};
use phi3v_data::images::{FetchConfig, ImageFetcher};
use phi3v_data::sample_data::{generate, SampleConfig};
use phi3v_processor::batch::{collate_training, SampleRef};
use phi3v_processor::image_processor::{ImageProcessor, ProcessorConfig};
use phi3v_processor::prompt::PromptTemplate;
use phi3v_processor::sample::training_example;
use phi3v_processor::tokenize::Phi3Tokenizer;
use rayon::prelude::*;

const ROWS: usize = 512;
const BATCH_ROWS: usize = 64;
const BATCH_SIZE: usize = 8;

fn sample(dir: &Path, rows: usize) -> Catalogue {
    let summary = generate(&SampleConfig {
        rows,
        seed: 1,
        out_dir: dir.to_path_buf(),
        image_size: 128,
        ..SampleConfig::default()
    })
    .unwrap();
    Catalogue::open(summary.catalogue).unwrap()
}

fn fetcher(cache: &Path) -> ImageFetcher {
    ImageFetcher::new(FetchConfig {
        cache_dir: cache.to_path_buf(),
        progress: false,
        ..FetchConfig::default()
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = sample(&dir.path().join("big"), ROWS);
    let small = sample(&dir.path().join("small"), BATCH_ROWS);
    let fetcher = fetcher(&dir.path().join("cache"));
    let tokenizer = Phi3Tokenizer::from_file(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../phi3v-processor/tests/data/tokenizer/tokenizer.json"),
    )
    .unwrap();
    let template = burberry_template();

    let mut group = c.benchmark_group("catalogue");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("read_rows", |b| {
        b.iter(|| {
            let rows: Vec<CatalogueRow> = catalogue.rows().unwrap().map(Result::unwrap).collect();
            assert_eq!(rows.len(), ROWS);
        })
    });
    group.bench_function("load_decoded", |b| {
        b.iter(|| {
            let loaded = catalogue.load(&fetcher).unwrap();
            assert_eq!(loaded.items.len(), ROWS);
        })
    });

    group.throughput(Throughput::Elements(BATCH_ROWS as u64));
    for num_crops in [1, 16] {
        let processor = ImageProcessor::new(ProcessorConfig {
            num_crops,
            ..ProcessorConfig::default()
        })
        .unwrap();
        group.bench_function(format!("to_batches/num_crops={num_crops}"), |b| {
            b.iter(|| {
                let loaded = small.load(&fetcher).unwrap();
                let samples: Vec<_> = loaded
                    .items
                    .par_iter()
                    .map(|item| {
                        let image = processor.process(&item.image.decode().unwrap()).unwrap();
                        let prompt = template.render(&item.product).unwrap();
                        let example = training_example(
                            &tokenizer,
                            &item.row.to_string(),
                            &prompt,
                            &[image.num_tokens],
                            None,
                        )
                        .unwrap();
                        (example, [image])
                    })
                    .collect();
                let batches: Vec<_> = samples
                    .chunks(BATCH_SIZE)
                    .map(|chunk| {
                        let refs: Vec<SampleRef<'_>> = chunk
                            .iter()
                            .map(|(example, images)| SampleRef::training(example, images))
                            .collect();
                        collate_training(&refs).unwrap()
                    })
                    .collect();
                assert_eq!(batches.len(), BATCH_ROWS / BATCH_SIZE);
            })
        });
    }

    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("generate", |b| {
        b.iter(|| sample(&dir.path().join("gen"), ROWS))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);

/// The reference Burberry task's prompt (the fixtures were made with it).
fn burberry_template() -> PromptTemplate {
    PromptTemplate::new(
        "<|image_1|>What is shown in this image?",
        "Product: {title}, Category: {category3_code}, Full Price: {full_price}",
    )
    .expect("the Burberry templates parse")
}

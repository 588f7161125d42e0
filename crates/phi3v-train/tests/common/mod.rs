//! What the run tests share: the tiny random model (written once per test binary), small
//! CSV catalogues with drawn images, and a job that trains in seconds on a CPU.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::backend::Flex;
use phi3v_data::split::SplitConfig;
use phi3v_peft::AdapterPlan;
use phi3v_testkit::TinySpec;
use phi3v_train::job::{run_job, JobConfig, JobSettings, DEFAULT_MAX_TOKENS};
use phi3v_train::trainer::RunSummary;
use phi3v_train::{BaseDtype, BurberryTask, ScheduleKind, TrainConfig, TrainError};

/// The tiny random Phi-3-V of the test kit, written once for the whole test binary.
pub fn tiny_model() -> String {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("model");
        let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../phi3v-processor/tests/data/tokenizer/tokenizer.json");
        TinySpec::default().write(&dir, &tokenizer).unwrap();
        dir
    })
    .display()
    .to_string()
}

/// One catalogue row.
#[derive(Debug, Clone)]
pub struct Row {
    pub product_code: i64,
    pub title: String,
    pub category: &'static str,
    pub price: f64,
    /// Width and height of its drawn image.
    pub image: (u32, u32),
}

/// `n` ordinary products: distinct codes, four categories, 32x32 images.
pub fn rows(n: usize) -> Vec<Row> {
    const CATEGORIES: [&str; 4] = ["Scarves", "Bags", "Coats", "Shoes"];
    (0..n)
        .map(|i| Row {
            product_code: 1000 + i as i64,
            title: format!("Check {} number {i}", CATEGORIES[i % 4]),
            category: CATEGORIES[i % 4],
            price: 100.0 + 10.0 * i as f64,
            image: (32, 32),
        })
        .collect()
}

/// Writes `rows` as `dir/{name}` (CSV, Burberry columns) with one PNG per row beside it,
/// coloured by category so the images carry information.
pub fn write_catalogue(dir: &Path, name: &str, rows: &[Row]) -> PathBuf {
    std::fs::create_dir_all(dir.join("img")).unwrap();
    let mut csv = String::from("product_code,title,category3_code,full_price,imageurl\n");
    for (i, row) in rows.iter().enumerate() {
        let file = format!("img/{name}-{i}.png");
        let shade = (40 * (i % 6)) as u8;
        let colour = match row.category {
            "Scarves" => [200, shade, 0],
            "Bags" => [0, 200, shade],
            "Coats" => [shade, 0, 200],
            _ => [200, 200, shade],
        };
        let (w, h) = row.image;
        image::RgbImage::from_pixel(w, h, image::Rgb(colour))
            .save(dir.join(&file))
            .unwrap();
        writeln!(
            csv,
            "{},\"{}\",{},{},{file}",
            row.product_code, row.title, row.category, row.price
        )
        .unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, csv).unwrap();
    path
}

/// A job that trains in seconds: 2 updates of batch 2, rank-2 adapters on the decoder,
/// a checkpoint after every update, one generated answer of 3 tokens at the end.
pub fn job(data: &Path, run_dir: &Path) -> JobConfig {
    let mut plan = AdapterPlan::reference(false, true);
    plan.lora.rank = 2;
    plan.lora.alpha = 4.0;
    let train = TrainConfig {
        plan,
        learning_rate: 1e-3,
        schedule: ScheduleKind::Linear,
        warmup_steps: 0,
        steps: 2,
        batch_size: 2,
        grad_accum: 1,
        eval_every: 0,
        eval_samples: 1,
        val_loss_samples: 1,
        eval_batch_size: 2,
        max_new_tokens: 3,
        checkpoint_every: 1,
        keep_last: 20,
        log_every: 1,
        tensorboard: false,
        base_dtype: BaseDtype::F32,
        recompute: false,
        ..TrainConfig::default()
    };
    JobConfig {
        model: tiny_model(),
        model_label: "a tiny random Phi-3-V".into(),
        data: data.to_path_buf(),
        task: None,
        settings: JobSettings {
            run_dir: run_dir.to_path_buf(),
            train,
            split: SplitConfig {
                seed: 42,
                validation_fraction: 0.3,
            },
            num_crops: None,
            max_tokens: DEFAULT_MAX_TOKENS,
            resume: false,
            force: false,
        },
    }
}

/// The same job, resumed (with `steps` updates in all).
pub fn resumed(job: &JobConfig, steps: u64) -> JobConfig {
    let mut job = job.clone();
    job.settings.resume = true;
    job.settings.train.steps = steps;
    job
}

pub fn run(job: &JobConfig) -> Result<RunSummary, TrainError> {
    run_job::<Flex, _>(BurberryTask::default(), job, Default::default())
}

/// Every file under `dir` with its bytes (empty when `dir` does not exist).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// Training losses in `metrics.jsonl`, by step.
pub fn logged_loss_steps(run_dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["split"] == "train" && r["name"] == "loss")
        .map(|r| r["step"].as_u64().unwrap())
        .collect()
}

pub fn checkpoint(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join(format!("checkpoints/step-{step:08}"))
}

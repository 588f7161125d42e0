//! Task files against real catalogues: `tasks/burberry.toml` is the built-in task, the
//! furniture preset reads through `tasks/furniture.toml` (as a catalogue and as conversation
//! records), and what a task file gets wrong about a catalogue is refused before any
//! training, naming the column.

use crate::common;

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use phi3v_data::catalogue::CatalogueItem;
use phi3v_data::images::{FetchConfig, ImageFetcher};
use phi3v_data::report::{DropKind, Report};
use phi3v_data::sample_data::{generate, SampleConfig, SamplePreset};
use phi3v_train::job::run_job;
use phi3v_train::{
    BurberryTask, ConversationTask, LoadedItems, Task, TemplateTask, TrainConfig, TrainError,
};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn sample(dir: &Path, preset: SamplePreset, rows: usize) -> PathBuf {
    generate(&SampleConfig {
        rows,
        seed: 5,
        out_dir: dir.join(format!("{preset:?}")),
        image_size: 32,
        preset,
        ..SampleConfig::default()
    })
    .unwrap()
    .catalogue
}

fn load<T: Task<Item = CatalogueItem>>(
    task: &T,
    catalogue: &Path,
) -> Result<LoadedItems<CatalogueItem>, TrainError> {
    let fetcher = ImageFetcher::new(FetchConfig {
        progress: false,
        ..FetchConfig::default()
    })?;
    task.load(catalogue, &fetcher)
}

#[test]
fn tasks_burberry_toml_is_the_built_in_task() {
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = sample(tmp.path(), SamplePreset::Burberry, 30);
    let built_in = BurberryTask::default();
    let file = TemplateTask::load(&repo_file("tasks/burberry.toml")).unwrap();
    let a = load(&built_in, &catalogue).unwrap().items;
    let b = load(&file, &catalogue).unwrap().items;
    assert_eq!(a.len(), 30);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.row, y.row);
        assert_eq!(built_in.render(x).unwrap(), file.render(y).unwrap());
        assert_eq!(built_in.group(x), file.group(y), "row {}", x.row);
    }
    // Both read the built-in task's answers back alike.
    let answer = built_in.render(&a[0]).unwrap().answer;
    let truths: Vec<_> = b.iter().map(|i| file.truth(i)).collect();
    let scores = file.score(&[answer], &truths[..1], &file.fit_baselines(&truths));
    let value = |key: &str| scores.iter().find(|s| s.key == key).unwrap().value;
    assert_eq!(value("title_exact_match"), 1.0);
    assert_eq!(value("category3_code_accuracy"), 1.0);
    assert_eq!(value("full_price_mae"), 0.0);
    assert_eq!(value("full_price_parse_failures"), 0.0);
}

#[test]
fn the_furniture_preset_reads_through_its_task_file_and_scores_every_field() {
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = sample(tmp.path(), SamplePreset::Furniture, 24);
    let task = TemplateTask::load(&repo_file("tasks/furniture.toml")).unwrap();
    let items = load(&task, &catalogue).unwrap().items;
    assert_eq!(items.len(), 24);
    let rendered = task.render(&items[0]).unwrap();
    assert!(
        rendered.prompt.contains("<|image_1|>A piece for the ")
            && rendered.prompt.contains(" room. What is it?"),
        "{}",
        rendered.prompt
    );
    // The width is an integer column, written as Python writes an int.
    let width = items[0].record["width_cm"].to_string();
    assert!(!width.contains('.'), "{width}");
    assert!(
        rendered.answer.ends_with(&format!(" | width: {width} cm")),
        "{}",
        rendered.answer
    );
    let truths: Vec<_> = items.iter().map(|i| task.truth(i)).collect();
    let baselines = task.fit_baselines(&truths[..16]);
    let answers: Vec<String> = truths[16..].iter().map(|t| t.answer.clone()).collect();
    let scores = task.score(&answers, &truths[16..], &baselines);
    let keys: Vec<&str> = scores.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "name_exact_match",
            "name_cer",
            "name_parse_failures",
            "type_accuracy",
            "type_macro_f1",
            "type_parse_failures",
            "width_cm_mae",
            "width_cm_mape",
            "width_cm_within_10pct",
            "width_cm_parse_failures"
        ]
    );
    for s in &scores {
        let perfect = if s.higher_is_better { 1.0 } else { 0.0 };
        assert_eq!(s.value, perfect, "{}", s.key);
        let field = s.field.as_deref().unwrap_or_default();
        assert!(
            s.key.starts_with(&format!("{field}_")),
            "{} of {field:?}",
            s.key
        );
    }
}

#[test]
fn a_placeholder_naming_no_column_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = sample(tmp.path(), SamplePreset::Furniture, 4);
    let text = std::fs::read_to_string(repo_file("tasks/furniture.toml"))
        .unwrap()
        .replace("{name}", "{title}")
        .replace("name = \"text\"", "title = \"text\"");
    let task = TemplateTask::new(
        phi3v_train::TaskFile::parse(&text, Path::new("tasks/furniture.toml")).unwrap(),
    );
    let err = load(&task, &catalogue).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "catalogue {} has no column `title` (mapped as the placeholder {{title}} of [prompt] \
             answer in tasks/furniture.toml); its columns are: sku, name, type, room, width_cm, \
             price_eur, photo",
            catalogue.display()
        )
    );
}

#[test]
fn a_type_the_column_cannot_hold_is_refused_naming_the_column() {
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = sample(tmp.path(), SamplePreset::Furniture, 4);
    // `name` holds words: it cannot be a number.
    let text = std::fs::read_to_string(repo_file("tasks/furniture.toml"))
        .unwrap()
        .replace("name = \"text\"", "name = \"number\"");
    let task = TemplateTask::new(
        phi3v_train::TaskFile::parse(&text, Path::new("tasks/furniture.toml")).unwrap(),
    );
    let err = load(&task, &catalogue).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "catalogue {}, column `name` cannot hold numbers: no row has one (for example row 0: \"",
            catalogue.display()
        )),
        "{err}"
    );
}

/// The tiny model trained on the furniture preset through its task file: every field is
/// scored in the summary, beside its baselines, and the numbers the model writes are read.
#[test]
fn the_tiny_model_trains_on_the_furniture_preset_through_its_task_file() {
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = sample(tmp.path(), SamplePreset::Furniture, 48);
    let task = TemplateTask::load(&repo_file("tasks/furniture.toml")).unwrap();
    let mut job = common::job(&catalogue, &tmp.path().join("run"));
    small_schedule(&mut job.settings.train, STEPS);
    // Room for the whole answer even when the model writes a long name: the check below
    // is that a width is read, and a width cut off by the token limit is not a number.
    // Training sums in a thread-dependent order, so the names this run writes vary.
    job.settings.train.max_new_tokens = 48;
    job.settings.split.validation_fraction = 0.2;
    let summary = run_job::<Flex, _>(task, &job, Default::default()).unwrap();
    assert_eq!(summary.task, "furniture");
    let eval = summary.final_eval.as_ref().unwrap();
    let fields: Vec<&str> = summary.fields.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["name", "type", "width_cm"], "{eval:#?}");
    let value = |key: &str| eval.scores.iter().find(|s| s.key == key).unwrap().value;
    let generated =
        std::fs::read_to_string(tmp.path().join(format!("run/evals/step-{STEPS}.json")))
            .unwrap_or_default();
    assert!(
        value("width_cm_parse_failures") < 1.0,
        "no generated width was read: {eval:#?}\n{generated}"
    );
    assert!(value("width_cm_mae").is_finite(), "{eval:#?}");
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("run/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["fields"].as_array().unwrap().len(), 3, "{written}");
}

const STEPS: u64 = 110;

/// The tiny model's settings of these tests: `steps` updates of batch 8, every layer
/// adapted, one evaluation at the end over 8 validation items.
fn small_schedule(train: &mut TrainConfig, steps: u64) {
    let mut plan = phi3v_peft::AdapterPlan::reference(true, true);
    plan.lora.rank = 8;
    plan.lora.alpha = 16.0;
    train.plan = plan;
    train.learning_rate = 5e-3;
    train.schedule = phi3v_train::ScheduleKind::Cosine;
    train.warmup_steps = 10.min(steps / 2);
    train.steps = steps;
    train.batch_size = 8;
    train.checkpoint_every = steps;
    train.eval_samples = 8;
    train.val_loss_samples = 8;
    train.eval_batch_size = 8;
    train.max_new_tokens = 24;
}

/// The conversation form of the furniture preset, with three bad records and a
/// two-exchange, two-image record appended, trains through the furniture task file: the last
/// answer's exact match and every field are scored beside their baselines, the bad records
/// (two that cannot be trained, one whose answer the task file cannot read) are skipped and
/// reported by line, and the multi-image record is kept.
#[test]
fn the_tiny_model_trains_on_furniture_conversations() {
    const ROWS: usize = 40;
    const CONVERSATION_STEPS: u64 = 12;
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = sample(tmp.path(), SamplePreset::Furniture, ROWS);
    let conversations = catalogue.with_file_name("conversations.jsonl");
    let mut text = std::fs::read_to_string(&conversations).unwrap();
    assert_eq!(text.lines().count(), ROWS);
    let first = text.lines().next().unwrap().to_string();
    // Line ROWS + 1: two tags for one image; line ROWS + 2: the assistant speaks first.
    text.push_str(&first.replacen("<image>", "<image><image>", 1));
    text.push('\n');
    text.push_str(
        &first
            .replace("\"user\"", "\"x\"")
            .replace("\"assistant\"", "\"user\"")
            .replace("\"x\"", "\"assistant\""),
    );
    text.push('\n');
    // Line ROWS + 3: a good record whose answer the task file's template cannot read.
    text.push_str(&first.replace(" cm\"", " inches\""));
    text.push('\n');
    // Line ROWS + 4: two exchanges about two photos, trained like the others.
    let record = |line: &str| serde_json::from_str::<serde_json::Value>(line).unwrap();
    let (a, b) = (record(&first), record(text.lines().nth(1).unwrap()));
    let answer = |r: &serde_json::Value| r["messages"][1]["content"].clone();
    let two = serde_json::json!({
        "messages": [
            {"role": "system", "content": "You know furniture."},
            {"role": "user", "content": "<image>What is it?"},
            {"role": "assistant", "content": answer(&a)},
            {"role": "user", "content": "And this one, beside it? <image>"},
            {"role": "assistant", "content": answer(&b)},
        ],
        "images": [a["images"][0], b["images"][0]],
    });
    text.push_str(&format!("{two}\n"));
    std::fs::write(&conversations, text).unwrap();

    let task = ConversationTask::with_fields(
        TemplateTask::load(&repo_file("tasks/furniture.toml")).unwrap(),
    );
    let mut job = common::job(&conversations, &tmp.path().join("run"));
    small_schedule(&mut job.settings.train, CONVERSATION_STEPS);
    job.settings.split.validation_fraction = 0.2;
    let summary = run_job::<Flex, _>(task, &job, Default::default()).unwrap();
    assert_eq!(summary.task, "furniture");
    let eval = summary.final_eval.as_ref().unwrap();
    let exact = eval
        .scores
        .iter()
        .find(|s| s.key == "answer_exact_match")
        .unwrap_or_else(|| panic!("no exact match of the last answer: {eval:#?}"));
    let baseline = exact.baseline.as_ref().unwrap();
    assert!(
        baseline.name.starts_with("most frequent training answer ("),
        "{baseline:?}"
    );
    assert!((0.0..=1.0).contains(&exact.value) && (0.0..=1.0).contains(&baseline.value));
    let fields: Vec<&str> = summary.fields.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["name", "type", "width_cm"], "{eval:#?}");
    assert!(eval.val_loss.is_finite(), "{eval:#?}");

    let report = Report::read_json(tmp.path().join("run/dropped_rows.json")).unwrap();
    assert_eq!((report.rows_read, report.rows_kept), (ROWS + 4, ROWS + 1));
    let dropped: Vec<(Option<u64>, DropKind)> = report
        .dropped
        .iter()
        .map(|d| (d.line, d.reason.kind()))
        .collect();
    let line = |k: usize| Some((ROWS + k) as u64);
    assert_eq!(
        dropped,
        [
            (line(1), DropKind::ImageCountMismatch),
            (line(2), DropKind::BadConversation),
            (line(3), DropKind::NotAnExample),
        ]
    );
    let unread = &report.dropped[2].message;
    assert!(
        unread.contains("cannot become an example: task file ")
            && unread.contains("tasks/furniture.toml: [prompt] answer ")
            && unread.ends_with(" inches\": field {width_cm} (number) cannot be read from it"),
        "{unread}"
    );
}

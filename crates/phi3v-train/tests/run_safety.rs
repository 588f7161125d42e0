//! A job checks everything before it writes anything, and never mixes two runs in a folder:
//! bad settings, an empty split and a folder holding another run fail with the culprit
//! named and the folder untouched; a resume must match the run it continues (data by path
//! and content, model, settings) unless forced; rows over the token budget or otherwise
//! unusable are skipped and reported; an evaluation over zero items is an error.

use crate::common;

use burn::backend::Flex;
use common::*;
use phi3v_data::report::{DropKind, Report};
use phi3v_data::split::SplitConfig;
use phi3v_train::job::{check_job, check_settings, run_eval, EvalJob, JobConfig};
use phi3v_train::{BurberryTask, TrainError};

fn err_text(result: Result<impl std::fmt::Debug, TrainError>) -> String {
    result.expect_err("the job must fail").to_string()
}

#[test]
fn a_folder_holding_a_run_refuses_a_new_run_and_stays_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_catalogue(tmp.path(), "shop.csv", &rows(12));
    let run_dir = tmp.path().join("run");
    let first = job(&data, &run_dir);
    run(&first).unwrap();
    let before = snapshot(&run_dir);
    assert!(before.contains_key(&run_dir.join("job.json")));

    // The same job again, and one with other settings: both refused, nothing touched.
    let mut other = first.clone();
    other.settings.train.learning_rate = 5e-3;
    for again in [&first, &other] {
        let message = err_text(run(again));
        assert!(
            message.contains(&run_dir.display().to_string()),
            "{message}"
        );
        assert!(message.contains("already holds a run"), "{message}");
        assert!(message.contains("--resume"), "{message}");
        assert!(message.contains("--run-dir"), "{message}");
    }
    // The check a command line makes before writing its own inputs says the same.
    let message = err_text(check_settings(&first.settings));
    assert!(message.contains("already holds a run"), "{message}");
    assert_eq!(
        snapshot(&run_dir),
        before,
        "the refused runs changed the folder"
    );
}

#[test]
fn a_resume_must_match_the_run_it_continues_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_catalogue(tmp.path(), "shop.csv", &rows(12));
    let run_dir = tmp.path().join("run");
    let first = job(&data, &run_dir);
    run(&first).unwrap();
    let before = snapshot(&run_dir);

    // Another catalogue file: the path and the content changed, both said.
    let mut more = rows(14);
    more[0].title = "Another title".into();
    let other_data = write_catalogue(tmp.path(), "other.csv", &more);
    let mut other = resumed(&first, 3);
    other.data = other_data.clone();
    let message = err_text(run(&other));
    assert!(message.contains("differs from this job"), "{message}");
    let path_change = format!(
        "data (--data): was {}, now {}",
        data.display(),
        other_data.display()
    );
    assert!(message.contains(&path_change), "{message}");
    assert!(message.contains("data content: was "), "{message}");
    assert!(message.contains("--force"), "{message}");
    assert!(
        !message.contains("train.steps"),
        "steps may grow: {message}"
    );

    // The same file edited in place: only its content changed.
    let mut edited = rows(12);
    edited[3].price = 999.0;
    write_catalogue(tmp.path(), "shop.csv", &edited);
    let message = err_text(run(&resumed(&first, 3)));
    assert!(message.contains("data content: was "), "{message}");
    assert!(!message.contains("data (--data)"), "{message}");
    write_catalogue(tmp.path(), "shop.csv", &rows(12));

    // Another learning rate or model: refused, old and new named.
    let mut lr = resumed(&first, 3);
    lr.settings.train.learning_rate = 2e-3;
    let message = err_text(run(&lr));
    assert!(
        message.contains("train.learning_rate (--lr): was 0.001, now 0.002"),
        "{message}"
    );
    let mut model = resumed(&first, 3);
    model.model = tmp.path().join("elsewhere").display().to_string();
    let message = err_text(check_job(&BurberryTask::default(), &model).map(|_| ()));
    assert!(message.contains("model (--model): was "), "{message}");
    assert_eq!(
        snapshot(&run_dir),
        before,
        "the refused resumes changed the folder"
    );

    // Extending the run needs no force; it continues from the last checkpoint.
    let extended = run(&resumed(&first, 3)).unwrap();
    assert_eq!(extended.steps, 3);
    assert_eq!(logged_loss_steps(&run_dir), vec![1, 2, 3]);

    // With force the other data is taken, and job.json records it.
    let mut forced = other.clone();
    forced.settings.train.steps = 4;
    forced.settings.force = true;
    let summary = run(&forced).unwrap();
    assert_eq!(summary.steps, 4);
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("job.json")).unwrap()).unwrap();
    assert_eq!(stored["data"], other_data.display().to_string());
    let size = std::fs::metadata(&other_data).unwrap().len();
    assert_eq!(stored["data_fingerprint"]["bytes"], size);
    assert_eq!(logged_loss_steps(&run_dir), vec![1, 2, 3, 4]);
}

#[test]
fn an_empty_split_fails_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let assert_untouched = |message: &str| {
        assert!(!run_dir.exists(), "the run folder was created: {message}");
    };

    // Every row of one product: the loader keeps one row, which a split cannot share.
    let mut same = rows(6);
    for r in &mut same {
        r.product_code = 7;
    }
    let data = write_catalogue(tmp.path(), "one-product.csv", &same);
    let message = err_text(run(&job(&data, &run_dir)));
    assert!(
        message.contains("has 1 usable rows of 1 products"),
        "{message}"
    );
    assert!(message.contains("at least 2 products"), "{message}");
    assert!(message.contains("--val-fraction"), "{message}");
    assert_untouched(&message);

    // Many products but a fraction too small to put any on the validation side.
    let data = write_catalogue(tmp.path(), "shop.csv", &rows(12));
    let mut tiny_fraction = job(&data, &run_dir);
    tiny_fraction.settings.split.validation_fraction = 1e-9;
    let message = err_text(run(&tiny_fraction));
    assert!(message.starts_with("no validation examples"), "{message}");
    assert!(
        message.contains("12 usable rows of 12 products"),
        "{message}"
    );
    assert!(message.contains("try a larger --val-fraction"), "{message}");
    assert_untouched(&message);

    // A budget no example fits in: every row skipped, and the message says so.
    let mut tight = job(&data, &run_dir);
    tight.settings.max_tokens = 8;
    let message = err_text(run(&tight));
    assert!(
        message.contains("skipped while building examples"),
        "{message}"
    );
    assert_untouched(&message);
}

/// Every setting that cannot train is refused by name and value before the model or the
/// data is read (neither exists here) and before the run folder is created.
#[test]
fn settings_that_cannot_train_are_refused_by_name_before_anything_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let base = JobConfig {
        model: "no-such-model".into(),
        data: tmp.path().join("no-such-catalogue.csv"),
        ..job(tmp.path(), &run_dir)
    };
    type Edit = fn(&mut JobConfig);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |j| j.settings.train.plan.lora.rank = 0,
            "lora rank (--lora-rank) must be >= 1, got 0",
        ),
        (
            |j| j.settings.train.plan.lora.alpha = f64::NAN,
            "lora alpha (--lora-alpha) must be a finite number > 0, got NaN",
        ),
        (
            |j| j.settings.train.plan.lora.dropout = 1.0,
            "lora dropout (--lora-dropout) must be in [0, 1), got 1",
        ),
        (
            |j| j.settings.train.plan.lora.dropout = 2.0,
            "lora dropout (--lora-dropout) must be in [0, 1), got 2",
        ),
        (
            |j| j.settings.train.learning_rate = 0.0,
            "learning rate (--lr) must be a finite number > 0, got 0",
        ),
        (
            |j| j.settings.train.learning_rate = f64::INFINITY,
            "learning rate (--lr) must be a finite number > 0, got inf",
        ),
        (
            |j| j.settings.train.steps = 0,
            "steps (--steps) must be >= 1, got 0",
        ),
        (
            |j| j.settings.train.batch_size = 0,
            "batch size (--batch-size) must be >= 1, got 0",
        ),
        (
            |j| j.settings.train.grad_accum = 0,
            "gradient accumulation (--grad-accum) must be >= 1, got 0",
        ),
        (
            |j| j.settings.train.max_grad_norm = f64::NAN,
            "gradient-norm clip (--max-grad-norm) must be a finite number >= 0",
        ),
        (
            |j| j.settings.train.warmup_steps = 5,
            "warmup steps (--warmup-steps) must be at most the run's 2 steps (--steps), got 5",
        ),
        (
            |j| j.settings.train.log_every = 0,
            "logging interval (--log-every) must be >= 1, got 0",
        ),
        (
            |j| j.settings.train.eval_samples = 0,
            "evaluation samples (--eval-samples) must be >= 1, got 0",
        ),
        (
            |j| j.settings.train.keep_last = 0,
            "kept checkpoints (--keep-last) must be >= 1",
        ),
        (
            |j| j.settings.train.optimizer.beta2 = 1.0,
            "AdamW beta2 (optimizer.beta2) must be in [0, 1), got 1",
        ),
        (
            |j| {
                j.settings.train.recompute = true;
                j.settings.train.plan.lora.dropout = 0.1;
            },
            "activation recomputation (--recompute) needs lora dropout (--lora-dropout) 0, got 0.1",
        ),
        (
            |j| j.settings.split.validation_fraction = 0.0,
            "validation fraction (--val-fraction) must be a number in (0, 1), got 0",
        ),
        (
            |j| j.settings.split.validation_fraction = f64::NAN,
            "validation fraction (--val-fraction) must be a number in (0, 1), got NaN",
        ),
        (
            |j| j.settings.split.validation_fraction = 1.0,
            "validation fraction (--val-fraction) must be a number in (0, 1), got 1",
        ),
        (
            |j| j.settings.max_tokens = 0,
            "token budget (--max-tokens) must be >= 1, got 0",
        ),
        (
            |j| j.settings.num_crops = Some(0),
            "crops (--num-crops) must be >= 1, got 0",
        ),
        (
            |j| j.settings.force = true,
            "--force only applies with --resume",
        ),
    ];
    for (edit, expected) in cases {
        let mut bad = base.clone();
        edit(&mut bad);
        let message = err_text(run(&bad));
        assert!(
            message.contains(expected),
            "want `{expected}`, got `{message}`"
        );
        assert!(!run_dir.exists(), "{expected}: the run folder was created");
    }
    // The valid base fails only later, on its missing catalogue (which it names).
    let message = err_text(run(&base));
    assert!(message.contains("no-such-catalogue.csv"), "{message}");
    assert!(!run_dir.exists());
}

#[test]
fn rows_over_the_token_budget_or_unusable_are_skipped_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut catalogue = rows(12);
    // A 40 KB title: about 8,000 tokens, within what the catalogue reader takes.
    catalogue[2].title = "Vintage check cashmere scarf ".repeat(1400);
    // An image the HD transform cannot resize (zero rows at 4 crops of 56 pixels).
    catalogue[5].image = (2000, 2);
    // A 100 KB title: dropped by the reader (a cell that large is refused) or, were it
    // read, by the token budget; either way never trained on.
    catalogue[8].title = "Vintage check cashmere scarf ".repeat(3500);
    let data = write_catalogue(tmp.path(), "shop.csv", &catalogue);
    let run_dir = tmp.path().join("run");
    let mut one_step = job(&data, &run_dir);
    one_step.settings.train.steps = 1;

    let checked = check_job(&BurberryTask::default(), &one_step).unwrap();
    let loaded = checked.data();
    assert_eq!(loaded.train.len() + loaded.val.len(), 9);
    assert!(!run_dir.exists(), "check_job wrote into the run folder");

    run(&one_step).unwrap();
    let report = Report::read_json(run_dir.join("dropped_rows.json")).unwrap();
    let kinds = report.dropped_kinds();
    assert_eq!(
        kinds[..2],
        [(2, DropKind::TooManyTokens), (5, DropKind::NotAnExample)]
    );
    assert!(
        matches!(
            kinds[2],
            (8, DropKind::InvalidValue | DropKind::TooManyTokens)
        ),
        "{kinds:?}"
    );
    assert_eq!(kinds.len(), 3);
    assert_eq!((report.rows_read, report.rows_kept), (12, 9));
    let too_long = &report.dropped[0];
    assert_eq!(too_long.product_code, Some(1002));
    let phi3v_data::report::DropReason::TooManyTokens { tokens, max_tokens } = too_long.reason
    else {
        panic!("{:?}", too_long.reason)
    };
    assert!(tokens > 10_000, "{tokens}");
    assert_eq!(max_tokens, phi3v_train::job::DEFAULT_MAX_TOKENS);
    assert!(
        report.dropped[1].message.contains("too elongated"),
        "{}",
        report.dropped[1].message
    );
}

#[test]
fn an_evaluation_over_zero_items_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_catalogue(tmp.path(), "shop.csv", &rows(12));
    let out = tmp.path().join("eval");
    let eval = EvalJob {
        model: tiny_model(),
        adapter: None,
        data: data.clone(),
        split: SplitConfig {
            seed: 42,
            validation_fraction: 1e-9,
        },
        num_crops: None,
        samples: 4,
        batch_size: 2,
        max_new_tokens: 3,
        out: out.clone(),
        base_dtype: Default::default(),
        products: Default::default(),
    };
    let evaluate = |job: &EvalJob| {
        run_eval::<Flex, _>(BurberryTask::default(), job, Default::default()).map(|_| ())
    };
    let message = err_text(evaluate(&eval));
    assert!(message.starts_with("no validation examples"), "{message}");
    assert!(
        message.contains("12 usable rows of 12 products"),
        "{message}"
    );
    assert!(!out.join("eval.json").exists());

    let zero_samples = EvalJob {
        samples: 0,
        split: SplitConfig {
            seed: 42,
            validation_fraction: 0.3,
        },
        ..eval
    };
    let message = err_text(evaluate(&zero_samples));
    assert!(
        message.contains("evaluation samples (--samples) must be >= 1, got 0"),
        "{message}"
    );
    assert!(!out.exists());
}

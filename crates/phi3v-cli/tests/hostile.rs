//! The `phi3v` command fed hostile and careless input, one family per test.
//!
//! Every case is built on the fly in a temporary folder (a copy of the tiny reference model,
//! a small sample catalogue, an adapter and a run trained here), and asserts:
//! - the exit status;
//! - that the message names the culprit (the flag, file, key, row or tensor);
//! - that no panic was reached;
//! - for the cases that could destroy data, that every protected input is byte-identical
//!   afterwards.
//!
//! Each family test prints its table (case, exit status, first line of the message), which
//! is how the corpus is reviewed: `cargo test -p phi3v-cli --test integration hostile -- --nocapture`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The inputs every case starts from, made once per test binary.
struct Fixture {
    _root: tempfile::TempDir,
    root: PathBuf,
    /// A copy of the tiny reference model dir (sharded, with index).
    model: PathBuf,
    /// A sample catalogue folder and its parquet file.
    data_dir: PathBuf,
    data: PathBuf,
    /// A finished training run on `model` and `data`, and its adapter.
    run: PathBuf,
    adapter: PathBuf,
    /// A product photo.
    image: PathBuf,
}

fn phi3v() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phi3v"))
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let reference =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../phi3v/tests/data/tiny_phi3v");
        let model = root.join("model");
        copy_dir(&reference, &model);
        let image = root.join("coat.png");
        std::fs::rename(model.join("coat.png"), &image).unwrap();
        std::fs::remove_file(model.join("scarf.png")).unwrap();
        let data_dir = root.join("data");
        let out = phi3v()
            .args([
                "sample-data",
                "--rows",
                "40",
                "--seed",
                "5",
                "--image-size",
                "32",
                "--out",
            ])
            .arg(&data_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let data = data_dir.join("catalogue.parquet");
        let run = root.join("run");
        let out = train(&model, &data, &run).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let adapter = run.join("adapter");
        assert!(adapter.join("adapter_config.json").is_file());
        Fixture {
            _root: tmp,
            root,
            model,
            data_dir,
            data,
            run,
            adapter,
            image,
        }
    })
}

/// A short run on the tiny model: two updates, a checkpoint after each.
fn train(model: &Path, data: &Path, run_dir: &Path) -> Command {
    train_steps(model, data, run_dir, 2)
}

/// [`train`] for `steps` updates.
fn train_steps(model: &Path, data: &Path, run_dir: &Path, steps: u64) -> Command {
    let mut cmd = phi3v();
    cmd.arg("train")
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--run-dir")
        .arg(run_dir)
        .args([
            "--steps",
            &steps.to_string(),
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
        ])
        .args(["--lora-rank", "4", "--warmup-steps", "1"])
        .args([
            "--eval-every",
            "2",
            "--eval-samples",
            "2",
            "--checkpoint-every",
            "1",
        ])
        .args([
            "--log-every",
            "1",
            "--no-tensorboard",
            "--recompute",
            "false",
        ]);
    cmd
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file under `paths` with its bytes (a file path stands for itself).
fn snapshot(paths: &[PathBuf]) -> Vec<BTreeMap<PathBuf, Vec<u8>>> {
    paths
        .iter()
        .map(|p| phi3v_testkit::files::snapshot(p))
        .collect()
}

/// What a case must end with.
enum Outcome {
    /// Exit status 1 (refused by the command) or 2 (refused by the argument parser).
    Refused(i32),
    /// Success.
    Done,
}

/// One hostile input.
struct Case {
    name: &'static str,
    args: Vec<OsString>,
    outcome: Outcome,
    /// Substrings the message (stderr) must hold: the culprit.
    names: Vec<String>,
    /// Inputs that must be byte-identical afterwards.
    protect: Vec<PathBuf>,
    /// Paths that must not exist afterwards (nothing written for a refused command).
    absent: Vec<PathBuf>,
}

impl Case {
    fn new(name: &'static str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Self {
        Self {
            name,
            args: args.iter().map(|a| a.as_ref().to_os_string()).collect(),
            outcome: Outcome::Refused(1),
            names: Vec::new(),
            protect: Vec::new(),
            absent: Vec::new(),
        }
    }
    fn exit(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
    fn names(mut self, parts: &[&dyn std::fmt::Display]) -> Self {
        self.names.extend(parts.iter().map(|p| p.to_string()));
        self
    }
    fn protect(mut self, paths: &[&Path]) -> Self {
        self.protect.extend(paths.iter().map(|p| p.to_path_buf()));
        self
    }
    fn absent(mut self, paths: &[&Path]) -> Self {
        self.absent.extend(paths.iter().map(|p| p.to_path_buf()));
        self
    }
}

/// Runs the cases, prints the family's table, and fails with every broken case listed.
fn run_family(family: &str, cases: Vec<Case>) {
    let mut failures = Vec::new();
    println!("\n{family}: {} cases", cases.len());
    for case in cases {
        let before = snapshot(&case.protect);
        let out = phi3v().args(&case.args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code();
        let first = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        println!("  {:<58} exit {:?}  {}", case.name, code, first);
        let mut problems = Vec::new();
        match case.outcome {
            Outcome::Refused(expected) if code != Some(expected) => {
                problems.push(format!("exit {code:?}, expected {expected}"))
            }
            Outcome::Done if code != Some(0) => problems.push(format!("exit {code:?}, expected 0")),
            _ => {}
        }
        if stderr.contains("panicked") || code.is_none() {
            problems.push("panicked or was killed".into());
        }
        for part in &case.names {
            if !stderr.contains(part.as_str()) {
                problems.push(format!("message does not name `{part}`"));
            }
        }
        if snapshot(&case.protect) != before {
            problems.push("a protected input changed".into());
        }
        for path in &case.absent {
            if path.exists() {
                problems.push(format!("{} was written", path.display()));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {stderr}",
                case.name,
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "{family}:\n{}", failures.join("\n"));
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A folder of its own for one family's cases.
fn scratch(family: &str) -> PathBuf {
    let dir = fixture().root.join("cases").join(family);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn outputs_never_clobber_inputs() {
    let f = fixture();
    let dir = scratch("outputs");
    let inputs = [
        f.model.as_path(),
        f.adapter.as_path(),
        f.data_dir.as_path(),
        f.image.as_path(),
    ];
    // An older merge with three shards where the new one has two.
    let stale = dir.join("stale-merge");
    copy_dir(&f.model, &stale);
    std::fs::write(
        stale.join("model-00003-of-00003.safetensors"),
        b"stale shard",
    )
    .unwrap();
    let existing_logits = dir.join("logits.safetensors");
    std::fs::write(&existing_logits, b"earlier logits").unwrap();
    let eval_out = dir.join("eval-out");
    std::fs::create_dir_all(&eval_out).unwrap();
    std::fs::write(eval_out.join("notes.txt"), b"mine").unwrap();
    let merge = |out: &Path| -> Vec<OsString> {
        [
            "merge",
            "--model",
            &s(&f.model),
            "--adapter",
            &s(&f.adapter),
            "--out",
            &s(out),
        ]
        .map(OsString::from)
        .to_vec()
    };
    let logits = |out: &Path| -> Vec<OsString> {
        [
            "logits",
            "--model",
            &s(&f.model),
            "--prompt",
            "hi",
            "--out",
            &s(out),
        ]
        .map(OsString::from)
        .to_vec()
    };
    let with = |name, args: Vec<OsString>| Case {
        args,
        ..Case::new(name, &[])
    };
    let cases = vec![
        with("merge --out is the base model", merge(&f.model)).names(&[&"--out", &"--model"]),
        with(
            "merge --out inside the base model",
            merge(&f.model.join("merged")),
        )
        .names(&[&"--out", &"is inside"]),
        with("merge --out is the adapter", merge(&f.adapter)).names(&[&"--adapter"]),
        with("merge --out contains the inputs", merge(&f.root)).names(&[&"contains"]),
        with("merge --out holds an older sharded model", merge(&stale))
            .names(&[&"--overwrite", &"stale-merge"])
            .protect(&[&stale]),
        with(
            "logits --out is the model's weights",
            logits(&f.model.join("model-00001-of-00002.safetensors")),
        )
        .names(&[&"--out", &"--model"]),
        with("logits --out is an existing file", logits(&existing_logits))
            .names(&[&"--overwrite", &"logits.safetensors"])
            .protect(&[&existing_logits]),
        with("logits --out is the image", {
            let mut a = logits(&f.image);
            a.extend(["--image".into(), f.image.clone().into()]);
            a
        })
        .names(&[&"--image"]),
        with("train --run-dir is the model dir", {
            train(&f.model, &f.data, &f.model)
                .get_args()
                .map(|a| a.to_os_string())
                .collect()
        })
        .names(&[&"--run-dir", &"--model"]),
        with("train --run-dir holds the catalogue", {
            train(&f.model, &f.data, &f.data_dir)
                .get_args()
                .map(|a| a.to_os_string())
                .collect()
        })
        .names(&[&"--run-dir", &"--data"]),
        with(
            "sample-data --out is an existing catalogue",
            ["sample-data", "--rows", "5", "--out", &s(&f.data_dir)]
                .map(OsString::from)
                .to_vec(),
        )
        .names(&[&"--out", &"--overwrite", &"catalogue.parquet"]),
        with(
            "eval --out is the model dir",
            [
                "eval",
                "--model",
                &s(&f.model),
                "--data",
                &s(&f.data),
                "--out",
                &s(&f.model),
            ]
            .map(OsString::from)
            .to_vec(),
        )
        .names(&[&"--out", &"--model"]),
        with(
            "eval --out holds other files",
            [
                "eval",
                "--model",
                &s(&f.model),
                "--data",
                &s(&f.data),
                "--out",
                &s(&eval_out),
            ]
            .map(OsString::from)
            .to_vec(),
        )
        .names(&[&"--overwrite", &"notes.txt"])
        .protect(&[&eval_out]),
    ];
    let cases = cases.into_iter().map(|c| c.protect(&inputs)).collect();
    run_family("outputs", cases);

    // With --overwrite the older merge is replaced whole: it holds exactly the base's files.
    let out = phi3v()
        .args(merge(&stale))
        .arg("--overwrite")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&stale), names(&f.model), "stale files survived");
}

#[test]
fn flag_values_are_checked_before_any_work() {
    let f = fixture();
    let dir = scratch("flags");
    let run = dir.join("run");
    // `--flag=value`, so that a negative value is not taken for a flag.
    let train_with = |flag: &str, value: &str| -> Vec<OsString> {
        let set = format!("{flag}={value}");
        [
            "train",
            "--model",
            &s(&f.model),
            "--data",
            &s(&f.data),
            "--run-dir",
            &s(&run),
            &set,
        ]
        .map(OsString::from)
        .to_vec()
    };
    let generate_with = |flag: &str, value: &str| -> Vec<OsString> {
        let set = format!("{flag}={value}");
        ["generate", "--model", &s(&f.model), "--prompt", "hi", &set]
            .map(OsString::from)
            .to_vec()
    };
    let with = |name, args: Vec<OsString>, flag: &'static str| {
        Case {
            args,
            ..Case::new(name, &[])
        }
        .names(&[&flag])
        .absent(&[&run])
    };
    let cases = vec![
        with(
            "--lora-rank 0",
            train_with("--lora-rank", "0"),
            "--lora-rank",
        ),
        with(
            "--lora-alpha NaN",
            train_with("--lora-alpha", "NaN"),
            "--lora-alpha",
        ),
        with(
            "--lora-alpha -2",
            train_with("--lora-alpha", "-2"),
            "--lora-alpha",
        ),
        with(
            "--lora-dropout 1",
            train_with("--lora-dropout", "1"),
            "--lora-dropout",
        ),
        with(
            "--lora-dropout 2",
            train_with("--lora-dropout", "2"),
            "--lora-dropout",
        ),
        with(
            "--val-fraction 0",
            train_with("--val-fraction", "0"),
            "--val-fraction",
        ),
        with(
            "--val-fraction NaN",
            train_with("--val-fraction", "NaN"),
            "--val-fraction",
        ),
        with("--lr -1", train_with("--lr", "-1"), "--lr"),
        with("--lr inf", train_with("--lr", "inf"), "--lr"),
        with("--steps 0", train_with("--steps", "0"), "--steps"),
        with(
            "--batch-size 0",
            train_with("--batch-size", "0"),
            "--batch-size",
        ),
        with(
            "--grad-accum 0",
            train_with("--grad-accum", "0"),
            "--grad-accum",
        ),
        with(
            "--max-grad-norm NaN",
            train_with("--max-grad-norm", "NaN"),
            "--max-grad-norm",
        ),
        with(
            "--num-crops 0",
            train_with("--num-crops", "0"),
            "--num-crops",
        ),
        with(
            "--eval-samples 0",
            train_with("--eval-samples", "0"),
            "--eval-samples",
        ),
        with(
            "generate --temperature NaN",
            generate_with("--temperature", "NaN"),
            "--temperature",
        ),
        with(
            "generate --temperature -1",
            generate_with("--temperature", "-1"),
            "--temperature",
        ),
        with(
            "generate --top-p 2",
            generate_with("--top-p", "2"),
            "--top-p",
        ),
        with(
            "generate --top-k 0",
            generate_with("--top-k", "0"),
            "--top-k",
        ),
        with(
            "sample-data --faults 1.5",
            [
                "sample-data",
                "--faults",
                "1.5",
                "--out",
                &s(&dir.join("sample")),
            ]
            .map(OsString::from)
            .to_vec(),
            "--faults",
        )
        .absent(&[&dir.join("sample")]),
        with(
            "eval --samples 0",
            [
                "eval",
                "--model",
                &s(&f.model),
                "--data",
                &s(&f.data),
                "--samples",
                "0",
                "--out",
                &s(&dir.join("eval")),
            ]
            .map(OsString::from)
            .to_vec(),
            "--samples",
        )
        .absent(&[&dir.join("eval")]),
    ];
    run_family("flags", cases);
}

/// A copy of the fixture's adapter with its config edited by `edit`.
fn adapter_with(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let out = dir.join(name);
    copy_dir(&fixture().adapter, &out);
    let path = out.join("adapter_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    out
}

#[test]
fn adapters_must_agree_with_their_config_and_base() {
    let f = fixture();
    let dir = scratch("adapters");
    let rank_zero = adapter_with(&dir, "rank-zero", |c| c["r"] = 0.into());
    let rank_off = adapter_with(&dir, "rank-off", |c| c["r"] = 8.into());
    let alpha_neg = adapter_with(&dir, "alpha-negative", |c| c["lora_alpha"] = (-16.0).into());
    let unknown = adapter_with(&dir, "unknown-target", |c| {
        c["target_modules"]
            .as_array_mut()
            .unwrap()
            .push("not_a_module_anywhere".into())
    });
    let truncated = adapter_with(&dir, "truncated-weights", |_| {});
    let weights = truncated.join("adapter_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let not_json = adapter_with(&dir, "not-json", |_| {});
    std::fs::write(not_json.join("adapter_config.json"), "{ r: sixteen").unwrap();
    let missing = dir.join("no-such-adapter");

    let merge = |adapter: &Path| -> Vec<OsString> {
        [
            "merge",
            "--model",
            &s(&f.model),
            "--adapter",
            &s(adapter),
            "--out",
            &s(&dir.join("merged")),
        ]
        .map(OsString::from)
        .to_vec()
    };
    let eval = |adapter: &Path| -> Vec<OsString> {
        [
            "eval",
            "--model",
            &s(&f.model),
            "--data",
            &s(&f.data),
            "--samples",
            "1",
            "--adapter",
            &s(adapter),
            "--out",
            &s(&dir.join("eval")),
        ]
        .map(OsString::from)
        .to_vec()
    };
    let with = |name, args: Vec<OsString>, culprit: &[&dyn std::fmt::Display]| {
        Case {
            args,
            ..Case::new(name, &[])
        }
        .names(culprit)
        .protect(&[&f.model])
        .absent(&[&dir.join("merged"), &dir.join("eval")])
    };
    let cases = vec![
        with(
            "merge: config r = 0",
            merge(&rank_zero),
            &[&"adapter_config.json", &"r"],
        ),
        with(
            "eval: config r = 0",
            eval(&rank_zero),
            &[&"adapter_config.json", &"r"],
        ),
        with(
            "merge: config r = 8 beside rank-4 tensors",
            merge(&rank_off),
            &[&"8", &"4"],
        ),
        with(
            "eval: config r = 8 beside rank-4 tensors",
            eval(&rank_off),
            &[&"8", &"4"],
        ),
        with(
            "merge: negative lora_alpha",
            merge(&alpha_neg),
            &[&"lora_alpha"],
        ),
        with(
            "merge: a target module the base lacks",
            merge(&unknown),
            &[&"not_a_module_anywhere"],
        ),
        with(
            "eval: a target module the base lacks",
            eval(&unknown),
            &[&"not_a_module_anywhere"],
        ),
        with(
            "merge: truncated adapter weights",
            merge(&truncated),
            &[&"adapter_model.safetensors"],
        ),
        with(
            "merge: adapter_config.json is not JSON",
            merge(&not_json),
            &[&"adapter_config.json"],
        ),
        with(
            "merge: no such adapter folder",
            merge(&missing),
            &[&"no-such-adapter"],
        ),
    ];
    run_family("adapters", cases);
}

#[test]
fn model_dirs_are_checked_before_loading() {
    let f = fixture();
    let dir = scratch("model-dirs");
    let variant = |name: &str, edit: &dyn Fn(&Path)| -> PathBuf {
        let out = dir.join(name);
        copy_dir(&f.model, &out);
        edit(&out);
        out
    };
    let no_preprocessor = variant("no-preprocessor", &|m| {
        std::fs::remove_file(m.join("preprocessor_config.json")).unwrap()
    });
    let bad_preprocessor = variant("bad-preprocessor", &|m| {
        std::fs::write(
            m.join("preprocessor_config.json"),
            "{\"num_crops\": \"many\"}",
        )
        .unwrap()
    });
    let no_config = variant("no-config", &|m| {
        std::fs::remove_file(m.join("config.json")).unwrap()
    });
    let no_shard = variant("missing-shard", &|m| {
        std::fs::remove_file(m.join("model-00002-of-00002.safetensors")).unwrap()
    });
    let truncated = variant("truncated-shard", &|m| {
        let path = m.join("model-00001-of-00002.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    });
    let generate = |model: &str| -> Vec<OsString> {
        [
            "generate",
            "--model",
            model,
            "--prompt",
            "hi",
            "--max-new-tokens",
            "2",
        ]
        .map(OsString::from)
        .to_vec()
    };
    let with = |name, model: &Path, culprit: &[&dyn std::fmt::Display]| {
        Case {
            args: generate(&s(model)),
            ..Case::new(name, &[])
        }
        .names(culprit)
    };
    let cases = vec![
        with(
            "a mistyped local path",
            &dir.join("modle"),
            &[&"modle", &"no such model dir"],
        ),
        Case {
            args: generate("./typo/model"),
            ..Case::new("a relative path that does not exist", &[])
        }
        .names(&[&"./typo/model", &"no such model dir"]),
        with(
            "no preprocessor_config.json",
            &no_preprocessor,
            &[&"preprocessor_config.json"],
        ),
        with(
            "preprocessor_config.json of the wrong type",
            &bad_preprocessor,
            &[&"preprocessor_config.json", &"line 1 column"],
        ),
        with("no config.json", &no_config, &[&"config.json"]),
        with(
            "a shard named in the index is missing",
            &no_shard,
            &[&"model-00002-of-00002.safetensors"],
        ),
        with(
            "a truncated shard",
            &truncated,
            &[&"model-00001-of-00002.safetensors"],
        ),
    ];
    run_family("model dirs", cases);
}

#[test]
fn images_are_decoded_as_pil_does_or_refused() {
    let f = fixture();
    let dir = scratch("images");
    let jpeg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../phi3v-processor/tests/data/jpeg");
    let truncated = jpeg.join("truncated.jpg");
    let corrupted = jpeg.join("corrupt_marker.jpg");
    let text_file = dir.join("not-an-image.jpg");
    std::fs::write(&text_file, "this is text").unwrap();
    let huge = dir.join("huge.png");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    let generate = |image: &str| -> Vec<OsString> {
        [
            "generate",
            "--model",
            &s(&f.model),
            "--prompt",
            "hi",
            "--max-new-tokens",
            "2",
            "--image",
            image,
        ]
        .map(OsString::from)
        .to_vec()
    };
    let with = |name, image: &str, culprit: &[&dyn std::fmt::Display]| {
        Case {
            args: generate(image),
            ..Case::new(name, &[])
        }
        .names(culprit)
    };
    let mut cases = vec![
        with("a truncated JPEG", &s(&truncated), &[&"truncated.jpg"]),
        with("a corrupted JPEG", &s(&corrupted), &[&"corrupt_marker.jpg"]),
        with("text named .jpg", &s(&text_file), &[&"not-an-image.jpg"]),
        with("a 10 GiB sparse file", &s(&huge), &[&"huge.png"]),
        with(
            "a missing file",
            &s(&dir.join("missing.png")),
            &[&"missing.png"],
        ),
        with("a folder", &s(&dir), &[&"not a file"]),
        with(
            "an unreachable URL is fetched, not opened as a path",
            "http://127.0.0.1:9/coat.jpg",
            &[&"http://127.0.0.1:9/coat.jpg"],
        ),
    ];
    if Path::new("/dev/zero").exists() {
        cases.push(with("/dev/zero", "/dev/zero", &[&"/dev/zero"]));
    }
    let ok = Case {
        args: generate(&s(&f.image)),
        ..Case::new("a good image still works", &[])
    }
    .exit(Outcome::Done);
    cases.push(ok);
    run_family("images", cases);
}

#[test]
fn runs_are_never_mixed_and_resume_from_an_intact_checkpoint() {
    let f = fixture();
    let dir = scratch("runs");
    let other_data = dir.join("other-data");
    let out = phi3v()
        .args([
            "sample-data",
            "--rows",
            "40",
            "--seed",
            "9",
            "--image-size",
            "32",
            "--out",
        ])
        .arg(&other_data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let other_data = other_data.join("catalogue.parquet");
    let newest = |run: &Path| run.join("checkpoints/step-00000002");
    let run_copy = |name: &str, edit: &dyn Fn(&Path)| -> PathBuf {
        let out = dir.join(name);
        copy_dir(&f.run, &out);
        edit(&newest(&out));
        out
    };
    let corrupted = run_copy("corrupted-newest", &|ckpt| {
        let path = ckpt.join("trainable.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 8..].copy_from_slice(&[0xFF; 8]);
        std::fs::write(&path, bytes).unwrap();
    });
    let truncated = run_copy("truncated-newest", &|ckpt| {
        let path = ckpt.join("optimizer.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    let forged = run_copy("forged-state", &|ckpt| {
        let path = ckpt.join("state.json");
        let mut state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        state["step"] = 999_999.into();
        std::fs::write(&path, state.to_string()).unwrap();
    });
    let args = |data: &Path, run: &Path, extra: &[&str]| -> Vec<OsString> {
        let steps = if extra.contains(&"--resume") { 3 } else { 2 };
        let mut cmd = train_steps(&f.model, data, run, steps);
        cmd.args(extra);
        cmd.get_args().map(|a| a.to_os_string()).collect()
    };
    let with = |name, args: Vec<OsString>| Case {
        args,
        ..Case::new(name, &[])
    };
    let cases = vec![
        with(
            "train into a finished run without --resume",
            args(&f.data, &f.run, &[]),
        )
        .names(&[&"--resume", &"--run-dir"])
        .protect(&[&f.run]),
        with(
            "--resume with another catalogue",
            args(&other_data, &f.run, &["--resume"]),
        )
        .names(&[&"--force", &"other-data"])
        .protect(&[&f.run]),
        with(
            "--resume after the newest checkpoint was corrupted",
            args(&f.data, &corrupted, &["--resume"]),
        )
        .exit(Outcome::Done)
        .names(&[&"step-00000002", &"step-00000001"]),
        with(
            "--resume after the newest checkpoint was truncated",
            args(&f.data, &truncated, &["--resume"]),
        )
        .exit(Outcome::Done)
        .names(&[&"step-00000002", &"step-00000001"]),
        with(
            "--resume with a state.json claiming step 999999",
            args(&f.data, &forged, &["--resume"]),
        )
        .exit(Outcome::Done)
        .names(&[&"step-00000002", &"999999"]),
    ];
    run_family("runs", cases);
}

/// A CSV catalogue (CRLF line ends) of `good` usable rows followed by hostile ones, with its
/// images in its own folder. Returns the file and, per hostile row, its line and a part of
/// the message that must name it.
fn hostile_csv(dir: &Path, good: usize) -> (PathBuf, Vec<(&'static str, u64, String)>) {
    let f = fixture();
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let sample_images: Vec<PathBuf> = std::fs::read_dir(f.data_dir.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut lines = vec!["product_code,title,category3_code,full_price,imageurl".to_string()];
    for i in 0..good {
        let name = format!("p{i}.png");
        std::fs::copy(&sample_images[i % sample_images.len()], images.join(&name)).unwrap();
        let category = ["COATS", "SCARVES", "BAGS"][i % 3];
        lines.push(format!(
            "{},\"Check {category} {i}, \"\"classic\"\"\",{category},{},images/{name}",
            1000 + i,
            200 + 10 * i
        ));
    }
    let outside = dir.parent().unwrap().join("outside.png");
    std::fs::copy(&sample_images[0], &outside).unwrap();
    let jpeg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../phi3v-processor/tests/data/jpeg");
    std::fs::copy(jpeg.join("truncated.jpg"), images.join("truncated.jpg")).unwrap();
    let long_title = "Check ".repeat(100_000 / 6);
    let wordy_title = "Vintage check cashmere scarf ".repeat(40_000 / 29);
    let hostile: Vec<(&'static str, String, String)> = vec![
        (
            "negative price",
            "2001,Coat,COATS,-5,images/p0.png".into(),
            "full_price".into(),
        ),
        (
            "zero price",
            "2002,Coat,COATS,0,images/p0.png".into(),
            "full_price".into(),
        ),
        (
            "price 1e308",
            "2003,Coat,COATS,1e308,images/p0.png".into(),
            "full_price".into(),
        ),
        (
            "price NaN",
            "2004,Coat,COATS,NaN,images/p0.png".into(),
            "full_price".into(),
        ),
        (
            "price true",
            "2005,Coat,COATS,true,images/p0.png".into(),
            "full_price".into(),
        ),
        (
            "empty category",
            "2006,Coat,,120,images/p0.png".into(),
            "category3_code".into(),
        ),
        (
            "100 KB title",
            format!("2007,{long_title},COATS,120,images/p0.png"),
            "title".into(),
        ),
        (
            "40 KB title over the token budget",
            format!("2008,{wordy_title},COATS,120,images/p0.png"),
            "4096".into(),
        ),
        (
            "image outside the catalogue's folder",
            "2009,Coat,COATS,120,../outside.png".into(),
            "outside.png".into(),
        ),
        (
            "absolute image path elsewhere",
            "2010,Coat,COATS,120,/etc/hostname".into(),
            "/etc/hostname".into(),
        ),
        (
            "/dev/zero as the image",
            "2011,Coat,COATS,120,/dev/zero".into(),
            "/dev/zero".into(),
        ),
        (
            "truncated JPEG",
            "2012,Coat,COATS,120,images/truncated.jpg".into(),
            "truncated.jpg".into(),
        ),
        (
            "missing image",
            "2013,Coat,COATS,120,images/nope.png".into(),
            "nope.png".into(),
        ),
        ("too few fields", "2014,Coat,COATS".into(), "line".into()),
    ];
    let mut expected = Vec::new();
    for (name, row, culprit) in hostile {
        lines.push(row);
        expected.push((name, lines.len() as u64, culprit));
    }
    let path = dir.join("catalogue.csv");
    std::fs::write(&path, lines.join("\r\n") + "\r\n").unwrap();
    (path, expected)
}

#[test]
fn hostile_rows_are_reported_and_skipped_and_bad_catalogues_refused_before_work() {
    let f = fixture();
    let dir = scratch("catalogues");
    let shop = dir.join("shop");
    std::fs::create_dir_all(&shop).unwrap();
    let (csv, expected) = hostile_csv(&shop, 24);
    let run = dir.join("run");
    let out = train(&f.model, &csv, &run).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("dropped_rows.json")).unwrap())
            .unwrap();
    let dropped = report["dropped"].as_array().unwrap();
    println!("\ncatalogue rows: {} cases", expected.len());
    let mut failures = Vec::new();
    for (name, line, culprit) in &expected {
        let entry = dropped.iter().find(|d| d["line"].as_u64() == Some(*line));
        let message = entry.map(|d| d["message"].as_str().unwrap().to_string());
        println!(
            "  {name:<58} line {line}: {}",
            message.as_deref().unwrap_or("KEPT")
        );
        match message {
            Some(m) if m.starts_with(&format!("line {line}:")) && m.contains(culprit.as_str()) => {}
            other => failures.push(format!(
                "{name} (line {line}, expects `{culprit}`): {other:?}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(report["rows_kept"].as_u64(), Some(24), "{report}");

    // Catalogues that cannot train are refused before anything is written.
    let one_product = dir.join("one-product");
    std::fs::create_dir_all(one_product.join("images")).unwrap();
    let mut rows = vec!["product_code,title,category3_code,full_price,imageurl".to_string()];
    for i in 0..10 {
        std::fs::copy(
            f.image.as_path(),
            one_product.join(format!("images/{i}.png")),
        )
        .unwrap();
        rows.push(format!("77,Coat {i},COATS,{},images/{i}.png", 100 + i));
    }
    let one_product = one_product.join("catalogue.csv");
    std::fs::write(&one_product, rows.join("\n")).unwrap();
    let not_a_catalogue = dir.join("notes.parquet");
    std::fs::write(&not_a_catalogue, "not parquet at all").unwrap();
    let only_bad = dir.join("only-bad");
    std::fs::create_dir_all(&only_bad).unwrap();
    std::fs::write(
        only_bad.join("catalogue.csv"),
        "product_code,title,category3_code,full_price,imageurl\n1,Coat,COATS,-1,x.png\n",
    )
    .unwrap();
    let refused_run = dir.join("refused-run");
    let with = |name, data: &Path, culprit: &[&dyn std::fmt::Display]| {
        Case {
            args: train(&f.model, data, &refused_run)
                .get_args()
                .map(|a| a.to_os_string())
                .collect(),
            ..Case::new(name, &[])
        }
        .names(culprit)
        .absent(&[&refused_run])
        .protect(&[data])
    };
    let mut tiny_split = train(&f.model, &f.data, &refused_run);
    tiny_split.args(["--val-fraction", "0.000001"]);
    let cases = vec![
        with(
            "every row shares one product code",
            &one_product,
            &[&"validation"],
        ),
        Case {
            args: tiny_split.get_args().map(|a| a.to_os_string()).collect(),
            ..Case::new("a validation fraction that selects nothing", &[])
        }
        .names(&[&"--val-fraction"])
        .absent(&[&refused_run]),
        with(
            "a catalogue that is not parquet",
            &not_a_catalogue,
            &[&"notes.parquet"],
        ),
        with(
            "a catalogue whose every row is bad",
            &only_bad.join("catalogue.csv"),
            &[&"catalogue.csv"],
        ),
        with(
            "a catalogue that does not exist",
            &dir.join("missing.csv"),
            &[&"missing.csv"],
        ),
    ];
    run_family("catalogues", cases);
}

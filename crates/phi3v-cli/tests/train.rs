//! `phi3v train` as a process: a run killed with SIGKILL at a random step and resumed ends
//! with the same adapters as an uninterrupted run, and a diverging run stops on its NaN
//! guard with its last good checkpoint kept.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const STEPS: u64 = 8;

fn tokenizer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../phi3v-processor/tests/data/tokenizer/tokenizer.json")
}

/// A small sample catalogue shared by the runs of a test.
fn sample_data(dir: &Path) -> PathBuf {
    let out = dir.join("data");
    let status = Command::new(env!("CARGO_BIN_EXE_phi3v"))
        .args(["sample-data", "--rows", "40", "--seed", "3", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    out.join("catalogue.parquet")
}

/// `phi3v train` on the tiny model, checkpointing every update.
fn train(run_dir: &Path, data: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_phi3v"));
    cmd.arg("train")
        .arg("--tokenizer")
        .arg(tokenizer())
        .arg("--data")
        .arg(data)
        .arg("--run-dir")
        .arg(run_dir)
        .args([
            "--steps",
            &STEPS.to_string(),
            "--batch-size",
            "2",
            "--grad-accum",
            "2",
        ])
        .args([
            "--lora-rank",
            "4",
            "--warmup-steps",
            "2",
            "--lora-dropout",
            "0.1",
        ])
        .args([
            "--eval-every",
            "0",
            "--eval-samples",
            "2",
            "--checkpoint-every",
            "1",
        ])
        .args(["--keep-last", "50", "--log-every", "1", "--no-tensorboard"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn adapter_bytes(run_dir: &Path) -> Vec<u8> {
    std::fs::read(run_dir.join("adapter/adapter_model.safetensors")).unwrap()
}

fn checkpoint(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join(format!("checkpoints/step-{step:08}"))
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_data(tmp.path());

    let straight = tmp.path().join("straight");
    let out = train(&straight, &data, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kill at a random step between 1 and STEPS - 2, as soon as its checkpoint exists.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let kill_at = 1 + nanos % (STEPS - 2);
    let killed = tmp.path().join("killed");
    let mut child = train(&killed, &data, &[]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !checkpoint(&killed, kill_at).join("state.json").is_file() {
        assert!(Instant::now() < deadline, "no checkpoint at step {kill_at}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(!killed.join("adapter").exists(), "killed before the end");
    println!("killed after the checkpoint of step {kill_at}");

    let out = train(&killed, &data, &["--resume"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("resuming from step"), "{log}");
    assert_eq!(
        adapter_bytes(&killed),
        adapter_bytes(&straight),
        "resumed adapters differ"
    );

    // The metrics log was cut back to the checkpoint: each training step is logged once.
    let metrics = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    let losses = metrics
        .lines()
        .filter(|l| l.contains("\"train\"") && l.contains("\"loss\""))
        .count();
    assert_eq!(losses as u64, STEPS);
}

#[test]
fn a_diverging_run_stops_on_the_nan_guard_and_keeps_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_data(tmp.path());
    let run = tmp.path().join("nan");
    // A learning rate of 1e30 blows the adapters up within a few steps.
    let out = train(&run, &data, &["--lr", "1e30", "--max-grad-norm", "0"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run must fail");
    assert!(log.contains("non-finite"), "{log}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let reason = summary["stop_reason"].as_str().unwrap();
    assert!(reason.starts_with("stopped: non-finite"), "{reason}");
    let steps = summary["steps"].as_u64().unwrap();
    assert!((1..STEPS).contains(&steps), "stopped after {steps} updates");
    // The last good checkpoint is the one of the last finished update, and it is finite.
    let last = checkpoint(&run, steps);
    assert!(log.contains(last.to_str().unwrap()), "{log}");
    let w = phi3v::nn::Weights::open(last.join("trainable.safetensors")).unwrap();
    for name in w.names() {
        let shape = w.shape(name).unwrap().to_vec();
        assert!(
            w.read_f32(name, &shape)
                .unwrap()
                .iter()
                .all(|x| x.is_finite()),
            "{name}"
        );
    }
    assert!(run.join("report.html").is_file());
}

//! Checkpoints carry the size and sha256 of their files: a resume verifies them, skips a
//! corrupted or truncated newest checkpoint (saying which and why) and continues from the
//! newest intact one, to the same adapters as a run that was never damaged; a state that
//! cannot be the run's (a forged step) is rejected even when its checksums agree.

use crate::common;

use std::path::Path;

use common::*;
use phi3v_train::checkpoint::{
    newest_intact_checkpoint, verify_checkpoint, CheckpointProblem, FileDigest, Manifest,
    MANIFEST_FILE, OPTIMIZER_FILE, STATE_FILE, TRAINABLE_FILE,
};
use phi3v_train::job::check_job;
use phi3v_train::{BurberryTask, TrainError};

/// Copies a folder tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() - 5;
    bytes[i] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn truncate_to_half(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

#[test]
fn a_damaged_newest_checkpoint_is_skipped_and_the_resumed_run_ends_as_the_undamaged_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_catalogue(tmp.path(), "shop.csv", &rows(12));
    let straight = tmp.path().join("straight");
    let mut four = job(&data, &straight);
    four.settings.train.steps = 4;
    run(&four).unwrap();
    for step in 1..=4 {
        let dir = checkpoint(&straight, step);
        assert_eq!(verify_checkpoint(&dir, 4).unwrap().step, step);
    }

    // A copy whose two newest checkpoints are damaged and whose adapter is gone.
    let damaged = tmp.path().join("damaged");
    copy_dir(&straight, &damaged);
    std::fs::remove_dir_all(damaged.join("adapter")).unwrap();
    truncate_to_half(&checkpoint(&damaged, 4).join(OPTIMIZER_FILE));
    flip_a_byte(&checkpoint(&damaged, 3).join(TRAINABLE_FILE));

    let scan = newest_intact_checkpoint(&damaged.join("checkpoints"), 4);
    assert_eq!(scan.intact.as_ref().unwrap().state.step, 2);
    let problems: Vec<&CheckpointProblem> = scan.skipped.iter().map(|(_, p)| p).collect();
    assert!(
        matches!(problems[..], [CheckpointProblem::WrongSize { found, expected, .. }, CheckpointProblem::ChecksumMismatch { .. }] if found < expected),
        "{problems:?}"
    );
    let lines = scan.skipped_lines();
    assert!(lines[0].contains("step-00000004"), "{lines:?}");
    assert!(
        lines[0].contains(&format!("{OPTIMIZER_FILE} is truncated")),
        "{lines:?}"
    );
    assert!(lines[1].contains("step-00000003"), "{lines:?}");
    assert!(
        lines[1].contains(&format!("{TRAINABLE_FILE} does not match its sha256")),
        "{lines:?}"
    );

    let mut resume = four.clone();
    resume.settings.run_dir = damaged.clone();
    resume.settings.resume = true;
    let checked = check_job(&BurberryTask::default(), &resume).unwrap();
    assert_eq!(checked.resume_point().unwrap().dir, checkpoint(&damaged, 2));
    let summary = checked
        .run::<burn::backend::Flex>(BurberryTask::default(), Default::default())
        .unwrap();
    assert_eq!(summary.steps, 4);
    let adapter =
        |run: &Path| std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap();
    assert_eq!(
        adapter(&damaged),
        adapter(&straight),
        "the resumed adapters differ from the undamaged run's"
    );
    assert_eq!(logged_loss_steps(&damaged), vec![1, 2, 3, 4]);
    for step in 3..=4 {
        verify_checkpoint(&checkpoint(&damaged, step), 4).unwrap();
    }
}

#[test]
fn a_checkpoint_without_its_manifest_or_with_a_forged_state_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_catalogue(tmp.path(), "shop.csv", &rows(12));
    let run_dir = tmp.path().join("run");
    run(&job(&data, &run_dir)).unwrap();
    let dir = checkpoint(&run_dir, 2);

    // Edits of state.json that keep its size: one that changes nothing the state means
    // (a space for a tab) is a checksum mismatch; one that changes the step also says
    // what the state now claims.
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).unwrap();
    assert!(text.contains("  \"step\": 2,"), "{text}");
    std::fs::write(&state_path, text.replacen("  \"step\"", " \t\"step\"", 1)).unwrap();
    assert_eq!(
        verify_checkpoint(&dir, 2).unwrap_err(),
        CheckpointProblem::ChecksumMismatch {
            file: STATE_FILE.into()
        }
    );
    std::fs::write(
        &state_path,
        text.replacen("\"step\": 2,", "\"step\": 1,", 1),
    )
    .unwrap();
    let err = verify_checkpoint(&dir, 2).unwrap_err().to_string();
    assert!(
        err.starts_with("invalid state.json: state.json does not match its sha256"),
        "{err}"
    );
    assert!(
        err.contains("step 1 does not match the folder name step-00000002"),
        "{err}"
    );

    // state.json claims step 999999, and the manifest is rewritten to match it: the files
    // are "intact", the state is not this run's.
    let mut state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["step"] = 999_999.into();
    std::fs::write(&state_path, serde_json::to_string(&state).unwrap()).unwrap();
    // Without the manifest's agreement the claim is reported with the size mismatch.
    let err = verify_checkpoint(&dir, 2).unwrap_err().to_string();
    assert!(
        err.starts_with("invalid state.json: state.json is truncated (or rewritten): "),
        "{err}"
    );
    assert!(err.contains("step 999999 does not match"), "{err}");
    let manifest_path = dir.join(MANIFEST_FILE);
    let mut manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest
        .files
        .insert(STATE_FILE.into(), FileDigest::of(&state_path).unwrap());
    std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();
    let err = verify_checkpoint(&dir, 2).unwrap_err().to_string();
    assert!(
        err.contains("step 999999 does not match the folder name step-00000002"),
        "{err}"
    );
    assert!(
        err.contains("step 999999 is outside the run's steps 1..=2"),
        "{err}"
    );
    assert!(err.contains("differs from the manifest's 2"), "{err}");

    // A resume skips it and takes step 1, whose manifest is then removed: nothing intact
    // is left, and the resume refuses to silently start over.
    let scan = newest_intact_checkpoint(&run_dir.join("checkpoints"), 2);
    assert_eq!(scan.intact.as_ref().unwrap().state.step, 1);
    std::fs::remove_file(checkpoint(&run_dir, 1).join(MANIFEST_FILE)).unwrap();
    assert_eq!(
        verify_checkpoint(&checkpoint(&run_dir, 1), 2).unwrap_err(),
        CheckpointProblem::MissingManifest
    );
    let resume = resumed(&job(&data, &run_dir), 2);
    let err = check_job(&BurberryTask::default(), &resume)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, TrainError::RunDir { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("no intact checkpoint"), "{message}");
    assert!(message.contains("missing manifest.json"), "{message}");
    assert!(message.contains("--force"), "{message}");

    // Forced, it starts over from step 0.
    let mut forced = resume.clone();
    forced.settings.force = true;
    let checked = check_job(&BurberryTask::default(), &forced).unwrap();
    assert!(checked.resume_point().is_none());
}

#[test]
fn the_nan_guard_names_a_checkpoint_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_catalogue(tmp.path(), "shop.csv", &rows(12));
    let run_dir = tmp.path().join("run");
    let mut diverging = job(&data, &run_dir);
    diverging.settings.train.steps = 6;
    diverging.settings.train.learning_rate = 1e30;
    diverging.settings.train.max_grad_norm = 0.0;
    let err = run(&diverging).unwrap_err();
    let TrainError::NonFinite {
        step, checkpoint, ..
    } = &err
    else {
        panic!("{err}")
    };
    if *step == 1 {
        assert!(checkpoint.starts_with("none"), "{err}");
    } else {
        let dir = Path::new(checkpoint);
        assert_eq!(dir, common::checkpoint(&run_dir, step - 1));
        verify_checkpoint(dir, 6).unwrap();
    }
}

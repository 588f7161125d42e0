//! Resumable checkpoints: the trainable tensors, the optimizer's moments, and the
//! training state (step, data position, best validation loss).
//!
//! A checkpoint is a folder `step-{step:08}` under the run's `checkpoints/`. It is written
//! as `step-{step:08}.tmp` and renamed only when complete, so a run killed mid-write leaves
//! either the previous checkpoints or the new one, never a torn one; a leftover `.tmp`
//! folder is ignored and removed. The last `keep_last` checkpoints are kept, plus the one
//! with the best validation loss.
//!
//! # Integrity
//!
//! The rename protects against a kill, not against what happens to the files afterwards (a
//! full disk during a copy, a truncated sync, a hand edit). So the last file written into
//! the folder before the rename is [`MANIFEST_FILE`]: the size and sha256 of every other
//! file. [`verify_checkpoint`] checks them and then the [`TrainState`] itself (its step
//! matches the folder name and lies within the run's steps, its counters agree), and a
//! resume takes the newest checkpoint that passes ([`newest_intact_checkpoint`]), naming
//! each newer one it skips and why. A checkpoint without a manifest (torn, or written
//! before manifests existed) is not trusted.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use phi3v_nn::{NamedLinears, Weights};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::TrainError;
use crate::io::{from_vec, read_json, save_tensors, to_vec, write_json, TensorMap};
use crate::optim::{AdamW, Moments};
use crate::params::for_each_trainable;

/// Trainable tensors (burn layout, see [`crate::params`]).
pub const TRAINABLE_FILE: &str = "trainable.safetensors";
/// AdamW moments: `m.{name}` and `v.{name}`.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// [`TrainState`].
pub const STATE_FILE: &str = "state.json";
/// [`Manifest`]: written last, so its presence means the other files were complete.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The files a checkpoint consists of, besides its manifest.
pub const CHECKPOINT_FILES: [&str; 3] = [TRAINABLE_FILE, OPTIMIZER_FILE, STATE_FILE];

/// Size and sha256 of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
}

impl FileDigest {
    /// Reads `path` through sha256 (streamed: checkpoints of the full model are large).
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(Self {
            bytes,
            sha256: format!("{:x}", hasher.finalize()),
        })
    }

    /// `1234 bytes, sha256 0123456789ab…`: enough to tell two files apart in a message.
    pub fn brief(&self) -> String {
        let short = self.sha256.get(..12).unwrap_or(&self.sha256);
        format!("{} bytes, sha256 {short}…", self.bytes)
    }
}

/// What a checkpoint holds: the digest of each file, by file name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub step: u64,
    pub files: BTreeMap<String, FileDigest>,
}

/// Why a checkpoint cannot be resumed from.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointProblem {
    /// No manifest: the checkpoint was torn before its manifest was written, or predates
    /// manifests.
    MissingManifest,
    /// A file (the manifest, or one it lists) is missing.
    MissingFile { file: String },
    /// A file cannot be read or parsed.
    Unreadable { file: String, message: String },
    /// A file is shorter (truncated) or longer than the manifest says.
    WrongSize {
        file: String,
        expected: u64,
        found: u64,
    },
    /// A file has the manifest's size but other bytes.
    ChecksumMismatch { file: String },
    /// The state cannot be this run's (each finding; the first is the checksum failure
    /// when `state.json` also fails its manifest).
    InvalidState(Vec<String>),
}

impl fmt::Display for CheckpointProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointProblem::MissingManifest => write!(
                f,
                "missing {MANIFEST_FILE} (written last: the checkpoint is incomplete, or older \
                 than checksummed checkpoints)"
            ),
            CheckpointProblem::MissingFile { file } => write!(f, "{file} is missing"),
            CheckpointProblem::Unreadable { file, message } => {
                write!(f, "{file} is unreadable: {message}")
            }
            CheckpointProblem::WrongSize {
                file,
                expected,
                found,
            } if found < expected => {
                write!(
                    f,
                    "{file} is truncated (or rewritten): {found} of {expected} bytes"
                )
            }
            CheckpointProblem::WrongSize {
                file,
                expected,
                found,
            } => write!(f, "{file} has {found} bytes, its manifest says {expected}"),
            CheckpointProblem::ChecksumMismatch { file } => write!(
                f,
                "{file} does not match its sha256 checksum (the file was modified or corrupted)"
            ),
            CheckpointProblem::InvalidState(findings) => {
                write!(f, "invalid {STATE_FILE}: {}", findings.join("; "))
            }
        }
    }
}

/// Where training stands: enough to continue exactly where it stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer updates done.
    pub step: u64,
    /// Micro-batches consumed; the data order is a function of the seed and this count.
    pub micro_batches: u64,
    /// Epoch and offset in it of the next example (for humans; derived from the above).
    pub epoch: u64,
    pub epoch_offset: u64,
    /// AdamW's update count (PyTorch's `state["step"]`).
    pub optimizer_steps: u64,
    /// Best validation loss so far and its step.
    pub best_val_loss: Option<f64>,
    pub best_step: Option<u64>,
    /// Training tokens processed and seconds spent, carried across resumes.
    pub tokens_seen: u64,
    pub elapsed_secs: f64,
}

/// The folder name of a step's checkpoint.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Writes a checkpoint under `root` atomically and returns its folder.
pub fn save_checkpoint<B: AutodiffBackend, M: NamedLinears<B> + Clone>(
    root: &Path,
    model: &M,
    full: &[String],
    optimizer: &AdamW<B::InnerBackend>,
    state: &TrainState,
) -> Result<PathBuf, TrainError> {
    let final_dir = root.join(checkpoint_name(state.step));
    let tmp = root.join(format!("{}.tmp", checkpoint_name(state.step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let mut trainable = TensorMap::new();
    for_each_trainable(&mut model.clone(), full, &mut |name, slot| {
        let shape = slot.shape();
        let (_, values) = to_vec(slot.flat().inner());
        trainable.insert(name.to_string(), (shape, values));
    });
    save_tensors(&tmp.join(TRAINABLE_FILE), &trainable)?;
    let mut moments = TensorMap::new();
    for (name, Moments { m, v }) in &optimizer.state {
        moments.insert(format!("m.{name}"), to_vec(m.clone()));
        moments.insert(format!("v.{name}"), to_vec(v.clone()));
    }
    save_tensors(&tmp.join(OPTIMIZER_FILE), &moments)?;
    write_json(&tmp.join(STATE_FILE), state)?;
    let mut files = BTreeMap::new();
    for name in CHECKPOINT_FILES {
        let path = tmp.join(name);
        files.insert(
            name.to_string(),
            FileDigest::of(&path).map_err(|e| TrainError::io(&path, e))?,
        );
    }
    let manifest = Manifest {
        step: state.step,
        files,
    };
    write_json(&tmp.join(MANIFEST_FILE), &manifest)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    Ok(final_dir)
}

/// Checkpoint folders under `root` (renamed into place, whether intact or not), oldest
/// first, with the steps their names give.
pub fn list_checkpoints(root: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            p.is_dir().then_some((step, p))
        })
        .collect();
    out.sort();
    out
}

/// An intact checkpoint and the state it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePoint {
    pub dir: PathBuf,
    pub state: TrainState,
}

/// What [`newest_intact_checkpoint`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointScan {
    /// The newest checkpoint that passed [`verify_checkpoint`], if any.
    pub intact: Option<ResumePoint>,
    /// The newer checkpoints that did not, newest first, each with its problem.
    pub skipped: Vec<(PathBuf, CheckpointProblem)>,
}

impl CheckpointScan {
    /// One line per skipped checkpoint, for the log.
    pub fn skipped_lines(&self) -> Vec<String> {
        self.skipped
            .iter()
            .map(|(dir, problem)| format!("skipping checkpoint {}: {problem}", dir.display()))
            .collect()
    }
}

/// The newest checkpoint under `root` that is intact and whose state fits a run of
/// `max_step` updates, and the newer ones passed over (verification reads every file of
/// each checkpoint it looks at, newest first, and stops at the first that passes).
pub fn newest_intact_checkpoint(root: &Path, max_step: u64) -> CheckpointScan {
    let mut scan = CheckpointScan::default();
    for (_, dir) in list_checkpoints(root).into_iter().rev() {
        match verify_checkpoint(&dir, max_step) {
            Ok(state) => {
                scan.intact = Some(ResumePoint { dir, state });
                break;
            }
            Err(problem) => scan.skipped.push((dir, problem)),
        }
    }
    scan
}

/// Checks a checkpoint folder without loading it: its manifest lists every checkpoint
/// file, each file has the manifest's size and sha256, and its state is one a run of
/// `max_step` updates can have written in this folder ([`check_state`]). Returns the state.
///
/// A `state.json` that fails its checksum is still read: if what it claims cannot be this
/// run's (`step 999999`), that is reported with the checksum failure, since it says more
/// about what happened to the file than "modified".
pub fn verify_checkpoint(dir: &Path, max_step: u64) -> Result<TrainState, CheckpointProblem> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.is_file() {
        return Err(CheckpointProblem::MissingManifest);
    }
    let manifest: Manifest = read_parsed(&manifest_path, MANIFEST_FILE)?;
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let findings = |state: &TrainState| {
        let mut findings = check_state(state, &folder, max_step);
        if manifest.step != state.step {
            findings.push(format!(
                "its step {} differs from the manifest's {}",
                state.step, manifest.step
            ));
        }
        findings
    };
    for name in CHECKPOINT_FILES {
        let Err(problem) = check_file(dir, name, &manifest) else {
            continue;
        };
        if name == STATE_FILE {
            let claims = read_parsed::<TrainState>(&dir.join(STATE_FILE), STATE_FILE)
                .map(|state| findings(&state))
                .unwrap_or_default();
            if !claims.is_empty() {
                let mut all = vec![problem.to_string()];
                all.extend(claims);
                return Err(CheckpointProblem::InvalidState(all));
            }
        }
        return Err(problem);
    }
    let state: TrainState = read_parsed(&dir.join(STATE_FILE), STATE_FILE)?;
    let found = findings(&state);
    if found.is_empty() {
        Ok(state)
    } else {
        Err(CheckpointProblem::InvalidState(found))
    }
}

/// Whether the checkpoint file `name` has the size and sha256 its manifest gives.
fn check_file(dir: &Path, name: &str, manifest: &Manifest) -> Result<(), CheckpointProblem> {
    let Some(expected) = manifest.files.get(name) else {
        return Err(CheckpointProblem::Unreadable {
            file: MANIFEST_FILE.into(),
            message: format!("it does not list {name}"),
        });
    };
    let found = match FileDigest::of(&dir.join(name)) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointProblem::MissingFile { file: name.into() })
        }
        Err(e) => {
            return Err(CheckpointProblem::Unreadable {
                file: name.into(),
                message: e.to_string(),
            })
        }
    };
    if found.bytes != expected.bytes {
        return Err(CheckpointProblem::WrongSize {
            file: name.into(),
            expected: expected.bytes,
            found: found.bytes,
        });
    }
    if found.sha256 != expected.sha256 {
        return Err(CheckpointProblem::ChecksumMismatch { file: name.into() });
    }
    Ok(())
}

/// A JSON file of the checkpoint, parsed; `file` names it in the problem.
fn read_parsed<T: serde::de::DeserializeOwned>(
    path: &Path,
    file: &str,
) -> Result<T, CheckpointProblem> {
    let unreadable = |message: String| CheckpointProblem::Unreadable {
        file: file.into(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))
}

/// What is wrong with a state found in the checkpoint folder `folder` of a run of
/// `max_step` updates (nothing: an empty list). The trainer checkpoints after an update, so
/// a state's step is at least 1 and names its folder; each update makes one optimizer step
/// from at least one micro-batch; the best step is one already made.
pub fn check_state(state: &TrainState, folder: &str, max_step: u64) -> Vec<String> {
    let mut findings = Vec::new();
    let step = state.step;
    if folder != checkpoint_name(step) {
        findings.push(format!(
            "step {step} does not match the folder name {folder}"
        ));
    }
    if !(1..=max_step).contains(&step) {
        findings.push(format!(
            "step {step} is outside the run's steps 1..={max_step} (--steps)"
        ));
    }
    if state.optimizer_steps != step {
        findings.push(format!(
            "optimizer_steps {} differs from step {step}",
            state.optimizer_steps
        ));
    }
    if state.micro_batches < step {
        findings.push(format!(
            "{} micro-batches cannot make {step} updates",
            state.micro_batches
        ));
    }
    match (state.best_step, state.best_val_loss) {
        (Some(best), _) if best > step => {
            findings.push(format!("best_step {best} is after step {step}"))
        }
        (Some(_), None) | (None, Some(_)) => {
            findings.push("best_step and best_val_loss must be given together".into())
        }
        _ => {}
    }
    if !(state.elapsed_secs.is_finite() && state.elapsed_secs >= 0.0) {
        findings.push(format!(
            "elapsed_secs {} is not a duration",
            state.elapsed_secs
        ));
    }
    findings
}

/// Restores a checkpoint into `model` and `optimizer`; returns its state.
///
/// # Errors
/// A trainable tensor of the model missing from the checkpoint, or of another shape
/// (the run's configuration changed), naming the tensor and the file.
pub fn load_checkpoint<B: AutodiffBackend, M: NamedLinears<B>>(
    dir: &Path,
    model: &mut M,
    full: &[String],
    optimizer: &mut AdamW<B::InnerBackend>,
    device: &B::Device,
) -> Result<TrainState, TrainError> {
    let state: TrainState = read_json(&dir.join(STATE_FILE))?;
    let path = dir.join(TRAINABLE_FILE);
    let tensors = Weights::open(&path).map_err(|e| TrainError::io(&path, e))?;
    let mut failure = None;
    for_each_trainable(model, full, &mut |name, mut slot| match tensors
        .read_f32(name, &slot.shape())
    {
        Ok(values) => slot.set_flat_inner(from_vec(values, device)),
        Err(e) => {
            failure.get_or_insert(TrainError::Tensor {
                path: path.clone(),
                tensor: name.to_string(),
                message: format!("{e} (was the run's adapter configuration changed?)"),
            });
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let opt_path = dir.join(OPTIMIZER_FILE);
    let moments = Weights::open(&opt_path).map_err(|e| TrainError::io(&opt_path, e))?;
    optimizer.state.clear();
    optimizer.steps = state.optimizer_steps;
    for name in moments.names() {
        let Some(param) = name.strip_prefix("m.") else {
            continue;
        };
        let read = |key: &str| -> Result<Vec<f32>, TrainError> {
            let shape = moments
                .shape(key)
                .map_err(|e| TrainError::io(&opt_path, e))?
                .to_vec();
            moments
                .read_f32(key, &shape)
                .map_err(|e| TrainError::io(&opt_path, e))
        };
        let m = read(name)?;
        let v = read(&format!("v.{param}"))?;
        optimizer.state.insert(
            param.to_string(),
            Moments {
                m: from_vec::<B::InnerBackend>(m, device),
                v: from_vec::<B::InnerBackend>(v, device),
            },
        );
    }
    Ok(state)
}

/// Deletes all but the newest `keep_last` checkpoints and the one of `best_step`, and any
/// leftover `.tmp` folder.
pub fn prune_checkpoints(
    root: &Path,
    keep_last: usize,
    best_step: Option<u64>,
) -> Result<(), TrainError> {
    let all = list_checkpoints(root);
    let cut = all.len().saturating_sub(keep_last.max(1));
    for (step, path) in &all[..cut] {
        if Some(*step) != best_step {
            std::fs::remove_dir_all(path).map_err(|e| TrainError::io(path, e))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_dir_all(&path).map_err(|e| TrainError::io(&path, e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> TrainState {
        TrainState {
            step,
            micro_batches: 2 * step,
            optimizer_steps: step,
            ..TrainState::default()
        }
    }

    #[test]
    fn a_state_the_trainer_writes_passes() {
        assert!(check_state(&state(3), "step-00000003", 10).is_empty());
        let best = TrainState {
            best_step: Some(2),
            best_val_loss: Some(1.5),
            ..state(3)
        };
        assert!(check_state(&best, "step-00000003", 3).is_empty());
    }

    #[test]
    fn each_inconsistency_of_a_state_is_named() {
        let forged = TrainState {
            optimizer_steps: 4,
            micro_batches: 1,
            best_step: Some(9),
            best_val_loss: None,
            elapsed_secs: f64::NAN,
            ..state(5)
        };
        let findings = check_state(&forged, "step-00000004", 4);
        assert_eq!(
            findings,
            vec![
                "step 5 does not match the folder name step-00000004".to_string(),
                "step 5 is outside the run's steps 1..=4 (--steps)".into(),
                "optimizer_steps 4 differs from step 5".into(),
                "1 micro-batches cannot make 5 updates".into(),
                "best_step 9 is after step 5".into(),
                "elapsed_secs NaN is not a duration".into(),
            ]
        );
        let half_best = TrainState {
            best_val_loss: Some(1.0),
            ..state(1)
        };
        assert_eq!(
            check_state(&half_best, "step-00000001", 1),
            vec!["best_step and best_val_loss must be given together".to_string()]
        );
    }
}

//! Resumable checkpoints: the trainable tensors, the optimizer's moments, and the
//! training state (step, data position, best validation loss).
//!
//! A checkpoint is a folder `step-{step:08}` under the run's `checkpoints/`. It is written
//! as `step-{step:08}.tmp` and renamed only when complete, so a run killed mid-write leaves
//! either the previous checkpoints or the new one, never a torn one; a leftover `.tmp`
//! folder is ignored and removed. The last `keep_last` checkpoints are kept, plus the one
//! with the best validation loss.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use phi3v_nn::{NamedLinears, Weights};
use serde::{Deserialize, Serialize};

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
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    Ok(final_dir)
}

/// Complete checkpoints under `root`, oldest first, with their steps.
pub fn list_checkpoints(root: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            p.join(STATE_FILE).is_file().then_some((step, p))
        })
        .collect();
    out.sort();
    out
}

/// The newest complete checkpoint under `root`.
pub fn latest_checkpoint(root: &Path) -> Option<PathBuf> {
    list_checkpoints(root).pop().map(|(_, p)| p)
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

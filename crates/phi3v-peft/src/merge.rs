//! Folding a PEFT adapter into a base model dir: `phi3v merge`.
//!
//! The merge works on the model dir's files, not on a loaded model: every tensor the
//! adapter does not touch is copied byte for byte in its stored dtype (bf16 stays bf16),
//! and the shards, the index and the side files (config, tokenizer, processor) keep their
//! layout. An adapted weight becomes `W + s B A` (PyTorch layout, computed in f32 and
//! written back in `W`'s dtype); a layer saved in full replaces the base's.
//!
//! Nothing is written before everything is checked: the output against the inputs (it may
//! not be, contain or lie inside the base model dir or the adapter dir, so the base's files
//! are never truncated by copying them onto themselves), the output folder against
//! `--overwrite`, and the adapter against the base ([`check_adapter`]). The output is then
//! written into a staged sibling folder that replaces `--out` whole at the end: a failed
//! merge leaves the old folder as it was, and a replaced folder keeps nothing of its old
//! contents (no stale shard or index beside the new weights).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use phi3v_io::{check_disjoint, check_replaceable, Role, StagedDir};
use phi3v_nn::weights::decode_float as decode;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::check::{check_adapter, BaseTensors, CheckedAdapter, FullTensor, LoraPair};
use crate::error::PeftError;

/// The flag of the output folder in errors, as `phi3v merge` spells it (the inputs are
/// `--model` and `--adapter`).
const OUT_FLAG: &str = "--out";

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSummary {
    /// Weights that received `s B A`.
    pub merged: Vec<String>,
    /// Tensors replaced by the adapter's full copies.
    pub replaced: Vec<String>,
    /// Safetensors files written, at their final place in the output folder.
    pub files: Vec<PathBuf>,
}

/// How a merge treats its output folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOptions {
    /// Replace a non-empty output folder (its whole contents). Without it such a folder is
    /// refused, since it may be an older model or anything else the user keeps there.
    pub overwrite: bool,
}

/// Merges the adapter in `adapter_dir` into the model dir `base_dir`, writing a complete
/// model dir to `out_dir`.
///
/// The model dir's weight files are the ones its loader reads: the shards its
/// `model.safetensors.index.json` names, else `model.safetensors`. Its other files are
/// copied; other `.safetensors` files and sub-folders are not part of the model and are
/// left out.
///
/// # Errors
/// Before anything is written: an `out_dir` that is, contains or lies inside `base_dir` or
/// `adapter_dir`; a non-empty `out_dir` without [`MergeOptions::overwrite`]; any failure of
/// [`check_adapter`] (a config value that cannot work, an unknown `target_modules` entry, a
/// tensor that names no base tensor or does not fit it or the rank, a non-finite value).
/// Later, an unreadable or unwritable file; `out_dir` is then left as it was.
pub fn merge_adapter(
    base_dir: &Path,
    adapter_dir: &Path,
    out_dir: &Path,
    options: MergeOptions,
) -> Result<MergeSummary, PeftError> {
    check_disjoint(
        Role::new(OUT_FLAG, out_dir),
        &[
            Role::new("--model", base_dir),
            Role::new("--adapter", adapter_dir),
        ],
    )?;
    check_replaceable(out_dir, OUT_FLAG, options.overwrite)?;
    let base = BaseTensors::from_model_dir(base_dir)?;
    let adapter = check_adapter(adapter_dir, &base)?;
    let side_files = side_files(base_dir, base.files())?;

    let staged = StagedDir::new(out_dir, OUT_FLAG, options.overwrite)?;
    for file in &side_files {
        let to = staged.path().join(file.file_name().unwrap_or_default());
        std::fs::copy(file, &to).map_err(|e| PeftError::io(file, e))?;
    }
    // base tensor name -> what to do with it
    let mut updates: HashMap<String, Update<'_>> = adapter
        .lora
        .iter()
        .map(|pair| (format!("{}.weight", pair.module), Update::LowRank(pair)))
        .chain(
            adapter
                .full
                .iter()
                .map(|copy| (copy.base.clone(), Update::Replace(copy))),
        )
        .collect();
    let mut summary = MergeSummary {
        merged: Vec::new(),
        replaced: Vec::new(),
        files: Vec::new(),
    };
    let mut written = Vec::new();
    for shard in base.files() {
        let name = shard.file_name().unwrap_or_default();
        merge_shard(
            shard,
            &staged.path().join(name),
            &adapter,
            &mut updates,
            &mut summary,
        )?;
        written.push(PathBuf::from(name));
    }
    if let Some(name) = updates.keys().next() {
        // check_adapter found every name in the headers; a shard changed since.
        return Err(PeftError::tensor(
            &adapter.path,
            name,
            "the base model dir has no tensor of this name (is the adapter for another model?)",
        ));
    }
    let destination = staged.commit()?;
    summary.files = written.iter().map(|name| destination.join(name)).collect();
    Ok(summary)
}

/// The files of `base_dir` a merge copies as they are: every file but the weights and other
/// `.safetensors` files. The weight files must lie directly in `base_dir` (an index naming
/// `../x.safetensors` would make the merge write outside its output folder).
fn side_files(base_dir: &Path, weight_files: &[PathBuf]) -> Result<Vec<PathBuf>, PeftError> {
    for file in weight_files {
        let plain = file.parent() == Some(base_dir) && file.file_name().is_some();
        if !plain {
            return Err(PeftError::io(
                file,
                format!(
                    "a weight file outside the model dir {}; its index may name only files \
                     in the model dir itself",
                    base_dir.display()
                ),
            ));
        }
    }
    let mut files = Vec::new();
    let entries = std::fs::read_dir(base_dir).map_err(|e| PeftError::io(base_dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| PeftError::io(base_dir, e))?.path();
        let is_weights = path.extension().is_some_and(|e| e == "safetensors");
        if path.is_file() && !is_weights {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// What a merge does to one base tensor.
enum Update<'a> {
    /// `W += s B A`.
    LowRank(&'a LoraPair),
    /// `W = copy`.
    Replace(&'a FullTensor),
}

fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::F64 => values
            .iter()
            .flat_map(|v| f64::from(*v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Whether `value` stays finite written in `dtype` (f16 overflows past 65504).
fn representable(dtype: Dtype, value: f32) -> bool {
    match dtype {
        Dtype::BF16 => half::bf16::from_f32(value).is_finite(),
        Dtype::F16 => half::f16::from_f32(value).is_finite(),
        _ => value.is_finite(),
    }
}

/// `w += scale * b @ a` with `w: [out, in]`, `b: [out, r]`, `a: [r, in]`.
fn add_low_rank(w: &mut [f32], a: &[f32], b: &[f32], rank: usize, scale: f32) {
    if rank == 0 || w.is_empty() {
        return;
    }
    let d_in = a.len() / rank;
    for (row, b_row) in w.chunks_exact_mut(d_in).zip(b.chunks_exact(rank)) {
        for (k, &bk) in b_row.iter().enumerate() {
            let coef = scale * bk;
            for (wi, ai) in row.iter_mut().zip(&a[k * d_in..(k + 1) * d_in]) {
                *wi += coef * ai;
            }
        }
    }
}

/// Writes `shard` to `out` with the updates of its tensors applied (removing them from
/// `updates`); the other tensors are copied as stored.
fn merge_shard(
    shard: &Path,
    out: &Path,
    adapter: &CheckedAdapter,
    updates: &mut HashMap<String, Update<'_>>,
    summary: &mut MergeSummary,
) -> Result<(), PeftError> {
    let file = std::fs::File::open(shard).map_err(|e| PeftError::io(shard, e))?;
    // SAFETY: the base model dir is read-only input; nothing in this process writes to it
    // (the output never overlaps it).
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| PeftError::io(shard, e))?;
    let (_, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| PeftError::io(shard, e))?;
    let tensors = SafeTensors::deserialize(&mmap).map_err(|e| PeftError::io(shard, e))?;
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut borrowed: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, view) in tensors.tensors() {
        let Some(update) = updates.remove(&name) else {
            borrowed.push((name, view));
            continue;
        };
        let dtype = view.dtype();
        let shape = view.shape().to_vec();
        let mut w = decode(dtype, view.data()).ok_or_else(|| {
            PeftError::tensor(shard, &name, format!("dtype {dtype:?} is not a float type"))
        })?;
        match update {
            Update::LowRank(pair) => {
                let (a_shape, a) = adapter.read(&pair.a)?;
                let (b_shape, b) = adapter.read(&pair.b)?;
                // check_adapter compared these with the same headers.
                if shape != [b_shape[0], a_shape[1]] {
                    return Err(PeftError::tensor(
                        shard,
                        &name,
                        format!(
                            "shape {shape:?} does not fit the adapter's `{}` {a_shape:?} and `{}` \
                             {b_shape:?}",
                            pair.a, pair.b
                        ),
                    ));
                }
                add_low_rank(&mut w, &a, &b, pair.rank, pair.scale as f32);
                summary.merged.push(name.clone());
            }
            Update::Replace(copy) => {
                let (copy_shape, values) = adapter.read(&copy.name)?;
                if copy_shape != shape {
                    return Err(PeftError::tensor(
                        shard,
                        &name,
                        format!(
                            "shape {shape:?} differs from the adapter's full copy `{}` \
                             {copy_shape:?}",
                            copy.name
                        ),
                    ));
                }
                w = values;
                summary.replaced.push(name.clone());
            }
        }
        if let Some(at) = w.iter().position(|&v| !representable(dtype, v)) {
            return Err(PeftError::tensor(
                shard,
                &name,
                format!(
                    "merged, its value at flat index {at} ({}) is not finite in {dtype:?}; the \
                     adapter's values are too large for this weight",
                    w[at]
                ),
            ));
        }
        owned.push((name, dtype, shape, encode(dtype, &w)));
    }
    let mut views: Vec<(String, TensorView<'_>)> = borrowed;
    for (name, dtype, shape, bytes) in &owned {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| PeftError::tensor(shard, name, e))?;
        views.push((name.clone(), view));
    }
    let metadata = meta.metadata().clone();
    // The staged folder is private until committed, so a plain write is enough here.
    safetensors::serialize_to_file(views, metadata, out).map_err(|e| PeftError::io(out, e))
}

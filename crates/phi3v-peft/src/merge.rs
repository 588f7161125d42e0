//! Folding a PEFT adapter into a base model dir: `phi3v merge`.
//!
//! The merge works on the model dir's files, not on a loaded model: every tensor the
//! adapter does not touch is copied byte for byte in its stored dtype (bf16 stays bf16),
//! and the shards, the index and the side files (config, tokenizer, processor) keep their
//! layout. An adapted weight becomes `W + s B A` (PyTorch layout, computed in f32 and
//! written back in `W`'s dtype); a layer saved in full replaces the base's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use phi3v_nn::weights::decode_float as decode;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::config::PeftConfig;
use crate::error::PeftError;
use crate::io::write_atomic;
use crate::names::{self, AdapterTensor, PEFT_PREFIX};
use crate::peft::ADAPTER_WEIGHTS;

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSummary {
    /// Weights that received `s B A`.
    pub merged: Vec<String>,
    /// Tensors replaced by the adapter's full copies.
    pub replaced: Vec<String>,
    /// Safetensors files written.
    pub files: Vec<PathBuf>,
}

/// Merges the adapter in `adapter_dir` into the model dir `base_dir`, writing a complete
/// model dir to `out_dir`.
///
/// # Errors
/// An adapter tensor that names no base tensor, or whose shape does not fit it (naming
/// both), and any unreadable or unwritable file.
pub fn merge_adapter(
    base_dir: &Path,
    adapter_dir: &Path,
    out_dir: &Path,
) -> Result<MergeSummary, PeftError> {
    let config = PeftConfig::read(adapter_dir)?;
    let scale = config.scale() as f32;
    let adapter_path = adapter_dir.join(ADAPTER_WEIGHTS);
    let adapter_bytes =
        std::fs::read(&adapter_path).map_err(|e| PeftError::io(&adapter_path, e))?;
    let adapter =
        SafeTensors::deserialize(&adapter_bytes).map_err(|e| PeftError::io(&adapter_path, e))?;
    // base tensor name -> what to do with it
    let mut updates: HashMap<String, Update> = HashMap::new();
    for (name, _) in adapter.tensors() {
        match names::parse(&name) {
            None => {
                return Err(PeftError::tensor(
                    &adapter_path,
                    name,
                    format!("does not start with `{PEFT_PREFIX}`"),
                ))
            }
            Some(AdapterTensor::LoraA { base, b }) => {
                let a = read_f32(&adapter, &adapter_path, &name)?;
                let b = read_f32(&adapter, &adapter_path, &b)?;
                updates.insert(
                    base,
                    Update::LowRank {
                        a,
                        b,
                        scale,
                        source: name.clone(),
                    },
                );
            }
            Some(AdapterTensor::LoraB) => continue,
            Some(AdapterTensor::Full { base }) => {
                updates.insert(
                    base,
                    Update::Replace(read_f32(&adapter, &adapter_path, &name)?),
                );
            }
        }
    }

    std::fs::create_dir_all(out_dir).map_err(|e| PeftError::io(out_dir, e))?;
    let mut summary = MergeSummary {
        merged: Vec::new(),
        replaced: Vec::new(),
        files: Vec::new(),
    };
    let entries = std::fs::read_dir(base_dir).map_err(|e| PeftError::io(base_dir, e))?;
    let mut shards = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| PeftError::io(base_dir, e))?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name.ends_with(".safetensors") {
            shards.push(path);
        } else if path.is_file() {
            std::fs::copy(&path, out_dir.join(&name)).map_err(|e| PeftError::io(&path, e))?;
        }
    }
    if shards.is_empty() {
        return Err(PeftError::io(
            base_dir,
            "no .safetensors files in the base model dir",
        ));
    }
    shards.sort();
    for shard in shards {
        let out = out_dir.join(shard.file_name().unwrap_or_default());
        merge_shard(&shard, &out, &mut updates, &mut summary)?;
        summary.files.push(out);
    }
    if let Some(name) = updates.keys().next() {
        return Err(PeftError::tensor(
            &adapter_path,
            name,
            "the base model dir has no tensor of this name (is the adapter for another model?)",
        ));
    }
    Ok(summary)
}

enum Update {
    LowRank {
        a: Tensor32,
        b: Tensor32,
        scale: f32,
        source: String,
    },
    Replace(Tensor32),
}

struct Tensor32 {
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn read_f32(file: &SafeTensors<'_>, path: &Path, name: &str) -> Result<Tensor32, PeftError> {
    let view = file
        .tensor(name)
        .map_err(|e| PeftError::tensor(path, name, e))?;
    let values = decode(view.dtype(), view.data()).ok_or_else(|| {
        PeftError::tensor(
            path,
            name,
            format!("dtype {:?} is not a float type", view.dtype()),
        )
    })?;
    Ok(Tensor32 {
        shape: view.shape().to_vec(),
        values,
    })
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
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// `w += scale * b @ a` with `w: [out, in]`, `b: [out, r]`, `a: [r, in]`.
fn add_low_rank(w: &mut [f32], a: &[f32], b: &[f32], rank: usize, scale: f32) {
    let d_in = a.len() / rank.max(1);
    for (row, b_row) in w.chunks_exact_mut(d_in).zip(b.chunks_exact(rank)) {
        for (k, &bk) in b_row.iter().enumerate() {
            let coef = scale * bk;
            for (wi, ai) in row.iter_mut().zip(&a[k * d_in..(k + 1) * d_in]) {
                *wi += coef * ai;
            }
        }
    }
}

fn merge_shard(
    shard: &Path,
    out: &Path,
    updates: &mut HashMap<String, Update>,
    summary: &mut MergeSummary,
) -> Result<(), PeftError> {
    let file = std::fs::File::open(shard).map_err(|e| PeftError::io(shard, e))?;
    // SAFETY: the base model dir is read-only input; nothing in this process writes to it.
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
        let mut w = decode(dtype, view.data())
            .ok_or_else(|| PeftError::tensor(shard, &name, "not a float tensor"))?;
        match update {
            Update::LowRank {
                a,
                b,
                scale,
                source,
            } => {
                let rank = a.shape.first().copied().unwrap_or(0);
                let fits = view.shape().len() == 2
                    && a.shape == [rank, view.shape()[1]]
                    && b.shape == [view.shape()[0], rank];
                if !fits {
                    return Err(PeftError::tensor(
                        shard,
                        &name,
                        format!(
                            "shape {:?} does not fit the adapter's `{source}` {:?} and its B {:?}",
                            view.shape(),
                            a.shape,
                            b.shape
                        ),
                    ));
                }
                add_low_rank(&mut w, &a.values, &b.values, rank, scale);
                summary.merged.push(name.clone());
            }
            Update::Replace(t) => {
                if t.shape != view.shape() {
                    return Err(PeftError::tensor(
                        shard,
                        &name,
                        format!(
                            "shape {:?} differs from the adapter's full copy {:?}",
                            view.shape(),
                            t.shape
                        ),
                    ));
                }
                w = t.values;
                summary.replaced.push(name.clone());
            }
        }
        owned.push((name, dtype, view.shape().to_vec(), encode(dtype, &w)));
    }
    let mut views: Vec<(String, TensorView<'_>)> = borrowed;
    for (name, dtype, shape, bytes) in &owned {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| PeftError::tensor(shard, name, e))?;
        views.push((name.clone(), view));
    }
    let metadata = meta.metadata().clone();
    write_atomic(out, |tmp| {
        safetensors::serialize_to_file(views, metadata, tmp).map_err(|e| PeftError::io(tmp, e))
    })
}

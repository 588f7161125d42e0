//! Safetensors files written tensor by tensor, for weights too large to hold in memory.
//!
//! The safetensors crate serializes from views of tensors already in memory, so 8 GB of bf16
//! weights would need 8 GB (16 GB as f32) at once. A safetensors header depends only on the
//! names, dtypes and shapes, so it can be laid out from the specs first ([`plan`]); the data
//! then follow in header order, each tensor produced and written in chunks, so no more than
//! one chunk of values is ever held.
//!
//! The header is built from the safetensors crate's own [`Metadata`] and serialized with
//! serde_json exactly as [`safetensors::serialize`] does (8-byte aligned, padded with spaces),
//! so for the same tensors the streamed file is byte-identical to the crate's; the test of the
//! default tiny model's sha256 holds the writer to that.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use phi3v::nn::TensorSpec;
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use serde::{Deserialize, Serialize};

/// How the values are stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageDtype {
    F32,
    /// What the released model ships.
    Bf16,
}

impl StorageDtype {
    pub fn dtype(self) -> Dtype {
        match self {
            Self::F32 => Dtype::F32,
            Self::Bf16 => Dtype::BF16,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 => 2,
        }
    }

    /// The `torch_dtype` of `config.json`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::Bf16 => "bfloat16",
        }
    }

    /// Appends `values` converted to this dtype (little-endian; bf16 rounds to nearest even).
    fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        match self {
            Self::F32 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
            Self::Bf16 => out.extend(
                values
                    .iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()),
            ),
        }
    }
}

impl std::str::FromStr for StorageDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(format!("unknown dtype `{s}` (expected f32 or bf16)")),
        }
    }
}

/// One file of the weights, laid out before any value exists.
#[derive(Debug, Clone)]
pub struct ShardPlan {
    /// `model.safetensors`, or `model-00001-of-00002.safetensors` when sharded.
    pub file_name: String,
    /// The tensors in file order (by name), each with its data byte range.
    pub tensors: Vec<(TensorSpec, (usize, usize))>,
    /// The header as written after its 8-byte length: JSON padded to a multiple of 8.
    pub header: Vec<u8>,
}

impl ShardPlan {
    /// Bytes of tensor data (the file less its header).
    pub fn data_len(&self) -> usize {
        self.tensors.last().map_or(0, |(_, (_, end))| *end)
    }
}

/// Lays out `specs` in `shards` files of `dtype`: sorted by name (the order safetensors
/// writes tensors of one dtype in), cut into contiguous runs of about equal bytes.
///
/// # Errors
/// When there are fewer tensors than shards, or the safetensors crate rejects the header.
pub fn plan(
    specs: &[TensorSpec],
    dtype: StorageDtype,
    shards: usize,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<ShardPlan>, String> {
    if shards == 0 || shards > specs.len() {
        return Err(format!(
            "{shards} shards for {} tensors: need 1 to {0}",
            specs.len()
        ));
    }
    let mut sorted: Vec<&TensorSpec> = specs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let bytes = |s: &TensorSpec| s.shape.iter().product::<usize>() * dtype.size();
    let total: usize = sorted.iter().map(|s| bytes(s)).sum();
    // Shard k takes tensors until the running total passes (k + 1) / shards of the whole,
    // leaving at least one tensor for each later shard.
    let mut groups: Vec<Vec<&TensorSpec>> = vec![Vec::new(); shards];
    let mut running = 0usize;
    let mut shard = 0;
    for (i, spec) in sorted.iter().enumerate() {
        let later_shards = shards - shard - 1;
        let past_share = running * shards >= total * (shard + 1);
        let needed_later = sorted.len() - i == later_shards;
        if later_shards > 0 && !groups[shard].is_empty() && (past_share || needed_later) {
            shard += 1;
        }
        groups[shard].push(spec);
        running += bytes(spec);
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(k, group)| {
            let file_name = if shards == 1 {
                phi3v::nn::weights::SINGLE_FILE.to_string()
            } else {
                format!("model-{:05}-of-{shards:05}.safetensors", k + 1)
            };
            let mut offset = 0;
            let tensors: Vec<(TensorSpec, (usize, usize))> = group
                .into_iter()
                .map(|spec| {
                    let range = (offset, offset + bytes(spec));
                    offset = range.1;
                    (spec.clone(), range)
                })
                .collect();
            let infos = tensors
                .iter()
                .map(|(spec, range)| {
                    let info = TensorInfo {
                        dtype: dtype.dtype(),
                        shape: spec.shape.clone(),
                        data_offsets: *range,
                    };
                    (spec.name.clone(), info)
                })
                .collect();
            let header = Metadata::new(metadata.clone(), infos).map_err(|e| e.to_string())?;
            let mut header = serde_json::to_string(&header)
                .map_err(|e| e.to_string())?
                .into_bytes();
            header.resize(header.len().next_multiple_of(8), b' ');
            Ok(ShardPlan {
                file_name,
                tensors,
                header,
            })
        })
        .collect()
}

/// Values per chunk handed from the generator to the file: 1 MiB of f32.
pub const CHUNK: usize = 1 << 18;

/// Writes one planned file to `path`. `values` produces each tensor's values in order,
/// calling its sink with chunks (of any size) that together hold exactly the tensor's
/// element count; a mismatch is an error rather than a file with shifted offsets.
pub fn write_shard(
    path: &Path,
    shard: &ShardPlan,
    dtype: StorageDtype,
    mut values: impl FnMut(
        &TensorSpec,
        &mut dyn FnMut(&[f32]) -> std::io::Result<()>,
    ) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut file = BufWriter::with_capacity(8 << 20, File::create(path)?);
    file.write_all(&(shard.header.len() as u64).to_le_bytes())?;
    file.write_all(&shard.header)?;
    let mut bytes = Vec::with_capacity(CHUNK * dtype.size());
    for (spec, (begin, end)) in &shard.tensors {
        let mut written = 0usize;
        values(spec, &mut |chunk: &[f32]| {
            bytes.clear();
            dtype.encode(chunk, &mut bytes);
            written += bytes.len();
            file.write_all(&bytes)
        })?;
        if written != end - begin {
            return Err(std::io::Error::other(format!(
                "tensor `{}`: {written} bytes produced, {} planned",
                spec.name,
                end - begin
            )));
        }
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// `model.safetensors.index.json` of sharded weights: every tensor's file and the total
/// data size, as Hugging Face writes it.
pub fn index_json(shards: &[ShardPlan]) -> serde_json::Value {
    let weight_map: BTreeMap<&str, &str> = shards
        .iter()
        .flat_map(|s| {
            s.tensors
                .iter()
                .map(|(spec, _)| (spec.name.as_str(), s.file_name.as_str()))
        })
        .collect();
    let total: usize = shards.iter().map(ShardPlan::data_len).sum();
    serde_json::json!({
        "metadata": { "total_size": total },
        "weight_map": weight_map,
    })
}

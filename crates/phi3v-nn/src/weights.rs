//! Reading Hugging Face safetensors weights, single-file or sharded.
//!
//! The reference model dirs ship their weights as bf16 shards with a
//! `model.safetensors.index.json` that maps every tensor name to its shard. [`Weights`]
//! reads every header up front (so a missing tensor is reported before any model is built)
//! and hands out tensors converted to the backend's float type. Every error names the
//! tensor and the file at fault.
//!
//! Tensors are read with positioned reads, one at a time, never through a memory map: the
//! pages of a mapped file count toward the process's resident memory for as long as the
//! map lives, so loading a mapped 8.3 GB checkpoint held the file and the model at once.
//! A read goes through the page cache, which the kernel can reclaim, and the only
//! transient copy is the tensor being converted.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Element, FloatDType, Int, Tensor, TensorData};
use safetensors::tensor::{Dtype, Metadata};

use crate::base_dtype::BaseStorage;
use crate::memory::{self, MemoryNeed};
use crate::mixed::MixedMatmul;

/// Name of the index file of sharded weights.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of single-file weights.
pub const SINGLE_FILE: &str = "model.safetensors";

/// What can go wrong while reading weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("{path} is not a valid safetensors index: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("{index} names shard files that are not beside it: {}", missing.join(", "))]
    MissingShards {
        index: PathBuf,
        missing: Vec<String>,
    },
    #[error("{dir} holds neither {SINGLE_FILE} nor {INDEX_FILE}")]
    NoWeights { dir: PathBuf },
    #[error("tensor `{name}` is missing from the weights ({files})")]
    Missing { name: String, files: String },
    #[error("tensor `{name}` in {path} has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        path: PathBuf,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "tensor `{name}` in {path} holds {value}, which the backend's {dtype} integers cannot hold"
    )]
    IntRange {
        name: String,
        path: PathBuf,
        value: i64,
        dtype: String,
    },
    #[error("tensor `{name}` in {path} has dtype {dtype}, which cannot be read as {wanted}")]
    Dtype {
        name: String,
        path: PathBuf,
        dtype: String,
        wanted: &'static str,
    },
}

/// Where one tensor lives: which shard, its dtype, shape and byte range.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the shard (header included).
    range: (usize, usize),
}

/// Safetensors weights (one file or several shards), read tensor by tensor.
pub struct Weights {
    files: Vec<(PathBuf, File)>,
    entries: HashMap<String, Entry>,
    /// How the large matrices ([`Weights::matrix`], [`Weights::linear_weight`]) are held.
    storage: BaseStorage,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("files", &self.file_list())
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl Weights {
    /// Opens weights from a safetensors file, an index JSON, or a directory holding
    /// `model.safetensors` or `model.safetensors.index.json`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        if path.is_dir() {
            let index = path.join(INDEX_FILE);
            if index.is_file() {
                return Self::from_index(&index);
            }
            let single = path.join(SINGLE_FILE);
            if single.is_file() {
                return Self::from_files([single]);
            }
            return Err(WeightsError::NoWeights {
                dir: path.to_path_buf(),
            });
        }
        if path.extension().is_some_and(|e| e == "json") {
            Self::from_index(path)
        } else {
            Self::from_files([path.to_path_buf()])
        }
    }

    /// Opens sharded weights through their `model.safetensors.index.json`.
    ///
    /// Shards are resolved against the index's folder. A shard that the index names but
    /// that is absent is an error naming the shard.
    pub fn from_index(index: &Path) -> Result<Self, WeightsError> {
        let text = std::fs::read_to_string(index).map_err(|source| WeightsError::Io {
            path: index.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| WeightsError::BadIndex {
            path: index.to_path_buf(),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<String> = Vec::new();
        for (name, shard) in map {
            let shard = shard
                .as_str()
                .ok_or_else(|| bad(format!("shard of `{name}` is not a string")))?;
            if !shards.iter().any(|s| s == shard) {
                shards.push(shard.to_string());
            }
        }
        shards.sort();
        // Every missing shard at once, each named as the index names it.
        let missing: Vec<&str> = shards
            .iter()
            .map(String::as_str)
            .filter(|s| !dir.join(s).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(WeightsError::MissingShards {
                index: index.to_path_buf(),
                missing: missing.into_iter().map(String::from).collect(),
            });
        }
        let weights = Self::from_files(shards.iter().map(|s| dir.join(s)))?;
        // Every tensor the index promises must be in the shard it names.
        for (name, shard) in map {
            let shard = dir.join(shard.as_str().unwrap_or_default());
            match weights.entries.get(name) {
                Some(e) if weights.files[e.file].0 == shard => {}
                _ => {
                    return Err(WeightsError::Missing {
                        name: name.clone(),
                        files: shard.display().to_string(),
                    })
                }
            }
        }
        Ok(weights)
    }

    /// Opens one or more safetensors files as one set of weights.
    pub fn from_files(paths: impl IntoIterator<Item = PathBuf>) -> Result<Self, WeightsError> {
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (index, path) in paths.into_iter().enumerate() {
            let file = File::open(&path).map_err(|source| WeightsError::Io {
                path: path.clone(),
                source,
            })?;
            let (header_len, metadata) =
                read_header(&file).map_err(|reason| WeightsError::BadFile {
                    path: path.clone(),
                    reason,
                })?;
            let file_len = file
                .metadata()
                .map_err(|source| WeightsError::Io {
                    path: path.clone(),
                    source,
                })?
                .len() as usize;
            let start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                // Offsets are the file's claims: checked, not trusted, before any slice.
                let (begin, end) = info.data_offsets;
                let range = match (start.checked_add(begin), start.checked_add(end)) {
                    (Some(b), Some(e)) if b <= e && e <= file_len => (b, e),
                    _ => {
                        return Err(WeightsError::BadFile {
                            path: path.clone(),
                            reason: format!(
                                "tensor `{name}` claims bytes {begin}..{end} of the data, which \
                                 run past the end of the file"
                            ),
                        })
                    }
                };
                entries.insert(
                    name,
                    Entry {
                        file: index,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        range,
                    },
                );
            }
            files.push((path, file));
        }
        Ok(Self {
            files,
            entries,
            storage: BaseStorage::default(),
        })
    }

    /// The files the weights were read from (the index's shards in name order).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(path, _)| path.as_path())
    }

    fn file_list(&self) -> String {
        self.files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn entry(&self, name: &str) -> Result<&Entry, WeightsError> {
        self.entries.get(name).ok_or_else(|| WeightsError::Missing {
            name: name.to_string(),
            files: self.file_list(),
        })
    }

    /// Makes `canonical` readable under its own name when the weights store it only as
    /// `alias` (some fine-tuned Phi-3-V models keep the token embedding as
    /// `model.vision_embed_tokens.wte.weight`). Returns whether an alias was applied.
    pub fn resolve_alias(&mut self, canonical: &str, alias: &str) -> bool {
        if self.entries.contains_key(canonical) {
            return false;
        }
        match self.entries.get(alias).cloned() {
            Some(entry) => {
                self.entries.insert(canonical.to_string(), entry);
                true
            }
            None => false,
        }
    }

    /// Whether the weights hold a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Result<&[usize], WeightsError> {
        Ok(&self.entry(name)?.shape)
    }

    /// A tensor's entry and file, once its shape is checked against `expected`.
    fn checked(&self, name: &str, expected: &[usize]) -> Result<(&Entry, &PathBuf), WeightsError> {
        let entry = self.entry(name)?;
        let path = &self.files[entry.file].0;
        if entry.shape != expected {
            return Err(WeightsError::Shape {
                name: name.to_string(),
                path: path.clone(),
                found: entry.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        Ok((entry, path))
    }

    /// Reads a tensor's stored bytes into `dst` (exactly their length).
    fn read_stored(&self, entry: &Entry, dst: &mut [u8]) -> Result<(), WeightsError> {
        let (path, file) = &self.files[entry.file];
        debug_assert_eq!(dst.len(), entry.range.1 - entry.range.0);
        file.read_exact_at(dst, entry.range.0 as u64)
            .map_err(|source| WeightsError::Io {
                path: path.clone(),
                source,
            })
    }

    /// A tensor's stored bytes, once its shape is checked against `expected`.
    fn stored_bytes(
        &self,
        name: &str,
        expected: &[usize],
    ) -> Result<(&Entry, &PathBuf, Vec<u8>), WeightsError> {
        let (entry, path) = self.checked(name, expected)?;
        let mut bytes = vec![0u8; entry.range.1 - entry.range.0];
        self.read_stored(entry, &mut bytes)?;
        Ok((entry, path, bytes))
    }

    /// Reads a float tensor as `f32` values, checking its shape.
    ///
    /// bf16, f16, f32 and f64 are accepted; any other dtype is an error naming the tensor.
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, WeightsError> {
        let (entry, path, bytes) = self.stored_bytes(name, expected)?;
        decode_float(entry.dtype, &bytes).ok_or_else(|| WeightsError::Dtype {
            name: name.to_string(),
            path: path.clone(),
            dtype: format!("{:?}", entry.dtype),
            wanted: "a float (bf16, f16, f32, f64)",
        })
    }

    /// Reads an integer tensor (i64 or i32) as `i64` values, checking its shape.
    pub fn read_i64(&self, name: &str, expected: &[usize]) -> Result<Vec<i64>, WeightsError> {
        let (entry, path, bytes) = self.stored_bytes(name, expected)?;
        match entry.dtype {
            Dtype::I64 => Ok(decode(&bytes, i64::from_le_bytes)),
            Dtype::I32 => Ok(decode(&bytes, |b: [u8; 4]| i32::from_le_bytes(b) as i64)),
            other => Err(WeightsError::Dtype {
                name: name.to_string(),
                path: path.clone(),
                dtype: format!("{other:?}"),
                wanted: "an integer (i64, i32)",
            }),
        }
    }

    /// Loads a float tensor of the given shape onto `device`, in the backend's float type.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightsError> {
        let values = self.read_f32(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Loads an integer tensor of the given shape onto `device`.
    ///
    /// A value outside the range of the backend's integer type (i32 on most) is an error
    /// naming the tensor: burn's conversion would panic on it.
    pub fn int_tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D, Int>, WeightsError> {
        let values = self.read_i64(name, &shape)?;
        let dtype = <B::IntElem as Element>::dtype();
        let (min, max) = int_range(dtype);
        if let Some(&value) = values.iter().find(|v| !(min..=max).contains(*v)) {
            return Err(WeightsError::IntRange {
                name: name.to_string(),
                path: self.files[self.entry(name)?.file].0.clone(),
                value,
                dtype: format!("{dtype:?}"),
            });
        }
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Stores the large matrices (linear weights and the token embedding, about 99% of the
    /// parameters) as `storage` says from now on: in its matrix dtype (bf16 for a frozen base
    /// half the size of an f32 one) and, when it quantizes, the linear weights but
    /// `lm_head` in its block scheme. Norms, biases, convolution and position tables keep
    /// the backend's float type: they are small, and the activations follow their dtype.
    /// The default storage is the backend's float type throughout.
    pub fn set_storage(&mut self, storage: impl Into<BaseStorage>) {
        self.storage = storage.into();
    }

    /// Loads a large 2-D float tensor in the matrix dtype (see
    /// [`Weights::set_storage`]). Each tensor is converted on its own, so loading never
    /// holds more than one matrix in f32 beside the model; a bf16 matrix kept in bf16 is
    /// read straight into the tensor's buffer, with no copy at all.
    pub fn matrix<B: Backend>(
        &self,
        name: &str,
        shape: [usize; 2],
        device: &B::Device,
    ) -> Result<Tensor<B, 2>, WeightsError> {
        match self.storage.matrix_dtype {
            None => self.tensor(name, shape, device),
            Some(FloatDType::BF16) if self.entry(name)?.dtype == Dtype::BF16 => {
                let (entry, _) = self.checked(name, &shape)?;
                let mut values = vec![half::bf16::ZERO; shape[0] * shape[1]];
                self.read_stored(entry, bf16_bytes_mut(&mut values))?;
                Ok(Tensor::from_data(
                    TensorData::new(values, shape),
                    (device, DType::BF16),
                ))
            }
            Some(dtype) => {
                let values = self.read_f32(name, &shape)?;
                Ok(Tensor::from_data(
                    TensorData::new(values, shape),
                    (device, DType::from(dtype)),
                ))
            }
        }
    }

    /// What loading every tensor will take: 2-D float tensors (the linear weights and
    /// embeddings this type loads as matrices) as the storage holds them, the rest in f32,
    /// and the largest conversion in flight. An upper bound when the weights hold tensors
    /// that the model does not use, or small 2-D tables that it keeps in f32.
    pub fn memory_need(&self) -> MemoryNeed {
        self.memory_need_as(self.storage)
    }

    /// [`Weights::memory_need`] as if the storage were `storage`.
    pub fn memory_need_as(&self, storage: BaseStorage) -> MemoryNeed {
        let matrix_dtype = storage.matrix_dtype.map_or(DType::F32, DType::from);
        let mut need = MemoryNeed {
            resident: 0,
            transient: 0,
        };
        // An alias (see `resolve_alias`) names the same bytes twice: count them once.
        let mut seen = std::collections::HashSet::new();
        for (name, entry) in &self.entries {
            if !seen.insert((entry.file, entry.range.0)) {
                continue;
            }
            let numel: u64 = entry.shape.iter().map(|&d| d as u64).product();
            let stored = (entry.range.1 - entry.range.0) as u64;
            // The embeddings are the 2-D tensors that are no linear weight.
            let quantized = storage.quantization.filter(|_| {
                entry.shape.len() == 2
                    && quantizes(name)
                    && !name.contains("embed")
                    && !name.contains("wte")
            });
            let resident = match (quantized, entry.shape.len()) {
                (Some(scheme), _) => memory::stored_bytes(DType::QFloat(scheme), numel),
                (None, 2) => memory::stored_bytes(matrix_dtype, numel),
                (None, _) => numel * 4,
            };
            // Read as stored, then widened to f32 unless it is kept as stored; a quantized
            // weight is also laid out afresh (`[in, out]`) before its blocks are taken.
            let transient = match quantized {
                Some(_) => stored + 2 * numel * 4,
                None if resident == stored => 0,
                None => stored + numel * 4,
            };
            need.resident += resident;
            need.transient = need.transient.max(transient);
        }
        need
    }

    /// Loads a PyTorch `nn.Linear` weight (`[out, in]`) as burn's `[in, out]`: in the matrix
    /// dtype, or in the storage's block scheme when it quantizes (all but `lm_head`).
    ///
    /// A quantized weight is laid out `[in, out]` before its blocks are taken, so each block
    /// holds 32 output channels of one input feature: burn cannot transpose a
    /// block-quantized tensor without requantizing it, so the blocks follow the layout the
    /// products read. A weight whose output width is no multiple of the block stays in the
    /// matrix dtype.
    ///
    /// Quantizing runs on `B` itself, which must not be an autodiff backend (burn's autodiff
    /// cannot quantize): a trainable model is loaded on the inner backend and lifted (see
    /// `phi3v::ModelDir::load_trainable`). The quantized weight is held as `B`'s products
    /// read it ([`MixedMatmul::quantize_frozen`]).
    pub fn linear_weight<B: MixedMatmul>(
        &self,
        name: &str,
        d_input: usize,
        d_output: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>, WeightsError> {
        let block = crate::base_dtype::QUANT_BLOCK as usize;
        match self.storage.quantization {
            Some(scheme) if quantizes(name) && d_output.is_multiple_of(block) => {
                let values = self.read_f32(name, &[d_output, d_input])?;
                // `[out, in]` f32 (the read) is the one whole transient copy; burn's
                // quantizer copies it to `[in, out]` first, flex's a chunk of rows at a time.
                let weight: Tensor<B, 2> =
                    Tensor::from_data(TensorData::new(values, [d_output, d_input]), device);
                Ok(B::quantize_frozen(weight.transpose(), &scheme))
            }
            _ => Ok(self
                .matrix::<B>(name, [d_output, d_input], device)?
                .transpose()),
        }
    }

    /// Names of the tensors that no loader asked for, among `used`: helps report
    /// weights that belong to another architecture.
    pub fn unused<'a>(&'a self, used: &[String]) -> Vec<&'a str> {
        let used: std::collections::HashSet<&str> = used.iter().map(String::as_str).collect();
        self.names()
            .into_iter()
            .filter(|n| !used.contains(n))
            .collect()
    }
}

/// Whether a linear weight named `name` is quantized in a quantized base: all but the
/// output head, whose rounding would shift every logit.
fn quantizes(name: &str) -> bool {
    !name.starts_with("lm_head")
}

/// Reads and checks a safetensors header: its length in bytes and the tensors it lists.
///
/// This is safetensors' own `read_metadata` without the need for the whole file in memory:
/// the header is read on its own and the data's extent is checked against the file's
/// length.
fn read_header(mut file: &File) -> Result<(usize, Metadata), String> {
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix)
        .map_err(|_| "the file is too short to hold a safetensors header".to_string())?;
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_BYTES {
        return Err(format!(
            "its header claims {header_len} bytes, more than the {MAX_HEADER_BYTES} \
             safetensors allows"
        ));
    }
    let Some(data_len) = (file_len - 8).checked_sub(header_len) else {
        return Err(format!(
            "its header claims {header_len} bytes, but the file holds {} after the length",
            file_len - 8
        ));
    };
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    check_offsets(&header, data_len)?;
    let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| e.to_string())?;
    if metadata.data_len() as u64 != data_len {
        return Err(format!(
            "its tensors cover {} bytes of data, but the file holds {data_len}",
            metadata.data_len()
        ));
    }
    Ok((header_len as usize, metadata))
}

/// safetensors' limit on the header's size.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Refuses a header whose tensors claim data past the end of the file, before safetensors
/// parses it: its metadata check adds the claimed data length to the header's without a
/// check, and panics (debug) or wraps (release) when a crafted header's offsets sum to
/// nearly `usize::MAX`. Anything else wrong is left for safetensors to report.
fn check_offsets(header: &[u8], data_len: u64) -> Result<(), String> {
    let Ok(serde_json::Value::Object(tensors)) = serde_json::from_slice(header) else {
        return Ok(());
    };
    for (name, info) in &tensors {
        let end = info
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(serde_json::Value::as_u64);
        if let Some(end) = end.filter(|&end| end > data_len) {
            return Err(format!(
                "tensor `{name}` claims data up to byte {end}, but the file holds {data_len} \
                 bytes of data"
            ));
        }
    }
    Ok(())
}

/// The values an integer `dtype` holds, as `i64` (all of them for a non-integer dtype).
fn int_range(dtype: DType) -> (i64, i64) {
    match dtype {
        DType::I8 => (i8::MIN.into(), i8::MAX.into()),
        DType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DType::U8 => (0, u8::MAX.into()),
        DType::U16 => (0, u16::MAX.into()),
        DType::U32 => (0, u32::MAX.into()),
        DType::U64 => (0, i64::MAX),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Little-endian float bytes of `dtype` (bf16, f16, f32, f64) as `f32`; `None` for any other
/// dtype.
pub fn decode_float(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => decode(bytes, f32::from_le_bytes),
        Dtype::F64 => decode(bytes, |b: [u8; 8]| f64::from_le_bytes(b) as f32),
        Dtype::BF16 => decode(bytes, |b: [u8; 2]| {
            half::bf16::from_bits(u16::from_le_bytes(b)).to_f32()
        }),
        Dtype::F16 => decode(bytes, |b: [u8; 2]| {
            half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
        }),
        _ => return None,
    })
}

fn decode<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
        .collect()
}

/// Writes named f32 tensors to a safetensors file (used for exports and test fixtures).
///
/// `tensors` maps a name to `(shape, values)`; names are written in sorted order so the
/// file is byte-for-byte reproducible.
pub fn save_f32(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), WeightsError> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let bytes: &[u8] = bytemuck_f32(values);
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| WeightsError::BadFile {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{name}`: {e}"),
                })
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize_to_file(views, metadata, path).map_err(|e| WeightsError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The bytes of bf16 values, to read stored little-endian bf16 into.
fn bf16_bytes_mut(values: &mut [half::bf16]) -> &mut [u8] {
    // SAFETY: bf16 is a plain u16 with no padding, any byte pattern is a valid bf16, and
    // safetensors' little-endian layout is the platform's (checked in `bytemuck_f32`).
    unsafe {
        std::slice::from_raw_parts_mut(
            values.as_mut_ptr() as *mut u8,
            std::mem::size_of_val(values),
        )
    }
}

fn bytemuck_f32(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the little-endian
    // layout safetensors wants is the layout of every platform we build for.
    #[cfg(target_endian = "big")]
    compile_error!("safetensors export assumes a little-endian target");
    unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn::backend::Flex;

    fn write(dir: &Path, file: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> PathBuf {
        let map = tensors
            .iter()
            .map(|(n, s, v)| (n.to_string(), (s.clone(), v.clone())))
            .collect();
        let path = dir.join(file);
        save_f32(&path, &map, None).unwrap();
        path
    }

    #[test]
    fn reads_single_file_and_transposes_linear() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            SINGLE_FILE,
            &[("w", vec![2, 3], vec![1., 2., 3., 4., 5., 6.])],
        );
        let w = Weights::open(dir.path()).unwrap();
        let t = w
            .linear_weight::<B>("w", 3, 2, &Default::default())
            .unwrap();
        assert_eq!(t.dims(), [3, 2]);
        assert_eq!(
            t.into_data().to_vec::<f32>().unwrap(),
            vec![1., 4., 2., 5., 3., 6.]
        );
    }

    #[test]
    fn errors_name_tensor_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "a.safetensors", &[("x", vec![2], vec![1., 2.])]);
        let w = Weights::open(&path).unwrap();
        let err = w.read_f32("x", &[3]).unwrap_err().to_string();
        assert!(err.contains("`x`") && err.contains("a.safetensors") && err.contains("[3]"));
        let err = w.read_f32("y", &[2]).unwrap_err().to_string();
        assert!(err.contains("`y`") && err.contains("missing"), "{err}");
        let err = w.read_i64("x", &[2]).unwrap_err().to_string();
        assert!(err.contains("dtype"), "{err}");
    }

    /// An integer the backend's int type cannot hold is an error, not burn's panic.
    #[test]
    fn integers_past_the_backend_range_name_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let big = [1i64, 1 << 40].map(i64::to_le_bytes).concat();
        let view = safetensors::tensor::TensorView::new(Dtype::I64, vec![2], &big).unwrap();
        let path = dir.path().join("ids.safetensors");
        safetensors::serialize_to_file([("ids", view)], None, &path).unwrap();
        let w = Weights::open(&path).unwrap();
        assert_eq!(w.read_i64("ids", &[2]).unwrap(), [1, 1 << 40]);
        // Flex's integers are i32.
        let err = w
            .int_tensor::<B, 1>("ids", [2], &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`ids`")
                && err.contains("ids.safetensors")
                && err.contains("1099511627776"),
            "{err}"
        );
    }

    /// Offsets whose sum overflows `usize` once the header is added: safetensors'
    /// `read_metadata` would panic on the overflow; the reader refuses them first.
    #[test]
    fn offsets_summing_past_the_address_space_are_refused() {
        let size = (1u64 << 61) - 1;
        let tensors: Vec<String> = (0..8u64)
            .map(|i| {
                format!(
                    r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#,
                    i * size,
                    (i + 1) * size
                )
            })
            .collect();
        let header = format!("{{{}}}", tensors.join(","));
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 16]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.safetensors");
        std::fs::write(&path, bytes).unwrap();
        let err = Weights::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("huge.safetensors") && err.contains("`t0`"),
            "{err}"
        );
    }

    #[test]
    fn half_precision_tensors_read_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let values = [1.5f32, -2.25, 0.0078125];
        let f16: Vec<u8> = values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        let bf16: Vec<u8> = values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        let views = vec![
            (
                "h",
                safetensors::tensor::TensorView::new(Dtype::F16, vec![3], &f16).unwrap(),
            ),
            (
                "b",
                safetensors::tensor::TensorView::new(Dtype::BF16, vec![3], &bf16).unwrap(),
            ),
        ];
        let path = dir.path().join("half.safetensors");
        safetensors::serialize_to_file(views, None, &path).unwrap();
        let w = Weights::open(&path).unwrap();
        // These values are exact in both formats.
        assert_eq!(w.read_f32("h", &[3]).unwrap(), values);
        assert_eq!(w.read_f32("b", &[3]).unwrap(), values);
    }

    #[test]
    fn alias_fills_a_missing_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "a.safetensors",
            &[("wte", vec![1], vec![7.]), ("b", vec![1], vec![1.])],
        );
        let mut w = Weights::open(&path).unwrap();
        assert!(w.resolve_alias("embed", "wte"));
        assert_eq!(w.read_f32("embed", &[1]).unwrap(), vec![7.]);
        assert!(!w.resolve_alias("b", "wte"));
        assert_eq!(w.read_f32("b", &[1]).unwrap(), vec![1.]);
    }

    #[test]
    fn sharded_index_and_missing_shard() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "s1.safetensors", &[("a", vec![1], vec![1.])]);
        write(dir.path(), "s2.safetensors", &[("b", vec![1], vec![2.])]);
        let index = r#"{"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}"#;
        std::fs::write(dir.path().join(INDEX_FILE), index).unwrap();
        let w = Weights::open(dir.path()).unwrap();
        assert_eq!(w.read_f32("b", &[1]).unwrap(), vec![2.]);
        assert_eq!(w.names(), vec!["a", "b"]);

        std::fs::remove_file(dir.path().join("s2.safetensors")).unwrap();
        let err = Weights::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(INDEX_FILE) && err.contains("s2.safetensors"),
            "{err}"
        );
    }
}

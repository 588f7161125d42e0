//! The one check an adapter dir passes before a merge or an import uses it.
//!
//! An adapter is two files that must agree with each other and with the model they are
//! applied to. When they do not, the arithmetic still runs: `r = 0` makes the scale
//! `alpha / r` infinite, a config saying `r = 8` beside rank-16 factors doubles every update,
//! a NaN factor spreads through every weight it touches, and a mistyped `target_modules`
//! entry adapts nothing. [`check_adapter`] refuses all of these before anything is computed
//! or written, each error naming the file, the key or tensor, and both values.
//!
//! A merge describes its base by the model dir's safetensors headers
//! ([`BaseTensors::from_model_dir`]), an import by the model's named linear layers
//! ([`BaseTensors::from_model`]); the rules are the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use phi3v_nn::{NamedLinears, Weights};

use crate::config::{PeftConfig, ADAPTER_CONFIG};
use crate::error::PeftError;
use crate::names::{self, AdapterTensor, Factor, PEFT_PREFIX};
use crate::peft::ADAPTER_WEIGHTS;
use crate::targets::{in_unused_vision_layer, matches_any, vision_layer_count};

/// The tensors of the model an adapter is applied to, by their model-dir names
/// (`model.layers.0.self_attn.qkv_proj.weight`) with PyTorch-layout shapes (`[out, in]`).
#[derive(Debug, Clone)]
pub struct BaseTensors {
    shapes: BTreeMap<String, Vec<usize>>,
    /// The CLIP encoder layers the model runs, when the base is a built model: the released
    /// weights hold one more layer, which Phi-3-V never runs, and PEFT adapts it too.
    /// Adapter tensors on it are checked but not applied. `None` for a model dir, which
    /// holds every layer.
    vision_layers: Option<usize>,
    /// Weight files, in the order a merge rewrites them (empty for a built model).
    files: Vec<PathBuf>,
}

impl BaseTensors {
    /// The tensors of the model dir `dir`, from its safetensors headers (the index's shards,
    /// else `model.safetensors`, as the loader picks them); no tensor data is read.
    pub fn from_model_dir(dir: &Path) -> Result<Self, PeftError> {
        let weights = Weights::open(dir)?;
        let shapes = weights
            .names()
            .into_iter()
            .map(|name| Ok((name.to_string(), weights.shape(name)?.to_vec())))
            .collect::<Result<_, PeftError>>()?;
        Ok(Self {
            shapes,
            vision_layers: None,
            files: weights.files().map(Path::to_path_buf).collect(),
        })
    }

    /// The weights and biases of `model`'s linear layers.
    pub fn from_model<B: Backend, M: NamedLinears<B>>(model: &mut M) -> Self {
        let mut shapes = BTreeMap::new();
        model.for_each_linear("", &mut |name, linear| {
            let (d_in, d_out) = linear.dims();
            shapes.insert(format!("{name}.weight"), vec![d_out, d_in]);
            if linear.bias.is_some() {
                shapes.insert(format!("{name}.bias"), vec![d_out]);
            }
        });
        Self {
            shapes,
            vision_layers: Some(vision_layer_count(model)),
            files: Vec::new(),
        }
    }

    /// The model dir's weight files ([`Self::from_model_dir`]).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The stored shape of tensor `name`, if the base has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice)
    }

    /// Module names: those of the 2-D `.weight` tensors (linear layers, embeddings).
    fn modules(&self) -> Vec<&str> {
        self.shapes
            .iter()
            .filter(|(_, shape)| shape.len() == 2)
            .filter_map(|(name, _)| name.strip_suffix(".weight"))
            .collect()
    }

    /// Whether tensors of `module` exist in the weights but not in the built model.
    fn never_run(&self, module: &str) -> bool {
        self.vision_layers
            .is_some_and(|layers| in_unused_vision_layer(module, layers))
    }
}

/// The LoRA factors of one adapted module.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// The module (`model.layers.0.self_attn.qkv_proj`); its base tensor is
    /// `{module}.weight`.
    pub module: String,
    /// Factor A, `[rank, in]`.
    pub a: String,
    /// Factor B, `[out, rank]`.
    pub b: String,
    pub rank: usize,
    /// `alpha / rank` (or over `sqrt(rank)` with rsLoRA), with the module's patterns applied.
    pub scale: f64,
}

/// A tensor saved in full (`modules_to_save`), replacing the base's.
#[derive(Debug, Clone, PartialEq)]
pub struct FullTensor {
    /// The base tensor it replaces (`img_projection.0.weight`).
    pub base: String,
    /// Its name in the adapter file.
    pub name: String,
}

/// An adapter dir that passed [`check_adapter`]: what it changes in the base, and its open
/// weights file to read the values from.
#[derive(Debug)]
pub struct CheckedAdapter {
    pub config: PeftConfig,
    /// `adapter_model.safetensors`.
    pub path: PathBuf,
    pub weights: Weights,
    /// The pairs to apply, in name order (pairs on layers the model never runs left out).
    pub lora: Vec<LoraPair>,
    /// The full copies, in base-name order.
    pub full: Vec<FullTensor>,
}

impl CheckedAdapter {
    /// The values of adapter tensor `name` as f32, in its stored shape.
    pub fn read(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), PeftError> {
        let shape = self.weights.shape(name)?.to_vec();
        let values = self.weights.read_f32(name, &shape)?;
        Ok((shape, values))
    }
}

/// Checks the adapter dir `dir` against the model it is for, before any use of it.
///
/// In order, each failure naming the file and the key or tensor:
/// - `adapter_config.json` reads and its values can work ([`PeftConfig::read`]);
/// - every entry of `target_modules`, and every key of `rank_pattern` and `alpha_pattern`,
///   selects a module of `base` ([`PeftConfig::check_modules`]);
/// - `adapter_model.safetensors` holds at least one tensor, each under PEFT's prefix;
/// - each names a tensor of `base` (`{module}.weight` for a LoRA factor), except the
///   factors on CLIP layers a built model never runs;
/// - each LoRA factor has its partner, the adapted module is selected by `target_modules`,
///   and the shapes agree with the config's rank and the base: `A: [r, in]`,
///   `B: [out, r]`, the base `[out, in]`; a full copy has its base tensor's shape;
/// - every value is finite.
pub fn check_adapter(dir: &Path, base: &BaseTensors) -> Result<CheckedAdapter, PeftError> {
    let config_path = dir.join(ADAPTER_CONFIG);
    let config = PeftConfig::read(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let weights = Weights::open(&path)?;
    let names = weights.names();

    let mut modules = base.modules();
    // The layers the model never runs still count as modules of the base.
    let never_run: Vec<String> = names
        .iter()
        .filter_map(|name| match names::parse(name) {
            Some(AdapterTensor::Lora { module, .. }) if base.never_run(&module) => Some(module),
            _ => None,
        })
        .collect();
    modules.extend(never_run.iter().map(String::as_str));
    config.check_modules(&config_path, &modules)?;

    if names.is_empty() {
        return Err(PeftError::io(&path, "the file holds no adapter tensors"));
    }
    let tensor_error = |tensor: &str, message: String| PeftError::tensor(&path, tensor, message);
    let shape = |name: &str| -> Result<&[usize], PeftError> { Ok(weights.shape(name)?) };
    let mut lora = Vec::new();
    let mut full = Vec::new();
    for &name in &names {
        let parsed = names::parse(name).ok_or_else(|| {
            tensor_error(
                name,
                format!("does not start with `{PEFT_PREFIX}`; is this a PEFT adapter?"),
            )
        })?;
        match parsed {
            AdapterTensor::Full { base: base_name } => {
                let Some(base_shape) = base.shape(&base_name) else {
                    return Err(no_base_tensor(&path, name, &base_name));
                };
                let stored = shape(name)?;
                if stored != base_shape {
                    return Err(tensor_error(
                        name,
                        format!(
                            "shape {stored:?} differs from the base's `{base_name}` {base_shape:?}"
                        ),
                    ));
                }
                full.push(FullTensor {
                    base: base_name,
                    name: name.to_string(),
                });
            }
            AdapterTensor::Lora {
                module,
                factor,
                partner,
            } => {
                let base_name = format!("{module}.weight");
                let base_shape = base.shape(&base_name);
                if base_shape.is_none() && !base.never_run(&module) {
                    return Err(no_base_tensor(&path, name, &base_name));
                }
                if !weights.contains(&partner) {
                    return Err(tensor_error(
                        name,
                        format!("has no {} partner `{partner}`", factor.other()),
                    ));
                }
                if !matches_any(&module, &config.target_modules) {
                    return Err(tensor_error(
                        name,
                        format!(
                            "adapts `{module}`, which no entry of `target_modules` in {} selects",
                            config_path.display()
                        ),
                    ));
                }
                // Each pair is checked once, from its A factor.
                if factor == Factor::B {
                    continue;
                }
                let pair = LoraPair {
                    rank: config.rank_for(&module).0,
                    scale: config.scale_for(&module),
                    a: name.to_string(),
                    b: partner,
                    module,
                };
                check_pair(&pair, &config, &config_path, &path, &weights, base_shape)?;
                if let Some(other) = lora.iter().find(|p: &&LoraPair| p.module == pair.module) {
                    return Err(tensor_error(
                        name,
                        format!(
                            "is a second adapter on `{}`, beside `{}`",
                            pair.module, other.a
                        ),
                    ));
                }
                lora.push(pair);
            }
        }
    }
    if let Some(copy) = full.iter().find(|f| {
        lora.iter()
            .any(|p| f.base == format!("{}.weight", p.module))
    }) {
        return Err(tensor_error(
            &copy.name,
            format!(
                "is a full copy of `{}`, which also has LoRA factors",
                copy.base
            ),
        ));
    }
    for &name in &names {
        check_finite(&weights, &path, name)?;
    }
    // The factors of layers the model never runs are checked, not applied.
    lora.retain(|pair| !base.never_run(&pair.module));
    Ok(CheckedAdapter {
        config,
        path,
        weights,
        lora,
        full,
    })
}

fn no_base_tensor(path: &Path, tensor: &str, base_name: &str) -> PeftError {
    PeftError::tensor(
        path,
        tensor,
        format!(
            "the base model has no tensor `{base_name}` for it (is the adapter for another model?)"
        ),
    )
}

/// The shapes of one LoRA pair against the config's rank and the base weight (`None` for a
/// layer the model never runs).
fn check_pair(
    pair: &LoraPair,
    config: &PeftConfig,
    config_path: &Path,
    path: &Path,
    weights: &Weights,
    base: Option<&[usize]>,
) -> Result<(), PeftError> {
    let (rank, rank_key) = config.rank_for(&pair.module);
    let a = weights.shape(&pair.a)?;
    let b = weights.shape(&pair.b)?;
    for (name, shape, factor, rank_axis) in [(&pair.a, a, Factor::A, 0), (&pair.b, b, Factor::B, 1)]
    {
        if shape.len() != 2 {
            return Err(PeftError::tensor(
                path,
                name,
                format!("is {shape:?}; a {factor} factor is a matrix"),
            ));
        }
        if shape[rank_axis] != rank {
            return Err(PeftError::tensor(
                path,
                name,
                format!(
                    "has rank {} (shape {shape:?}) but {} says `{rank_key}` = {rank}",
                    shape[rank_axis],
                    config_path.display()
                ),
            ));
        }
    }
    if let Some(base) = base {
        if base != [b[0], a[1]] {
            return Err(PeftError::tensor(
                path,
                &pair.a,
                format!(
                    "with `{}` gives an update of shape [{}, {}], which does not fit the base's \
                     `{}.weight` {base:?}",
                    pair.b, b[0], a[1], pair.module
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a tensor holding NaN or an infinity: merged, it would spread to every value of
/// the weight it is added to.
fn check_finite(weights: &Weights, path: &Path, name: &str) -> Result<(), PeftError> {
    let shape = weights.shape(name)?.to_vec();
    let values = weights.read_f32(name, &shape)?;
    let mut bad = values.iter().enumerate().filter(|(_, v)| !v.is_finite());
    if let Some((first, value)) = bad.next() {
        return Err(PeftError::tensor(
            path,
            name,
            format!(
                "holds {} non-finite values (the first, at flat index {first}, is {value})",
                1 + bad.count()
            ),
        ));
    }
    Ok(())
}

//! A random Phi-3-V written as a Hugging Face model dir.
//!
//! The main example and the tests fine-tune a model that trains in minutes on a CPU. It is
//! written to disk in exactly the released layout (`config.json` with `model_type =
//! "phi3_v"`, `preprocessor_config.json`, `tokenizer.json`, `model.safetensors` under the
//! released tensor names), so everything downstream (loading, PEFT export, merging,
//! `phi3v generate`) runs the same code it runs on the real model.
//!
//! Nothing here spells a tensor name: the tensor list is what [`Phi3V::new`] asks a
//! recording [`WeightsView`] for, so the writer and the loader cannot disagree, at any size.
//! The config files are written from the typed configs ([`ConfigJson`],
//! [`PreprocessorConfig`]).
//!
//! # Reproducibility
//!
//! The values come from one [`StdRng`] seeded with the spec's seed, drawn (Box-Muller) for
//! each `N(0, init_std^2)` tensor in the order the model constructs them; norm weights are
//! one and biases zero and draw nothing. The file lists tensors sorted by name. So the bytes
//! of `model.safetensors` depend on the models' construction order: the test
//! `default_spec_writes_the_recorded_weights` pins them for the default spec, which the
//! main example's numbers rest on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use phi3v::decoder::{Phi3Config, RopeScaling};
use phi3v::nn::weights::{save_f32, SINGLE_FILE};
use phi3v::nn::{Init, Recorder, TensorSpec, WeightsError, WeightsView};
use phi3v::processor::PreprocessorConfig;
use phi3v::vision::{Activation, ClipVisionConfig};
use phi3v::{ConfigJson, Phi3V, Phi3VConfig, Phi3VError, VisionSettings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Named f32 tensors, name to `(shape, values)`: what [`save_f32`] writes.
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// What can go wrong while writing a random model dir. Its own type, so that the test kit
/// needs nothing of the trainer; callers map it with `Display`.
#[derive(Debug, thiserror::Error)]
pub enum TinyError {
    /// The spec describes no valid model.
    #[error("tiny model: {0}")]
    Spec(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config did not build a model, or `config.json` could not be written.
    #[error(transparent)]
    Model(#[from] Phi3VError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Sizes of the random model. The vocabulary is always the released one (32064), so the
/// real tokenizer works with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TinySpec {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub vision_hidden_size: usize,
    pub vision_intermediate_size: usize,
    /// CLIP layers in the weights; the model runs all but the last, as Phi-3-V does.
    pub vision_layers: usize,
    pub vision_heads: usize,
    /// Side of a crop in pixels (a multiple of 28: 14-px patches, merged 2x2).
    pub image_size: usize,
    /// Crops of the HD transform (`preprocessor_config.json`).
    pub num_crops: usize,
    /// Standard deviation of the random weights.
    pub init_std: f64,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            vision_hidden_size: 32,
            vision_intermediate_size: 64,
            vision_layers: 3,
            vision_heads: 2,
            image_size: 56,
            num_crops: 4,
            init_std: 0.02,
            seed: 0,
        }
    }
}

/// The released vocabulary size.
const VOCAB: usize = 32064;
/// The released CLIP patch size.
const PATCH: usize = 14;

impl TinySpec {
    /// The model's configuration: the released Phi-3-V's except for the sizes, with
    /// LongRoPE factors (short all one, long `1, 2, 3, ...`) that make the two regimes differ.
    pub fn config(&self) -> Phi3VConfig {
        let half = self.hidden_size / self.num_attention_heads / 2;
        Phi3VConfig {
            text: Phi3Config {
                vocab_size: VOCAB,
                hidden_size: self.hidden_size,
                intermediate_size: self.intermediate_size,
                num_hidden_layers: self.num_hidden_layers,
                num_attention_heads: self.num_attention_heads,
                num_key_value_heads: self.num_attention_heads,
                rms_norm_eps: 1e-5,
                rope_theta: 10000.0,
                max_position_embeddings: 131072,
                original_max_position_embeddings: 4096,
                rope_scaling: Some(RopeScaling {
                    short_factor: vec![1.0; half],
                    long_factor: (0..half).map(|i| 1.0 + i as f64).collect(),
                    attention_factor: None,
                    factor: None,
                }),
                sliding_window: Some(131072),
                bos_token_id: 1,
                eos_token_id: 32000,
                pad_token_id: 32000,
                tie_word_embeddings: false,
            },
            vision: Some(VisionSettings {
                clip: ClipVisionConfig {
                    hidden_size: self.vision_hidden_size,
                    intermediate_size: self.vision_intermediate_size,
                    num_attention_heads: self.vision_heads,
                    num_hidden_layers: self.vision_layers,
                    image_size: self.image_size,
                    patch_size: PATCH,
                    layer_norm_eps: 1e-5,
                    hidden_act: Activation::QuickGelu,
                    num_channels: 3,
                },
            }),
        }
    }

    /// The model dir's `config.json`: [`ConfigJson::from_config`] plus the keys the
    /// released file holds that the model does not read.
    pub fn config_json(&self) -> ConfigJson {
        let mut json = ConfigJson::from_config(&self.config());
        json.torch_dtype = Some("float32".into());
        json.extra.extend([
            ("attention_dropout".to_string(), 0.0.into()),
            ("embd_pdrop".to_string(), 0.0.into()),
            ("resid_pdrop".to_string(), 0.0.into()),
            ("initializer_range".to_string(), self.init_std.into()),
            ("use_cache".to_string(), true.into()),
        ]);
        json
    }

    /// The model dir's `preprocessor_config.json`: the released one with this spec's crops.
    pub fn preprocessor_config(&self) -> PreprocessorConfig {
        PreprocessorConfig {
            num_crops: self.num_crops,
            ..PreprocessorConfig::default()
        }
    }

    /// Every tensor of the weights, in the model's construction order (see
    /// [`tensor_specs`]).
    pub fn tensor_specs(&self) -> Result<Vec<TensorSpec>, TinyError> {
        self.check()?;
        tensor_specs(&self.config())
    }

    /// Random values for every tensor (see [`random_tensors`]): the same spec gives the
    /// same model.
    pub fn random_tensors(&self) -> Result<TensorMap, TinyError> {
        Ok(random_tensors(
            &self.tensor_specs()?,
            self.init_std,
            self.seed,
        ))
    }

    /// Writes the model dir, with `tokenizer` (a `tokenizer.json`) copied in.
    pub fn write(&self, dir: &Path, tokenizer: &Path) -> Result<(), TinyError> {
        let tensors = self.random_tensors()?;
        std::fs::create_dir_all(dir).map_err(|source| TinyError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        self.config_json().write(dir.join("config.json"))?;
        let preprocessor = dir.join("preprocessor_config.json");
        self.preprocessor_config()
            .write(&preprocessor)
            .map_err(|e| TinyError::File {
                path: preprocessor,
                message: e.to_string(),
            })?;
        std::fs::copy(tokenizer, dir.join("tokenizer.json")).map_err(|source| TinyError::Io {
            path: tokenizer.to_path_buf(),
            source,
        })?;
        // Written beside and renamed into place, so a reader never sees half-written weights.
        let path = dir.join(SINGLE_FILE);
        let io = |source| TinyError::Io {
            path: path.clone(),
            source,
        };
        let tmp = tempfile::Builder::new()
            .prefix(".model-")
            .tempfile_in(dir)
            .map_err(io)?;
        save_f32(tmp.path(), &tensors, None)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }

    fn check(&self) -> Result<(), TinyError> {
        if !self.image_size.is_multiple_of(2 * PATCH)
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(TinyError::Spec(format!(
                "image_size {} must be a multiple of 28 and hidden_size {} of num_attention_heads {}",
                self.image_size, self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }
}

/// Every tensor of Phi-3-V weights for `config`: name, stored shape and how it
/// starts, in the order [`Phi3V::new`] constructs them (tensors the model never reads, such
/// as CLIP's last layer, included). Nothing is allocated, so any size is cheap to describe.
pub fn tensor_specs(config: &Phi3VConfig) -> Result<Vec<TensorSpec>, TinyError> {
    let recorder = Recorder::new();
    Phi3V::<Flex>::new(WeightsView::record(&recorder), config, &Default::default())?;
    Ok(recorder.into_specs())
}

/// Values for `specs`: norm weights one, biases zero, the rest `N(0, std^2)` drawn in
/// order from one generator seeded with `seed`. Every value is held in memory as f32, so
/// weights of the released widths want few layers.
pub fn random_tensors(specs: &[TensorSpec], std: f64, seed: u64) -> TensorMap {
    let mut rng = StdRng::seed_from_u64(seed);
    specs
        .iter()
        .map(|spec| {
            let n: usize = spec.shape.iter().product();
            let values = match spec.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Normal => (0..n).map(|_| (normal(&mut rng) * std) as f32).collect(),
            };
            (spec.name.clone(), (spec.shape.clone(), values))
        })
        .collect()
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

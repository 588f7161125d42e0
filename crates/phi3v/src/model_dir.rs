//! Loading a model folder laid out as Hugging Face lays it out: `config.json`,
//! `preprocessor_config.json`, `tokenizer.json`, and safetensors (single or sharded).

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use phi3v_nn::weights::{INDEX_FILE, SINGLE_FILE};
use phi3v_nn::{memory, BaseDtype, BaseStorage, MixedMatmul, Weights, WeightsView};
use phi3v_processor::config::PREPROCESSOR_CONFIG_FILE;
use phi3v_processor::image_processor::{ImageProcessor, ProcessorConfig};
use phi3v_processor::tokenize::Phi3Tokenizer;
use phi3v_processor::{PreprocessorConfig, Processor, ProcessorError};

use crate::config::{Phi3VConfig, CONFIG_FILE};
use crate::error::Phi3VError;
use crate::model::{Phi3V, VISION_PATH};

/// A resolved model folder.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub path: PathBuf,
}

/// The tokenizer's file in a model dir.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

impl ModelDir {
    /// A local folder, or a Hugging Face model id (`owner/name`), checked to hold a whole
    /// model ([`Self::check_files`]).
    ///
    /// A name that exists on disk is a local path. So is a name that looks like one
    /// ([`looks_like_a_path`]: `./m`, `/m`, `~/m`, `a/b/c`, `runs/m` when `runs` is a local
    /// folder): when it does not exist the error is "no such model dir", and the name is
    /// never sent to the hub, where a mistyped local path would only fail as a download.
    /// Other names are model ids: with the `hub` cargo feature they resolve through the
    /// Hugging Face cache layout (`$HF_HOME/hub`, by default `~/.cache/huggingface/hub`)
    /// with the hf-hub crate, a complete snapshot there being used offline, otherwise the
    /// files downloaded into it unless `HF_HUB_OFFLINE` is set; without the feature they
    /// fail, saying so.
    pub fn resolve(name: &str) -> Result<Self, Phi3VError> {
        let path = Path::new(name);
        let dir = if path.exists() {
            if !path.is_dir() {
                return Err(Phi3VError::NotAModelDir {
                    path: path.to_path_buf(),
                    reason: "it is a file, not a folder".into(),
                });
            }
            Self {
                path: path.to_path_buf(),
            }
        } else if looks_like_a_path(name) {
            return Err(Phi3VError::NoSuchModelDir {
                path: path.to_path_buf(),
            });
        } else {
            resolve_model_id(name)?
        };
        dir.check_files()?;
        Ok(dir)
    }

    /// Checks that the folder holds what loading a model and its processor reads:
    /// `config.json`, `tokenizer.json`, `preprocessor_config.json` (unless `config.json` says
    /// the model is a text-only `phi3`), and weights (`model.safetensors`, or
    /// `model.safetensors.index.json`, whose shards the loader checks).
    ///
    /// # Errors
    /// [`Phi3VError::NotAModelDir`] listing every missing file at once.
    pub fn check_files(&self) -> Result<(), Phi3VError> {
        let has = |file: &str| self.path.join(file).is_file();
        let mut missing: Vec<String> = [CONFIG_FILE, TOKENIZER_FILE]
            .into_iter()
            .filter(|f| !has(f))
            .map(String::from)
            .collect();
        if self.has_vision() && !has(PREPROCESSOR_CONFIG_FILE) {
            missing.push(PREPROCESSOR_CONFIG_FILE.into());
        }
        if !has(SINGLE_FILE) && !has(INDEX_FILE) {
            missing.push(format!("weights ({SINGLE_FILE} or {INDEX_FILE})"));
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Phi3VError::NotAModelDir {
            path: self.path.clone(),
            reason: format!("missing {}", missing.join(", ")),
        })
    }

    /// Whether the model has a vision path, as far as `config.json` tells without being
    /// checked (that is [`Self::config`]'s job): every model but a readable `phi3` one.
    fn has_vision(&self) -> bool {
        let model_type = std::fs::read_to_string(self.path.join(CONFIG_FILE))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| json.get("model_type")?.as_str().map(String::from));
        model_type.as_deref() != Some("phi3")
    }

    pub fn config(&self) -> Result<Phi3VConfig, Phi3VError> {
        Phi3VConfig::from_file(self.path.join(CONFIG_FILE))
    }

    /// The model dir's `preprocessor_config.json`. A missing file is an error naming it: the
    /// released model's values silently used for a model trained with others (another
    /// `num_crops`, mean or std) would change every image's tokens.
    pub fn preprocessor_config(&self) -> Result<PreprocessorConfig, Phi3VError> {
        Ok(PreprocessorConfig::read(self.preprocessor_config_path())?)
    }

    pub fn preprocessor_config_path(&self) -> PathBuf {
        self.path.join(PREPROCESSOR_CONFIG_FILE)
    }

    /// The image processor settings: `preprocessor_config.json` (num_crops, mean, std) with
    /// the crop size taken from the vision tower.
    pub fn processor_config(&self, config: &Phi3VConfig) -> Result<ProcessorConfig, Phi3VError> {
        let vision = config
            .vision
            .as_ref()
            .ok_or_else(|| Phi3VError::Config("a text-only model has no image processor".into()))?;
        let processor = ProcessorConfig::from_preprocessor(
            &self.preprocessor_config()?,
            vision.clip.image_size,
            vision.clip.patch_size,
        );
        // The crop size was checked with config.json; what is left to fail (num_crops, mean,
        // std) comes from the preprocessor config, so the error names that file.
        processor.validate().map_err(|e| ProcessorError::InFile {
            path: self.preprocessor_config_path(),
            source: Box::new(e),
        })?;
        Ok(processor)
    }

    /// The model's input processor: its tokenizer, and for a Phi-3-V model its image
    /// processor ([`Self::processor_config`]).
    pub fn processor(&self, config: &Phi3VConfig) -> Result<Processor, Phi3VError> {
        let tokenizer = Phi3Tokenizer::from_file(self.tokenizer_path())?;
        let images = match &config.vision {
            Some(_) => Some(ImageProcessor::new(self.processor_config(config)?)?),
            None => None,
        };
        Ok(Processor::new(tokenizer, images))
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.path.join(TOKENIZER_FILE)
    }

    /// Loads the model with the backend's float type.
    pub fn load_model<B: MixedMatmul>(&self, device: &B::Device) -> Result<Phi3V<B>, Phi3VError> {
        self.load_model_with(device, BaseStorage::default())
    }

    /// Loads the model with its large matrices (linear weights, token embedding) held as
    /// `storage` says: e.g. bf16 to hold a frozen base in half the memory, or q4 linear
    /// weights for QLoRA; the rest, and so the activations, keep the backend's float type.
    /// The default storage is [`ModelDir::load_model`].
    ///
    /// A quantized storage needs a backend that quantizes, which burn's autodiff does not:
    /// load a trainable model with [`ModelDir::load_trainable`].
    ///
    /// On a backend that keeps tensors in host memory, a model that will not fit the
    /// host's available memory is refused before any tensor is read, with the size it
    /// needs.
    pub fn load_model_with<B: MixedMatmul>(
        &self,
        device: &B::Device,
        storage: impl Into<BaseStorage>,
    ) -> Result<Phi3V<B>, Phi3VError> {
        let config = self.config()?;
        let mut weights = Weights::open(&self.path)?;
        // Some fine-tuned models store the token embedding only as the vision path's
        // `wte`.
        weights.resolve_alias(
            "model.embed_tokens.weight",
            &format!("{VISION_PATH}.wte.weight"),
        );
        weights.set_storage(storage);
        if memory::lives_in_host_memory::<B>(device) {
            if let Some(available) = memory::host_available() {
                // The smaller bases the refusal may suggest, as this backend holds them.
                let smaller: Vec<(BaseDtype, BaseStorage)> = [BaseDtype::Bf16, BaseDtype::Q4]
                    .into_iter()
                    .filter_map(|d| Some((d, d.resolve::<B>(device).ok()?)))
                    .collect();
                check_memory(&weights, available, &smaller)?;
            }
        }
        load_model(&weights, &config, device)
    }

    /// Loads the model with its base held as `base_dtype` says, and the storage that
    /// resolved to on `device`.
    pub fn load_model_as<B: MixedMatmul>(
        &self,
        device: &B::Device,
        base_dtype: BaseDtype,
    ) -> Result<(Phi3V<B>, BaseStorage), Phi3VError> {
        let storage = base_dtype
            .resolve::<B>(device)
            .map_err(Phi3VError::Config)?;
        Ok((self.load_model_with(device, storage)?, storage))
    }

    /// [`ModelDir::load_model_as`] for training: the model is loaded on the autodiff
    /// backend's inner backend, which can quantize a q4/q8 base, and lifted onto `B`. Every
    /// loaded tensor is a constant of the graph (the base is frozen); adapters are attached
    /// afterwards.
    pub fn load_trainable<B>(
        &self,
        device: &B::Device,
        base_dtype: BaseDtype,
    ) -> Result<(Phi3V<B>, BaseStorage), Phi3VError>
    where
        B: AutodiffBackend,
        B::InnerBackend: MixedMatmul,
    {
        let (inner, storage) = self.load_model_as::<B::InnerBackend>(device, base_dtype)?;
        Ok((Phi3V::from_inner(inner), storage))
    }
}

/// Refuses weights whose load needs more than `available` bytes, naming the first of the
/// `smaller` bases (a bf16 one, then a q4 one) that would fit.
fn check_memory(
    weights: &Weights,
    available: u64,
    smaller: &[(BaseDtype, BaseStorage)],
) -> Result<(), Phi3VError> {
    let need = weights.memory_need();
    let Err(source) = memory::check_fits(need, available) else {
        return Ok(());
    };
    let hint = smaller
        .iter()
        .map(|(dtype, storage)| (dtype, weights.memory_need_as(*storage).peak()))
        .find(|&(_, peak)| peak < need.peak() && peak <= available)
        .map(|(dtype, peak)| {
            let name = dtype.name();
            format!(
                "; with a {name} base (--base-dtype {name}) it needs {}, which fits",
                memory::gb(peak)
            )
        })
        .unwrap_or_default();
    Err(Phi3VError::OutOfMemory { source, hint })
}

/// Builds the model from opened weights ([`Phi3V::new`] on a loading view).
pub fn load_model<B: MixedMatmul>(
    weights: &Weights,
    config: &Phi3VConfig,
    device: &B::Device,
) -> Result<Phi3V<B>, Phi3VError> {
    Phi3V::new(WeightsView::load(weights), config, device)
}

/// Whether `name` is meant as a local path rather than a Hugging Face model id
/// (`owner/name`, each part letters, digits, `-`, `_` and `.`, not starting or ending with
/// `-` or `.`, without `--` or `..`, at most 96 characters, as the hub allows them).
///
/// A path: it starts with `.`, `/` or `~`; it holds a `\` or a `:`, or more or fewer than
/// one `/`; a part is no valid id part; or its first part is a local folder (`runs/merged`
/// beside a `runs` folder is a mistyped path, not the model `merged` of a user `runs`).
pub fn looks_like_a_path(name: &str) -> bool {
    let id_part = |part: &str| {
        !part.is_empty()
            && part.len() <= 96
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !part.starts_with(['-', '.'])
            && !part.ends_with(['-', '.'])
            && !part.contains("--")
            && !part.contains("..")
    };
    match name.split_once('/') {
        Some((owner, repo)) => !id_part(owner) || !id_part(repo) || Path::new(owner).is_dir(),
        None => true,
    }
}

/// A model id through the Hugging Face cache, downloading what is missing.
#[cfg(feature = "hub")]
fn resolve_model_id(name: &str) -> Result<ModelDir, Phi3VError> {
    let cache = hf_hub::Cache::from_env();
    let not_found = |why: String| {
        Phi3VError::Config(format!(
            "`{name}` is neither a folder nor a model id in the local Hugging Face cache ({}): {why}",
            cache.path().display()
        ))
    };
    let cached = cache.model(name.to_string());
    if let Some(dir) = complete_snapshot(|file| cached.get(file)) {
        return Ok(ModelDir { path: dir });
    }
    if std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v != "0") {
        return Err(not_found(
            "not cached, and HF_HUB_OFFLINE forbids a download".into(),
        ));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .build()
        .map_err(|e| not_found(format!("cannot start a download: {e}")))?;
    let repo = api.model(name.to_string());
    let fetch = |file: &str| repo.get(file).ok();
    complete_snapshot(fetch)
        .map(|path| ModelDir { path })
        .ok_or_else(|| not_found("the download failed (is a network reachable?)".into()))
}

/// Without the `hub` feature a model id cannot be resolved.
#[cfg(not(feature = "hub"))]
fn resolve_model_id(name: &str) -> Result<ModelDir, Phi3VError> {
    Err(Phi3VError::Config(format!(
        "no such model dir: {name}; read as a Hugging Face model id, it needs the `hub` cargo \
         feature of the phi3v crate, which is off in this build"
    )))
}

/// The snapshot folder holding a whole model dir, with files provided by `get` (from the
/// cache, or downloaded): config, tokenizer, optional preprocessor config, and the weights
/// (single file, or the index and every shard it names).
#[cfg(feature = "hub")]
fn complete_snapshot(get: impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    let config = get("config.json")?;
    get("tokenizer.json")?;
    get("preprocessor_config.json");
    if get(phi3v_nn::weights::SINGLE_FILE).is_none() {
        let index = get(phi3v_nn::weights::INDEX_FILE)?;
        let text = std::fs::read_to_string(index).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let mut shards: Vec<&str> = json
            .get("weight_map")?
            .as_object()?
            .values()
            .filter_map(|v| v.as_str())
            .collect();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            get(shard)?;
        }
    }
    config.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::FloatDType;

    /// A budget below the model's need is refused with the sizes, and with the smallest
    /// way out that fits: a bf16 base, else a q4 one; a budget above it passes.
    #[test]
    fn a_model_past_the_memory_budget_is_refused_before_loading() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_phi3v");
        let mut weights = Weights::open(&dir).unwrap();
        let device = Default::default();
        let smaller: Vec<(BaseDtype, BaseStorage)> = [BaseDtype::Bf16, BaseDtype::Q4]
            .into_iter()
            .map(|d| (d, d.resolve::<burn::backend::Flex>(&device).unwrap()))
            .collect();
        let need = weights.memory_need();
        let bf16_need = weights.memory_need_as(smaller[0].1);
        let q4_need = weights.memory_need_as(smaller[1].1);
        assert!(q4_need.resident < bf16_need.resident && bf16_need.peak() < need.peak());
        assert!(check_memory(&weights, need.peak(), &smaller).is_ok());
        let refusal = |weights: &Weights, budget: u64| {
            check_memory(weights, budget, &smaller)
                .unwrap_err()
                .to_string()
        };
        let err = refusal(&weights, bf16_need.peak());
        assert!(
            err.contains("the model needs") && err.contains("--base-dtype bf16"),
            "{err}"
        );
        assert!(q4_need.peak() < bf16_need.peak());
        let err = refusal(&weights, q4_need.peak());
        assert!(err.contains("--base-dtype q4"), "{err}");
        weights.set_storage(Some(FloatDType::BF16));
        let err = refusal(&weights, 1);
        assert!(!err.contains("--base-dtype"), "{err}");
    }

    #[test]
    fn path_like_names_never_reach_the_hub() {
        for name in [
            "/no/such/model",
            "./no/such",
            "../no/such",
            "no-such-folder",
            "~/models/phi3v",
            "runs/a/merged",
            "C:\\models\\phi3v",
            "owner/-name",
            "owner/na..me",
        ] {
            assert!(looks_like_a_path(name), "{name}");
            let err = ModelDir::resolve(name).unwrap_err().to_string();
            assert_eq!(err, format!("no such model dir: {name}"));
        }
        for id in [
            "microsoft/Phi-3-vision-128k-instruct",
            "a/b",
            "user_1/model.v2",
        ] {
            assert!(!looks_like_a_path(id), "{id}");
        }
        // `src/x` names a subfolder of the local `src` (the crate's, where the tests run).
        assert!(Path::new("src").is_dir());
        assert!(looks_like_a_path("src/no-such-model"));
    }

    #[cfg(not(feature = "hub"))]
    #[test]
    fn model_ids_need_the_hub_feature() {
        let err = ModelDir::resolve("microsoft/Phi-3-vision-128k-instruct")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("microsoft/Phi-3-vision-128k-instruct")
                && err.contains("`hub` cargo feature"),
            "{err}"
        );
    }

    #[cfg(feature = "hub")]
    #[test]
    fn model_ids_resolve_through_the_hub_cache_layout() {
        let home = tempfile::tempdir().unwrap();
        let repo = home
            .path()
            .join("hub/models--microsoft--Phi-3-vision-128k-instruct");
        let snapshot = repo.join("snapshots/abc123");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123").unwrap();
        for file in [
            "config.json",
            "tokenizer.json",
            "preprocessor_config.json",
            "model.safetensors",
        ] {
            std::fs::write(snapshot.join(file), "{}").unwrap();
        }
        std::env::set_var("HF_HOME", home.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let dir = ModelDir::resolve("microsoft/Phi-3-vision-128k-instruct").unwrap();
        assert_eq!(dir.path, snapshot);
        // An incomplete snapshot (a shard missing) is not used.
        std::fs::remove_file(snapshot.join("model.safetensors")).unwrap();
        std::fs::write(
            snapshot.join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let err = ModelDir::resolve("microsoft/Phi-3-vision-128k-instruct")
            .unwrap_err()
            .to_string();
        assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
        let err = ModelDir::resolve("microsoft/absent")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("microsoft/absent") && err.contains("cache"),
            "{err}"
        );
        std::env::remove_var("HF_HOME");
        std::env::remove_var("HF_HUB_OFFLINE");
    }
}

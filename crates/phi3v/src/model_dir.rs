//! Loading a model folder laid out as Hugging Face lays it out: `config.json`,
//! `preprocessor_config.json`, `tokenizer.json`, and safetensors (single or sharded).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::FloatDType;
use phi3v_nn::{Weights, WeightsView};
use phi3v_processor::config::PREPROCESSOR_CONFIG_FILE;
use phi3v_processor::image_processor::{ImageProcessor, ProcessorConfig};
use phi3v_processor::tokenize::Phi3Tokenizer;
use phi3v_processor::{PreprocessorConfig, Processor};

use crate::config::Phi3VConfig;
use crate::error::Phi3VError;
use crate::model::{Phi3V, VISION_PATH};

/// A resolved model folder.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub path: PathBuf,
}

impl ModelDir {
    /// A local folder, or a Hugging Face model id (`owner/name`).
    ///
    /// A name that is a folder is used as is; a path-like name (`/..`, `./..`, `../..`) that
    /// is not a folder fails here and is never sent to the hub. Other names are model ids:
    /// with the `hub` cargo feature they resolve through the Hugging Face cache layout
    /// (`$HF_HOME/hub`, by default `~/.cache/huggingface/hub`) with the hf-hub crate, a
    /// complete snapshot there being used offline, otherwise the files downloaded into it
    /// unless `HF_HUB_OFFLINE` is set; without the feature they fail, saying so.
    pub fn resolve(name: &str) -> Result<Self, Phi3VError> {
        let path = Path::new(name);
        if path.is_dir() {
            return Ok(Self {
                path: path.to_path_buf(),
            });
        }
        if !name.contains('/') || name.starts_with('/') || name.starts_with('.') {
            return Err(Phi3VError::Config(format!(
                "`{name}` is neither a folder nor a model id (owner/name): no such folder"
            )));
        }
        resolve_model_id(name)
    }

    pub fn config(&self) -> Result<Phi3VConfig, Phi3VError> {
        Phi3VConfig::from_file(self.path.join(crate::config::CONFIG_FILE))
    }

    /// The model dir's `preprocessor_config.json`; the released model's values when the
    /// file is absent.
    pub fn preprocessor_config(&self) -> Result<PreprocessorConfig, Phi3VError> {
        let path = self.path.join(PREPROCESSOR_CONFIG_FILE);
        if !path.is_file() {
            return Ok(PreprocessorConfig::default());
        }
        PreprocessorConfig::read(&path).map_err(|e| Phi3VError::Config(e.to_string()))
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
        processor.validate()?;
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
        self.path.join("tokenizer.json")
    }

    /// Loads the model with the backend's float type.
    pub fn load_model<B: Backend>(&self, device: &B::Device) -> Result<Phi3V<B>, Phi3VError> {
        self.load_model_with_matrices(device, None)
    }

    /// Loads the model with its large matrices (linear weights, token embedding) in
    /// `matrix_dtype`, e.g. bf16 to hold a frozen base in half the memory; the rest, and so
    /// the activations, keep the backend's float type. `None` is [`ModelDir::load_model`].
    pub fn load_model_with_matrices<B: Backend>(
        &self,
        device: &B::Device,
        matrix_dtype: Option<FloatDType>,
    ) -> Result<Phi3V<B>, Phi3VError> {
        let config = self.config()?;
        let mut weights = Weights::open(&self.path)?;
        // Some fine-tuned models store the token embedding only as the vision path's
        // `wte`.
        weights.resolve_alias(
            "model.embed_tokens.weight",
            &format!("{VISION_PATH}.wte.weight"),
        );
        weights.set_matrix_dtype(matrix_dtype);
        load_model(&weights, &config, device)
    }
}

/// Builds the model from opened weights ([`Phi3V::new`] on a loading view).
pub fn load_model<B: Backend>(
    weights: &Weights,
    config: &Phi3VConfig,
    device: &B::Device,
) -> Result<Phi3V<B>, Phi3VError> {
    Phi3V::new(WeightsView::load(weights), config, device)
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
        "`{name}` is not a folder, and Hugging Face model ids need the `hub` cargo feature of \
         the phi3v crate, which is off in this build"
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

    #[test]
    fn path_like_names_never_reach_the_hub() {
        for name in [
            "/no/such/model",
            "./no/such",
            "../no/such",
            "no-such-folder",
        ] {
            let err = ModelDir::resolve(name).unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains("no such folder"),
                "{err}"
            );
        }
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
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
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

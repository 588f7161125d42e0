//! Sizes of the CLIP vision tower, read from a `CLIPVisionConfig`-style JSON object.

use serde::{Deserialize, Serialize};

use crate::error::VisionError;

/// Activation of the tower's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, what CLIP was trained with.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

/// A CLIP ViT configuration. Defaults are ViT-L/14-336, the released model's tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: Activation,
    pub num_channels: usize,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_attention_heads: 16,
            num_hidden_layers: 24,
            image_size: 336,
            patch_size: 14,
            layer_norm_eps: 1e-5,
            hidden_act: Activation::QuickGelu,
            num_channels: 3,
        }
    }
}

impl ClipVisionConfig {
    /// Reads a config object; unknown keys (projection_dim, dropout, ...) are ignored.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, VisionError> {
        let config: Self = serde_json::from_value(value.clone())
            .map_err(|e| VisionError::Config(format!("vision config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Patches per side of one crop.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Positions of the tower: patches plus the class token.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn validate(&self) -> Result<(), VisionError> {
        let err = |m: String| Err(VisionError::Config(m));
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return err(format!(
                "image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if !self.grid().is_multiple_of(2) {
            return err(format!(
                "{} patches per side cannot be merged 2x2 (image_size / patch_size must be even)",
                self.grid()
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_hidden_layers < 2 {
            return err(
                "the tower needs at least 2 layers (features come from the second to last)".into(),
            );
        }
        Ok(())
    }
}

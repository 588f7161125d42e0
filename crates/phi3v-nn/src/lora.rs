//! Low-rank adapters (LoRA) for linear layers.
//!
//! An adapter adds `s (x A) B` to a frozen layer's output, with `A: [in, r]`,
//! `B: [r, out]` and `s = alpha / r`. `B` starts at zero, so a fresh adapter leaves the
//! model's outputs unchanged.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

/// How the `A` factor is initialised (`B` always starts at zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraInit {
    /// Normal with standard deviation `1/r` (not `1/sqrt(r)`), as PEFT's
    /// `init_lora_weights="gaussian"` draws it; the reference recipe's choice.
    Gaussian,
    /// `U(-1/sqrt(in), 1/sqrt(in))`, PEFT's default (Kaiming-uniform with `a = sqrt(5)`).
    Kaiming,
}

/// Rank, scale, dropout and initialisation of the adapters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Dropout on the adapter's input during training (0 disables it).
    pub dropout: f64,
    pub init: LoraInit,
}

impl Default for LoraConfig {
    /// The reference recipe: r 64, alpha 2r, no dropout, gaussian A.
    fn default() -> Self {
        Self {
            rank: 64,
            alpha: 128.0,
            dropout: 0.0,
            init: LoraInit::Gaussian,
        }
    }
}

impl LoraConfig {
    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Checks that adapters with these settings can train, before any is built: a rank of
    /// 0 makes `alpha / r` infinite, a NaN or non-positive alpha makes every update NaN or
    /// nothing, and a dropout of 1 or more keeps no input (burn's Bernoulli sampler panics
    /// past 1). Without this check each shows up steps later as a non-finite loss.
    ///
    /// The message names the setting and its value, with the `phi3v train` flag that sets
    /// it in parentheses.
    pub fn validate(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err(format!(
                "lora rank (--lora-rank) must be >= 1, got {}",
                self.rank
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!(
                "lora alpha (--lora-alpha) must be a finite number > 0, got {}",
                self.alpha
            ));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(format!(
                "lora dropout (--lora-dropout) must be in [0, 1), got {}",
                self.dropout
            ));
        }
        Ok(())
    }
}

/// The trainable low-rank pair of one linear layer.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `[d_input, rank]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// `[rank, d_output]`.
    pub lora_b: Param<Tensor<B, 2>>,
    #[module(skip)]
    pub scale: f64,
    #[module(skip)]
    pub dropout: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter (zero `B`, so the layer's output is unchanged).
    pub fn new(d_input: usize, d_output: usize, config: &LoraConfig, device: &B::Device) -> Self {
        let r = config.rank;
        let dist = match config.init {
            LoraInit::Gaussian => Distribution::Normal(0.0, 1.0 / r as f64),
            LoraInit::Kaiming => {
                let bound = 1.0 / (d_input as f64).sqrt();
                Distribution::Uniform(-bound, bound)
            }
        };
        Self {
            lora_a: Param::from_tensor(Tensor::random([d_input, r], dist, device)),
            lora_b: Param::from_tensor(Tensor::zeros([r, d_output], device)),
            scale: config.scale(),
            dropout: config.dropout,
        }
    }

    /// An adapter from given factors (for imports).
    pub fn from_tensors(lora_a: Tensor<B, 2>, lora_b: Tensor<B, 2>, scale: f64) -> Self {
        Self {
            lora_a: Param::from_tensor(lora_a),
            lora_b: Param::from_tensor(lora_b),
            scale,
            dropout: 0.0,
        }
    }

    pub fn rank(&self) -> usize {
        self.lora_a.dims()[1]
    }

    /// The dense update `s A B` that merging adds to the base weight.
    ///
    /// # Shapes
    /// - returns `[d_input, d_output]`
    pub fn delta(&self) -> Tensor<B, 2> {
        self.lora_a
            .val()
            .matmul(self.lora_b.val())
            .mul_scalar(self.scale)
    }

    /// # Shapes
    /// - `x`: `[..., d_input]`
    /// - returns `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let [d_in, _] = self.lora_a.dims();
        let [_, d_out] = self.lora_b.dims();
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let y = self.up(self.down(x.reshape([rows, d_in])), 0..d_out);
        let mut out = dims;
        out[D - 1] = d_out;
        y.reshape(out)
    }

    /// The first factor: `dropout(x) A` (dropout only while training).
    ///
    /// # Shapes
    /// - `x`: `[rows, d_input]`
    /// - returns `[rows, rank]`
    pub fn down(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let device = x.device();
        let x = if self.dropout > 0.0 && B::ad_enabled(&device) {
            let keep = x.random_like(Distribution::Bernoulli(1.0 - self.dropout));
            x * keep.div_scalar(1.0 - self.dropout)
        } else {
            x
        };
        x.matmul(self.lora_a.val())
    }

    /// The second factor on output columns `columns`: `s h B[:, columns]`. A layer whose
    /// output is cut in parts shares one [`LoraAdapter::down`] (and so one dropout mask)
    /// between them, as one adapter over the whole output would.
    ///
    /// # Shapes
    /// - `h`: `[rows, rank]`
    /// - returns `[rows, columns.len()]`
    pub fn up(&self, h: Tensor<B, 2>, columns: std::ops::Range<usize>) -> Tensor<B, 2> {
        let b = self.lora_b.val();
        let [r, d_out] = b.dims();
        let b = if columns == (0..d_out) {
            b
        } else {
            b.slice([0..r, columns])
        };
        h.matmul(b).mul_scalar(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut LoraConfig)) -> Result<(), String> {
        let mut config = LoraConfig::default();
        edit(&mut config);
        config.validate()
    }

    #[test]
    fn the_reference_settings_and_edge_values_that_train_pass() {
        assert_eq!(LoraConfig::default().validate(), Ok(()));
        assert_eq!(with(|c| c.rank = 1), Ok(()));
        assert_eq!(with(|c| c.dropout = 0.999), Ok(()));
        assert_eq!(with(|c| c.alpha = 1e-6), Ok(()));
    }

    #[test]
    fn settings_that_cannot_train_name_the_flag_and_the_value() {
        let err = with(|c| c.rank = 0).unwrap_err();
        assert_eq!(err, "lora rank (--lora-rank) must be >= 1, got 0");
        for alpha in [f64::NAN, f64::INFINITY, 0.0, -2.0] {
            let err = with(|c| c.alpha = alpha).unwrap_err();
            assert!(err.starts_with("lora alpha (--lora-alpha)"), "{err}");
            assert!(err.ends_with(&format!("got {alpha}")), "{err}");
        }
        for dropout in [1.0, 2.0, -0.1, f64::NAN] {
            let err = with(|c| c.dropout = dropout).unwrap_err();
            assert!(err.starts_with("lora dropout (--lora-dropout)"), "{err}");
            assert!(err.ends_with(&format!("got {dropout}")), "{err}");
        }
    }
}

//! AdamW, the learning-rate schedule and global gradient-norm clipping, as PyTorch and the
//! Hugging Face `Trainer` define them (so a run can be compared step for step).
//!
//! The state is kept per parameter name (see [`crate::params`]), which makes it trivial to
//! save and to restore on resume.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// AdamW settings; the defaults are the reference recipe's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (`p -= lr * wd * p`), applied to every trainable tensor
    /// except biases, as the Hugging Face `Trainer` groups them.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-7,
            weight_decay: 0.01,
        }
    }
}

/// First and second moments of one parameter, flattened.
#[derive(Debug, Clone)]
pub struct Moments<B: Backend> {
    pub m: Tensor<B, 1>,
    pub v: Tensor<B, 1>,
}

/// AdamW with per-name state. `steps` counts updates (PyTorch's `state["step"]`).
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    pub steps: u64,
    pub state: BTreeMap<String, Moments<B>>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            steps: 0,
            state: BTreeMap::new(),
        }
    }

    /// Starts an update: every following [`AdamW::update`] uses the same step count.
    pub fn begin_step(&mut self) {
        self.steps += 1;
    }

    /// PyTorch's AdamW on one parameter: decay, moment updates, bias-corrected step.
    ///
    /// # Shapes
    /// - `param`, `grad`: `[numel]`
    /// - returns the new `[numel]` value
    pub fn update(
        &mut self,
        name: &str,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        lr: f64,
    ) -> Tensor<B, 1> {
        let c = &self.config;
        let t = self.steps.max(1) as i32;
        let decay = if name.ends_with(".bias") {
            0.0
        } else {
            c.weight_decay
        };
        let param = if decay > 0.0 {
            param.mul_scalar(1.0 - lr * decay)
        } else {
            param
        };
        let moments = self.state.remove(name).unwrap_or_else(|| Moments {
            m: grad.zeros_like(),
            v: grad.zeros_like(),
        });
        let m = moments.m.mul_scalar(c.beta1) + grad.clone().mul_scalar(1.0 - c.beta1);
        let v = moments.v.mul_scalar(c.beta2) + grad.powi_scalar(2).mul_scalar(1.0 - c.beta2);
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        let denom = v.clone().sqrt().div_scalar(bias2.sqrt()).add_scalar(c.eps);
        let new = param - m.clone().div(denom).mul_scalar(lr / bias1);
        self.state.insert(name.to_string(), Moments { m, v });
        new
    }
}

/// How the learning rate moves after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Linear decay to zero at the last step (the reference recipe).
    Linear,
    /// Half-cosine decay to zero.
    Cosine,
    /// Constant after warmup.
    Constant,
}

impl ScheduleKind {
    /// Every kind, by the name [`FromStr`](std::str::FromStr) reads.
    pub const NAMES: [&'static str; 3] = ["linear", "cosine", "constant"];
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            "constant" => Ok(Self::Constant),
            other => Err(format!(
                "unknown schedule `{other}` (expected one of {:?})",
                Self::NAMES
            )),
        }
    }
}

/// Warmup then decay, as `transformers.get_{linear,cosine,constant}_schedule_with_warmup`:
/// update `k` (from 0) uses `lr(k)`, so with warmup the first update has learning rate 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl Schedule {
    /// The learning rate of update `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        let (s, w, n) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < self.warmup_steps {
            return self.peak_lr * s / w.max(1.0);
        }
        let progress = ((s - w) / (n - w).max(1.0)).clamp(0.0, 1.0);
        let factor = match self.kind {
            ScheduleKind::Linear => ((n - s) / (n - w).max(1.0)).max(0.0),
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            ScheduleKind::Constant => 1.0,
        };
        self.peak_lr * factor
    }
}

/// The global L2 norm of `grads` and the factor PyTorch's `clip_grad_norm_` multiplies
/// them by (`min(1, max_norm / (norm + 1e-6))`; `None` when `max_norm` is 0, no clipping),
/// both left on the device: reading the norm back would wait for the whole backward pass
/// on a GPU, so the trainer reads it only when it logs.
///
/// # Shapes
/// - returns `[1]` and `[1]`
pub fn clip_factor<B: Backend>(
    grads: &[Tensor<B, 1>],
    max_norm: f64,
    device: &B::Device,
) -> (Tensor<B, 1>, Option<Tensor<B, 1>>) {
    let norm = match grads {
        [] => Tensor::zeros([1], device),
        _ => {
            let sums: Vec<Tensor<B, 1>> = grads
                .iter()
                .map(|g| g.clone().powi_scalar(2).sum())
                .collect();
            Tensor::cat(sums, 0).sum().sqrt()
        }
    };
    // As PyTorch computes it, in f32 on the device: `max_norm / (norm + 1e-6)`, clamped.
    let factor = (max_norm > 0.0).then(|| {
        Tensor::full([1], max_norm, device)
            .div(norm.clone().add_scalar(1e-6))
            .clamp_max(1.0)
    });
    (norm, factor)
}

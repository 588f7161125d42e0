//! LongRoPE rotary position embedding ("su" scaling), as Phi-3-128K uses it.
//!
//! Three details decide parity with the reference and are easy to get wrong:
//! - the per-frequency factors DIVIDE the frequencies: `inv_freq[i] = 1 / (f[i] *
//!   theta^(2i/d))`;
//! - one factor set serves a whole forward: the long set when the forward's largest
//!   position is at or past `original_max_position_embeddings`, the short one otherwise;
//! - cos and sin are multiplied by a magnitude scale `sqrt(1 + ln(r) / ln(orig_max))`
//!   (with `r = max_pos / orig_max`) for short sequences too.
//!
//! Rotation pairs dimension `i` with `i + d/2` (rotate-half), not adjacent dimensions.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::config::Phi3Config;

/// Precomputed inverse frequencies of both factor sets and the magnitude scale.
#[derive(Debug, Clone)]
pub struct LongRope {
    head_dim: usize,
    short_inv_freq: Vec<f32>,
    /// `None` for plain RoPE.
    long_inv_freq: Option<Vec<f32>>,
    original_max_position_embeddings: usize,
    scale: f32,
}

/// Inverse frequencies in f32, computed step by step as the reference computes them so
/// that rounding matches.
fn inv_freq(head_dim: usize, theta: f64, factors: Option<&[f64]>) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            let base = (theta as f32).powf(exponent);
            let factor = factors.map_or(1.0, |f| f[i] as f32);
            1.0 / (factor * base)
        })
        .collect()
}

impl LongRope {
    pub fn new(config: &Phi3Config) -> Self {
        let head_dim = config.head_dim();
        let orig = config.original_max_position_embeddings;
        match &config.rope_scaling {
            None => Self {
                head_dim,
                short_inv_freq: inv_freq(head_dim, config.rope_theta, None),
                long_inv_freq: None,
                original_max_position_embeddings: orig,
                scale: 1.0,
            },
            Some(s) => {
                let ratio = s
                    .factor
                    .unwrap_or(config.max_position_embeddings as f64 / orig as f64);
                let scale = s.attention_factor.unwrap_or(if ratio <= 1.0 {
                    1.0
                } else {
                    (1.0 + ratio.ln() / (orig as f64).ln()).sqrt()
                });
                Self {
                    head_dim,
                    short_inv_freq: inv_freq(head_dim, config.rope_theta, Some(&s.short_factor)),
                    long_inv_freq: Some(inv_freq(
                        head_dim,
                        config.rope_theta,
                        Some(&s.long_factor),
                    )),
                    original_max_position_embeddings: orig,
                    scale: scale as f32,
                }
            }
        }
    }

    /// The cos/sin magnitude scale (1 without scaling).
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Whether a forward whose largest position id is `max_position` uses the long factors.
    pub fn uses_long_factors(&self, max_position: usize) -> bool {
        self.long_inv_freq.is_some() && max_position + 1 > self.original_max_position_embeddings
    }

    /// The inverse frequencies a forward with this largest position id uses.
    pub fn inv_freq(&self, max_position: usize) -> &[f32] {
        match &self.long_inv_freq {
            Some(long) if self.uses_long_factors(max_position) => long,
            _ => &self.short_inv_freq,
        }
    }

    /// cos and sin tables for the given positions.
    ///
    /// # Shapes
    /// - `positions`: `[batch, seq]`
    /// - returns `([batch, 1, seq, head_dim], [batch, 1, seq, head_dim])`, ready to
    ///   broadcast over heads
    pub fn cos_sin<B: Backend>(
        &self,
        positions: Tensor<B, 2, Int>,
        max_position: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let device = positions.device();
        let [batch, seq] = positions.dims();
        let half = self.head_dim / 2;
        let inv = Tensor::<B, 1>::from_data(
            TensorData::new(self.inv_freq(max_position).to_vec(), [half]),
            &device,
        )
        .reshape([1, 1, half])
        .expand([batch, seq, half]);
        let freqs = positions
            .float()
            .reshape([batch, seq, 1])
            .expand([batch, seq, half])
            * inv;
        let emb =
            Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([batch, 1, seq, self.head_dim]);
        (
            emb.clone().cos().mul_scalar(self.scale),
            emb.sin().mul_scalar(self.scale),
        )
    }
}

/// Applies the rotation to queries or keys.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - `cos`, `sin`: `[batch, 1, seq, head_dim]`
/// - returns `[batch, heads, seq, head_dim]`
pub fn apply_rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, h, s, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..half]);
    let x2 = x.clone().slice([0..b, 0..h, 0..s, half..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.expand([b, h, s, d]) + rotated * sin.expand([b, h, s, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_scale_and_factor_choice() {
        let rope = LongRope::new(&Phi3Config::phi3_vision_128k());
        assert!((rope.scale() - (17.0f32 / 12.0).sqrt()).abs() < 1e-6);
        assert!(!rope.uses_long_factors(4095));
        assert!(rope.uses_long_factors(4096));
        // Factors divide: the first long factor 1.03 shrinks the first frequency (1.0).
        assert!((rope.inv_freq(5000)[0] - 1.0 / 1.03).abs() < 1e-6);
        assert!((rope.inv_freq(10)[0] - 1.0 / 1.05).abs() < 1e-6);
    }
}

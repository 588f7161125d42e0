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

    /// The rotary tables for the given positions, repeated over `heads`.
    ///
    /// # Shapes
    /// - `positions`: `[batch, seq]`
    pub fn tables<B: Backend>(
        &self,
        positions: Tensor<B, 2, Int>,
        max_position: usize,
        heads: usize,
    ) -> RotaryTables<B> {
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
        let freqs = freqs.reshape([batch, seq, 1, half]);
        let cos = freqs.clone().cos().mul_scalar(self.scale);
        let sin = freqs.sin().mul_scalar(self.scale);
        RotaryTables {
            cos: Tensor::cat(vec![cos.clone(), cos], 3).repeat_dim(2, heads),
            signed_sin: Tensor::cat(vec![sin.clone().neg(), sin], 3).repeat_dim(2, heads),
            heads,
        }
    }
}

/// The rotary tables one forward pass shares between its layers, laid out as the queries
/// and keys are when they leave `qkv_proj` (`[batch, seq, heads, head_dim]`) and stored
/// in full.
///
/// Why in full: every product with them is then between two contiguous tensors of one
/// shape, which flex runs in SIMD. Broadcast over heads, the same products walked both
/// operands element by element. The tables cost `2 x seq x heads x head_dim` values per
/// forward (25 MB at 2,523 tokens and Phi-3-V's 32 heads), not per layer.
#[derive(Debug, Clone)]
pub struct RotaryTables<B: Backend> {
    /// `cos(position x inv_freq) x scale`, the frequencies twice over (`[batch, seq, heads,
    /// head_dim]`).
    pub cos: Tensor<B, 4>,
    /// `sin(position x inv_freq) x scale` with its first half negated (`[batch, seq,
    /// heads, head_dim]`): `rotate_half(x) * sin` is `swap_halves(x) * signed_sin`, and
    /// negating the table once replaces negating half of every query and key.
    pub signed_sin: Tensor<B, 4>,
    /// The heads the tables are repeated over.
    pub heads: usize,
}

impl<B: Backend> RotaryTables<B> {
    /// Applies the rotation to queries or keys with up to [`RotaryTables::heads`] heads
    /// (grouped-query keys take the first `heads` copies, which are all the same).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, heads, head_dim]`
    /// - returns `[batch, seq, heads, head_dim]`
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, s, h, d] = x.dims();
        let half = d / 2;
        let (cos, sin) = if h == self.heads {
            (self.cos.clone(), self.signed_sin.clone())
        } else {
            (
                self.cos.clone().slice([0..b, 0..s, 0..h, 0..d]),
                self.signed_sin.clone().slice([0..b, 0..s, 0..h, 0..d]),
            )
        };
        let swapped = Tensor::cat(
            vec![
                x.clone().slice([0..b, 0..s, 0..h, half..d]),
                x.clone().slice([0..b, 0..s, 0..h, 0..half]),
            ],
            3,
        );
        x * cos + swapped * sin
    }
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

    /// The tables rotate exactly as the reference writes it, `x cos + rotate_half(x) sin`
    /// with `rotate_half(x) = cat(-x2, x1)` and the tables broadcast over heads: bit for
    /// bit, for queries with all the heads and for keys with fewer (grouped-query).
    #[test]
    fn tables_rotate_as_the_reference_formula() {
        use burn::backend::Flex;
        use burn::tensor::Distribution;
        let device = Default::default();
        let config = Phi3Config::phi3_vision_128k();
        let rope = LongRope::new(&config);
        let (b, s, h, d) = (2, 7, 4, config.head_dim());
        let positions =
            Tensor::<Flex, 1, Int>::arange(3..3 + (b * s) as i64, &device).reshape([b, s]);
        let tables = rope.tables(positions.clone(), 5000, h);
        // The reference's tables: `[batch, seq, 1, head_dim]`, broadcast over heads.
        let half = d / 2;
        let inv = Tensor::<Flex, 1>::from_data(
            TensorData::new(rope.inv_freq(5000).to_vec(), [half]),
            &device,
        );
        let freqs = positions.float().reshape([b, s, 1]) * inv.reshape([1, 1, half]);
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([b, s, 1, d]);
        let cos = emb.clone().cos().mul_scalar(rope.scale());
        let sin = emb.sin().mul_scalar(rope.scale());
        for heads in [h, h / 2] {
            let x = Tensor::<Flex, 4>::random(
                [b, s, heads, d],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let x1 = x.clone().slice([0..b, 0..s, 0..heads, 0..half]);
            let x2 = x.clone().slice([0..b, 0..s, 0..heads, half..d]);
            let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
            let want = x.clone() * cos.clone().expand([b, s, heads, d])
                + rotated * sin.clone().expand([b, s, heads, d]);
            assert_eq!(
                tables.apply(x).into_data(),
                want.into_data(),
                "{heads} heads"
            );
        }
    }
}

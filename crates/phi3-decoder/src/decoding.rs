//! Decoding: choosing the next token from logits, greedily or by sampling with a
//! temperature, top-k and top-p, seeded.
//!
//! It runs on the host over one row of logits: a few tens of thousands of floats per step,
//! and a seeded CPU RNG makes runs reproducible on every backend.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::DecoderError;

/// How to pick tokens. `temperature == 0` means greedy (argmax).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodingConfig {
    pub temperature: f32,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`.
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl Default for DecodingConfig {
    fn default() -> Self {
        Self::greedy()
    }
}

impl DecodingConfig {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }

    /// Checks that every setting can pick a token: a NaN temperature would turn every
    /// probability into NaN, `top_k = 0` would keep no token, and a `top_p` outside `(0, 1]`
    /// is either empty or meaningless.
    ///
    /// # Errors
    /// [`DecoderError::Config`] naming the setting (with its command-line flag) and value.
    pub fn validate(&self) -> Result<(), DecoderError> {
        let bad =
            |what: &str, value: String| Err(DecoderError::Config(format!("{what}, got {value}")));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature (--temperature) must be a finite number >= 0 (0 is greedy)",
                self.temperature.to_string(),
            );
        }
        if self.top_k == Some(0) {
            return bad("top-k (--top-k) must be >= 1", "0".into());
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad("top-p (--top-p) must be in (0, 1]", p.to_string());
            }
        }
        Ok(())
    }
}

/// Picks each next token as its [`DecodingConfig`] says, with its own seeded generator.
#[derive(Debug, Clone)]
pub struct TokenDecoder {
    config: DecodingConfig,
    rng: StdRng,
}

impl TokenDecoder {
    pub fn new(config: DecodingConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        Self { config, rng }
    }

    /// Picks the next token id from one row of logits (`[vocab]`). The config is assumed
    /// valid ([`DecodingConfig::validate`]); an invalid one still returns a token, never
    /// panics.
    pub fn next_token(&mut self, logits: &[f32]) -> u32 {
        if self.config.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = self.config.temperature;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if let Some(k) = self.config.top_k {
            order.truncate(k.max(1));
        }
        let top = logits[order[0]];
        let mut probs: Vec<f32> = order
            .iter()
            .map(|&i| ((logits[i] - top) / t).exp())
            .collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(p) = self.config.top_p {
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, q) in probs.iter().enumerate() {
                cumulative += q;
                if cumulative >= p {
                    keep = i + 1;
                    break;
                }
            }
            order.truncate(keep);
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut draw = self.rng.random::<f32>() * total;
        for (i, q) in probs.iter().enumerate() {
            draw -= q;
            if draw <= 0.0 {
                return order[i] as u32;
            }
        }
        order[probs.len() - 1] as u32
    }
}

/// Index of the largest value; the first one on ties, as `torch.argmax` does.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_first_max() {
        let mut s = TokenDecoder::new(DecodingConfig::greedy());
        assert_eq!(s.next_token(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let logits = [0.5, 2.0, 1.9, 1.8, -3.0];
        let mut s = TokenDecoder::new(DecodingConfig {
            temperature: 1.0,
            top_k: Some(1),
            top_p: None,
            seed: 3,
        });
        assert!((0..20).all(|_| s.next_token(&logits) == 1));
        let cfg = DecodingConfig {
            temperature: 1.5,
            top_k: None,
            top_p: Some(0.9),
            seed: 7,
        };
        let a: Vec<u32> = (0..50)
            .scan(TokenDecoder::new(cfg.clone()), |s, _| {
                Some(s.next_token(&logits))
            })
            .collect();
        let b: Vec<u32> = (0..50)
            .scan(TokenDecoder::new(cfg), |s, _| Some(s.next_token(&logits)))
            .collect();
        assert_eq!(a, b);
        assert!(
            a.iter().all(|&t| t != 4),
            "top-p 0.9 must drop the unlikely token"
        );
        assert!(
            a.iter().any(|&t| t != a[0]),
            "temperature sampling must vary"
        );
    }

    #[test]
    fn invalid_settings_are_refused_naming_the_flag() {
        let with = |temperature: f32, top_k: Option<usize>, top_p: Option<f32>| DecodingConfig {
            temperature,
            top_k,
            top_p,
            seed: 0,
        };
        for (config, flag) in [
            (with(f32::NAN, None, None), "--temperature"),
            (with(-0.5, None, None), "--temperature"),
            (with(f32::INFINITY, None, None), "--temperature"),
            (with(1.0, Some(0), None), "--top-k"),
            (with(1.0, None, Some(2.0)), "--top-p"),
            (with(1.0, None, Some(0.0)), "--top-p"),
            (with(1.0, None, Some(f32::NAN)), "--top-p"),
        ] {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{config:?}: {err}");
        }
        with(0.0, Some(1), Some(1.0)).validate().unwrap();
        with(0.7, Some(50), Some(0.9)).validate().unwrap();
    }
}

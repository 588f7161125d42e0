//! Deterministic train/validation split by product.
//!
//! Each product code is hashed with the seed; the hash alone decides the side. So:
//!
//! - a product is never on both sides, even if it appears in several rows (or catalogues);
//! - the split does not depend on row order, on which other rows exist, or on the platform:
//!   adding rows to a catalogue never moves an existing product to the other side;
//! - the same seed gives the same split on every run.
//!
//! The hash is SplitMix64 (a fixed, documented function rather than `std`'s hasher, whose
//! output may change between Rust releases).
//!
//! ```
//! use phi3v_data::split::{split_by_product, SplitConfig};
//!
//! let codes: Vec<i64> = (0..1000).collect();
//! let config = SplitConfig { seed: 7, validation_fraction: 0.1 };
//! let split = split_by_product(codes, |c| *c, &config);
//! assert_eq!(split.train.len() + split.validation.len(), 1000);
//! assert!((60..140).contains(&split.validation.len()));
//! ```

use serde::{Deserialize, Serialize};

use crate::DataError;

/// How to split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitConfig {
    /// Seed of the hash: another seed gives another (equally deterministic) split.
    pub seed: u64,
    /// Expected share of products in the validation set, in `(0, 1)` (see
    /// [`SplitConfig::validate`]).
    pub validation_fraction: f64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            validation_fraction: 0.1,
        }
    }
}

impl SplitConfig {
    /// Checks that both sides of a split can hold products: a fraction of 0 (or NaN, which
    /// no comparison passes) leaves the validation side empty, 1 or more leaves the
    /// training side empty, and a fine-tuning run needs both. Called before any data is
    /// read, so a bad fraction fails in a moment instead of after loading a catalogue.
    ///
    /// The message names the `phi3v train` flag (`--val-fraction`) and the value.
    pub fn validate(&self) -> Result<(), DataError> {
        let f = self.validation_fraction;
        if f.is_finite() && f > 0.0 && f < 1.0 {
            return Ok(());
        }
        Err(DataError::InvalidConfig(format!(
            "validation fraction (--val-fraction) must be a number in (0, 1), got {f}: {}",
            if f.is_nan() || f <= 0.0 {
                "no product would go to the validation side"
            } else {
                "no product would go to the training side"
            }
        )))
    }
}

/// The two sides of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct Split<T> {
    /// Items for training.
    pub train: Vec<T>,
    /// Items for validation.
    pub validation: Vec<T>,
}

/// SplitMix64's finaliser: a bijective mix of 64 bits.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number in `[0, 1)` for a product, fixed by the seed.
pub fn product_unit(product_code: i64, seed: u64) -> f64 {
    let h = splitmix64(splitmix64(seed) ^ product_code as u64);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a product goes to the validation side.
pub fn is_validation(product_code: i64, config: &SplitConfig) -> bool {
    product_unit(product_code, config.seed) < config.validation_fraction
}

/// Splits items by the product code `code` returns, keeping their order within each side.
pub fn split_by_product<T>(
    items: impl IntoIterator<Item = T>,
    code: impl Fn(&T) -> i64,
    config: &SplitConfig,
) -> Split<T> {
    let mut split = Split {
        train: Vec::new(),
        validation: Vec::new(),
    };
    for item in items {
        if is_validation(code(&item), config) {
            split.validation.push(item);
        } else {
            split.train.push(item);
        }
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fraction(validation_fraction: f64) -> Result<(), DataError> {
        SplitConfig {
            seed: 1,
            validation_fraction,
        }
        .validate()
    }

    #[test]
    fn fractions_strictly_between_zero_and_one_are_valid() {
        for f in [1e-9, 0.1, 0.5, 0.999] {
            assert!(fraction(f).is_ok(), "{f}");
        }
        assert!(SplitConfig::default().validate().is_ok());
    }

    #[test]
    fn fractions_that_empty_a_side_name_the_flag_the_value_and_the_side() {
        for (f, side) in [
            (0.0, "validation"),
            (-0.5, "validation"),
            (f64::NAN, "validation"),
            (1.0, "training"),
            (3.0, "training"),
            (f64::INFINITY, "training"),
        ] {
            let err = fraction(f).unwrap_err().to_string();
            assert!(err.contains("--val-fraction"), "{err}");
            assert!(err.contains(&format!("got {f}")), "{err}");
            assert!(err.contains(&format!("to the {side} side")), "{f}: {err}");
        }
    }
}

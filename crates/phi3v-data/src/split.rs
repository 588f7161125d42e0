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

/// How to split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitConfig {
    /// Seed of the hash: another seed gives another (equally deterministic) split.
    pub seed: u64,
    /// Expected share of products in the validation set, in `[0, 1]`.
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

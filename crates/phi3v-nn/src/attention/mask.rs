//! Which keys each query may see.
//!
//! [`causal_mask`] builds the dense `[q, k]` mask the naive path needs. [`AttentionMask`]
//! describes the same mask by its rules (causal with a cache offset, sliding window, key
//! padding) so that the memory-efficient kernel can generate it tile by tile: a dense
//! mask at 128K tokens would be a 16 GiB tensor on its own.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

/// The causal and padding mask for a forward over `q_len` new positions that follow
/// `past_len` cached ones.
///
/// Query `i` may see key `j` when `j <= past_len + i` (by cache index, as the reference
/// does), key `j` is not padding, and, with a sliding window `w`, `past_len + i - j < w`.
///
/// # Shapes
/// - `padding`: `[batch, past_len + q_len]`, `true` at padding positions
/// - returns `[batch or 1, 1, q_len, past_len + q_len]`, `true` where masked
pub fn causal_mask<B: Backend>(
    q_len: usize,
    past_len: usize,
    sliding_window: Option<usize>,
    padding: Option<Tensor<B, 2, Bool>>,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let k_len = past_len + q_len;
    let keys = Tensor::<B, 1, Int>::arange(0..k_len as i64, device)
        .reshape([1, k_len])
        .expand([q_len, k_len]);
    let queries = Tensor::<B, 1, Int>::arange(past_len as i64..k_len as i64, device)
        .reshape([q_len, 1])
        .expand([q_len, k_len]);
    let mut causal = keys.clone().greater(queries.clone());
    if let Some(window) = sliding_window {
        // Hidden when query - key >= window, i.e. key <= query - window.
        causal = causal.bool_or(keys.lower_equal(queries.sub_scalar(window as i64)));
    }
    let causal = causal.reshape([1, 1, q_len, k_len]);
    match padding {
        Some(padding) => {
            let [batch, len] = padding.dims();
            assert_eq!(
                len, k_len,
                "padding mask covers {len} keys, expected {k_len}"
            );
            causal.expand([batch, 1, q_len, k_len]).bool_or(
                padding
                    .reshape([batch, 1, 1, k_len])
                    .expand([batch, 1, q_len, k_len]),
            )
        }
        None => causal,
    }
}

/// An attention mask described by its rules rather than stored as a `[q, k]` tensor.
///
/// Query `i` (at absolute position `past_len + i`) may see key `j` when
/// - the mask is causal: `j <= past_len + i`;
/// - a sliding window `w` is set: `past_len + i - j < w`;
/// - padding is set: key `j` of that batch row is not padding.
///
/// The padding mask is copied to the host the first time a kernel asks which key tiles
/// need padding or which query rows see no key (the tiled and the naive kernels), and
/// once for every attention call that shares this mask (one per layer). The fused GPU
/// kernels never ask, so a training step on the GPU does not wait for that copy.
#[derive(Clone, Debug)]
pub struct AttentionMask<B: Backend> {
    causal: bool,
    past_len: usize,
    sliding_window: Option<usize>,
    padding: Option<Padding<B>>,
}

#[derive(Clone, Debug)]
struct Padding<B: Backend> {
    /// `[batch, k_len]`, `true` at padding.
    tensor: Tensor<B, 2, Bool>,
    /// The same, row-major, on the host: read back on first use, shared by clones.
    host: Arc<OnceLock<Vec<bool>>>,
    batch: usize,
    len: usize,
}

impl<B: Backend> Padding<B> {
    /// The mask on the host, row-major, read back on first use.
    fn host(&self) -> &[bool] {
        self.host.get_or_init(|| {
            self.tensor
                .to_data()
                .convert::<bool>()
                .to_vec::<bool>()
                .expect("a bool padding mask")
        })
    }
}

/// How the structural (causal and window) rules cover a `[q, k]` tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileKind {
    /// Every key of the tile is hidden from every query: skip the tile.
    Hidden,
    /// Every key is visible to every query (padding aside): no structural mask needed.
    Visible,
    /// Some pairs are hidden: build the tile's mask.
    Partial,
}

impl<B: Backend> AttentionMask<B> {
    /// Every query sees every key (the vision tower's attention).
    pub fn none() -> Self {
        Self {
            causal: false,
            past_len: 0,
            sliding_window: None,
            padding: None,
        }
    }

    /// Causal attention for queries that follow `past_len` cached positions.
    pub fn causal(past_len: usize) -> Self {
        Self {
            causal: true,
            past_len,
            ..Self::none()
        }
    }

    /// Hides keys `window` or more positions behind the query (`None`: no window).
    pub fn with_sliding_window(mut self, window: Option<usize>) -> Self {
        self.sliding_window = window;
        self
    }

    /// Hides padding keys.
    ///
    /// Kernels that need the mask on the host read it back once, on first use
    /// (`batch * k_len` booleans); share one `AttentionMask` across layers to pay that
    /// once per forward.
    ///
    /// # Shapes
    /// - `padding`: `[batch, k_len]`, `true` at padding positions
    pub fn with_padding(mut self, padding: Option<Tensor<B, 2, Bool>>) -> Self {
        self.padding = padding.map(|tensor| {
            let [batch, len] = tensor.dims();
            Padding {
                tensor,
                host: Arc::default(),
                batch,
                len,
            }
        });
        self
    }

    pub fn is_causal(&self) -> bool {
        self.causal
    }

    pub fn past_len(&self) -> usize {
        self.past_len
    }

    pub fn sliding_window(&self) -> Option<usize> {
        self.sliding_window
    }

    /// `[batch, k_len]`, `true` at padding.
    pub fn padding(&self) -> Option<&Tensor<B, 2, Bool>> {
        self.padding.as_ref().map(|p| &p.tensor)
    }

    /// Whether the padding has been copied to the host (a device round trip). The fused
    /// GPU kernels never copy it; tests check that they do not.
    #[doc(hidden)]
    pub fn padding_read_back(&self) -> bool {
        self.padding
            .as_ref()
            .is_some_and(|p| p.host.get().is_some())
    }

    /// The same rules over another backend's tensors (used by the autodiff backend to
    /// hand the mask to its inner backend).
    pub(crate) fn map_padding<B2: Backend>(
        &self,
        f: impl FnOnce(Tensor<B, 2, Bool>) -> Tensor<B2, 2, Bool>,
    ) -> AttentionMask<B2> {
        AttentionMask {
            causal: self.causal,
            past_len: self.past_len,
            sliding_window: self.sliding_window,
            padding: self.padding.clone().map(|p| Padding {
                tensor: f(p.tensor),
                host: p.host,
                batch: p.batch,
                len: p.len,
            }),
        }
    }

    /// Checks the padding mask against the attention's shapes.
    pub(crate) fn check(&self, batch: usize, k_len: usize) {
        if let Some(p) = &self.padding {
            assert_eq!(
                p.len, k_len,
                "padding mask covers {} keys, expected {k_len}",
                p.len
            );
            assert!(
                p.batch == batch || p.batch == 1,
                "padding mask has batch {}, expected {batch} or 1",
                p.batch
            );
        }
    }

    /// The dense mask, for the naive path; `None` when nothing is hidden.
    ///
    /// # Shapes
    /// - returns `[batch or 1, 1, q_len, k_len]`, `true` where masked
    pub fn dense(
        &self,
        q_len: usize,
        k_len: usize,
        device: &B::Device,
    ) -> Option<Tensor<B, 4, Bool>> {
        let structural = (self.causal || self.sliding_window.is_some())
            .then(|| self.structural_tile(0..q_len, 0..k_len, device));
        let padding = self.padding.as_ref().map(|p| {
            assert_eq!(
                p.len, k_len,
                "padding mask covers {} keys, expected {k_len}",
                p.len
            );
            p.tensor
                .clone()
                .reshape([p.batch, 1, 1, k_len])
                .expand([p.batch, 1, q_len, k_len])
        });
        match (structural, padding) {
            (None, None) => None,
            (Some(s), None) => Some(s.reshape([1, 1, q_len, k_len])),
            (None, Some(p)) => Some(p),
            (Some(s), Some(p)) => {
                let batch = p.dims()[0];
                Some(
                    s.reshape([1, 1, q_len, k_len])
                        .expand([batch, 1, q_len, k_len])
                        .bool_or(p),
                )
            }
        }
    }

    /// Classifies the tile of queries `q` (indices into this call's queries) and keys `k`.
    pub(crate) fn tile_kind(&self, q: &Range<usize>, k: &Range<usize>) -> TileKind {
        if q.is_empty() || k.is_empty() {
            return TileKind::Hidden;
        }
        let (a_min, a_max) = (self.past_len + q.start, self.past_len + q.end - 1);
        let (k_min, k_max) = (k.start, k.end - 1);
        let causal_hidden = self.causal && k_min > a_max;
        let window_hidden = self.sliding_window.is_some_and(|w| k_max + w <= a_min);
        if causal_hidden || window_hidden {
            return TileKind::Hidden;
        }
        let causal_visible = !self.causal || k_max <= a_min;
        let window_visible = self.sliding_window.is_none_or(|w| a_max < k_min + w);
        if causal_visible && window_visible {
            TileKind::Visible
        } else {
            TileKind::Partial
        }
    }

    /// The causal and window mask of one tile, built from indices.
    ///
    /// # Shapes
    /// - returns `[q.len(), k.len()]`, `true` where hidden
    pub(crate) fn structural_tile(
        &self,
        q: Range<usize>,
        k: Range<usize>,
        device: &B::Device,
    ) -> Tensor<B, 2, Bool> {
        let (bq, bk) = (q.len(), k.len());
        let p = self.past_len as i64;
        let keys = Tensor::<B, 1, Int>::arange(k.start as i64..k.end as i64, device)
            .reshape([1, bk])
            .expand([bq, bk]);
        let queries = Tensor::<B, 1, Int>::arange(p + q.start as i64..p + q.end as i64, device)
            .reshape([bq, 1])
            .expand([bq, bk]);
        let causal = self.causal.then(|| keys.clone().greater(queries.clone()));
        // Hidden when query - key >= window, i.e. key <= query - window.
        let window = self
            .sliding_window
            .map(|w| keys.lower_equal(queries.sub_scalar(w as i64)));
        match (causal, window) {
            (Some(c), Some(w)) => c.bool_or(w),
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => unreachable!("a tile with neither a causal nor a window rule"),
        }
    }

    /// The padding of keys `k`, or `None` when no row has padding there.
    ///
    /// # Shapes
    /// - returns `[batch or 1, k.len()]`
    pub(crate) fn padding_tile(&self, k: &Range<usize>) -> Option<Tensor<B, 2, Bool>> {
        let p = self.padding.as_ref()?;
        let any =
            (0..p.batch).any(|b| p.host()[b * p.len + k.start..b * p.len + k.end].contains(&true));
        any.then(|| p.tensor.clone().slice([0..p.batch, k.clone()]))
    }

    /// Whether query `i` sees no key at all. Such rows attend uniformly to all keys in
    /// the naive path (every score is `MASK_VALUE`), which the tiled kernel reproduces
    /// separately.
    ///
    /// # Shapes
    /// - returns `[batch or 1, q_len]`, or `None` when every query sees some key
    pub(crate) fn fully_masked_rows(
        &self,
        q_len: usize,
        k_len: usize,
        device: &B::Device,
    ) -> Option<Tensor<B, 2, Bool>> {
        // The structurally visible keys of query i are lo..hi.
        let range = |i: usize| {
            let a = self.past_len + i;
            let lo = self.sliding_window.map_or(0, |w| (a + 1).saturating_sub(w));
            let hi = if self.causal {
                (a + 1).min(k_len)
            } else {
                k_len
            };
            (lo, hi.max(lo))
        };
        let (batch, rows) = match &self.padding {
            None => {
                let rows: Vec<bool> = (0..q_len)
                    .map(|i| {
                        let (lo, hi) = range(i);
                        lo >= hi
                    })
                    .collect();
                (1, rows)
            }
            Some(p) => {
                let mut rows = Vec::with_capacity(p.batch * q_len);
                for b in 0..p.batch {
                    let pad = &p.host()[b * p.len..(b + 1) * p.len];
                    // visible[j] = number of non-padding keys before j.
                    let mut visible = Vec::with_capacity(k_len + 1);
                    visible.push(0usize);
                    for &is_pad in pad {
                        visible.push(visible.last().unwrap() + usize::from(!is_pad));
                    }
                    rows.extend((0..q_len).map(|i| {
                        let (lo, hi) = range(i);
                        visible[hi] == visible[lo]
                    }));
                }
                (p.batch, rows)
            }
        };
        rows.contains(&true)
            .then(|| Tensor::<B, 2, Bool>::from_data(TensorData::new(rows, [batch, q_len]), device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn::backend::Flex;

    #[test]
    fn causal_mask_respects_past_and_padding() {
        let device = Default::default();
        let padding = Tensor::<B, 2, Bool>::from_data(
            TensorData::from([[true, false, false], [false, false, false]]),
            &device,
        );
        let mask = causal_mask::<B>(2, 1, None, Some(padding), &device);
        assert_eq!(mask.dims(), [2, 1, 2, 3]);
        let m = mask.into_data().to_vec::<bool>().unwrap();
        // Row 0 (padding at key 0): query 0 sees keys 1; query 1 sees keys 1, 2.
        assert_eq!(&m[..6], &[true, false, true, true, false, false]);
        assert_eq!(&m[6..], &[false, false, true, false, false, false]);
    }

    #[test]
    fn sliding_window_hides_old_keys() {
        let device = Default::default();
        let m = causal_mask::<B>(3, 0, Some(2), None, &device);
        let m = m.into_data().to_vec::<bool>().unwrap();
        // Query 2 sees keys 1 and 2 only.
        assert_eq!(&m[6..], &[true, false, false]);
    }

    #[test]
    fn dense_equals_causal_mask() {
        let device = Default::default();
        let padding = Tensor::<B, 2, Bool>::from_data(
            TensorData::from([[true, true, false, false, false], [false; 5]]),
            &device,
        );
        let expected = causal_mask::<B>(3, 2, Some(2), Some(padding.clone()), &device);
        let spec = AttentionMask::<B>::causal(2)
            .with_sliding_window(Some(2))
            .with_padding(Some(padding));
        let dense = spec.dense(3, 5, &device).unwrap();
        assert_eq!(dense.into_data(), expected.into_data());
    }

    #[test]
    fn tiles_are_classified_by_the_rules() {
        let m = AttentionMask::<B>::causal(0).with_sliding_window(Some(8));
        assert_eq!(m.tile_kind(&(0..4), &(4..8)), TileKind::Hidden);
        assert_eq!(m.tile_kind(&(4..8), &(0..4)), TileKind::Visible);
        assert_eq!(m.tile_kind(&(4..8), &(4..8)), TileKind::Partial);
        assert_eq!(m.tile_kind(&(16..20), &(0..4)), TileKind::Hidden);
        assert_eq!(m.tile_kind(&(8..12), &(2..6)), TileKind::Partial);
    }

    #[test]
    fn rows_without_keys_are_found() {
        let device = Default::default();
        let padding = Tensor::<B, 2, Bool>::from_data(
            TensorData::from([[true, true, false], [false; 3]]),
            &device,
        );
        let m = AttentionMask::<B>::causal(0).with_padding(Some(padding));
        let rows = m.fully_masked_rows(3, 3, &device).unwrap();
        let rows = rows.into_data().to_vec::<bool>().unwrap();
        assert_eq!(rows, vec![true, true, false, false, false, false]);
        assert!(AttentionMask::<B>::causal(0)
            .fully_masked_rows(3, 3, &device)
            .is_none());
    }
}

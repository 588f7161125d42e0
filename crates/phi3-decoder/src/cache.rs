//! Key/value cache for incremental decoding.
//!
//! Keys are stored after rotation, as the reference stores them: a key keeps the
//! rotation it was computed with, even when a later step switches LongRoPE to the long
//! factors.
//!
//! # Storage
//!
//! Each layer owns one preallocated buffer for keys and one for values, shaped
//! `[batch, kv_heads, capacity, head_dim]`, of which the first `len` positions are valid.
//! A step writes its keys into positions `len..len + new` with [`Tensor::slice_assign`]
//! and attends over the prefix view `0..len + new`, instead of concatenating onto the
//! past: concatenation copies the whole cache every step, O(n²) bytes over a generation,
//! and reallocates each time.
//!
//! The buffers are allocated lazily by the first append to a layer, which is the first
//! moment batch size, head count, head dim, dtype and device are all known. Their
//! capacity is the hint given to [`KvCache::with_capacity`] (the prompt length plus
//! `max_new_tokens`, for a generation loop), or just the first append's length without
//! one.
//!
//! Growth beyond the capacity is allowed: the buffer is reallocated at twice its size
//! (at least what the append needs) and the valid prefix copied over. Doubling keeps the
//! amortised cost per position constant, so callers that don't know the final length
//! (a chat loop, the parity tests' step-by-step decode) still work; callers that do know
//! it size the cache once and never regrow.
//!
//! # Whether a write is really in place
//!
//! `slice_assign` consumes its tensor, so a backend may write into the buffer when
//! nothing else shares it. The cache therefore moves its buffer into the call and keeps
//! no other handle; the prefix view an append returns does share the buffer, so it must
//! be dropped before the next append to the same layer (a layer forward drops it when it
//! returns). Cloning a `KvCache` shares the buffers too, and the next write then copies.
//!
//! burn-flex 0.21 (the CPU backend) copies the whole buffer on every `slice_assign`
//! regardless: its writer makes a second handle to the destination before asking for
//! mutable storage, and copy-on-write then duplicates it. On that backend the
//! preallocation saves the reallocation pattern of `cat` but not the per-step copy (now
//! of the capacity rather than the valid length).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// One layer's buffers and how many positions of them are valid.
#[derive(Debug, Clone)]
struct LayerKv<B: Backend> {
    /// `[batch, kv_heads, capacity, head_dim]`, rotated keys in `0..len`.
    keys: Tensor<B, 4>,
    /// `[batch, kv_heads, capacity, head_dim]`, values in `0..len`.
    values: Tensor<B, 4>,
    len: usize,
}

impl<B: Backend> LayerKv<B> {
    fn capacity(&self) -> usize {
        self.keys.dims()[2]
    }

    /// Zeroed buffers shaped like `like` with room for `capacity` positions.
    ///
    /// # Shapes
    /// - `like`: `[batch, kv_heads, _, head_dim]`
    fn allocate(like: &Tensor<B, 4>, capacity: usize) -> Self {
        let [b, kvh, _, d] = like.dims();
        let device = like.device();
        let zeros = || Tensor::zeros([b, kvh, capacity, d], (&device, like.dtype()));
        Self {
            keys: zeros(),
            values: zeros(),
            len: 0,
        }
    }

    /// Reallocates to at least `needed` positions, doubling, and keeps the valid prefix.
    fn grow(&mut self, needed: usize) {
        let capacity = needed.max(2 * self.capacity());
        let mut grown = Self::allocate(&self.keys, capacity);
        let len = self.len;
        let keep = |t: &Tensor<B, 4>| {
            let [b, kvh, _, d] = t.dims();
            t.clone().slice([0..b, 0..kvh, 0..len, 0..d])
        };
        let [b, kvh, _, d] = self.keys.dims();
        let prefix = [0..b, 0..kvh, 0..len, 0..d];
        grown.keys = grown.keys.slice_assign(prefix.clone(), keep(&self.keys));
        grown.values = grown.values.slice_assign(prefix, keep(&self.values));
        grown.len = len;
        *self = grown;
    }
}

/// Per-layer keys and values seen so far, in preallocated buffers (see the module docs).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<LayerKv<B>>>,
    /// Positions to allocate on a layer's first append (0: as many as that append has).
    capacity_hint: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model with `num_layers` layers, whose buffers start at the
    /// first append's length and double when outgrown.
    pub fn new(num_layers: usize) -> Self {
        Self::with_capacity(num_layers, 0)
    }

    /// An empty cache that allocates room for `max_len` positions per layer on the first
    /// append (more if that append alone is longer), so that a generation of known length
    /// (`prompt_len + max_new_tokens`) never regrows.
    pub fn with_capacity(num_layers: usize, max_len: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            capacity_hint: max_len,
        }
    }

    /// Number of positions cached (0 when empty).
    ///
    /// This is layer 0's count: during a forward pass the earlier layers are already one
    /// step ahead, so read it before the pass, as [`crate::Phi3Model::forward_hidden`]
    /// does.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions layer 0 holds without regrowing (the capacity hint before it is
    /// allocated).
    pub fn capacity(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(self.capacity_hint, LayerKv::capacity)
    }

    /// Writes this step's keys and values after layer `layer`'s cached ones and returns
    /// everything cached, as views of the buffers (drop them before the next append to
    /// this layer, or a backend that writes in place has to copy instead).
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, kv_heads, new, head_dim]`, with the batch, heads and head dim
    ///   of earlier appends
    /// - returns `[batch, kv_heads, past + new, head_dim]` twice
    ///
    /// # Panics
    /// When `k` and `v` differ in shape, or batch, heads or head dim differ from the
    /// cached ones (a caller bug: rows are dropped with [`KvCache::select_rows`]).
    pub fn append(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, kvh, new, d] = k.dims();
        assert_eq!(
            v.dims(),
            [b, kvh, new, d],
            "KvCache::append: keys and values differ in shape"
        );
        let mut entry = match self.layers[layer].take() {
            Some(entry) => entry,
            None => LayerKv::allocate(&k, self.capacity_hint.max(new)),
        };
        let [cb, ckvh, _, cd] = entry.keys.dims();
        assert_eq!(
            [cb, ckvh, cd],
            [b, kvh, d],
            "KvCache::append: layer {layer} caches [batch, kv_heads, _, head_dim] = \
             [{cb}, {ckvh}, _, {cd}] but got [{b}, {kvh}, _, {d}]"
        );
        let (past, total) = (entry.len, entry.len + new);
        if total > entry.capacity() {
            entry.grow(total);
        }
        // Moving the buffers in leaves the cache without a handle of its own, so a backend
        // that can write in place when unshared is free to.
        let LayerKv { keys, values, .. } = entry;
        let keys = keys.slice_assign([0..b, 0..kvh, past..total, 0..d], k);
        let values = values.slice_assign([0..b, 0..kvh, past..total, 0..d], v);
        let valid = [0..b, 0..kvh, 0..total, 0..d];
        let out = (
            keys.clone().slice(valid.clone()),
            values.clone().slice(valid),
        );
        self.layers[layer] = Some(LayerKv {
            keys,
            values,
            len: total,
        });
        out
    }

    /// Keeps only the batch rows in `rows` (for dropping finished sequences); lengths and
    /// capacity stay.
    ///
    /// # Shapes
    /// - `rows`: `[kept]`, indices into the cached batch
    pub fn select_rows(&mut self, rows: Tensor<B, 1, Int>) {
        for entry in self.layers.iter_mut().flatten() {
            entry.keys = entry.keys.clone().select(0, rows.clone());
            entry.values = entry.values.clone().select(0, rows.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    type B = Flex;

    /// `[batch, 1, seq, 1]` with value `row * 100 + position` (positions from `start`).
    fn step(batch: usize, start: usize, seq: usize) -> Tensor<B, 4> {
        let values: Vec<f32> = (0..batch)
            .flat_map(|r| (start..start + seq).map(move |p| (r * 100 + p) as f32))
            .collect();
        Tensor::from_data(
            TensorData::new(values, [batch, 1, seq, 1]),
            &Default::default(),
        )
    }

    fn flat(t: Tensor<B, 4>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn appends_past_the_capacity_regrow_and_keep_the_prefix() {
        let mut cache = KvCache::<B>::with_capacity(2, 3);
        let mut expected = Vec::new();
        for (start, seq) in [(0, 2), (2, 1), (3, 1), (4, 5), (9, 1)] {
            for layer in 0..2 {
                let (k, v) = cache.append(layer, step(1, start, seq), step(1, start, seq) * 2);
                assert_eq!(k.dims(), [1, 1, start + seq, 1]);
                expected = (0..start + seq).map(|p| p as f32).collect::<Vec<_>>();
                assert_eq!(flat(k), expected);
                assert_eq!(
                    flat(v),
                    expected.iter().map(|x| x * 2.0).collect::<Vec<_>>()
                );
            }
            assert_eq!(cache.len(), start + seq);
        }
        assert_eq!(expected.len(), 10);
        // 3, then doubled to 6 for position 3, then to 12 for positions 4..9; 10 fits.
        assert_eq!(cache.capacity(), 12);
    }

    #[test]
    fn without_a_hint_the_first_append_sets_the_capacity() {
        let mut cache = KvCache::<B>::new(1);
        assert!(cache.is_empty());
        assert_eq!(cache.capacity(), 0);
        cache.append(0, step(1, 0, 4), step(1, 0, 4));
        assert_eq!((cache.len(), cache.capacity()), (4, 4));
        cache.append(0, step(1, 4, 1), step(1, 4, 1));
        assert_eq!((cache.len(), cache.capacity()), (5, 8));
        // An append longer than twice the capacity gets exactly what it needs.
        let (k, _) = cache.append(0, step(1, 5, 20), step(1, 5, 20));
        assert_eq!((cache.len(), cache.capacity()), (25, 25));
        assert_eq!(flat(k), (0..25).map(|p| p as f32).collect::<Vec<_>>());
    }

    #[test]
    fn select_rows_after_appends_keeps_the_chosen_rows() {
        let mut cache = KvCache::<B>::with_capacity(1, 4);
        cache.append(0, step(3, 0, 2), step(3, 0, 2));
        cache.append(0, step(3, 2, 1), step(3, 2, 1));
        let rows = Tensor::<B, 1, Int>::from_data([2, 0], &Default::default());
        cache.select_rows(rows);
        assert_eq!(cache.len(), 3);
        // Still room for one more without regrowing, then past it.
        let (k, _) = cache.append(0, step(2, 3, 1), step(2, 3, 1));
        assert_eq!(k.dims(), [2, 1, 4, 1]);
        let k = flat(k);
        assert_eq!(&k[..3], &[200.0, 201.0, 202.0]);
        assert_eq!(&k[4..7], &[0.0, 1.0, 2.0]);
        // The new step's rows are the caller's new batch: 0 and 1 here.
        assert_eq!((k[3], k[7]), (3.0, 103.0));
        let (k, _) = cache.append(0, step(2, 4, 1), step(2, 4, 1));
        assert_eq!(flat(k)[..5], [200.0, 201.0, 202.0, 3.0, 4.0]);
    }

    #[test]
    #[should_panic(expected = "KvCache::append: layer 0 caches")]
    fn a_mismatched_batch_panics_clearly() {
        let mut cache = KvCache::<B>::new(1);
        cache.append(0, step(2, 0, 1), step(2, 0, 1));
        cache.append(0, step(3, 1, 1), step(3, 1, 1));
    }
}

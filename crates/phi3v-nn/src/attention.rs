//! Scaled dot-product attention.
//!
//! [`naive_attention`] is the reference path: it materialises the `[q, k]` score matrix,
//! exactly as the Python reference's eager attention does, including its treatment of
//! fully masked rows (see [`MASK_VALUE`]). Faster kernels are checked against it.

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

/// The value masked scores take. The reference adds the dtype's minimum rather than
/// `-inf`, so a query whose keys are all masked (a left-padding position) attends
/// uniformly to every key instead of producing NaN. We do the same, so that even the
/// logits at padding positions equal the reference's.
pub const MASK_VALUE: f32 = f32::MIN;

/// # Shapes
/// - `q`: `[batch, heads, q_len, head_dim]`
/// - `k`, `v`: `[batch, heads, k_len, head_dim]`
/// - `mask`: `[batch, 1 or heads, q_len, k_len]`, `true` where a key is hidden from a query
/// - returns `[batch, heads, q_len, head_dim]`
pub fn naive_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    scale: f64,
) -> Tensor<B, 4> {
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    let scores = match mask {
        Some(mask) => {
            let [b, h, q_len, k_len] = scores.dims();
            scores.mask_fill(mask.expand([b, h, q_len, k_len]), MASK_VALUE)
        }
        None => scores,
    };
    softmax(scores, 3).matmul(v)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

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
    fn fully_masked_row_attends_uniformly() {
        let device = Default::default();
        let q = Tensor::<B, 4>::ones([1, 1, 1, 2], &device);
        let k = Tensor::<B, 4>::from_floats([[[[1.0, 0.0], [0.0, 3.0]]]], &device);
        let v = Tensor::<B, 4>::from_floats([[[[2.0, 0.0], [4.0, 6.0]]]], &device);
        let mask = Tensor::<B, 4, Bool>::from_data(TensorData::from([[[[true, true]]]]), &device);
        let out = naive_attention(q, k, v, Some(mask), 1.0);
        assert_eq!(out.into_data().to_vec::<f32>().unwrap(), vec![3.0, 3.0]);
    }
}

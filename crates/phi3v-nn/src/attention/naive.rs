//! The reference attention: it materialises the `[q, k]` score matrix.

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

/// The value masked scores take. The reference adds the dtype's minimum rather than
/// `-inf`, so a query whose keys are all masked (a left-padding position) attends
/// uniformly to every key instead of producing NaN. We do the same, so that even the
/// logits at padding positions equal the reference's.
pub const MASK_VALUE: f32 = f32::MIN;

/// Scaled dot-product attention exactly as the Python reference's eager attention
/// computes it: `softmax(q k^T * scale, masked with MASK_VALUE) v`.
///
/// It keeps the whole score matrix (and, under autodiff, the softmax and its gradient),
/// so it needs `O(q_len * k_len)` memory per head. It is the reference the
/// memory-efficient kernel is tested against, and the faster path for short sequences.
///
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    type B = burn::backend::Flex;

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

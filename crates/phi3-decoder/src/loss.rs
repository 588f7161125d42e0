//! The training loss: mean shifted cross-entropy over the labels that count.
//!
//! Position `t` predicts label `t + 1`, and labels equal to [`IGNORE_INDEX`] (the prompt,
//! the image tokens and padding) do not count, as in the reference. In a fine-tuning batch
//! most positions are ignored: the tiny model's answers are about a third of each row, the
//! real model's 1,900 image tokens far more. [`Phi3Model::head_loss`] therefore runs
//! `lm_head` only on the positions whose label counts. The `[batch, seq, vocab]` logits of
//! the whole batch, and their gradient, are the largest tensors of a training step; the
//! result is the same mean over the same terms.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use phi3v_nn::MixedMatmul;

use crate::model::Phi3Model;

/// The label value that the loss ignores, as in the reference.
pub const IGNORE_INDEX: i64 = -100;

/// The positions of a `[batch, seq]` batch whose next label counts, flattened to
/// `row * seq + t`, and those labels; `None` when no label counts.
///
/// Read on the host: which positions count decides the shapes of what follows. The labels
/// come from the host in the first place, so this is one small read-back per step.
///
/// # Shapes
/// - `labels`: `[batch, seq]`
/// - returns two `[n]` tensors: indices into the `batch * seq` positions, and targets
fn supervised<B: Backend>(
    labels: &Tensor<B, 2, Int>,
) -> Option<(Tensor<B, 1, Int>, Tensor<B, 1, Int>)> {
    let [batch, seq] = labels.dims();
    let values: Vec<i64> = labels
        .to_data()
        .convert::<i64>()
        .to_vec()
        .expect("int labels");
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    for row in 0..batch {
        for t in 0..seq.saturating_sub(1) {
            let label = values[row * seq + t + 1];
            if label != IGNORE_INDEX {
                positions.push((row * seq + t) as i64);
                targets.push(label);
            }
        }
    }
    let n = positions.len();
    let device = labels.device();
    let ints = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [n]), &device);
    (n > 0).then(|| (ints(positions), ints(targets)))
}

/// Mean shifted cross-entropy of `to_logits` applied to the rows of `x` whose next label
/// counts.
///
/// # Shapes
/// - `x`: `[batch, seq, width]`
/// - `labels`: `[batch, seq]`
/// - `to_logits`: `[n, width]` to `[n, vocab]`
/// - returns `[1]`; zero when no label counts
fn shifted_cross_entropy<B: Backend>(
    x: Tensor<B, 3>,
    labels: &Tensor<B, 2, Int>,
    to_logits: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 1> {
    let Some((positions, targets)) = supervised(labels) else {
        return Tensor::zeros([1], &x.device());
    };
    let [batch, seq, width] = x.dims();
    let n = targets.dims()[0];
    let rows = x.reshape([batch * seq, width]).select(0, positions);
    let logp = log_softmax(to_logits(rows), 1);
    let picked = logp.gather(1, targets.reshape([n, 1]));
    picked.sum().neg().div_scalar(n as f64)
}

impl<B: Backend> Phi3Model<B> {
    /// Mean shifted cross-entropy from logits.
    ///
    /// # Shapes
    /// - `logits`: `[batch, seq, vocab]`
    /// - `labels`: `[batch, seq]`
    /// - returns `[1]`; zero when no label counts
    pub fn loss(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        shifted_cross_entropy(logits, &labels, |rows| rows)
    }

    /// Mean shifted cross-entropy from final hidden states (after the final norm), with
    /// `lm_head` run only where a label counts: the same value as
    /// `Self::loss(self.logits(hidden), labels)`, without the batch's full logits.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`
    /// - `labels`: `[batch, seq]`
    /// - returns `[1]`; zero when no label counts
    pub fn head_loss(&self, hidden: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1>
    where
        B: MixedMatmul,
    {
        shifted_cross_entropy(hidden, &labels, |rows| self.lm_head.forward(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    use crate::config::Phi3Config;

    type B = Flex;

    /// `head_loss` is `loss` over the full logits, and both equal a direct computation.
    #[test]
    fn head_loss_matches_full_logits_and_a_direct_sum() {
        let device = Default::default();
        let config = Phi3Config::tiny(50);
        let model = Phi3Model::<B>::random(&config, 0.5, &device).unwrap();
        let hidden = Tensor::<B, 3>::random(
            [2, 5, config.hidden_size],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let labels = [[-100, -100, 7, 3, -100], [-100, 11, 12, 13, 49]];
        let labels_t = Tensor::<B, 2, Int>::from_data(labels, &device);

        let logits = model.logits(hidden.clone());
        let full: f32 = Phi3Model::loss(logits.clone(), labels_t.clone()).into_scalar();
        let head: f32 = model.head_loss(hidden, labels_t).into_scalar();

        let logp: Vec<f32> = log_softmax(logits, 2).to_data().to_vec().unwrap();
        let (mut sum, mut n) = (0.0f32, 0);
        for (row, l) in labels.iter().enumerate() {
            for t in 0..4 {
                if l[t + 1] != -100 {
                    sum -= logp[(row * 5 + t) * 50 + l[t + 1] as usize];
                    n += 1;
                }
            }
        }
        let direct = sum / n as f32;
        assert_eq!(n, 6);
        assert!(
            (full - direct).abs() < 1e-5,
            "loss {full} vs direct {direct}"
        );
        assert!(
            (head - direct).abs() < 1e-5,
            "head_loss {head} vs direct {direct}"
        );
    }

    #[test]
    fn no_counted_label_gives_zero() {
        let device = Default::default();
        let model = Phi3Model::<B>::random(&Phi3Config::tiny(50), 0.02, &device).unwrap();
        let hidden = Tensor::<B, 3>::ones([1, 3, model.config().hidden_size], &device);
        let labels = Tensor::<B, 2, Int>::from_data([[5, -100, -100]], &device);
        let loss: f32 = model.head_loss(hidden, labels).into_scalar();
        assert_eq!(loss, 0.0);
    }
}

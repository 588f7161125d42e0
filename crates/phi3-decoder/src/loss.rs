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

/// Where a batch's loss is taken: the positions whose next label counts, flattened to
/// `row * seq + t`, and those labels.
///
/// Built on the host, from the labels the batch builder holds. Which positions count
/// decides the shapes of everything after it, so building this from a device tensor would
/// stall a GPU until the labels came back, once per step ([`LossTargets::read_back`] does
/// that, for callers that hold only the tensor).
#[derive(Debug, Clone)]
pub struct LossTargets<B: Backend> {
    /// `[n]` positions and `[n]` labels; `None` when no label counts.
    picked: Option<(Tensor<B, 1, Int>, Tensor<B, 1, Int>)>,
}

impl<B: Backend> LossTargets<B> {
    /// The targets of `labels`, a `[batch, seq]` batch laid out row-major.
    ///
    /// # Panics
    /// When `labels` does not hold `batch * seq` values.
    pub fn new(labels: &[i64], [batch, seq]: [usize; 2], device: &B::Device) -> Self {
        assert_eq!(
            labels.len(),
            batch * seq,
            "labels for a [{batch}, {seq}] batch"
        );
        let (mut positions, mut targets) = (Vec::new(), Vec::new());
        for row in 0..batch {
            for t in 0..seq.saturating_sub(1) {
                let label = labels[row * seq + t + 1];
                if label != IGNORE_INDEX {
                    positions.push((row * seq + t) as i64);
                    targets.push(label);
                }
            }
        }
        let n = positions.len();
        let ints = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [n]), device);
        Self {
            picked: (n > 0).then(|| (ints(positions), ints(targets))),
        }
    }

    /// The targets of a `[batch, seq]` labels tensor, read back to the host first.
    pub fn read_back(labels: &Tensor<B, 2, Int>) -> Self {
        let values: Vec<i64> = labels
            .to_data()
            .convert::<i64>()
            .to_vec()
            .expect("int labels");
        Self::new(&values, labels.dims(), &labels.device())
    }

    /// How many labels count.
    pub fn count(&self) -> usize {
        self.picked.as_ref().map_or(0, |(p, _)| p.dims()[0])
    }
}

/// Mean shifted cross-entropy of `to_logits` applied to the rows of `x` whose next label
/// counts.
///
/// # Shapes
/// - `x`: `[batch, seq, width]`
/// - `to_logits`: `[n, width]` to `[n, vocab]`
/// - returns `[1]`; zero when no label counts
fn shifted_cross_entropy<B: Backend>(
    x: Tensor<B, 3>,
    targets: &LossTargets<B>,
    to_logits: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 1> {
    let Some((positions, labels)) = targets.picked.clone() else {
        return Tensor::zeros([1], &x.device());
    };
    let [batch, seq, width] = x.dims();
    let n = labels.dims()[0];
    let rows = x.reshape([batch * seq, width]).select(0, positions);
    let logp = log_softmax(to_logits(rows), 1);
    let picked = logp.gather(1, labels.reshape([n, 1]));
    picked.sum().neg().div_scalar(n as f64)
}

impl<B: Backend> Phi3Model<B> {
    /// Mean shifted cross-entropy from logits.
    ///
    /// # Shapes
    /// - `logits`: `[batch, seq, vocab]`, for the `[batch, seq]` labels `targets` came from
    /// - returns `[1]`; zero when no label counts
    pub fn loss(logits: Tensor<B, 3>, targets: &LossTargets<B>) -> Tensor<B, 1> {
        shifted_cross_entropy(logits, targets, |rows| rows)
    }

    /// Mean shifted cross-entropy from final hidden states (after the final norm), with
    /// `lm_head` run only where a label counts: the same value as
    /// `Self::loss(self.logits(hidden), targets)`, without the batch's full logits.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`, for the `[batch, seq]` labels `targets` came from
    /// - returns `[1]`; zero when no label counts
    pub fn head_loss(&self, hidden: Tensor<B, 3>, targets: &LossTargets<B>) -> Tensor<B, 1>
    where
        B: MixedMatmul,
    {
        shifted_cross_entropy(hidden, targets, |rows| self.lm_head.forward(rows))
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
        let targets = LossTargets::new(labels.as_flattened(), [2, 5], &device);
        assert_eq!(targets.count(), 6);
        let read_back =
            LossTargets::read_back(&Tensor::<B, 2, Int>::from_data(labels, &device)).picked;
        let (positions, picked) = read_back.expect("labels count");
        let (want_positions, want_picked) = targets.picked.clone().unwrap();
        assert_eq!(positions.into_data(), want_positions.into_data());
        assert_eq!(picked.into_data(), want_picked.into_data());

        let logits = model.logits(hidden.clone());
        let full: f32 = Phi3Model::loss(logits.clone(), &targets).into_scalar();
        let head: f32 = model.head_loss(hidden, &targets).into_scalar();

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
        let targets = LossTargets::new(&[5, -100, -100], [1, 3], &device);
        assert_eq!(targets.count(), 0);
        let loss: f32 = model.head_loss(hidden, &targets).into_scalar();
        assert_eq!(loss, 0.0);
    }
}

//! One LoRA update as `phi3v train` makes it from one micro-batch, for the benches and
//! examples that time it (`benches/training_step.rs`, `examples/lora_step.rs`), so that both
//! time the same arithmetic.

use burn::tensor::ElementConversion;
use phi3_decoder::{LossTargets, Phi3Model};
use phi3v::{ImageInput, InputIds, Phi3V};
use phi3v_train::optim::AdamW;
use phi3v_train::recompute::{recomputed_backward, MicroBatch};
use phi3v_train::trainer::{apply_gradients, GradientSum};

use crate::backend::{Selected, SelectedAutodiff};

type B = SelectedAutodiff;

/// How the loss and its gradients are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backprop {
    /// Plain backpropagation, with `lm_head` run on the labelled positions only
    /// ([`Phi3Model::head_loss`]), as `phi3v train` does without recomputation.
    HeadLoss,
    /// Plain backpropagation over every position's logits, as PyTorch computes the loss: the
    /// reference's arithmetic, for comparisons with it.
    FullLogits,
    /// Recomputation layer by layer ([`phi3v_train::recompute`]).
    Recompute,
}

/// Forward, loss, backward, gradient collection, global-norm clipping at `max_grad_norm`
/// and an AdamW step at `lr`. Returns the loss and the gradient norm before clipping (both
/// read back, which also waits for the device on GPU backends).
///
/// # Shapes
/// - `ids`: `[batch, seq]`, image placeholders negative, and `targets` built from
///   `[batch, seq]` labels
#[allow(clippy::too_many_arguments)]
pub fn lora_update(
    model: &mut Phi3V<B>,
    optimizer: &mut AdamW<Selected>,
    ids: InputIds<B>,
    images: Option<&ImageInput<B>>,
    targets: &LossTargets<B>,
    backprop: Backprop,
    lr: f64,
    max_grad_norm: f64,
) -> (f64, f64) {
    let mut grads = GradientSum::<B>::default();
    let loss = match backprop {
        Backprop::Recompute => {
            let micro = MicroBatch {
                input_ids: ids,
                images,
                attention_mask: None,
                targets,
            };
            recomputed_backward(model, &[], &mut grads, micro, 1.0)
                .expect("recomputed step")
                .into_scalar()
                .elem()
        }
        Backprop::HeadLoss | Backprop::FullLogits => {
            let loss = if backprop == Backprop::FullLogits {
                let logits = model
                    .forward(ids, images, Default::default())
                    .expect("forward");
                Phi3Model::<B>::loss(logits, targets)
            } else {
                model.loss(ids, images, None, targets).expect("loss")
            };
            let value: f64 = loss.clone().into_scalar().elem();
            grads.add(model, &[], loss);
            value
        }
    };
    let norm = apply_gradients(model, &[], optimizer, grads, lr, max_grad_norm);
    (loss, norm.into_scalar().elem())
}

/// The process's peak (`VmHWM`) and current (`VmRSS`) resident set, for the log (Linux).
pub fn peak_rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map_or("unknown".to_string(), |v| v.trim().to_string())
    };
    format!("{} (current {})", field("VmHWM:"), field("VmRSS:"))
}

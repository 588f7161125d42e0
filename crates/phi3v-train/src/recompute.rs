//! Activation recomputation by decoder layer: the backward pass recomputes each layer's
//! activations instead of keeping them all from the forward pass.
//!
//! Plain backpropagation keeps every intermediate tensor of every layer until the
//! backward pass reaches it, so activation memory grows with the layer count (32 layers
//! for Phi-3-V). Here the forward pass runs without a graph and keeps only each layer's
//! input (`[batch, seq, hidden]`). The backward pass then walks the segments in reverse:
//! the head (final norm, `lm_head`, loss), each decoder layer, and the embedding (the
//! vision tower and projection). Each segment is rerun with a graph from its saved input,
//! back-propagated with the gradient arriving from the segment after it (the surrogate
//! `sum(out * grad_out)` has exactly that gradient), and its graph is freed before the next
//! one. Only one segment's activations live at a time; the price is a second forward pass.
//!
//! The gradients equal plain backpropagation's up to float summation order. Adapter dropout
//! would need the two forward passes to draw the same masks, so it is refused.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor};
use phi3v::{ImageInput, Phi3V};
use phi3v_nn::AttentionBackend;

use crate::error::TrainError;
use crate::params::for_each_trainable;
use crate::trainer::GradientSum;

/// One micro-batch's inputs.
pub struct MicroBatch<'a, B: AutodiffBackend> {
    /// `[batch, seq]`, image placeholders negative.
    pub input_ids: Tensor<B, 2, Int>,
    pub images: Option<&'a ImageInput<B>>,
    /// `[batch, seq]`, 1 for real tokens.
    pub attention_mask: Option<Tensor<B, 2, Int>>,
    /// `[batch, seq]`, -100 where not trained.
    pub labels: Tensor<B, 2, Int>,
}

/// Computes the loss of `batch` and adds `scale` times its gradients to `sum`, recomputing
/// each decoder layer in the backward pass (see the module docs). Returns the loss
/// (unscaled), read back before any gradient is added: a non-finite loss returns at once
/// and leaves `sum` untouched.
///
/// # Errors
/// Adapter dropout (the recomputation would draw other masks), or a bad input.
pub fn recomputed_backward<B>(
    model: &mut Phi3V<B>,
    full: &[String],
    sum: &mut GradientSum<B>,
    batch: MicroBatch<'_, B>,
    scale: f64,
) -> Result<f64, TrainError>
where
    B: AutodiffBackend + AttentionBackend,
    B::InnerBackend: AttentionBackend,
{
    let mut dropout = false;
    phi3v_nn::NamedLinears::for_each_linear(model, "", &mut |_, linear| {
        dropout |= linear.lora.as_ref().is_some_and(|l| l.dropout > 0.0);
    });
    if dropout {
        return Err(TrainError::Config(
            "activation recomputation needs lora dropout 0 (the recomputed forward pass would \
             draw other dropout masks)"
                .into(),
        ));
    }
    let MicroBatch {
        input_ids,
        images,
        attention_mask,
        labels,
    } = batch;
    let device = input_ids.device();
    let [b, t] = input_ids.dims();

    // Forward without a graph, keeping each layer's input.
    let mut inputs = {
        let inner = model.valid();
        let inner_images = images.map(|i| ImageInput {
            tiles: i.tiles.clone().inner(),
            grids: i.grids.clone(),
        });
        let decoder = &inner.decoder;
        let ctx = decoder.layer_context(
            [b, t],
            0,
            attention_mask.clone().map(|m| m.inner()),
            None,
            &device,
        );
        let mut x = inner.embed(input_ids.clone().inner(), inner_images.as_ref())?;
        let mut inputs = Vec::with_capacity(decoder.layers.len() + 1);
        for layer in &decoder.layers {
            let next = layer.forward(x.clone(), ctx.cos.clone(), ctx.sin.clone(), &ctx.mask, None);
            inputs.push(x);
            x = next;
        }
        inputs.push(x);
        inputs
    };

    // The head: final norm, lm_head, loss.
    let x = Tensor::<B, 3>::from_inner(inputs.pop().expect("the head's input")).require_grad();
    let decoder = &model.decoder;
    let loss = decoder.head_loss(decoder.norm.forward(x.clone()), labels);
    let value: f64 = loss.clone().into_scalar().elem();
    if !value.is_finite() {
        return Ok(value);
    }
    let grads = loss.mul_scalar(scale).backward();
    let mut grad_out = x.grad(&grads).expect("the head's input has a gradient");
    sum.add_gradients(model, full, &grads);
    drop(grads);

    // Each decoder layer, last to first.
    let ctx = model
        .decoder
        .layer_context([b, t], 0, attention_mask, None, &device);
    for i in (0..model.decoder.layers.len()).rev() {
        let x = Tensor::<B, 3>::from_inner(inputs.pop().expect("a layer input")).require_grad();
        let out = model.decoder.layers[i].forward(
            x.clone(),
            ctx.cos.clone(),
            ctx.sin.clone(),
            &ctx.mask,
            None,
        );
        let grads = surrogate(out, grad_out).backward();
        grad_out = x.grad(&grads).expect("a layer input has a gradient");
        sum.add_gradients(model, full, &grads);
    }

    // The embedding: only the vision path has parameters that may train.
    let mut vision_trains = false;
    if let Some(vision) = &mut model.vision_embed_tokens {
        for_each_trainable(vision, full, &mut |_, _| vision_trains = true);
    }
    if vision_trains && images.is_some() {
        let embeds = model.embed(input_ids, images)?;
        let grads = surrogate(embeds, grad_out).backward();
        sum.add_gradients(model, full, &grads);
    }
    Ok(value)
}

/// `sum(out * grad_out)`: its gradient with respect to `out` is `grad_out`.
///
/// # Shapes
/// - `out`, `grad_out`: `[batch, seq, hidden]`
/// - returns `[1]`
fn surrogate<B: AutodiffBackend>(
    out: Tensor<B, 3>,
    grad_out: Tensor<B::InnerBackend, 3>,
) -> Tensor<B, 1> {
    (out * Tensor::from_inner(grad_out)).sum()
}

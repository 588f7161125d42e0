//! Activation recomputation by layer: the backward pass recomputes each decoder layer's and
//! each vision encoder layer's activations instead of keeping them all from the forward
//! pass.
//!
//! Plain backpropagation keeps every intermediate tensor of every layer until the
//! backward pass reaches it, so activation memory grows with the layer count (32 decoder
//! layers and 23 CLIP layers for Phi-3-V, the CLIP ones over every tile of every image).
//! Here the forward pass runs without a graph and keeps only each layer's input: the
//! decoder's (`[batch, seq, hidden]`) and, when the vision tower has something to train,
//! its encoder layers' (`[tiles, 1 + grid^2, clip_hidden]`). The backward pass then walks
//! the segments in reverse:
//! 1. the head (final norm, `lm_head`, loss);
//! 2. each decoder layer, last to first;
//! 3. the image tail: feature selection (class token dropped), 2x2 merge, separators,
//!    projection, and the scatter of image tokens over the placeholder positions, rerun
//!    from the last CLIP layer's saved output;
//! 4. each CLIP encoder layer, last to first, down to the lowest one that trains.
//!
//! Each segment is rerun with a graph from its saved input, back-propagated with the
//! gradient arriving from the segment after it (the surrogate `sum(out * grad_out)` has
//! exactly that gradient), and its graph is freed before the next one. Only one segment's
//! activations live at a time; the price is a second forward pass.
//!
//! Segments with nothing trainable below them are not rerun: the CLIP embeddings and
//! `pre_layrnorm` hold no linear layer (so nothing there trains), the CLIP layers below the
//! lowest trained one need no gradient, and with a frozen vision path (`--freeze-vision`)
//! the tower runs once without a graph, keeps no state and has no backward at all. The
//! weights' last CLIP layer is never run: Phi-3-V reads the layer before it.
//!
//! The gradients equal plain backpropagation's up to float summation order. Adapter dropout
//! would need the two forward passes to draw the same masks, so it is refused.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use phi3v::decoder::LossTargets;
use phi3v::{ImageInput, InputIds, Phi3V};
use phi3v_nn::{AttentionBackend, NamedLinears};

use crate::error::TrainError;
use crate::params::for_each_trainable;
use crate::trainer::GradientSum;

/// One micro-batch's inputs.
pub struct MicroBatch<'a, B: AutodiffBackend> {
    /// `[batch, seq]`, image placeholders negative; with their host copy (see
    /// [`InputIds`]), finding the placeholders reads nothing back.
    pub input_ids: InputIds<B>,
    pub images: Option<&'a ImageInput<B>>,
    /// `[batch, seq]`, 1 for real tokens.
    pub attention_mask: Option<Tensor<B, 2, Int>>,
    /// Where the loss is taken (from `[batch, seq]` labels, -100 where not trained).
    pub targets: &'a LossTargets<B>,
}

/// Computes the loss of `batch` and adds `scale` times its gradients to `sum`, recomputing
/// each decoder layer in the backward pass (see the module docs). Returns the loss
/// (unscaled), `[1]`, on the device: the caller reads it back when it logs, and a
/// non-finite loss makes non-finite gradients, which the caller's check stops on.
///
/// # Errors
/// Adapter dropout (the recomputation would draw other masks), or a bad input.
pub fn recomputed_backward<B>(
    model: &mut Phi3V<B>,
    full: &[String],
    sum: &mut GradientSum<B>,
    batch: MicroBatch<'_, B>,
    scale: f64,
) -> Result<Tensor<B::InnerBackend, 1>, TrainError>
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
        targets,
    } = batch;
    let device = input_ids.tensor.device();
    let [b, t] = input_ids.tensor.dims();

    // What of the vision path trains decides how much of it is kept: the inputs of the CLIP
    // layers from the lowest trained one up, and the last layer's output (the image tail's
    // input). `None`: nothing there trains, nothing is kept.
    let keep_from = vision_keep_from(model, full);

    // Forward without a graph, keeping each layer's input.
    let (mut inputs, mut vision_states) = {
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
        let mut vision_states = Vec::new();
        let mut x = inner.embed_with(
            input_ids.clone().map(|ids| ids.inner()),
            inner_images.as_ref(),
            |vision, images| {
                vision.forward_visiting(images.tiles.clone(), &images.grids, |i, state| {
                    if keep_from.is_some_and(|k| i >= k) {
                        vision_states.push(state.clone());
                    }
                })
            },
        )?;
        let mut inputs = Vec::with_capacity(decoder.layers.len() + 1);
        for layer in &decoder.layers {
            let next = layer.forward(x.clone(), &ctx.rotary, &ctx.mask, None);
            inputs.push(x);
            x = next;
        }
        inputs.push(x);
        (inputs, vision_states)
    };

    // The head: final norm, lm_head, loss.
    let x = Tensor::<B, 3>::from_inner(inputs.pop().expect("the head's input")).require_grad();
    let decoder = &model.decoder;
    let loss = decoder.head_loss(decoder.norm.forward(x.clone()), targets);
    let value = loss.clone().inner();
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
        let out = model.decoder.layers[i].forward(x.clone(), &ctx.rotary, &ctx.mask, None);
        let grads = surrogate(out, grad_out).backward();
        grad_out = x.grad(&grads).expect("a layer input has a gradient");
        sum.add_gradients(model, full, &grads);
    }

    // The vision path, when it trains and this batch ran it (a batch without images or
    // placeholders kept no state).
    let (Some(keep_from), Some(top)) = (keep_from, vision_states.pop()) else {
        return Ok(value);
    };
    // The image tail, from the last CLIP layer's output. That output needs a gradient only
    // if a CLIP layer trains below it.
    let layers_train = !vision_states.is_empty();
    let top = Tensor::<B, 3>::from_inner(top);
    let top = if layers_train {
        top.require_grad()
    } else {
        top
    };
    let embeds = model.embed_with(input_ids, images, |vision, images| {
        let features = vision.img_processor.select_features(top.clone());
        Ok(vision.tokens_from_features(features, &images.grids))
    })?;
    let grads = surrogate(embeds, grad_out).backward();
    sum.add_gradients(model, full, &grads);
    if !layers_train {
        return Ok(value);
    }
    let mut grad_out = top.grad(&grads).expect("the tower's output has a gradient");
    drop(grads);

    // Each CLIP layer, last to first, down to the lowest one that trains; its input needs
    // no gradient.
    let top_layer = keep_from + vision_states.len();
    for i in (keep_from..top_layer).rev() {
        let x = Tensor::<B, 3>::from_inner(vision_states.pop().expect("a CLIP layer input"));
        let x = if i > keep_from { x.require_grad() } else { x };
        let vision = model
            .vision_embed_tokens
            .as_ref()
            .expect("the vision path ran");
        let out = vision.img_processor.layers[i].forward(x.clone());
        let grads = surrogate(out, grad_out.clone()).backward();
        if i > keep_from {
            grad_out = x.grad(&grads).expect("a CLIP layer input has a gradient");
        }
        sum.add_gradients(model, full, &grads);
    }
    Ok(value)
}

/// The index of the lowest CLIP encoder layer with a trainable tensor (the layer count if
/// only the projection trains), or `None` if nothing of the vision path trains (a frozen
/// tower, a text-only model). The CLIP embeddings hold no linear layer, so they never
/// train and no gradient needs to reach below the lowest trained layer.
fn vision_keep_from<B: AutodiffBackend>(model: &mut Phi3V<B>, full: &[String]) -> Option<usize> {
    let vision = model.vision_embed_tokens.as_mut()?;
    let layers = &mut vision.img_processor.layers;
    let n = layers.len();
    if let Some(lowest) = layers.iter_mut().position(|layer| trains(layer, full)) {
        return Some(lowest);
    }
    let tail =
        trains(&mut vision.img_projection_0, full) || trains(&mut vision.img_projection_2, full);
    tail.then_some(n)
}

/// Whether `module` holds a trainable tensor (an adapter, or a fully trained layer).
fn trains<B: AutodiffBackend, M: NamedLinears<B>>(module: &mut M, full: &[String]) -> bool {
    let mut any = false;
    for_each_trainable(module, full, &mut |_, _| any = true);
    any
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

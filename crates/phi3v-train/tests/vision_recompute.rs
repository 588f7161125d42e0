//! Activation recomputation through the vision tower, layer by layer: with images in the
//! batch, every trainable gradient must equal plain backpropagation's, whichever part of the
//! vision path trains (all of it, none of it, only the projection, only upper CLIP layers).
//!
//! The tolerance is on the absolute difference, scaled by the tensor's largest gradient
//! when that exceeds 1: `max |recomputed - plain| <= 1e-6 * max(1, max |plain|)` per
//! tensor. Recomputation changes only the order of float sums (the surrogate
//! `sum(out * grad_out)` and the per-segment accumulation), so anything above that is a
//! missing or wrong segment, not rounding.

use std::collections::BTreeMap;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param};
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use phi3v::decoder::LossTargets;
use phi3v::vision::image_token_count;
use phi3v::{ImageInput, Phi3V};
use phi3v_nn::{NamedLinears, WeightsView};
use phi3v_peft::targets::DECODER_TARGETS;
use phi3v_peft::AdapterPlan;
use phi3v_testkit::{max_diff, TinySpec};
use phi3v_train::recompute::{recomputed_backward, MicroBatch};
use phi3v_train::trainer::GradientSum;

type B = Autodiff<Flex>;

/// CLIP layers in the weights: the model runs all but the last, so the walk has four
/// layers to go through.
const VISION_LAYERS: usize = 5;
/// Where the vision tower's linear layers are named.
const TOWER: &str = "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.";

fn spec() -> TinySpec {
    TinySpec {
        hidden_size: 32,
        intermediate_size: 48,
        num_attention_heads: 2,
        vision_layers: VISION_LAYERS,
        ..TinySpec::default()
    }
}

/// A random tiny model with `plan` applied, every adapter's `B` drawn non-zero (a fresh
/// adapter's zero `B` would leave every `A` gradient zero, and the comparison empty). Both
/// paths of a comparison run clones of one model: the backend's generator is shared by the
/// tests running at once, so two draws would differ.
fn model(plan: &AdapterPlan) -> Phi3V<B> {
    let device = Default::default();
    let model = Phi3V::<B>::new(WeightsView::random(0.05), &spec().config(), &device).unwrap();
    let mut model = model.no_grad();
    plan.apply(&mut model, &device).unwrap();
    model.for_each_linear("", &mut |_, linear| {
        if let Some(lora) = &mut linear.lora {
            let shape = lora.lora_b.dims();
            lora.lora_b = Param::from_tensor(Tensor::random(
                shape,
                Distribution::Normal(0.0, 0.05),
                &device,
            ));
        }
    });
    model
}

/// One batch's tensors.
struct Batch {
    /// `[2, t]`, image placeholders negative.
    ids: Tensor<B, 2, Int>,
    images: ImageInput<B>,
    /// `[2, t]`.
    mask: Tensor<B, 2, Int>,
    /// Where the loss is taken, from `[2, t]` labels.
    targets: LossTargets<B>,
}

/// Two rows: the first holds an image of 1 x 2 crops, the second one of 1 x 1 crops and
/// trailing padding. Labels on the text after each image.
fn batch() -> Batch {
    let device = Default::default();
    let spec = spec();
    let g = spec.image_size / 14 / 2;
    let grids = vec![(1, 2), (1, 1)];
    let counts: Vec<usize> = grids
        .iter()
        .map(|&(h, w)| image_token_count(h, w, g))
        .collect();
    let t = 40;
    let (mut ids, mut labels, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (k, &count) in counts.iter().enumerate() {
        let pad = 5 * k;
        let text = t - 3 - count - pad;
        let row: Vec<i64> = (0..3)
            .map(|i| 100 + i)
            .chain(std::iter::repeat_n(-(k as i64 + 1), count))
            .chain((0..text as i64).map(|i| 500 + 37 * i + k as i64))
            .chain(std::iter::repeat_n(0, pad))
            .collect();
        labels.extend(row.iter().enumerate().map(|(i, &id)| {
            if i >= 3 + count && i < t - pad {
                id
            } else {
                -100
            }
        }));
        mask.extend((0..t).map(|i| i64::from(i < t - pad)));
        ids.extend(row);
    }
    let int2 = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [2, t]), &device);
    let tiles: usize = grids.iter().map(|(h, w)| 1 + h * w).sum();
    let size = spec.image_size;
    // Deterministic pixels: the backend's generator is shared by the tests running at once.
    let pixels: Vec<f32> = (0..tiles * 3 * size * size)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let images = ImageInput {
        tiles: Tensor::from_data(TensorData::new(pixels, [tiles, 3, size, size]), &device),
        grids,
    };
    Batch {
        ids: int2(ids),
        images,
        mask: int2(mask),
        targets: LossTargets::new(&labels, [2, t], &device),
    }
}

/// The gradients of one micro-batch (loss scaled by 0.5, as with two accumulation steps),
/// by trainable tensor name, with or without recomputation; and the loss.
fn gradients(
    mut model: Phi3V<B>,
    plan: &AdapterPlan,
    recompute: bool,
) -> (f64, BTreeMap<String, Vec<f32>>) {
    let Batch {
        ids,
        images,
        mask,
        targets,
    } = batch();
    let mut sum = GradientSum::<B>::default();
    let loss = if recompute {
        let micro = MicroBatch {
            input_ids: ids.into(),
            images: Some(&images),
            attention_mask: Some(mask),
            targets: &targets,
        };
        recomputed_backward(&mut model, &plan.full, &mut sum, micro, 0.5)
            .unwrap()
            .into_scalar()
            .elem()
    } else {
        let loss = model
            .loss(ids, Some(&images), Some(mask), &targets)
            .unwrap();
        let value: f64 = loss.clone().into_scalar().elem();
        sum.add(&mut model, &plan.full, loss.mul_scalar(0.5));
        value
    };
    let grads = sum
        .grads
        .into_iter()
        .map(|(name, g)| (name, g.into_data().convert::<f32>().to_vec().unwrap()))
        .collect();
    (loss, grads)
}

/// Compares both paths under `plan`; returns the trained tensor names.
fn check(plan: &AdapterPlan, label: &str) -> Vec<String> {
    let model = model(plan);
    let (plain_loss, plain) = gradients(model.clone(), plan, false);
    let (loss, recomputed) = gradients(model, plan, true);
    assert!(
        (loss - plain_loss).abs() < 1e-6,
        "{label}: loss {loss} vs {plain_loss}"
    );
    assert_eq!(
        plain.keys().collect::<Vec<_>>(),
        recomputed.keys().collect::<Vec<_>>(),
        "{label}: the same tensors get gradients"
    );
    let (mut worst, mut worst_name, mut largest) = (0.0f32, String::new(), 0.0f32);
    for (name, g) in &plain {
        let magnitude = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(magnitude > 0.0, "{label}: {name} has an all-zero gradient");
        largest = largest.max(magnitude);
        let d = max_diff(&recomputed[name], g) / magnitude.max(1.0);
        if d > worst {
            (worst, worst_name) = (d, name.clone());
        }
    }
    println!(
        "{label}: {} tensors, largest gradient entry {largest:e}, worst scaled difference \
         {worst:e} ({worst_name})",
        plain.len()
    );
    assert!(
        worst <= 1e-6,
        "{label}: {worst_name} differs by {worst} (scaled)"
    );
    plain.into_keys().collect()
}

fn decoder_targets() -> Vec<String> {
    DECODER_TARGETS.iter().map(|s| s.to_string()).collect()
}

/// The reference plan: adapters on the decoder, `lm_head`, every CLIP layer and the
/// projection. Every one of them gets a gradient, through every recomputed CLIP layer.
#[test]
fn reference_plan_with_images_matches_plain_backprop() {
    let trained = check(&AdapterPlan::reference(true, false), "reference");
    for layer in 0..VISION_LAYERS - 1 {
        let prefix = format!("{TOWER}{layer}.");
        let n = trained.iter().filter(|n| n.starts_with(&prefix)).count();
        assert_eq!(n, 12, "CLIP layer {layer}: six adapters, A and B each");
    }
    assert!(trained.iter().any(|n| n.contains("img_projection.0")));
}

/// A frozen vision path (`--freeze-vision`): the tower runs once without a graph and no
/// vision tensor gets a gradient, while the decoder's still match.
#[test]
fn frozen_vision_matches_plain_backprop() {
    let trained = check(&AdapterPlan::reference(true, true), "frozen vision");
    assert!(trained.iter().all(|n| !n.contains("vision_embed_tokens")));
}

/// Only the projection trains (in full): the image tail is rerun, no CLIP layer is.
#[test]
fn projection_only_matches_plain_backprop() {
    let plan = AdapterPlan {
        targets: decoder_targets(),
        full: vec!["img_projection.0".into(), "img_projection.2".into()],
        ..AdapterPlan::reference(false, true)
    };
    let trained = check(&plan, "projection only");
    assert!(trained.iter().any(|n| n.ends_with("img_projection.2.bias")));
    assert!(trained.iter().all(|n| !n.starts_with(TOWER)));
}

/// Adapters on the upper CLIP layers only: the walk stops at the lowest trained layer,
/// and the frozen layers between it and the top still pass the gradient down.
#[test]
fn upper_clip_layers_only_matches_plain_backprop() {
    let mut targets = decoder_targets();
    targets.push("encoder.layers.1.mlp.fc1".into());
    targets.push("encoder.layers.3.self_attn.v_proj".into());
    let plan = AdapterPlan {
        targets,
        ..AdapterPlan::reference(false, true)
    };
    let trained = check(&plan, "upper CLIP layers");
    let vision: Vec<_> = trained.iter().filter(|n| n.starts_with(TOWER)).collect();
    assert_eq!(vision.len(), 4, "{vision:?}");
}

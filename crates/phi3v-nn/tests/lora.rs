//! LoRA on the shared linear layer: a fresh adapter is a no-op, the factored forward
//! equals the merged weight, and only adapter parameters receive gradients once the base
//! is frozen.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use phi3v_nn::{Linear, LoraAdapter, LoraConfig, LoraInit};
use phi3v_testkit::tensor_max_diff as max_diff;

type B = Flex;
type AD = Autodiff<Flex>;

#[test]
fn fresh_adapter_changes_nothing_and_factored_equals_merged() {
    let device = Default::default();
    let mut layer = Linear::<B>::random(12, 7, true, 0.3, &device);
    let x = Tensor::<B, 3>::random([2, 5, 12], Distribution::Normal(0.0, 1.0), &device);
    let base = layer.forward(x.clone());
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        init: LoraInit::Kaiming,
    };
    layer.lora = Some(LoraAdapter::new(12, 7, &config, &device));
    assert_eq!(max_diff(layer.forward(x.clone()), base.clone()), 0.0);

    // A trained adapter: non-zero B.
    let lora = layer.lora.take().unwrap();
    let b = Tensor::random([4, 7], Distribution::Normal(0.0, 1.0), &device);
    let lora = LoraAdapter::from_tensors(lora.lora_a.val(), b, config.scale());
    let merged = Linear::from_tensors(
        layer.weight.val() + lora.delta(),
        layer.bias.as_ref().map(|b| b.val()),
    );
    layer.lora = Some(lora);
    let factored = layer.forward(x.clone());
    assert!(
        max_diff(factored.clone(), base) > 1e-2,
        "the adapter must change the output"
    );
    assert!(max_diff(factored, merged.forward(x)) < 1e-5);
}

#[test]
fn frozen_base_gets_no_gradient() {
    let device = Default::default();
    let mut layer = Linear::<AD>::random(6, 3, true, 0.3, &device).no_grad();
    let config = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        init: LoraInit::Gaussian,
    };
    let fresh = LoraAdapter::<AD>::new(6, 3, &config, &device);
    // A non-zero B, so that A's gradient is non-trivial too.
    let lora = LoraAdapter::from_tensors(
        fresh.lora_a.val(),
        Tensor::ones([2, 3], &device).mul_scalar(0.5),
        config.scale(),
    );
    layer.lora = Some(lora);
    let x = Tensor::<AD, 3>::random([1, 4, 6], Distribution::Normal(0.0, 1.0), &device);
    let grads = layer.forward(x).sum().backward();
    assert!(
        layer.weight.val().grad(&grads).is_none(),
        "frozen weight got a gradient"
    );
    let lora = layer.lora.as_ref().unwrap();
    assert!(lora.lora_a.val().grad(&grads).is_some());
    assert!(lora.lora_b.val().grad(&grads).is_some());
}

/// A bf16 base under an f32 adapter: the output and the adapter's gradients stay f32 and
/// match the f32 layer to bf16 precision, and the frozen bf16 weight gets no gradient.
#[test]
fn bf16_base_keeps_f32_activations_and_adapter_gradients() {
    use burn::tensor::{DType, FloatDType};
    let device = Default::default();
    let config = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        init: LoraInit::Gaussian,
    };
    let mut f32_layer = Linear::<AD>::random(64, 48, true, 0.1, &device).no_grad();
    f32_layer.bias = f32_layer
        .bias
        .take()
        .map(|b| b.map(|t| t.random_like(Distribution::Normal(0.0, 1.0))));
    let fresh = LoraAdapter::<AD>::new(64, 48, &config, &device);
    f32_layer.lora = Some(LoraAdapter::from_tensors(
        fresh.lora_a.val(),
        Tensor::ones([2, 48], &device).mul_scalar(0.5),
        config.scale(),
    ));
    let mut bf16_layer = f32_layer.clone();
    bf16_layer.cast_weight(FloatDType::BF16);
    assert_eq!(bf16_layer.weight.dtype(), DType::BF16);
    assert_eq!(bf16_layer.bias.as_ref().unwrap().dtype(), DType::F32);

    let x = Tensor::<AD, 3>::random([2, 5, 64], Distribution::Normal(0.0, 1.0), &device);
    let run = |layer: &Linear<AD>| {
        let y = layer.forward(x.clone());
        assert_eq!(y.dtype(), DType::F32, "activations stay f32");
        let grads = y.clone().sum().backward();
        assert!(layer.weight.val().grad(&grads).is_none());
        let lora = layer.lora.as_ref().unwrap();
        let ga = lora.lora_a.val().grad(&grads).expect("A has a gradient");
        let gb = lora.lora_b.val().grad(&grads).expect("B has a gradient");
        assert_eq!(ga.dtype(), DType::F32);
        (y.inner(), ga, gb)
    };
    let (y32, ga32, gb32) = run(&f32_layer);
    let (y16, ga16, gb16) = run(&bf16_layer);
    let rel = |a: Tensor<B, 3>, b: Tensor<B, 3>| -> f32 {
        let num: f32 = (a.clone() - b).powi_scalar(2).sum().sqrt().into_scalar();
        let den: f32 = a.powi_scalar(2).sum().sqrt().into_scalar();
        num / den
    };
    let y_err = rel(y32, y16);
    println!("bf16 base: relative output error {y_err:e}");
    // bf16 keeps 8 significant bits (relative rounding 2^-9): a few 1e-3 over a
    // 64-term dot product, far below what a wrong product would give.
    assert!(y_err > 0.0 && y_err < 1e-2, "relative output error {y_err}");
    // B's gradient is (x A)^T dy, which the base does not touch: identical.
    assert!(rel(gb32.unsqueeze(), gb16.unsqueeze()) < 1e-6);
    assert!(rel(ga32.unsqueeze(), ga16.unsqueeze()) < 1e-6);
}

/// The spread of a fresh `A` is PEFT's: standard deviation `1/r` for `gaussian` (PEFT's
/// `nn.init.normal_(std=1 / r)`), and `U(-1/sqrt(in), 1/sqrt(in))` (standard deviation
/// `1/sqrt(3 in)`) for its Kaiming-uniform default. 64K draws put the sample standard
/// deviation within 1% of the target; a `1/sqrt(r)` spread would be 4x off at r 16.
#[test]
fn fresh_a_has_peft_spread() {
    let device = Default::default();
    let (d_in, d_out) = (4096, 8);
    for (init, rank, expected) in [
        (LoraInit::Gaussian, 16, 1.0 / 16.0),
        (LoraInit::Gaussian, 64, 1.0 / 64.0),
        (LoraInit::Kaiming, 16, 1.0 / (3.0 * d_in as f64).sqrt()),
    ] {
        let config = LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            dropout: 0.0,
            init,
        };
        let adapter = LoraAdapter::<B>::new(d_in, d_out, &config, &device);
        let a = adapter.lora_a.val();
        assert_eq!(a.dims(), [d_in, rank]);
        let values: Vec<f32> = a.into_data().to_vec().unwrap();
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = var.sqrt();
        assert!(
            (std / expected - 1.0).abs() < 0.01,
            "{init:?} r {rank}: std {std}, expected {expected}"
        );
        let b: f32 = adapter.lora_b.val().abs().max().into_scalar();
        assert_eq!(b, 0.0, "B starts at zero");
    }
}

/// `forward_split` gives `forward`'s output cut along its columns, for every weight form a
/// frozen base takes (f32, bf16 read in place, bf16 products, q4 blocks), with a bias and a
/// trained adapter, and under autodiff the parts' gradients reach the input and the
/// adapter as the whole output's do.
#[test]
fn split_forward_equals_the_cut_forward() {
    use burn::tensor::FloatDType;
    use phi3v_nn::{BaseDtype, MixedMatmul, ProductDtype};
    let device = Default::default();
    let config = LoraConfig {
        rank: 3,
        alpha: 6.0,
        dropout: 0.0,
        init: LoraInit::Kaiming,
    };
    let x = Tensor::<B, 3>::random([2, 9, 40], Distribution::Normal(0.0, 1.0), &device);
    let widths = [24, 8, 32];
    let scheme = BaseDtype::Q4
        .resolve::<B>(&device)
        .unwrap()
        .quantization
        .unwrap();
    for form in ["f32", "bf16", "bf16 products", "q4"] {
        let mut layer = Linear::<B>::random(40, 64, true, 0.3, &device);
        match form {
            "bf16" => layer.cast_weight(FloatDType::BF16),
            "bf16 products" => layer.set_products(ProductDtype::Bf16),
            "q4" => {
                let (id, w, _) = layer.weight.consume();
                layer.weight = burn::module::Param::initialized(id, B::quantize_frozen(w, &scheme));
            }
            _ => {}
        }
        let fresh = LoraAdapter::<B>::new(40, 64, &config, &device);
        let b = Tensor::random([3, 64], Distribution::Normal(0.0, 1.0), &device);
        layer.lora = Some(LoraAdapter::from_tensors(
            fresh.lora_a.val(),
            b,
            config.scale(),
        ));
        let whole = layer.forward(x.clone());
        let parts = layer.forward_split(x.clone(), widths);
        let mut start = 0;
        for (part, width) in parts.into_iter().zip(widths) {
            assert_eq!(part.dims(), [2, 9, width], "{form}");
            let cut = whole.clone().slice([0..2, 0..9, start..start + width]);
            let diff = max_diff(part, cut);
            assert!(diff < 1e-5, "{form}: part at column {start}: {diff}");
            start += width;
        }
    }

    // Under autodiff: the same gradients through the parts as through the whole.
    let layer = Linear::<AD>::random(40, 64, true, 0.3, &device).no_grad();
    let mut layer = layer;
    let fresh = LoraAdapter::<AD>::new(40, 64, &config, &device);
    let b = Tensor::random([3, 64], Distribution::Normal(0.0, 1.0), &device);
    layer.lora = Some(LoraAdapter::from_tensors(
        fresh.lora_a.val(),
        b,
        config.scale(),
    ));
    let weights = Tensor::<AD, 3>::random([2, 9, 64], Distribution::Normal(0.0, 1.0), &device);
    let grads = |split: bool| {
        let x = Tensor::<AD, 3>::from_inner(x.clone()).require_grad();
        let y = if split {
            Tensor::cat(layer.forward_split(x.clone(), widths).to_vec(), 2)
        } else {
            layer.forward(x.clone())
        };
        let g = (y * weights.clone()).sum().backward();
        let lora = layer.lora.as_ref().unwrap();
        (
            x.grad(&g).unwrap(),
            lora.lora_a.grad(&g).unwrap(),
            lora.lora_b.grad(&g).unwrap(),
        )
    };
    // The parts sum A's gradient in another order: within 1e-6 of the largest entry.
    let (whole, split) = (grads(false), grads(true));
    let close = |a: Tensor<B, 2>, b: Tensor<B, 2>, what: &str| {
        let largest = a.clone().abs().max().into_scalar();
        let diff = max_diff(a, b);
        assert!(
            diff <= 1e-6 * largest.max(1.0),
            "{what}: {diff} off, entries up to {largest}"
        );
    };
    close(
        whole.0.reshape([18, 40]),
        split.0.reshape([18, 40]),
        "input gradient",
    );
    close(whole.1, split.1, "A's gradient");
    close(whole.2, split.2, "B's gradient");
}

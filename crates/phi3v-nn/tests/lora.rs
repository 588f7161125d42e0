//! LoRA on the shared linear layer: a fresh adapter is a no-op, the factored forward
//! equals the merged weight, and only adapter parameters receive gradients once the base
//! is frozen.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use phi3v_nn::{Linear, LoraAdapter, LoraConfig, LoraInit};

type B = Flex;
type AD = Autodiff<Flex>;

fn max_diff(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
    (a - b).abs().max().into_scalar()
}

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

//! The decoder on the wgpu backend against the same forward on flex (CPU).
//!
//! Run with `cargo test --features wgpu --test wgpu_smoke`. On a machine without a GPU,
//! Mesa's lavapipe (`apt-get install mesa-vulkan-drivers libvulkan1`) provides Vulkan on
//! the CPU: slow, but the real GPU code path. Tolerance 1e-3: GPU reductions reorder sums.
#![cfg(feature = "wgpu")]

use std::path::PathBuf;

use burn::backend::{Flex, Wgpu};
use burn::tensor::{Int, Tensor, TensorData};
use phi3_decoder::{ForwardOptions, Phi3Model};
use phi3v_nn::AttentionBackend;

fn forward<B: AttentionBackend>(ids: &[i64], mask: &[i64]) -> Vec<f32> {
    let device = Default::default();
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates/phi3-decoder/tests/data/tiny_b");
    let model = Phi3Model::<B>::from_pretrained(dir, &device).unwrap();
    let n = ids.len() / 2;
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [2, n]), &device);
    let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(mask.to_vec(), [2, n]), &device);
    model
        .forward(
            ids,
            ForwardOptions {
                attention_mask: Some(mask),
                ..Default::default()
            },
        )
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap()
}

#[test]
fn wgpu_forward_matches_flex() {
    // A left-padded batch of two, longer than the original context (long factors) and the
    // sliding window.
    let n = 40;
    let ids: Vec<i64> = (0..2 * n as i64).map(|i| (i * 37 + 11) % 384).collect();
    let mut mask = vec![1i64; 2 * n];
    mask[..5].fill(0);
    let cpu = forward::<Flex>(&ids, &mask);
    let gpu = forward::<Wgpu>(&ids, &mask);
    assert_eq!(cpu.len(), gpu.len());
    let worst = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("wgpu vs flex: max abs logit difference {worst:e}");
    assert!(worst <= 1e-3, "wgpu differs from flex by {worst:e}");
}

//! The decoder on the wgpu backend against the same forward on flex (CPU); inference
//! attention (burn's fused kernel where the mask allows) for every mask kind; the products
//! over a quantized (QLoRA) base on wgpu, which are burn's CubeCL kernels; and 20 LoRA
//! updates of the tiny model on both backends.
//!
//! Run with `cargo test --features wgpu --test wgpu_smoke`. On a machine without a GPU,
//! Mesa's lavapipe (`apt-get install mesa-vulkan-drivers libvulkan1`) provides Vulkan on
//! the CPU: slow, but the real GPU code path. Tolerance 1e-3: GPU reductions reorder sums.
#![cfg(feature = "wgpu")]

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex, Wgpu};
use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Distribution, ElementConversion, FloatDType, Int, Tensor, TensorData};
use phi3_decoder::{ForwardOptions, LossTargets, Phi3Model};
use phi3v::vision::ImageEmbedding;
use phi3v::{ImageInput, ModelDir};
use phi3v_nn::attention::TiledOptions;
use phi3v_nn::mixed::is_quantized;
use phi3v_nn::AttentionKernel;
use phi3v_nn::{AttentionBackend, AttentionMask, BaseDtype, MixedMatmul, Weights};
use phi3v_peft::import_peft;
use phi3v_testkit::max_diff;
use phi3v_train::optim::{AdamW, AdamWConfig};
use phi3v_train::trainer::{apply_gradients, GradientSum};

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
    let worst = max_diff(&cpu, &gpu);
    eprintln!("wgpu vs flex: max abs logit difference {worst:e}");
    assert!(worst <= 1e-3, "wgpu differs from flex by {worst:e}");
}

/// The largest absolute difference between two tensors, and the largest magnitude of `want`.
fn diff_and_scale<B: burn::tensor::backend::Backend>(
    got: Tensor<B, 2>,
    want: Tensor<B, 2>,
) -> (f32, f32) {
    let got = got.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let want = want.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let largest = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    (max_diff(&got, &want), largest)
}

/// A q8 and a q4 base on wgpu, held as the loader holds it (`[in, out]`, blocks of 32
/// along the outputs, q4 packed eight per `u32`): the product, its transposed product (the
/// backward's) and widening all give the dequantized weight's results, directly and under
/// autodiff, where the weight takes no gradient.
#[test]
fn wgpu_quantized_products_match_the_dequantized_weight() {
    type A = Autodiff<Wgpu>;
    let device = Default::default();
    let (m, k, n) = (5, 64, 96);
    for base in [BaseDtype::Q8, BaseDtype::Q4] {
        let scheme = base.resolve::<Wgpu>(&device).unwrap().quantization.unwrap();
        let float =
            Tensor::<Wgpu, 2>::random([n, k], Distribution::Normal(0.0, 1.0), &device).transpose();
        let w = Wgpu::quantize_frozen(float.clone(), &scheme);
        assert!(is_quantized(&w));
        let dequantized = Wgpu::widen(w.clone(), FloatDType::F32);
        // Rounding moves a value by at most half a step: the block's largest magnitude over
        // 127 (q8) or 7 (q4) steps each way.
        let steps = if base == BaseDtype::Q8 { 127.0 } else { 7.0 };
        let (rounding, largest) = diff_and_scale(dequantized.clone(), float);
        assert!(
            rounding <= largest / steps,
            "{base:?} rounding: {rounding:e}"
        );
        let x = Tensor::<Wgpu, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let dy = Tensor::<Wgpu, 2>::random([m, n], Distribution::Normal(0.0, 1.0), &device);

        let (diff, largest) = diff_and_scale(
            Wgpu::mixed_matmul(x.clone(), w.clone()),
            x.clone().matmul(dequantized.clone()),
        );
        eprintln!("{base:?} product on wgpu: {diff:e} off, outputs up to {largest}");
        assert!(diff <= 1e-4 * largest, "{base:?} product: {diff:e}");
        let (diff, largest) = diff_and_scale(
            Wgpu::mixed_matmul_transposed(dy.clone(), w.clone()),
            dy.clone().matmul(dequantized.clone().transpose()),
        );
        assert!(
            diff <= 1e-4 * largest,
            "{base:?} transposed product: {diff:e}"
        );

        let xa = Tensor::<A, 2>::from_inner(x).require_grad();
        let wa = Tensor::<A, 2>::from_inner(w);
        // burn's autodiff holds a quantized tensor as a constant (it cannot even read one's
        // gradient slot: that would dequantize).
        assert!(
            !wa.is_require_grad(),
            "{base:?}: the base requires a gradient"
        );
        let y = A::mixed_matmul(xa.clone(), wa);
        let grads = (y * Tensor::from_inner(dy.clone())).sum().backward();
        let (diff, largest) = diff_and_scale(
            xa.grad(&grads).expect("the input has a gradient"),
            dy.matmul(dequantized.transpose()),
        );
        assert!(diff <= 1e-4 * largest, "{base:?} input gradient: {diff:e}");
    }
}

/// The losses of `steps` LoRA updates (plain backpropagation, clipping at 1, AdamW at lr
/// 1e-3) of the tiny reference model on the LoRA-step fixture's batch (one image of 2 x 2
/// crops), from the fixture's PEFT adapter, so that both backends start from the same
/// values.
fn lora_losses<B>(steps: usize) -> Vec<f32>
where
    B: AutodiffBackend + AttentionBackend,
    B::InnerBackend: AttentionBackend,
{
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("crates/phi3v-train/tests/data/lora_step");
    let device = Default::default();
    let dir = ModelDir::resolve(
        root.join("crates/phi3v/tests/data/tiny_phi3v")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let mut model = dir.load_model_with::<B>(&device, None).unwrap().no_grad();
    import_peft(
        &mut model,
        &fixture.join("adapter_init"),
        &Default::default(),
    )
    .unwrap();
    // Both towers on the memory-efficient kernel: on wgpu, the fused CubeCL forward and
    // backward; on flex, the tiled one.
    let kernel = AttentionKernel::MemoryEfficient {
        block_q: 16,
        block_k: 16,
    };
    model.decoder = model.decoder.with_attention_kernel(kernel);
    model.vision_embed_tokens = model.vision_embed_tokens.map(|vision| ImageEmbedding {
        img_processor: vision.img_processor.with_attention_kernel(kernel),
        ..vision
    });

    let inputs = Weights::open(fixture.join("inputs.safetensors")).unwrap();
    let ints = |name: &str| inputs.read_i64(name, inputs.shape(name).unwrap()).unwrap();
    let (ids, labels, grids) = (ints("input_ids"), ints("labels"), ints("image_grids"));
    let pshape = inputs.shape("pixel_values").unwrap().to_vec();
    let pixels = inputs.read_f32("pixel_values", &pshape).unwrap();
    let t = ids.len();
    let images = ImageInput {
        tiles: Tensor::<B, 4>::from_data(
            TensorData::new(pixels, [pshape[0], pshape[1], pshape[2], pshape[3]]),
            &device,
        ),
        grids: vec![(grids[0] as usize, grids[1] as usize)],
    };
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
    let targets = LossTargets::new(&labels, [1, t], &device);

    let mut optimizer = AdamW::new(AdamWConfig::default());
    (0..steps)
        .map(|_| {
            let loss = model
                .loss(ids.clone(), Some(&images), None, &targets)
                .unwrap();
            let value: f32 = loss.clone().into_scalar().elem();
            let mut sum = GradientSum::<B>::default();
            sum.add(&mut model, &[], loss);
            apply_gradients(&mut model, &[], &mut optimizer, sum, 1e-3, 1.0);
            value
        })
        .collect()
}

/// Training on wgpu gives flex's losses, update after update: the forward, the backward of
/// every op the step uses (attention included), clipping and AdamW on the GPU path.
#[test]
fn wgpu_lora_run_matches_flex() {
    let steps = 20;
    let runs = phi3v_nn::attention::autodiff_backward_runs();
    let cpu = lora_losses::<Autodiff<Flex>>(steps);
    let gpu = lora_losses::<Autodiff<Wgpu>>(steps);
    assert!(
        phi3v_nn::attention::autodiff_backward_runs() > runs,
        "the run never took the memory-efficient attention's backward"
    );
    let worst = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| ((a - b) / a).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "{steps} LoRA updates: loss {} -> {} on flex, {} -> {} on wgpu; worst relative \
         difference {worst:e}",
        cpu[0],
        cpu[steps - 1],
        gpu[0],
        gpu[steps - 1]
    );
    assert!(
        cpu[steps - 1] < 0.9 * cpu[0],
        "the run does not learn: {cpu:?}"
    );
    assert!(
        worst <= 1e-4,
        "wgpu losses {gpu:?} differ from flex's {cpu:?}"
    );
}

/// One mask kind attention meets.
struct MaskCase {
    name: &'static str,
    q_len: usize,
    k_len: usize,
    head_dim: usize,
    /// Causal after this many cached keys; `None`: full attention.
    past: Option<usize>,
    sliding_window: Option<usize>,
    /// The first two keys of each row are padding.
    padded: bool,
}

/// A case at head dimension 64 (CLIP's). At 16, lavapipe's LLVM unrolls the fused
/// kernels' loops in full and takes 10-30 s to compile each variant.
const fn case(
    name: &'static str,
    (q_len, k_len): (usize, usize),
    past: Option<usize>,
    sliding_window: Option<usize>,
    padded: bool,
) -> MaskCase {
    MaskCase {
        name,
        q_len,
        k_len,
        head_dim: 64,
        past,
        sliding_window,
        padded,
    }
}

const MASKS: [MaskCase; 7] = [
    case("full (vision)", (9, 9), None, None, false),
    case("causal prefill", (9, 9), Some(0), None, false),
    case("causal prefill, padded", (9, 9), Some(0), None, true),
    case("decode after a cache, padded", (1, 10), Some(9), None, true),
    case("chunk after a cache", (3, 10), Some(7), None, false),
    case("sliding window", (9, 9), Some(0), Some(4), false),
    case(
        "window wider than the keys",
        (9, 9),
        Some(0),
        Some(16),
        true,
    ),
];

/// The same cases at lengths that span several of the fused kernels' cubes (64 rows) and
/// shared-memory tiles (32 keys), at the head dimensions of Phi-3 (96) and CLIP (64).
const LONG_MASKS: [MaskCase; 5] = [
    long(
        case("full (vision), long", (150, 150), None, None, false),
        64,
    ),
    long(
        case(
            "causal prefill, padded, long",
            (140, 140),
            Some(0),
            None,
            true,
        ),
        96,
    ),
    long(
        case(
            "chunk after a cache, long",
            (70, 200),
            Some(130),
            None,
            true,
        ),
        96,
    ),
    long(
        case("sliding window, long", (160, 160), Some(0), Some(50), false),
        96,
    ),
    long(
        case(
            "window after a cache, long",
            (40, 120),
            Some(80),
            Some(45),
            true,
        ),
        96,
    ),
];

const fn long(case: MaskCase, head_dim: usize) -> MaskCase {
    MaskCase { head_dim, ..case }
}

/// Fixed, varied inputs of `[batch, heads, len, head_dim]`.
fn values<B: burn::tensor::backend::Backend>(
    [batch, heads, len, dim]: [usize; 4],
    salt: usize,
) -> Tensor<B, 4> {
    let data: Vec<f32> = (0..batch * heads * len * dim)
        .map(|i| ((i * 7919 + salt * 104729) % 2003) as f32 / 1001.0 - 1.0)
        .collect();
    Tensor::<B, 4>::from_data(
        TensorData::new(data, [batch, heads, len, dim]),
        &Default::default(),
    )
}

/// The mask of `case`: causal or full, its window, and padding of the first two keys of
/// the first batch row (so that a causal query 0 or 1 there sees no key).
fn case_mask<B: burn::tensor::backend::Backend>(case: &MaskCase, batch: usize) -> AttentionMask<B> {
    let mask = match case.past {
        Some(past_len) => AttentionMask::causal(past_len),
        None => AttentionMask::none(),
    }
    .with_sliding_window(case.sliding_window);
    if !case.padded {
        return mask;
    }
    let k_len = case.k_len;
    let padding: Vec<bool> = (0..batch * k_len).map(|i| i < 2).collect();
    let padding = Tensor::<B, 2, Bool>::from_data(
        TensorData::new(padding, [batch, k_len]),
        &Default::default(),
    );
    mask.with_padding(Some(padding))
}

fn case_options(case: &MaskCase) -> TiledOptions {
    TiledOptions {
        scale: 1.0 / (case.head_dim as f64).sqrt(),
        block_q: 16,
        block_k: 16,
    }
}

fn host<B: burn::tensor::backend::Backend>(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// Training attention on `B` for one case: the output and log-sum-exp of the forward that
/// training runs, and the gradients of `q`, `k` and `v` of `sum(out * w)` through the
/// attention's autodiff node; and whether the padding mask was read back to the host.
fn attention_training<B>(case: &MaskCase) -> ([Vec<f32>; 5], bool)
where
    B: AutodiffBackend + AttentionBackend,
    B::InnerBackend: AttentionBackend,
{
    let (batch, heads) = (2, 3);
    let qd = [batch, heads, case.q_len, case.head_dim];
    let kd = [batch, heads, case.k_len, case.head_dim];
    let options = case_options(case);
    let inner_mask = case_mask::<B::InnerBackend>(case, batch);
    let (out, lse) = B::InnerBackend::memory_efficient_attention_forward(
        values(qd, 1),
        values(kd, 2),
        values(kd, 3),
        &inner_mask,
        options,
    );
    let [q, k, v] = [values::<B>(qd, 1), values(kd, 2), values(kd, 3)].map(|t| t.require_grad());
    let mask = case_mask::<B>(case, batch);
    let attended = B::memory_efficient_attention(q.clone(), k.clone(), v.clone(), &mask, options);
    let grads = (attended * values::<B>(qd, 4)).sum().backward();
    let grad = |t: &Tensor<B, 4>| host(t.grad(&grads).unwrap());
    let read_back = mask.padding_read_back() || inner_mask.padding_read_back();
    (
        [host(out), host(lse), grad(&q), grad(&k), grad(&v)],
        read_back,
    )
}

/// Inference attention on `B` for one case, on fixed inputs.
fn attention_output<B: AttentionBackend>(case: &MaskCase) -> Vec<f32> {
    let batch = 2;
    let qd = [batch, 2, case.q_len, case.head_dim];
    let kd = [batch, 2, case.k_len, case.head_dim];
    let mask = case_mask::<B>(case, batch);
    host(B::memory_efficient_attention(
        values(qd, 1),
        values(kd, 2),
        values(kd, 3),
        &mask,
        case_options(case),
    ))
}

/// Inference attention on wgpu (burn's fused kernel where the mask can be said to it, our
/// fused kernel otherwise) gives flex's tiled kernel's output, for every mask kind.
#[test]
fn wgpu_attention_matches_flex_for_every_mask() {
    for case in MASKS.iter().chain(&LONG_MASKS) {
        let name = case.name;
        let worst = max_diff(
            &attention_output::<Flex>(case),
            &attention_output::<Wgpu>(case),
        );
        eprintln!("attention, {name}: wgpu vs flex {worst:e}");
        assert!(worst <= 1e-4, "{name}: wgpu differs from flex by {worst:e}");
    }
}

/// The fused training attention on wgpu (our CubeCL forward, which saves the log-sum-exp,
/// and our CubeCL backward, one autodiff node) gives flex's tiled kernel's output,
/// log-sum-exp and gradients, for every mask kind, in one tile and across many.
#[test]
fn wgpu_fused_training_attention_matches_flex_for_every_mask() {
    let runs = phi3v_nn::attention::autodiff_backward_runs();
    for case in MASKS.iter().chain(&LONG_MASKS) {
        let name = case.name;
        let (cpu, cpu_read_back) = attention_training::<Autodiff<Flex>>(case);
        // The probe works: the tiled kernel reads padding back to skip tiles without any.
        assert_eq!(cpu_read_back, case.padded, "{name}: flex's read-back");
        let (gpu, read_back) = attention_training::<Autodiff<Wgpu>>(case);
        // No device round trip: the kernels take the padding as a tensor, and rows that
        // see no key are found from the log-sum-exp on the device.
        assert!(
            !read_back,
            "{name}: the padding mask was read back to the host"
        );
        let parts = ["output", "log-sum-exp", "dq", "dk", "dv"];
        let worst: Vec<f32> = cpu.iter().zip(&gpu).map(|(c, g)| max_diff(c, g)).collect();
        eprintln!("training attention, {name}: wgpu vs flex {worst:?} ({parts:?})");
        for (part, worst) in parts.iter().zip(&worst) {
            assert!(
                *worst <= 1e-4,
                "{name}: the {part} on wgpu differs from flex by {worst:e}"
            );
        }
        let scale = cpu[2..]
            .iter()
            .flatten()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            scale > 1e-2,
            "{name}: the gradients vanish, so they test nothing"
        );
    }
    // Both backends ran the attention's own autodiff node, once per case.
    let cases = MASKS.len() + LONG_MASKS.len();
    assert_eq!(
        phi3v_nn::attention::autodiff_backward_runs() - runs,
        2 * cases
    );
}

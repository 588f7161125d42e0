//! One LoRA training step against PyTorch + PEFT (fixture from
//! `scripts/make_lora_fixtures.py`): the loss, every adapter gradient, the global gradient
//! norm, and the adapters after a clipped AdamW update.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use phi3v::{ImageInput, ModelDir, Phi3V};
use phi3v_lora::optim::{AdamW, AdamWConfig};
use phi3v_lora::params::for_each_trainable;
use phi3v_lora::peft::import_peft;
use phi3v_lora::trainer::{apply_gradients, GradientSum};
use phi3v_nn::Weights;

type B = Autodiff<Flex>;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lora_step")
}

fn model() -> Phi3V<B> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../phi3v/tests/data/tiny_phi3v");
    let dir = ModelDir::resolve(base.to_str().unwrap()).unwrap();
    let model = dir.load_model::<B>(&Default::default()).unwrap();
    let mut model = burn::module::Module::no_grad(model);
    import_peft(
        &mut model,
        &data().join("adapter_init"),
        &Default::default(),
    )
    .unwrap();
    model
}

fn read(w: &Weights, name: &str) -> (Vec<usize>, Vec<f32>) {
    let shape = w.shape(name).unwrap().to_vec();
    (shape.clone(), w.read_f32(name, &shape).unwrap())
}

/// The PEFT name and PyTorch-layout values of one of our trainable tensors.
fn as_peft(name: &str, shape: &[usize], flat: Vec<f32>) -> (String, Vec<f32>) {
    let (module, part) = name.rsplit_once('.').unwrap();
    let (r, c) = (shape[0], shape[1]);
    let mut t = vec![0.0; flat.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = flat[i * c + j];
        }
    }
    (format!("base_model.model.{module}.{part}.weight"), t)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn one_lora_step_matches_pytorch_and_peft() {
    let device = Default::default();
    let mut model = model();
    let inputs = Weights::open(data().join("inputs.safetensors")).unwrap();
    let expected = Weights::open(data().join("expected.safetensors")).unwrap();
    let ids = inputs
        .read_i64("input_ids", inputs.shape("input_ids").unwrap())
        .unwrap();
    let labels = inputs
        .read_i64("labels", inputs.shape("labels").unwrap())
        .unwrap();
    let (pshape, pixels) = read(&inputs, "pixel_values");
    let grids = inputs.read_i64("image_grids", &[1, 2]).unwrap();
    let t = ids.len();
    let int2 = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [1, t]), &device);
    let images = ImageInput {
        tiles: Tensor::<B, 4>::from_data(
            TensorData::new(pixels, [pshape[0], pshape[1], pshape[2], pshape[3]]),
            &device,
        ),
        grids: vec![(grids[0] as usize, grids[1] as usize)],
    };
    let loss = model
        .loss(int2(ids), Some(&images), None, int2(labels))
        .unwrap();
    let value: f32 = loss.clone().into_scalar().elem();
    let expected_loss = read(&expected, "loss").1[0];
    println!("loss {value} (PyTorch {expected_loss})");
    assert!((value - expected_loss).abs() < 1e-4);

    let mut grads = GradientSum::<B>::default();
    grads.add(&mut model, &[], loss);
    let mut worst_grad = 0.0f32;
    let mut checked = 0;
    for (name, g) in &grads.grads {
        let mut shape = Vec::new();
        for_each_trainable(&mut model, &[], &mut |n, slot| {
            if n == name {
                shape = slot.shape();
            }
        });
        let values = g
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap();
        let (peft_name, ours) = as_peft(name, &shape, values);
        let (_, theirs) = read(&expected, &format!("grad.{peft_name}"));
        let d = max_diff(&ours, &theirs);
        worst_grad = worst_grad.max(d);
        assert!(d < 1e-4, "{peft_name}: gradient differs by {d}");
        checked += 1;
    }
    // 29 adapted modules; the 6 of the CLIP layer Phi-3-V does not run are not in the model.
    assert_eq!(checked, 2 * 23, "every adapter got a gradient");
    println!("worst gradient difference {worst_grad:e} over {checked} tensors");

    let mut optimizer = AdamW::new(AdamWConfig::default());
    let norm = apply_gradients(&mut model, &[], &mut optimizer, grads, 1e-3, 1.0);
    let expected_norm = read(&expected, "grad_norm").1[0];
    println!("gradient norm {norm} (PyTorch {expected_norm})");
    assert!((norm as f32 - expected_norm).abs() < 1e-4 * expected_norm.max(1.0));

    let mut worst_update = 0.0f32;
    let mut updated = 0;
    for_each_trainable(&mut model, &[], &mut |name, slot| {
        let shape = slot.shape();
        let values = slot
            .flat()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap();
        let (peft_name, ours) = as_peft(name, &shape, values);
        let (_, theirs) = read(&expected, &format!("updated.{peft_name}"));
        worst_update = worst_update.max(max_diff(&ours, &theirs));
        updated += 1;
    });
    println!("worst updated-adapter difference {worst_update:e} over {updated} tensors");
    assert_eq!(updated, 46);
    // Adam's first step moves every entry by about lr; 2e-6 also catches a missing weight
    // decay (9e-6 here).
    assert!(
        worst_update < 2e-6,
        "updated adapters differ by {worst_update}"
    );
}

//! Logits of a model dir with a PEFT adapter on an inputs file, for checking an export
//! against PEFT in Python (`scripts/check_peft_export.py`, run by hand):
//!
//! ```text
//! cargo run --example peft_logits -- BASE_DIR ADAPTER_DIR INPUTS.safetensors OUT.safetensors
//! ~/venv/bin/python scripts/check_peft_export.py --base BASE_DIR --adapter ADAPTER_DIR \
//!     --inputs INPUTS.safetensors --logits OUT.safetensors
//! ```
//!
//! INPUTS holds `input_ids` i64 `[1, T]` (image placeholders `-k`), `pixel_values` f32
//! `[N, 3, S, S]` and `image_grids` i64 `[images, 2]`; OUT gets `logits` f32 `[1, T, vocab]`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use phi3v::nn::weights::save_f32;
use phi3v::nn::Weights;
use phi3v::{ImageInput, ModelDir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, adapter, inputs, out] = args.as_slice() else {
        return Err(
            "usage: peft_logits BASE_DIR ADAPTER_DIR INPUTS.safetensors OUT.safetensors".into(),
        );
    };
    let device = Default::default();
    let mut model = ModelDir::resolve(base)?.load_model::<Flex>(&device)?;
    phi3v_peft::import_peft(&mut model, Path::new(adapter), &device)?;
    let w = Weights::open(inputs)?;
    let ids = w.read_i64("input_ids", w.shape("input_ids")?)?;
    let shape = w.shape("pixel_values")?.to_vec();
    let pixels = w.read_f32("pixel_values", &shape)?;
    let grid_shape = w.shape("image_grids")?.to_vec();
    let grids = w.read_i64("image_grids", &grid_shape)?;
    let t = ids.len();
    let grids = grids
        .chunks(2)
        .map(|g| (g[0] as usize, g[1] as usize))
        .collect();
    let images = ImageInput::<Flex>::from_tiles(pixels, shape[2], grids, &device)?;
    let ids = Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
    let logits = model.forward(ids, Some(&images), Default::default())?;
    let dims = logits.dims().to_vec();
    let values = logits
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let mut tensors = BTreeMap::new();
    tensors.insert("logits".to_string(), (dims, values));
    save_f32(Path::new(out), &tensors, None)?;
    println!("wrote {out}");
    Ok(())
}

//! File helpers of checkpoints and the run directory. The atomic writes, JSON files and
//! tensor maps are `phi3v-peft`'s (one implementation for adapters and runs); what only
//! training needs, flat tensors back onto a device, is here.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
pub use phi3v_peft::io::{read_json, save_tensors, to_vec, write_json, TensorMap};

/// A `[numel]` tensor from f32 values.
pub fn from_vec<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

//! `phi3v logits`: one f32 forward on the CPU, written to safetensors for comparison with
//! the Python reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use phi3_decoder::ForwardOptions;
use phi3v::Phi3VError;
use safetensors::tensor::{Dtype, TensorView};

use super::session::Session;

pub fn run(model: &str, prompt: &str, images: &[PathBuf], out: &Path) -> Result<(), Phi3VError> {
    let session = Session::<Flex>::load(model, Default::default())?;
    let inputs = session.inputs(prompt, images)?;
    let n = inputs.ids.len();
    let logits = session.model.forward(
        inputs.tensors.input_ids,
        inputs.tensors.images.as_ref(),
        ForwardOptions::default(),
    )?;
    let [_, _, vocab] = logits.dims();
    let values: Vec<f32> = logits
        .into_data()
        .to_vec()
        .map_err(|e| Phi3VError::Other(format!("reading logits: {e:?}")))?;
    let id_bytes: Vec<u8> = inputs.ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let logit_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = vec![
        (
            "input_ids".to_string(),
            view(Dtype::I64, vec![n], &id_bytes)?,
        ),
        (
            "logits".to_string(),
            view(Dtype::F32, vec![n, vocab], &logit_bytes)?,
        ),
    ];
    let metadata = HashMap::from([("prompt".to_string(), prompt.to_string())]);
    safetensors::serialize_to_file(tensors, Some(metadata), out)
        .map_err(|e| Phi3VError::Other(format!("writing {}: {e}", out.display())))?;
    eprintln!("wrote {} ({n} tokens x {vocab} logits)", out.display());
    Ok(())
}

fn view(dtype: Dtype, shape: Vec<usize>, bytes: &[u8]) -> Result<TensorView<'_>, Phi3VError> {
    TensorView::new(dtype, shape, bytes).map_err(|e| Phi3VError::Other(e.to_string()))
}

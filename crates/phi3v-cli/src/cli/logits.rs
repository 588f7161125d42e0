//! `phi3v logits`: one forward, computed in f32 whatever the weights are held in, written to
//! safetensors for comparison with the Python reference. It runs on the CPU unless
//! `--backend` names a GPU, which is how a GPU backend is checked against the reference.

use std::collections::HashMap;
use std::error::Error;
use std::path::Path;

use phi3_decoder::ForwardOptions;
use phi3v::nn::{AttentionBackend, BaseDtype, ProductDtype};
use phi3v::Phi3VError;
use phi3v_io::{check_disjoint, Role};
use safetensors::tensor::{Dtype, TensorView};

use super::session::Session;

pub fn run<B: AttentionBackend>(
    model: &str,
    prompt: &str,
    images: &[String],
    out: &Path,
    overwrite: bool,
    (base_dtype, products): (BaseDtype, ProductDtype),
    device: B::Device,
) -> Result<(), Box<dyn Error>> {
    let images = super::images::resolve(images).map_err(Phi3VError::Input)?;
    check_output(model, &images, out, overwrite)?;
    let session = Session::<B>::load(model, device, base_dtype, products)?;
    let inputs = session.inputs(prompt, &images)?;
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
    phi3v_io::write_atomic(out, |tmp| {
        safetensors::serialize_to_file(tensors, Some(metadata), tmp)
            .map_err(|e| Box::<dyn Error>::from(format!("writing {}: {e}", out.display())))
    })?;
    eprintln!("wrote {} ({n} tokens x {vocab} logits)", out.display());
    Ok(())
}

/// Refuses an `--out` that would replace the model's files or an image, or an existing file
/// without `--overwrite`, before the model is loaded.
fn check_output(
    model: &str,
    images: &[std::path::PathBuf],
    out: &Path,
    overwrite: bool,
) -> Result<(), Box<dyn Error>> {
    let model_path = Path::new(model);
    let mut inputs: Vec<Role<'_>> = images.iter().map(|p| Role::new("--image", p)).collect();
    if model_path.exists() {
        inputs.push(Role::new("--model", model_path));
    }
    check_disjoint(Role::new("--out", out), &inputs)?;
    if out.is_dir() {
        return Err(format!("--out {} is a folder; give a file name", out.display()).into());
    }
    if out.exists() && !overwrite {
        return Err(format!(
            "--out {} exists: pass --overwrite to replace it, or choose another file",
            out.display()
        )
        .into());
    }
    Ok(())
}

fn view(dtype: Dtype, shape: Vec<usize>, bytes: &[u8]) -> Result<TensorView<'_>, Phi3VError> {
    TensorView::new(dtype, shape, bytes).map_err(|e| Phi3VError::Other(e.to_string()))
}

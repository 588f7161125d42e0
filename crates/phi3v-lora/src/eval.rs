//! Evaluation on the validation split: the teacher-forced loss, then greedy generation on
//! a sample of items, scored from the generated text against the truth and the baselines.

use burn::tensor::ElementConversion;
use phi3v::data::tokenize::{Phi3Tokenizer, ENDOFTEXT_ID, END_ID, PAD_ID};
use phi3v::decoder::{GenerateOptions, SamplingConfig};
use phi3v::{generate_batch, Phi3V};
use phi3v_nn::AttentionBackend;
use serde::{Deserialize, Serialize};

use crate::answer::{parse_answer, score, AnswerScores, ParsedAnswer, Truth};
use crate::dataset::TaskData;
use crate::error::LoraError;
use crate::tracking::{thumbnail_png, EvalRow};

/// Side of the thumbnails in evaluation tables, in pixels.
pub const THUMBNAIL_SIDE: u32 = 96;

/// One evaluation's numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub val_loss: f64,
    pub scores: AnswerScores,
}

/// Token-weighted mean loss over the items at `indices`, in batches of `batch_size`.
pub fn validation_loss<B: AttentionBackend>(
    model: &Phi3V<B>,
    data: &TaskData,
    indices: &[usize],
    batch_size: usize,
    device: &B::Device,
) -> Result<f64, LoraError> {
    let (mut sum, mut weight) = (0.0, 0.0);
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = data.training_batch::<B>(chunk, device)?;
        let labels = batch.labels.expect("training batches have labels");
        let loss = model.loss(
            batch.input_ids,
            batch.images.as_ref(),
            Some(batch.attention_mask),
            labels,
        )?;
        let value: f64 = loss.into_scalar().elem();
        let w = batch.target_tokens as f64;
        sum += value * w;
        weight += w;
    }
    Ok(if weight > 0.0 { sum / weight } else { f64::NAN })
}

/// Greedy answers for the items at `indices`, decoded to text.
pub fn generate_answers<B: AttentionBackend>(
    model: &Phi3V<B>,
    data: &TaskData,
    tokenizer: &Phi3Tokenizer,
    indices: &[usize],
    batch_size: usize,
    max_new_tokens: usize,
    device: &B::Device,
) -> Result<Vec<String>, LoraError> {
    let options = GenerateOptions {
        max_new_tokens,
        stop_tokens: vec![ENDOFTEXT_ID, END_ID],
        sampling: SamplingConfig::default(),
    };
    let mut out = Vec::with_capacity(indices.len());
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = data.generation_batch::<B>(chunk, device)?;
        let prompts: Vec<Vec<i64>> = chunk
            .iter()
            .map(|&i| data.items[i].prompt.input_ids.clone())
            .collect();
        let generated = generate_batch(
            model,
            &prompts,
            batch.images.as_ref(),
            &options,
            PAD_ID as u32,
        )?;
        for ids in generated {
            out.push(tokenizer.decode(&ids, true)?.trim().to_string());
        }
    }
    Ok(out)
}

/// Validation loss, generated answers and their scores, and the table rows with thumbnails.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: AttentionBackend>(
    model: &Phi3V<B>,
    data: &TaskData,
    tokenizer: &Phi3Tokenizer,
    loss_indices: &[usize],
    generate_indices: &[usize],
    batch_size: usize,
    max_new_tokens: usize,
    device: &B::Device,
) -> Result<(EvalMetrics, Vec<EvalRow>), LoraError> {
    let val_loss = validation_loss(model, data, loss_indices, batch_size, device)?;
    let texts = generate_answers(
        model,
        data,
        tokenizer,
        generate_indices,
        batch_size,
        max_new_tokens,
        device,
    )?;
    let parsed: Vec<ParsedAnswer> = texts.iter().map(|t| parse_answer(t)).collect();
    let truths: Vec<Truth> = generate_indices
        .iter()
        .map(|&i| data.items[i].truth.clone())
        .collect();
    let scores = score(&parsed, &truths);
    let mut rows = Vec::with_capacity(texts.len());
    for ((&i, text), (p, t)) in generate_indices
        .iter()
        .zip(texts)
        .zip(parsed.iter().zip(&truths))
    {
        let thumbnail_png = data.items[i]
            .catalogue
            .image
            .decode()
            .map(|img| thumbnail_png(&img.to_rgb8(), THUMBNAIL_SIDE))
            .unwrap_or_default();
        rows.push(EvalRow {
            thumbnail_png,
            truth: format!(
                "Product: {}, Category: {}, Full Price: {}",
                t.title,
                t.category,
                phi3v::data::prompt::python_float_repr(t.price)
            ),
            generated: text,
            parsed_price: p.price,
            true_price: Some(t.price),
            abs_error: p.price.map(|x| (x - t.price).abs()),
            category_correct: p.category.as_deref() == Some(t.category.as_str()),
            title_correct: p.title.as_deref() == Some(t.title.as_str()),
        });
    }
    Ok((EvalMetrics { val_loss, scores }, rows))
}

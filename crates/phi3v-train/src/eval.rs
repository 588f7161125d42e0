//! Evaluation on the validation split: the teacher-forced loss, then greedy generation on
//! a sample of items, scored from the generated text against the truth and the baselines.

use burn::tensor::ElementConversion;
use phi3v::decoder::{DecodingConfig, GenerateOptions};
use phi3v::processor::tokenize::{Phi3Tokenizer, ENDOFTEXT_ID, END_ID, PAD_ID};
use phi3v::{generate_batch, Phi3V};
use phi3v_nn::AttentionBackend;
use phi3v_track::{thumbnail_png, EvalRow};
use serde::{Deserialize, Serialize};

use crate::dataset::TaskData;
use crate::error::TrainError;
use crate::task::{Score, Task, TaskItem};

/// Side of the thumbnails in evaluation tables, in pixels.
pub const THUMBNAIL_SIDE: u32 = 96;

/// One evaluation's numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub val_loss: f64,
    /// The task's scores, each beside its baseline.
    pub scores: Vec<Score>,
}

impl EvalMetrics {
    /// Whether every score that has a baseline beats it (false without any).
    pub fn beats_baselines(&self) -> bool {
        let verdicts: Vec<bool> = self
            .scores
            .iter()
            .filter_map(Score::beats_baseline)
            .collect();
        !verdicts.is_empty() && verdicts.iter().all(|&b| b)
    }

    /// For each field the scores are about ([`Score::field`]), in the order the fields come,
    /// whether every one of its scores that has a baseline beats it.
    pub fn field_verdicts(&self) -> Vec<FieldVerdict> {
        let mut out: Vec<FieldVerdict> = Vec::new();
        for score in &self.scores {
            let (Some(field), Some(beats)) = (&score.field, score.beats_baseline()) else {
                continue;
            };
            match out.iter_mut().find(|v| v.field == *field) {
                Some(v) => v.beats_baselines &= beats,
                None => out.push(FieldVerdict {
                    field: field.clone(),
                    beats_baselines: beats,
                }),
            }
        }
        out
    }
}

/// Whether the model beats the trivial predictors on one field of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldVerdict {
    pub field: String,
    /// Every score of the field that has a baseline beats it.
    pub beats_baselines: bool,
}

impl std::fmt::Display for FieldVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.field,
            if self.beats_baselines {
                "beats its baselines"
            } else {
                "does NOT beat its baselines"
            }
        )
    }
}

/// Token-weighted mean loss over the items at `indices`, in batches of `batch_size`.
pub fn validation_loss<B: AttentionBackend, T: Task>(
    model: &Phi3V<B>,
    data: &TaskData<T>,
    indices: &[usize],
    batch_size: usize,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let (mut sum, mut weight) = (0.0, 0.0);
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = data.training_batch::<B>(chunk, device)?;
        let targets = batch.loss_targets.expect("training batches have labels");
        let loss = model.loss(
            batch.input_ids,
            batch.images.as_ref(),
            Some(batch.attention_mask),
            &targets,
        )?;
        let value: f64 = loss.into_scalar().elem();
        let w = batch.target_tokens as f64;
        sum += value * w;
        weight += w;
    }
    Ok(if weight > 0.0 { sum / weight } else { f64::NAN })
}

/// Greedy answers for the items at `indices`, decoded to text.
pub fn generate_answers<B: AttentionBackend, T: Task>(
    model: &Phi3V<B>,
    data: &TaskData<T>,
    tokenizer: &Phi3Tokenizer,
    indices: &[usize],
    batch_size: usize,
    max_new_tokens: usize,
    device: &B::Device,
) -> Result<Vec<String>, TrainError> {
    let options = GenerateOptions {
        max_new_tokens,
        stop_tokens: vec![ENDOFTEXT_ID, END_ID],
        decoding: DecodingConfig::default(),
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
///
/// # Errors
/// [`TrainError::EmptySplit`] when `loss_indices` or `generate_indices` is empty: a loss
/// over no token is NaN and a score over no answer reads as perfect (MAE 0), so neither is
/// reported as a number.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: AttentionBackend, T: Task>(
    model: &Phi3V<B>,
    task: &T,
    baselines: &T::Baselines,
    data: &TaskData<T>,
    tokenizer: &Phi3Tokenizer,
    loss_indices: &[usize],
    generate_indices: &[usize],
    batch_size: usize,
    max_new_tokens: usize,
    device: &B::Device,
) -> Result<(EvalMetrics, Vec<EvalRow>), TrainError> {
    if loss_indices.is_empty() || generate_indices.is_empty() {
        return Err(TrainError::EmptySplit(format!(
            "nothing to evaluate: {} items for the validation loss and {} for generated \
             answers (the validation split has {} items)",
            loss_indices.len(),
            generate_indices.len(),
            data.len()
        )));
    }
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
    let truths: Vec<T::Truth> = generate_indices
        .iter()
        .map(|&i| data.items[i].truth.clone())
        .collect();
    let scores = task.score(&texts, &truths, baselines);
    let mut rows = Vec::with_capacity(texts.len());
    for ((&i, text), truth) in generate_indices.iter().zip(texts).zip(&truths) {
        // The first image stands for the item (a conversation may have several, or none).
        let thumbnail_png = data.items[i]
            .item
            .images()
            .first()
            .and_then(|image| image.decode().ok())
            .map(|img| thumbnail_png(&img.to_rgb8(), THUMBNAIL_SIDE))
            .unwrap_or_default();
        let (truth, fields) = task.table_row(&text, truth);
        rows.push(EvalRow {
            thumbnail_png,
            truth,
            generated: text,
            fields,
        });
    }
    Ok((EvalMetrics { val_loss, scores }, rows))
}

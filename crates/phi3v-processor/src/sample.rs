//! Training and generation examples: token ids and labels of one row.
//!
//! # Labels (the reference recipe)
//!
//! The Phi-3 Cookbook's vision fine-tuning collator (`finetune_hf_trainer_docvqa.py`):
//!
//! ```python
//! answer = f'{answer}<|end|>\n<|endoftext|>'
//! batch = self.processor(prompt, [image], return_tensors='pt')
//! prompt_input_ids = batch['input_ids']
//! # Do not add bos token to answer
//! answer_input_ids = self.processor.tokenizer(answer, add_special_tokens=False, ...)['input_ids']
//! input_ids = torch.cat([prompt_input_ids, answer_input_ids], dim=1)
//! labels = torch.cat([torch.tensor([ignore_index] * len(prompt_input_ids[0])).unsqueeze(0),
//!                     answer_input_ids], dim=1)
//! ```
//!
//! So the whole prompt (BOS tokens, `<|user|>`, the image placeholders, the question,
//! `<|end|>`, `<|assistant|>`) is masked with [`IGNORE_INDEX`], and every answer token is
//! trained, including `<|end|>` (32007) and `<|endoftext|>` (32000). The `\n` between them is
//! not a token: `<|end|>` strips the whitespace on its right. The labels are not shifted: the
//! model shifts them (logits at `t` predict `labels[t + 1]`). Padding gets [`IGNORE_INDEX`]
//! too, in [`crate::batch`].
//!
//! # Length limit
//!
//! Nothing can be cut from a sample without corrupting it: the vision model expects exactly
//! `num_img_tokens` placeholders per image, a cut answer trains the wrong target and loses its
//! `<|end|>`, and the prompt is what the answer is conditioned on. So a sample longer than
//! `max_len` is not truncated but reported as [`ProcessorError::SampleTooLong`], naming the row,
//! and callers skip it (one 4x4-crop image alone is 2509 tokens; choose `max_len` and
//! `num_crops` together).

use crate::prompt::RenderedPrompt;
use crate::tokenize::Phi3Tokenizer;
use crate::ProcessorError;

/// Label of positions that do not contribute to the loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// One training example: the prompt and the trained answer, as token ids and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingExample {
    /// `[len]`: prompt ids (with image placeholders `-N`) then answer ids.
    pub input_ids: Vec<i64>,
    /// `[len]`: [`IGNORE_INDEX`] over the prompt (but for the earlier replies of a
    /// conversation, labelled with their ids), the answer ids over the answer.
    pub labels: Vec<i64>,
    /// Number of prompt positions (everything before the last answer).
    pub prompt_len: usize,
    /// Image token count of each image, in image-id order (`<|image_1|>` first).
    pub num_img_tokens: Vec<usize>,
}

impl TrainingExample {
    /// Sequence length.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// True if there are no tokens (never the case for a built example).
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// The trained ids (the answer, `<|end|>`, `<|endoftext|>`).
    pub fn answer_ids(&self) -> &[i64] {
        &self.input_ids[self.prompt_len..]
    }
}

/// A prompt to generate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationExample {
    /// `[len]`: prompt ids with image placeholders, ending with `<|assistant|>` (32001).
    pub input_ids: Vec<i64>,
    /// Image token count of each image, in image-id order.
    pub num_img_tokens: Vec<usize>,
}

/// Builds the training example of one row, as the reference recipe does.
///
/// - `row`: names the row in errors (an index, a product code);
/// - `prompt`: the rendered prompt and answer ([`crate::prompt::PromptTemplate::render`]);
/// - `num_img_tokens`: token count of each image (`<|image_1|>` first);
/// - `max_len`: the longest allowed sequence, if any.
///
/// # Errors
/// [`ProcessorError::SampleTooLong`] if the example exceeds `max_len`; the errors of
/// [`Phi3Tokenizer::encode_prompt`], wrapped in [`ProcessorError::InRow`] to name the row.
pub fn training_example(
    tokenizer: &Phi3Tokenizer,
    row: &str,
    prompt: &RenderedPrompt,
    num_img_tokens: &[usize],
    max_len: Option<usize>,
) -> Result<TrainingExample, ProcessorError> {
    let in_row = |e: ProcessorError| ProcessorError::InRow {
        row: row.to_string(),
        source: Box::new(e),
    };
    let (prompt_ids, in_reply) = tokenizer
        .encode_conversation(&prompt.prompt, num_img_tokens, prompt.replies())
        .map_err(in_row)?;
    // No BOS before the answer: it continues the prompt.
    let answer_ids = tokenizer
        .encode_text(&prompt.training_answer(), false)
        .map_err(in_row)?;
    let len = prompt_ids.len() + answer_ids.len();
    let trained = answer_ids.len() + in_reply.iter().filter(|&&r| r).count();
    check_len(row, len, placeholders(&prompt_ids), trained, max_len)?;

    let prompt_len = prompt_ids.len();
    // The prompt is masked but for the earlier replies of a conversation.
    let mut labels: Vec<i64> = prompt_ids
        .iter()
        .zip(&in_reply)
        .map(|(&id, &trained)| if trained { id } else { IGNORE_INDEX })
        .collect();
    labels.extend(answer_ids.iter().map(|&id| i64::from(id)));
    let mut input_ids = prompt_ids;
    input_ids.extend(answer_ids.iter().map(|&id| i64::from(id)));
    Ok(TrainingExample {
        input_ids,
        labels,
        prompt_len,
        num_img_tokens: num_img_tokens.to_vec(),
    })
}

/// Builds the generation input of one row: the prompt alone (ending with `<|assistant|>`).
///
/// # Errors
/// As [`training_example`].
pub fn generation_example(
    tokenizer: &Phi3Tokenizer,
    row: &str,
    prompt: &str,
    num_img_tokens: &[usize],
    max_len: Option<usize>,
) -> Result<GenerationExample, ProcessorError> {
    let input_ids = tokenizer
        .encode_prompt(prompt, num_img_tokens)
        .map_err(|e| ProcessorError::InRow {
            row: row.to_string(),
            source: Box::new(e),
        })?;
    check_len(row, input_ids.len(), placeholders(&input_ids), 0, max_len)?;
    Ok(GenerationExample {
        input_ids,
        num_img_tokens: num_img_tokens.to_vec(),
    })
}

/// Number of image placeholder positions (negative ids).
fn placeholders(ids: &[i64]) -> usize {
    ids.iter().filter(|&&id| id < 0).count()
}

fn check_len(
    row: &str,
    len: usize,
    image_tokens: usize,
    answer_tokens: usize,
    max_len: Option<usize>,
) -> Result<(), ProcessorError> {
    match max_len {
        Some(max_len) if len > max_len => Err(ProcessorError::SampleTooLong {
            row: row.to_string(),
            len,
            max_len,
            image_tokens,
            answer_tokens,
        }),
        _ => Ok(()),
    }
}

//! Autoregressive generation with the KV cache: one prefill forward over the prompt, then
//! one single-token forward per new token.

use burn::tensor::{Int, Tensor, TensorData};
use phi3v_nn::AttentionBackend;

use crate::decoding::{DecodingConfig, TokenDecoder};
use crate::model::{ForwardOptions, Phi3Model};

/// When to stop and how to pick tokens.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// Generation ends after emitting any of these (the stop token is returned too).
    pub stop_tokens: Vec<u32>,
    pub decoding: DecodingConfig,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            // `<|endoftext|>` and `<|end|>` in the Phi-3 vocabulary.
            stop_tokens: vec![32000, 32007],
            decoding: DecodingConfig::greedy(),
        }
    }
}

/// Prompt positions per prefill forward: the prompt runs through the layers this many
/// positions at a time, into the cache.
///
/// A photo at num_crops 16 makes a 2,523-token prompt, whose one-shot prefill holds every
/// layer's activations for all of it at once (the MLP's `[2523, 16384]` f32 gate/up alone is
/// 165 MB, plus its activation's temporaries). In chunks of 512 those transients are a
/// fifth as large, the work is the same, and the products stay large enough for gemm.
pub const PREFILL_CHUNK: usize = 512;

/// Generates from prompt embeddings (so that callers can splice image features in).
/// `on_token` sees each token as it is produced, for streaming. The prompt is prefilled in
/// chunks of [`PREFILL_CHUNK`] positions.
///
/// # Shapes
/// - `embeds`: `[1, prompt_len, hidden]`
pub fn generate_from_embeds<B: AttentionBackend>(
    model: &Phi3Model<B>,
    embeds: Tensor<B, 3>,
    options: &GenerateOptions,
    on_token: impl FnMut(u32),
) -> Vec<u32> {
    generate_from_embeds_chunked(model, embeds, options, PREFILL_CHUNK, on_token)
}

/// [`generate_from_embeds`] with the prompt prefilled `chunk` positions at a time.
///
/// A prompt longer than the model's original context (4,096 for Phi-3-V) is prefilled in
/// one forward whatever `chunk` says: LongRoPE picks its factors from the length of the
/// forward's positions, and the reference picks them once, from the whole prompt.
///
/// # Shapes
/// - `embeds`: `[1, prompt_len, hidden]`
pub fn generate_from_embeds_chunked<B: AttentionBackend>(
    model: &Phi3Model<B>,
    embeds: Tensor<B, 3>,
    options: &GenerateOptions,
    chunk: usize,
    mut on_token: impl FnMut(u32),
) -> Vec<u32> {
    let device = embeds.device();
    // The prompt and every new token but the last are fed back: size the cache once.
    let [batch, prompt_len, width] = embeds.dims();
    let mut cache = model.new_cache_with_capacity(prompt_len + options.max_new_tokens);
    let mut decoder = TokenDecoder::new(options.decoding.clone());
    let mut out = Vec::new();
    let one_shot =
        prompt_len <= chunk.max(1) || prompt_len > model.config().original_max_position_embeddings;
    let step = if one_shot { prompt_len } else { chunk.max(1) };
    let mut hidden = None;
    for start in (0..prompt_len).step_by(step) {
        let end = (start + step).min(prompt_len);
        hidden = Some(model.forward_hidden(
            embeds.clone().slice([0..batch, start..end, 0..width]),
            ForwardOptions {
                cache: Some(&mut cache),
                ..Default::default()
            },
        ));
    }
    drop(embeds);
    let mut hidden = hidden.expect("a prompt has at least one position");
    while out.len() < options.max_new_tokens {
        let [_, s, h] = hidden.dims();
        let last = hidden.slice([0..1, s - 1..s, 0..h]);
        let logits = model.logits(last).into_data().convert::<f32>();
        let token = decoder.next_token(logits.as_slice::<f32>().expect("f32 logits"));
        out.push(token);
        on_token(token);
        if options.stop_tokens.contains(&token) || out.len() == options.max_new_tokens {
            break;
        }
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(vec![token as i64], [1, 1]), &device);
        hidden = model.forward_hidden(
            model.embed(ids),
            ForwardOptions {
                cache: Some(&mut cache),
                ..Default::default()
            },
        );
    }
    out
}

/// Generates from prompt token ids.
pub fn generate<B: AttentionBackend>(
    model: &Phi3Model<B>,
    prompt: &[u32],
    options: &GenerateOptions,
    on_token: impl FnMut(u32),
) -> Vec<u32> {
    let device = model.embed_tokens.device();
    let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, prompt.len()]), &device);
    generate_from_embeds(model, model.embed(ids), options, on_token)
}

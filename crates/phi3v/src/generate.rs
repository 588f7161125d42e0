//! Image-conditioned generation: prefill with the images, then decode with the KV cache.
//!
//! Batches are left-padded, as the reference's `generate` expects: every row's last
//! prompt token sits in the last column, so one decode step serves all rows. Positions
//! follow the reference too (`cumsum(attention_mask) - 1`), so a padded row generates what
//! it would generate alone.

use burn::tensor::{Int, Tensor, TensorData};
use phi3_decoder::{DecodingConfig, ForwardOptions, GenerateOptions, TokenDecoder};
use phi3v_nn::AttentionBackend;

use crate::error::Phi3VError;
use crate::inputs::InputIds;
use crate::model::{ImageInput, Phi3V};

/// Generates for one prompt (ids with image placeholders), streaming tokens to `on_token`.
pub fn generate<B: AttentionBackend>(
    model: &Phi3V<B>,
    prompt: &[i64],
    images: Option<&ImageInput<B>>,
    options: &GenerateOptions,
    on_token: impl FnMut(u32),
) -> Result<Vec<u32>, Phi3VError> {
    options.decoding.validate()?;
    let device = model.decoder.embed_tokens.device();
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(prompt.to_vec(), [1, prompt.len()]),
        &device,
    );
    let embeds = model.embed(ids, images)?;
    Ok(phi3_decoder::generate_from_embeds(
        &model.decoder,
        embeds,
        options,
        on_token,
    ))
}

/// Generates for several prompts at once. `images` holds every image of every prompt, in
/// text order, row after row. Row `i` samples with seed `options.decoding.seed + i`.
/// Returns each row's new tokens, up to and including its stop token.
pub fn generate_batch<B: AttentionBackend>(
    model: &Phi3V<B>,
    prompts: &[Vec<i64>],
    images: Option<&ImageInput<B>>,
    options: &GenerateOptions,
    pad_id: u32,
) -> Result<Vec<Vec<u32>>, Phi3VError> {
    options.decoding.validate()?;
    let rows = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if rows == 0 || width == 0 {
        return Err(Phi3VError::Input(
            "generate_batch needs at least one non-empty prompt".into(),
        ));
    }
    let device = model.decoder.embed_tokens.device();
    let mut ids = Vec::with_capacity(rows * width);
    let mut mask = Vec::with_capacity(rows * width);
    let mut positions = Vec::with_capacity(rows * width);
    let mut next_position = Vec::with_capacity(rows);
    for prompt in prompts {
        let pad = width - prompt.len();
        ids.extend(std::iter::repeat_n(pad_id as i64, pad).chain(prompt.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, prompt.len())));
        // The reference fills padding positions with 1.
        positions.extend(std::iter::repeat_n(1i64, pad).chain(0..prompt.len() as i64));
        next_position.push(prompt.len() as i64);
    }
    let int2 = |v: Vec<i64>, cols: usize| {
        Tensor::<B, 2, Int>::from_data(TensorData::new(v, [rows, cols]), &device)
    };
    let mut mask_cols = mask;
    // Padded prompt plus every decode column: the cache is allocated once, never regrown.
    let mut cache = model
        .decoder
        .new_cache_with_capacity(width + options.max_new_tokens);
    let mut hidden = model.forward_hidden(
        InputIds::from_host(ids, [rows, width], &device),
        images,
        ForwardOptions {
            attention_mask: Some(int2(mask_cols.clone(), width)),
            position_ids: Some(int2(positions, width)),
            cache: Some(&mut cache),
        },
    )?;
    let mut decoders: Vec<TokenDecoder> = (0..rows)
        .map(|i| {
            TokenDecoder::new(DecodingConfig {
                seed: options.decoding.seed.wrapping_add(i as u64),
                ..options.decoding.clone()
            })
        })
        .collect();
    let mut outputs = vec![Vec::new(); rows];
    let mut done = vec![false; rows];
    let mut columns = width;
    for _ in 0..options.max_new_tokens {
        let [_, s, h] = hidden.dims();
        let logits = model
            .decoder
            .logits(hidden.slice([0..rows, s - 1..s, 0..h]))
            .into_data()
            .convert::<f32>();
        let logits = logits.as_slice::<f32>().expect("f32 logits");
        let vocab = logits.len() / rows;
        let mut step = Vec::with_capacity(rows);
        for row in 0..rows {
            let token = if done[row] {
                pad_id
            } else {
                let t = decoders[row].next_token(&logits[row * vocab..(row + 1) * vocab]);
                outputs[row].push(t);
                done[row] = options.stop_tokens.contains(&t);
                t
            };
            step.push(token as i64);
        }
        if done.iter().all(|d| *d) {
            break;
        }
        // The new column is attended by every row, as in the reference.
        columns += 1;
        let mut grown = Vec::with_capacity(rows * columns);
        for row in 0..rows {
            grown.extend_from_slice(&mask_cols[row * (columns - 1)..(row + 1) * (columns - 1)]);
            grown.push(1);
        }
        mask_cols = grown;
        let pos: Vec<i64> = next_position.clone();
        next_position.iter_mut().for_each(|p| *p += 1);
        let embeds = model.decoder.embed(int2(step, 1));
        hidden = model.decoder.forward_hidden(
            embeds,
            ForwardOptions {
                attention_mask: Some(int2(mask_cols.clone(), columns)),
                position_ids: Some(int2(pos, 1)),
                cache: Some(&mut cache),
            },
        );
    }
    Ok(outputs)
}

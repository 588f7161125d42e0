//! Tokenization of prompts with image tags, as the reference processor does it.
//!
//! # The reference (`Phi3VProcessor._convert_images_texts_to_inputs`, processing_phi3_v.py)
//!
//! ```python
//! pattern = r"<\|image_\d+\|>"
//! prompt_chunks = [self.tokenizer(chunk).input_ids for chunk in re.split(pattern, texts)]
//! image_ids = [int(s.split("|")[1].split("_")[-1]) for s in image_tags]
//! assert unique_image_ids == list(range(1, len(unique_image_ids)+1))
//! assert len(unique_image_ids) == len(images)
//! image_ids_pad = [[-iid]*num_img_tokens[iid-1] for iid in image_ids]
//! offset = 0
//! for x in insert_separator(prompt_chunks, image_ids_pad):
//!     input_ids.extend(x[offset:])
//! ```
//!
//! So:
//! - the text is split on `<|image_N|>` tags and each chunk is tokenized on its own, with the
//!   tokenizer's special tokens: every chunk, also the empty one before a leading tag and the
//!   ones after an image, starts with BOS (1). `offset` is 0, nothing is sliced off;
//! - each tag becomes `num_img_tokens[N-1]` copies of `-N` (a tag may repeat);
//! - the distinct image ids must be exactly `1..=n` with `n` the number of images.
//!
//! For `<|user|>\n<|image_1|>What is shown in this image?<|end|>\n<|assistant|>\n` and a
//! 313-token image that is `[1, 32010, -1 x313, 1, 1724, 338, 4318, 297, 445, 1967, 29973,
//! 32007, 32001]`: the `\n` after `<|user|>`, `<|end|>` and `<|assistant|>` is swallowed
//! because these tokens strip the whitespace on their right (`rstrip` in `tokenizer.json`).
//!
//! # BOS
//!
//! The released tokenizer has `add_bos_token: true`, `add_eos_token: false`. In a
//! `tokenizer.json` that is encoded by the post-processor (`TemplateProcessing` `<s> $A`),
//! which the Rust `tokenizers` crate applies when asked for special tokens. A
//! `tokenizer.json` whose post-processor adds no BOS (some conversions keep `add_bos_token` only
//! in `tokenizer_config.json`, which this crate does not read) gets BOS prepended here, so chunk
//! tokenization is the same either way. This is detected once, when the tokenizer is loaded.
//!
//! # Differences from the reference, on purpose
//!
//! - With no images the reference tokenizes the whole text, leaving any `<|image_N|>` tag as
//!   plain text: the defect of the original Burberry script (the model never sees an image).
//!   Here a tag without an image is an error ([`ProcessorError::ImageCountMismatch`]).
//! - Tags are `<|image_` + ASCII digits + `|>`. Python's `\d` also matches other Unicode
//!   decimal digits; such tags stay plain text here.
//! - Errors are values naming the tag, not assertions.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::ProcessorError;

/// `<s>`, added at the start of every text chunk.
pub const BOS_ID: u32 = 1;
/// `<|endoftext|>`: the tokenizer's EOS.
pub const ENDOFTEXT_ID: u32 = 32000;
/// `<|end|>`: closes a turn; generation stops on it too.
pub const END_ID: u32 = 32007;
/// Pad id of `input_ids` (`<|endoftext|>`, the embedding's `padding_idx`).
pub const PAD_ID: i64 = 32000;

const TAG_OPEN: &str = "<|image_";
const TAG_CLOSE: &str = "|>";

/// One `<|image_N|>` tag found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTag {
    /// Byte range of the tag in the text.
    pub range: std::ops::Range<usize>,
    /// `N`: the 1-based image it stands for.
    pub id: usize,
}

/// Finds the `<|image_N|>` tags of `text`, left to right (the reference's
/// `re.findall(r"<\|image_\d+\|>", text)`).
///
/// # Errors
/// [`ProcessorError::ImageTag`] if `N` does not fit in `usize`.
pub fn find_image_tags(text: &str) -> Result<Vec<ImageTag>, ProcessorError> {
    let mut tags = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(TAG_OPEN) {
        let start = from + pos;
        let digits_start = start + TAG_OPEN.len();
        let digits_len = text[digits_start..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let digits_end = digits_start + digits_len;
        if digits_len > 0 && text[digits_end..].starts_with(TAG_CLOSE) {
            let end = digits_end + TAG_CLOSE.len();
            let id = text[digits_start..digits_end]
                .parse::<usize>()
                .map_err(|_| ProcessorError::ImageTag {
                    tag: text[start..end].to_string(),
                    reason: "the image id is too large".into(),
                })?;
            tags.push(ImageTag {
                range: start..end,
                id,
            });
            from = end;
        } else {
            // Not a tag; a tag may still start inside this text (`<|image_<|image_1|>`).
            from = start + 1;
        }
    }
    Ok(tags)
}

/// Checks image ids the way the reference does: the distinct ids must be `1..=num_images`.
///
/// # Errors
/// - [`ProcessorError::ImageTag`] naming the first tag (in text order) whose id breaks the
///   `1..=n` sequence (0, or a gap such as `<|image_2|>` without `<|image_1|>`);
/// - [`ProcessorError::ImageCountMismatch`] if the ids are `1..=n` but `n != num_images`.
pub fn validate_image_ids(ids: &[usize], num_images: usize) -> Result<(), ProcessorError> {
    let mut unique: Vec<usize> = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    // unique == 1..=len  <=>  every id is in 1..=len (the ids are distinct).
    let n = unique.len();
    if let Some(&bad) = ids.iter().find(|&&id| id == 0 || id > n) {
        let reason = if bad == 0 {
            "image ids start at 1".to_string()
        } else {
            let missing: Vec<String> = (1..bad)
                .filter(|i| unique.binary_search(i).is_err())
                .map(|i| format!("<|image_{i}|>"))
                .collect();
            format!(
                "image ids must be 1..n without gaps, but {} does not appear \
                 (image ids in the prompt: {unique:?})",
                missing.join(", ")
            )
        };
        return Err(ProcessorError::ImageTag {
            tag: format!("<|image_{bad}|>"),
            reason,
        });
    }
    if n != num_images {
        return Err(ProcessorError::ImageCountMismatch {
            tags: n,
            images: num_images,
        });
    }
    Ok(())
}

/// The Phi-3 tokenizer (a `tokenizer.json` through the `tokenizers` crate) and the reference
/// processor's prompt encoding.
#[derive(Debug, Clone)]
pub struct Phi3Tokenizer {
    inner: Tokenizer,
    /// Whether the post-processor adds BOS itself (see the module docs).
    post_processor_adds_bos: bool,
}

impl Phi3Tokenizer {
    /// Loads a `tokenizer.json` (for example from the model dir).
    ///
    /// # Errors
    /// [`ProcessorError::Tokenizer`] if the file cannot be read or parsed;
    /// [`ProcessorError::MissingToken`] if it lacks a token Phi-3 prompts need.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ProcessorError> {
        let path = path.as_ref();
        let inner = Tokenizer::from_file(path).map_err(|source| ProcessorError::Tokenizer {
            context: format!("cannot load {}", path.display()),
            source,
        })?;
        Self::from_tokenizer(inner)
    }

    /// Loads a `tokenizer.json` from memory.
    ///
    /// # Errors
    /// As [`Self::from_file`].
    pub fn from_bytes(json: impl AsRef<[u8]>) -> Result<Self, ProcessorError> {
        let inner = Tokenizer::from_bytes(json).map_err(|source| ProcessorError::Tokenizer {
            context: "cannot parse tokenizer.json".into(),
            source,
        })?;
        Self::from_tokenizer(inner)
    }

    /// Wraps a loaded tokenizer, checking that `<s>`, `<|end|>` and `<|endoftext|>` have the
    /// Phi-3 ids (the model's embedding and stop conditions rely on them).
    ///
    /// # Errors
    /// [`ProcessorError::MissingToken`] naming the first token that is missing or has another id.
    pub fn from_tokenizer(inner: Tokenizer) -> Result<Self, ProcessorError> {
        for (token, id) in [
            ("<s>", BOS_ID),
            ("<|end|>", END_ID),
            ("<|endoftext|>", ENDOFTEXT_ID),
        ] {
            if inner.token_to_id(token) != Some(id) {
                return Err(ProcessorError::MissingToken {
                    token: token.into(),
                    expected_id: id,
                    found: inner.token_to_id(token),
                });
            }
        }
        let probe = inner
            .encode_fast("", true)
            .map_err(|source| ProcessorError::Tokenizer {
                context: "cannot encode the empty text".into(),
                source,
            })?;
        let post_processor_adds_bos = probe.get_ids().first() == Some(&BOS_ID);
        Ok(Self {
            inner,
            post_processor_adds_bos,
        })
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Whether BOS comes from the `tokenizer.json` post-processor (true for the released
    /// tokenizer) rather than being prepended by this wrapper.
    pub fn post_processor_adds_bos(&self) -> bool {
        self.post_processor_adds_bos
    }

    /// The id of a token (`"<|user|>"` -> 32010), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokenizes one text chunk: `tokenizer(text).input_ids` with `special = true` (BOS first),
    /// `tokenizer(text, add_special_tokens=False).input_ids` with `special = false`.
    /// `<|...|>` special tokens in the text are recognised either way.
    ///
    /// # Errors
    /// [`ProcessorError::Tokenizer`] if the tokenizer fails on the text.
    pub fn encode_text(&self, text: &str, special: bool) -> Result<Vec<u32>, ProcessorError> {
        let encoding =
            self.inner
                .encode_fast(text, special)
                .map_err(|source| ProcessorError::Tokenizer {
                    context: format!("cannot encode {:?}", shorten(text)),
                    source,
                })?;
        let ids = encoding.get_ids();
        if special && !self.post_processor_adds_bos {
            let mut out = Vec::with_capacity(ids.len() + 1);
            out.push(BOS_ID);
            out.extend_from_slice(ids);
            Ok(out)
        } else {
            Ok(ids.to_vec())
        }
    }

    /// Encodes a prompt with image tags as the reference processor does (see the module docs):
    /// chunks between tags tokenized with BOS, tag `<|image_N|>` replaced by
    /// `num_img_tokens[N-1]` copies of `-N`.
    ///
    /// `num_img_tokens[k]` is the token count of image `k + 1` (its
    /// [`ProcessedImage::num_tokens`](crate::image_processor::ProcessedImage::num_tokens));
    /// its length is the number of images.
    ///
    /// Returns `input_ids` (`[len]`): token ids (>= 0) and image placeholders (< 0).
    ///
    /// # Errors
    /// [`ProcessorError::ImageTag`] / [`ProcessorError::ImageCountMismatch`] when the tags and the images
    /// do not match (see [`validate_image_ids`]); [`ProcessorError::Tokenizer`].
    pub fn encode_prompt(
        &self,
        text: &str,
        num_img_tokens: &[usize],
    ) -> Result<Vec<i64>, ProcessorError> {
        Ok(self.encode_conversation(text, num_img_tokens, &[])?.0)
    }

    /// [`encode_prompt`](Self::encode_prompt) of a prompt that holds earlier assistant
    /// replies (`replies`: byte ranges of `text`, in order, none overlapping an image tag;
    /// see [`RenderedPrompt::replies`](crate::prompt::RenderedPrompt::replies)).
    ///
    /// A reply is tokenized on its own without BOS, as the answer of a training example
    /// is: it continues the text before it. The text around the replies is chunked at the
    /// image tags as the reference does, with BOS at the start of the text and after each
    /// image (never after a reply: the reference puts none there either). Since every reply
    /// starts after `<|assistant|>\n` and ends with `<|end|>\n`, special tokens that split the
    /// text anyway, the ids are those of the whole text.
    ///
    /// Returns the ids (`[len]`) and, for each, whether it belongs to a reply (`[len]`).
    pub(crate) fn encode_conversation(
        &self,
        text: &str,
        num_img_tokens: &[usize],
        replies: &[std::ops::Range<usize>],
    ) -> Result<(Vec<i64>, Vec<bool>), ProcessorError> {
        let tags = find_image_tags(text)?;
        let ids: Vec<usize> = tags.iter().map(|t| t.id).collect();
        validate_image_ids(&ids, num_img_tokens.len())?;

        let mut out = Vec::new();
        let mut in_reply = Vec::new();
        let mut tags = tags.iter().peekable();
        let mut start = 0;
        // The masked stretch before each reply, then the one after the last.
        let ends = replies
            .iter()
            .map(|r| (r.start, Some(r)))
            .chain([(text.len(), None)]);
        for (end, reply) in ends {
            // BOS opens the text and each chunk after an image, not a stretch after a reply.
            let mut chunk_start = start;
            let mut bos = start == 0;
            while let Some(tag) = tags.next_if(|t| t.range.start < end) {
                self.push_chunk(&mut out, &text[chunk_start..tag.range.start], bos)?;
                let placeholder = -(tag.id as i64);
                out.extend(std::iter::repeat_n(placeholder, num_img_tokens[tag.id - 1]));
                chunk_start = tag.range.end;
                bos = true;
            }
            self.push_chunk(&mut out, &text[chunk_start..end], bos)?;
            in_reply.resize(out.len(), false);
            if let Some(reply) = reply {
                debug_assert!(tags.peek().is_none_or(|t| t.range.start >= reply.end));
                self.push_chunk(&mut out, &text[reply.clone()], false)?;
                in_reply.resize(out.len(), true);
                start = reply.end;
            }
        }
        Ok((out, in_reply))
    }

    fn push_chunk(&self, out: &mut Vec<i64>, chunk: &str, bos: bool) -> Result<(), ProcessorError> {
        out.extend(self.encode_text(chunk, bos)?.into_iter().map(i64::from));
        Ok(())
    }

    /// Decodes token ids to text (for generated tokens; image placeholders are not token ids,
    /// filter them out first).
    ///
    /// # Errors
    /// [`ProcessorError::Tokenizer`] if the tokenizer fails.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, ProcessorError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|source| ProcessorError::Tokenizer {
                context: format!("cannot decode {} ids", ids.len()),
                source,
            })
    }
}

/// At most 80 characters of `text`, for error messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tags() {
        let tags =
            find_image_tags("a<|image_12|>b<|image_<|image_1|><|image_x|><|image_3|").unwrap();
        assert_eq!(
            tags,
            vec![
                ImageTag {
                    range: 1..13,
                    id: 12
                },
                ImageTag {
                    range: 22..33,
                    id: 1
                },
            ]
        );
        assert!(matches!(
            find_image_tags("<|image_99999999999999999999999|>"),
            Err(ProcessorError::ImageTag { .. })
        ));
    }

    #[test]
    fn validates_ids() {
        validate_image_ids(&[], 0).unwrap();
        validate_image_ids(&[1, 2, 1], 2).unwrap();
        validate_image_ids(&[2, 1], 2).unwrap();
        let e = validate_image_ids(&[2], 1).unwrap_err();
        assert!(
            matches!(&e, ProcessorError::ImageTag { tag, .. } if tag == "<|image_2|>"),
            "{e}"
        );
        assert!(e.to_string().contains("<|image_1|> does not appear"), "{e}");
        let e = validate_image_ids(&[1, 3], 2).unwrap_err();
        assert!(matches!(&e, ProcessorError::ImageTag { tag, .. } if tag == "<|image_3|>"));
        let e = validate_image_ids(&[0], 1).unwrap_err();
        assert!(matches!(&e, ProcessorError::ImageTag { tag, .. } if tag == "<|image_0|>"));
        assert!(matches!(
            validate_image_ids(&[1], 2),
            Err(ProcessorError::ImageCountMismatch { tags: 1, images: 2 })
        ));
        assert!(matches!(
            validate_image_ids(&[], 1),
            Err(ProcessorError::ImageCountMismatch { tags: 0, images: 1 })
        ));
    }
}

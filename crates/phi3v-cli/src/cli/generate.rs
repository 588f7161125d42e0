//! `phi3v generate`: image-conditioned generation, streamed to the terminal.

use std::io::Write;
use std::time::Instant;

use phi3_decoder::GenerateOptions;
use phi3v::nn::{AttentionBackend, BaseDtype, ProductDtype};
use phi3v::processor::prompt::generation_prompt;
use phi3v::Phi3VError;

use super::session::Session;

pub struct Request {
    pub model: String,
    pub prompt: String,
    /// `--image` values: paths or URLs.
    pub images: Vec<String>,
    pub options: GenerateOptions,
    pub print_ids: bool,
    /// How the model's large matrices are held.
    pub base_dtype: BaseDtype,
    /// The arithmetic of the products with them.
    pub products: ProductDtype,
}

/// The chat text for a prompt: used as is when it already holds chat tags, otherwise
/// wrapped as one user turn, with `<|image_N|>` tags prepended for images it does not
/// mention.
pub fn chat_text(prompt: &str, images: usize) -> String {
    if prompt.contains("<|user|>") || prompt.contains("<|assistant|>") {
        return prompt.to_string();
    }
    let mut content = String::new();
    if !prompt.contains("<|image_") {
        for i in 1..=images {
            content.push_str(&format!("<|image_{i}|>\n"));
        }
    }
    content.push_str(prompt);
    generation_prompt(None, &content)
}

pub fn run<B: AttentionBackend>(request: Request, device: B::Device) -> Result<(), Phi3VError> {
    // Everything that can be refused is checked before the model is loaded.
    request.options.decoding.validate()?;
    let images = super::images::resolve(&request.images).map_err(Phi3VError::Input)?;
    let session = Session::<B>::load(&request.model, device, request.base_dtype, request.products)?;
    let text = chat_text(&request.prompt, images.len());
    let inputs = session.inputs(&text, &images)?;
    let start = Instant::now();
    // The first token ends the prefill (vision tower, projection and the prompt's forward);
    // every later one is a decode step.
    let mut first_token: Option<Instant> = None;
    let mut ids: Vec<u32> = Vec::new();
    let mut printed = 0;
    let mut stdout = std::io::stdout();
    let tokens = phi3v::generate(
        &session.model,
        &inputs.ids,
        inputs.tensors.images.as_ref(),
        &request.options,
        |t| {
            first_token.get_or_insert_with(Instant::now);
            ids.push(t);
            if let Ok(text) = session.processor.tokenizer().decode(&ids, true) {
                // Print only what is new; a partial UTF-8 sequence waits for the next token.
                if text.len() > printed && text.is_char_boundary(printed) {
                    let _ = write!(stdout, "{}", &text[printed..]);
                    let _ = stdout.flush();
                    printed = text.len();
                }
            }
        },
    )?;
    let end = Instant::now();
    let secs = (end - start).as_secs_f64();
    println!();
    if request.print_ids {
        println!("ids: {tokens:?}");
    }
    eprintln!(
        "{} tokens in {secs:.2} s ({:.1} tokens/s, prompt {} tokens)",
        tokens.len(),
        tokens.len() as f64 / secs.max(1e-9),
        inputs.ids.len()
    );
    if let Some(first) = first_token {
        let decode_steps = tokens.len().saturating_sub(1);
        let decode = (end - first).as_secs_f64();
        eprintln!(
            "prefill {:.2} s; decode {decode_steps} steps in {decode:.2} s ({:.3} s per token)",
            (first - start).as_secs_f64(),
            decode / decode_steps.max(1) as f64
        );
    }
    Ok(())
}

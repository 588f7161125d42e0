//! Prompts, tokenization and labels against the Python reference.
//!
//! Fixtures, written by `scripts/make_tokenizer_fixture.py` (see its header for the command):
//! - `tests/data/tokenizer/tokenizer.json`: the Phi-3 tokenizer, converted from llama.cpp's
//!   `ggml-vocab-phi-3.gguf` with the released file's `rstrip` flags;
//! - `tests/data/prompt_ids.json`:
//!   - `llama_cpp_cases`: llama.cpp's tokenizer test texts with the ids the original Hugging
//!     Face Phi-3 tokenizer gave them (no special tokens);
//!   - `plain`: chunk encodings with and without BOS;
//!   - `cases`: texts with image tags and the ids of the reference processor's
//!     `_convert_images_texts_to_inputs` (Burberry training texts with 313/2509/757-token
//!     images, generation prompts, two images, repeated and reversed tags, a system turn);
//!   - `training`: Burberry rows, their prompt and answer strings, and the Phi-3 Cookbook
//!     collator's `input_ids` and `labels`;
//!   - `floats`: f64 bit patterns and Python's `repr` of them.
//!
//! Everything must match exactly: these are integers and strings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use phi3v_processor::prompt::{
    conversation, generation_prompt, python_float_repr, FieldValue, PromptTemplate, RenderedPrompt,
};
use phi3v_processor::sample::{generation_example, training_example, IGNORE_INDEX};
use phi3v_processor::tokenize::{Phi3Tokenizer, BOS_ID, ENDOFTEXT_ID, END_ID};
use phi3v_processor::ProcessorError;
use serde_json::Value;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let text = std::fs::read_to_string(data_dir().join("prompt_ids.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn tokenizer() -> &'static Phi3Tokenizer {
    static TOKENIZER: OnceLock<Phi3Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        Phi3Tokenizer::from_file(data_dir().join("tokenizer/tokenizer.json")).unwrap()
    })
}

fn ids_i64(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn ids_u32(v: &Value) -> Vec<u32> {
    ids_i64(v).into_iter().map(|x| x as u32).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    ids_i64(v).into_iter().map(|x| x as usize).collect()
}

fn burberry_row(row: &Value) -> HashMap<String, FieldValue> {
    let mut fields = HashMap::new();
    for (k, v) in row.as_object().unwrap() {
        let value = match v {
            Value::String(s) => FieldValue::from(s.as_str()),
            Value::Number(n) if n.is_f64() => FieldValue::from(n.as_f64().unwrap()),
            Value::Number(n) => FieldValue::from(n.as_i64().unwrap()),
            other => panic!("unexpected field {k}: {other}"),
        };
        fields.insert(k.clone(), value);
    }
    fields
}

#[test]
fn special_token_ids() {
    let tok = tokenizer();
    assert!(
        tok.post_processor_adds_bos(),
        "the fixture's post-processor adds BOS"
    );
    for (name, id) in fixture()["special_ids"].as_object().unwrap() {
        assert_eq!(
            tok.token_id(name),
            Some(id.as_u64().unwrap() as u32),
            "{name}"
        );
    }
    assert_eq!(tok.token_id("<s>"), Some(BOS_ID));
    assert_eq!(tok.token_id("<|end|>"), Some(END_ID));
    assert_eq!(tok.token_id("<|endoftext|>"), Some(ENDOFTEXT_ID));
}

/// The converted tokenizer against the original Hugging Face Phi-3 tokenizer's output.
#[test]
fn matches_original_phi3_tokenizer_on_llama_cpp_cases() {
    let cases = fixture()["llama_cpp_cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let got = tokenizer().encode_text(text, false).unwrap();
        assert_eq!(got, ids_u32(&case["ids"]), "text {text:?}");
    }
}

#[test]
fn chunk_encoding_with_and_without_bos() {
    for case in fixture()["plain"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let with_bos = tokenizer().encode_text(text, true).unwrap();
        let without = tokenizer().encode_text(text, false).unwrap();
        assert_eq!(with_bos, ids_u32(&case["ids"]), "{text:?}");
        assert_eq!(without, ids_u32(&case["ids_no_special"]), "{text:?}");
    }
}

#[test]
fn prompt_ids_equal_reference_processor() {
    let cases = fixture()["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let n = usizes(&case["num_img_tokens"]);
        let got = tokenizer().encode_prompt(text, &n).unwrap();
        let want = ids_i64(&case["input_ids"]);
        assert_eq!(got.len(), want.len(), "{name}: length");
        assert_eq!(got, want, "{name}");
    }
}

/// The Burberry training examples: strings from the template, ids and labels from the
/// Cookbook's collator.
#[test]
fn training_examples_equal_reference_recipe() {
    let template = burberry_template();
    for case in fixture()["training"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let row = burberry_row(&case["row"]);
        let rendered = template.render(&row).unwrap();
        assert_eq!(rendered.prompt, case["prompt"].as_str().unwrap(), "{name}");
        assert_eq!(rendered.answer, case["answer"].as_str().unwrap(), "{name}");
        assert_eq!(
            rendered.training_answer(),
            case["answer_text"].as_str().unwrap(),
            "{name}"
        );

        let n = usizes(&case["num_img_tokens"]);
        let ex = training_example(tokenizer(), name, &rendered, &n, None).unwrap();
        assert_eq!(
            ex.input_ids,
            ids_i64(&case["input_ids"]),
            "{name}: input_ids"
        );
        assert_eq!(ex.labels, ids_i64(&case["labels"]), "{name}: labels");
        assert_eq!(ex.prompt_len as u64, case["prompt_len"].as_u64().unwrap());
        assert_eq!(ex.num_img_tokens, n);

        // The labels, spelled out: everything up to and including `<|assistant|>` is masked;
        // the answer ends with <|end|> <|endoftext|> (the "\n" between them is swallowed by
        // <|end|>'s rstrip) and is trained in full.
        assert!(ex.labels[..ex.prompt_len]
            .iter()
            .all(|&l| l == IGNORE_INDEX));
        assert_eq!(
            ex.input_ids[ex.prompt_len - 1],
            32001,
            "{name}: <|assistant|>"
        );
        assert_eq!(&ex.labels[ex.prompt_len..], ex.answer_ids());
        assert_eq!(
            &ex.answer_ids()[ex.answer_ids().len() - 2..],
            &[32007, 32000]
        );
        assert!(ex.answer_ids().iter().all(|&id| id >= 0));
        let placeholders = ex.input_ids.iter().filter(|&&id| id == -1).count();
        assert_eq!(placeholders, n[0]);

        // The original script's single text gives the same ids through the processor.
        let full = tokenizer()
            .encode_prompt(&rendered.full_text(), &n)
            .unwrap();
        assert_eq!(full, ex.input_ids, "{name}: full text");

        // Generation: the prompt alone.
        let gen = generation_example(tokenizer(), name, &rendered.prompt, &n, None).unwrap();
        assert_eq!(gen.input_ids, ex.input_ids[..ex.prompt_len]);
    }
}

#[test]
fn price_formatting_matches_python_repr() {
    for case in fixture()["floats"].as_array().unwrap() {
        let x = f64::from_bits(case["bits"].as_u64().unwrap());
        assert_eq!(
            python_float_repr(x),
            case["repr"].as_str().unwrap(),
            "bits {}",
            case["bits"]
        );
    }
    // Typical prices, spelled out.
    for (x, s) in [
        (890.0, "890.0"),
        (1250.5, "1250.5"),
        (2390.0, "2390.0"),
        (19.99, "19.99"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e16, "1e+16"),
        (1.5e16, "1.5e+16"),
        (1e15, "1000000000000000.0"),
        (1e-5, "1e-05"),
        (1e-4, "0.0001"),
        (-42.5, "-42.5"),
        (-0.0, "-0.0"),
        (1e100, "1e+100"),
    ] {
        assert_eq!(python_float_repr(x), s);
    }
    assert_eq!(FieldValue::from(890.0).to_string(), "890.0");
    assert_eq!(FieldValue::from(890_i64).to_string(), "890");
    assert_eq!(FieldValue::from(None::<f64>).to_string(), "None");
}

#[test]
fn custom_templates() {
    let template = PromptTemplate::new(
        "<|image_1|>\n<|image_2|>\nWhich costs {{more}}: {a} or {b}?",
        "{answer}",
    )
    .unwrap()
    .with_system("You price {brand} products.")
    .unwrap();
    let row = [
        ("a", FieldValue::from("the scarf")),
        ("b", FieldValue::from("the shirt")),
        ("answer", FieldValue::from("the scarf")),
        ("brand", FieldValue::from("Burberry")),
    ];
    let rendered = template.render(&row).unwrap();
    assert_eq!(
        rendered.prompt,
        "<|system|>\nYou price Burberry products.<|end|>\n<|user|>\n<|image_1|>\n<|image_2|>\n\
         Which costs {more}: the scarf or the shirt?<|end|>\n<|assistant|>\n"
    );
    assert_eq!(
        template.render_prompt(&row).unwrap(),
        rendered.prompt,
        "render_prompt skips only the answer"
    );
    assert_eq!(
        rendered.prompt,
        generation_prompt(
            Some("You price Burberry products."),
            "<|image_1|>\n<|image_2|>\nWhich costs {more}: the scarf or the shirt?"
        )
    );
    let err = template.render(&[("a", FieldValue::Null)]).unwrap_err();
    assert!(
        matches!(&err, ProcessorError::MissingField { field, .. } if field == "brand"),
        "{err}"
    );
}

fn expect_tag_error(text: &str, n: &[usize], tag: &str) {
    match tokenizer().encode_prompt(text, n) {
        Err(ProcessorError::ImageTag { tag: t, reason }) => {
            assert_eq!(t, tag, "{text}: {reason}");
            let msg = ProcessorError::ImageTag {
                tag: t.clone(),
                reason,
            }
            .to_string();
            assert!(msg.contains(tag), "{msg}");
        }
        other => panic!("{text}: expected an image tag error naming {tag}, got {other:?}"),
    }
}

#[test]
fn bad_image_ids_are_errors_naming_the_tag() {
    // image_2 without image_1.
    expect_tag_error("<|user|>\n<|image_2|>Hi<|end|>\n", &[313], "<|image_2|>");
    expect_tag_error(
        "<|user|>\n<|image_2|>Hi<|end|>\n",
        &[313, 313],
        "<|image_2|>",
    );
    // A gap.
    expect_tag_error("<|image_1|><|image_3|>", &[1, 1, 1], "<|image_3|>");
    // Ids start at 1.
    expect_tag_error("<|image_0|>", &[1], "<|image_0|>");
    // An id too large for usize.
    expect_tag_error(
        "<|image_123456789012345678901234567890|>",
        &[1],
        "<|image_123456789012345678901234567890|>",
    );
    // The message says what is missing.
    let err = tokenizer().encode_prompt("<|image_2|>", &[5]).unwrap_err();
    assert!(
        err.to_string().contains("<|image_1|> does not appear"),
        "{err}"
    );
}

#[test]
fn image_count_mismatch_is_an_error() {
    let tok = tokenizer();
    let text = "<|user|>\n<|image_1|>\n<|image_2|>\nCompare.<|end|>\n<|assistant|>\n";
    // Two tags, one image.
    let err = tok.encode_prompt(text, &[313]).unwrap_err();
    assert!(
        matches!(
            err,
            ProcessorError::ImageCountMismatch { tags: 2, images: 1 }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("<|image_2|>"), "{err}");
    // One tag, two images.
    assert!(matches!(
        tok.encode_prompt("<|image_1|>Hi", &[313, 313]),
        Err(ProcessorError::ImageCountMismatch { tags: 1, images: 2 })
    ));
    // A tag and no image: the reference would tokenize the tag as text (the original script's
    // defect); here it is an error.
    assert!(matches!(
        tok.encode_prompt("<|image_1|>Hi", &[]),
        Err(ProcessorError::ImageCountMismatch { tags: 1, images: 0 })
    ));
    // An image and no tag.
    assert!(matches!(
        tok.encode_prompt("Hi", &[313]),
        Err(ProcessorError::ImageCountMismatch { tags: 0, images: 1 })
    ));
    // Not tags: stay text.
    let ids = tok.encode_prompt("<|image_x|> <|image_|>", &[]).unwrap();
    assert!(ids.iter().all(|&id| id >= 0));
}

#[test]
fn errors_name_the_row() {
    let rendered =
        RenderedPrompt::new(generation_prompt(None, "<|image_2|>What is it?"), "A shirt");
    let err = training_example(
        tokenizer(),
        "row 17 (product 8012345)",
        &rendered,
        &[313],
        None,
    )
    .unwrap_err();
    assert!(matches!(&err, ProcessorError::InRow { row, .. } if row == "row 17 (product 8012345)"));
    let msg = err.to_string();
    assert!(
        msg.contains("row 17 (product 8012345)") && msg.contains("<|image_2|>"),
        "{msg}"
    );
}

#[test]
fn too_long_samples_are_reported_not_truncated() {
    let template = burberry_template();
    let row = burberry_row(&fixture()["training"][0]["row"]);
    let rendered = template.render(&row).unwrap();
    let full = training_example(tokenizer(), "row 0", &rendered, &[313], None).unwrap();
    let len = full.len();

    // Exactly fitting: the same example.
    let fits = training_example(tokenizer(), "row 0", &rendered, &[313], Some(len)).unwrap();
    assert_eq!(fits, full);

    // One token short: an error naming the row with the counts, never a cut sample.
    let err = training_example(tokenizer(), "row 0", &rendered, &[313], Some(len - 1)).unwrap_err();
    match &err {
        ProcessorError::SampleTooLong {
            row,
            len: l,
            max_len,
            image_tokens,
            answer_tokens,
        } => {
            assert_eq!(row, "row 0");
            assert_eq!(*l, len);
            assert_eq!(*max_len, len - 1);
            assert_eq!(*image_tokens, 313);
            assert_eq!(*answer_tokens, len - full.prompt_len);
        }
        other => panic!("expected SampleTooLong, got {other:?}"),
    }
    assert!(err.to_string().starts_with("row 0: "), "{err}");

    // A 4x4-crop image alone is 2509 tokens: over a 2048 limit whatever the text.
    let err = training_example(tokenizer(), "row 1", &rendered, &[2509], Some(2048)).unwrap_err();
    assert!(matches!(
        err,
        ProcessorError::SampleTooLong {
            image_tokens: 2509,
            ..
        }
    ));

    // Generation prompts are checked too.
    let gen_len = full.prompt_len;
    generation_example(tokenizer(), "g", &rendered.prompt, &[313], Some(gen_len)).unwrap();
    assert!(matches!(
        generation_example(
            tokenizer(),
            "g",
            &rendered.prompt,
            &[313],
            Some(gen_len - 1)
        ),
        Err(ProcessorError::SampleTooLong {
            answer_tokens: 0,
            ..
        })
    ));
}

/// A `tokenizer.json` without the BOS post-processor: the wrapper adds BOS itself, and the ids
/// are the same.
#[test]
fn bos_is_added_when_the_post_processor_does_not() {
    let path = data_dir().join("tokenizer/tokenizer.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["post_processor"] = Value::Null;
    let tok = Phi3Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
    assert!(!tok.post_processor_adds_bos());
    assert_eq!(tok.encode_text("", true).unwrap(), vec![BOS_ID]);
    for case in fixture()["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let n = usizes(&case["num_img_tokens"]);
        assert_eq!(
            tok.encode_prompt(text, &n).unwrap(),
            ids_i64(&case["input_ids"]),
            "{}",
            case["name"]
        );
    }
}

#[test]
fn decode_round_trip() {
    let tok = tokenizer();
    let text = "Product: Vintage Check Cashmere Scarf \u{2013} Archive Beige, Full Price: 1250.5";
    let ids = tok.encode_text(text, false).unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), text);
    let with_end = tok.encode_text("Check Shirt<|end|>", false).unwrap();
    assert_eq!(*with_end.last().unwrap(), END_ID);
    assert_eq!(tok.decode(&with_end, true).unwrap(), "Check Shirt");
}

#[test]
fn loading_errors() {
    assert!(matches!(
        Phi3Tokenizer::from_file(data_dir().join("no-such-tokenizer.json")),
        Err(ProcessorError::Tokenizer { .. })
    ));
    assert!(matches!(
        Phi3Tokenizer::from_bytes(b"{not json"),
        Err(ProcessorError::Tokenizer { .. })
    ));
}

/// The reference Burberry task's prompt (the fixtures were made with it).
fn burberry_template() -> PromptTemplate {
    PromptTemplate::new(
        "<|image_1|>What is shown in this image?",
        "Product: {title}, Category: {category3_code}, Full Price: {full_price}",
    )
    .expect("the Burberry templates parse")
}

/// A multi-turn, multi-image conversation trains every assistant turn and nothing else: the
/// ids are the reference processor's ids of the whole text, and the labels are the ids over
/// each reply (with its `<|end|>`, and `<|endoftext|>` after the last one only), -100 over
/// the system and user turns, the images, BOS and the `<|assistant|>` tags.
#[test]
fn conversations_train_the_assistant_turns_only() {
    let tok = tokenizer();
    let chat = conversation(
        Some("You are a furniture expert."),
        &[
            ("<|image_1|>What is this?", "A trench coat."),
            ("And this one?<|image_2|>", "A walnut table."),
            ("Which is wider?", "The table."),
        ],
    )
    .unwrap();
    assert_eq!(chat.replies().len(), 2);
    let n = [5, 7];
    let ex = training_example(tok, "line 3", &chat, &n, None).unwrap();

    // What the reference processor makes of the whole text.
    let whole = tok.encode_prompt(&chat.full_text(), &n).unwrap();
    assert_eq!(ex.input_ids, whole);

    // The trained stretches, in order, decode to the three replies.
    let mut stretches: Vec<Vec<u32>> = Vec::new();
    let mut previous_trained = false;
    for (&label, &id) in ex.labels.iter().zip(&ex.input_ids) {
        let trained = label != IGNORE_INDEX;
        if trained {
            assert_eq!(label, id, "a label is the id it stands at");
            if !previous_trained {
                stretches.push(Vec::new());
            }
            stretches.last_mut().unwrap().push(id as u32);
        }
        previous_trained = trained;
    }
    let decoded: Vec<String> = stretches
        .iter()
        .map(|ids| tok.decode(ids, false).unwrap())
        .collect();
    assert_eq!(
        decoded,
        [
            "A trench coat.<|end|>",
            "A walnut table.<|end|>",
            "The table.<|end|><|endoftext|>"
        ]
    );
    // Each stretch starts right after an `<|assistant|>` tag, which is masked.
    for (i, window) in ex.input_ids.windows(2).enumerate() {
        if window[0] == 32001 {
            assert_eq!(ex.labels[i], IGNORE_INDEX);
            assert_ne!(ex.labels[i + 1], IGNORE_INDEX, "reply after position {i}");
        }
    }
    // Masked: both images in full, one BOS per chunk (start, after each image), the
    // user and system turns.
    for (id, count) in [(-1, 5), (-2, 7), (i64::from(BOS_ID), 3)] {
        let at: Vec<usize> = (0..ex.len()).filter(|&i| ex.input_ids[i] == id).collect();
        assert_eq!(at.len(), count, "id {id}");
        assert!(at.iter().all(|&i| ex.labels[i] == IGNORE_INDEX), "id {id}");
    }
    assert_eq!(
        ex.labels
            .iter()
            .filter(|&&l| l == i64::from(ENDOFTEXT_ID))
            .count(),
        1
    );

    // Generation: everything up to the last `<|assistant|>`.
    let gen = generation_example(tok, "line 3", &chat.prompt, &n, None).unwrap();
    assert_eq!(gen.input_ids, ex.input_ids[..ex.prompt_len]);
    assert_eq!(*gen.input_ids.last().unwrap(), 32001);
}

/// One exchange through [`conversation`] is the single-turn example exactly.
#[test]
fn a_one_exchange_conversation_is_the_single_turn_example() {
    let template = burberry_template();
    let case = &fixture()["training"][0];
    let rendered = template.render(&burberry_row(&case["row"])).unwrap();
    let user = "<|image_1|>What is shown in this image?";
    let chat = conversation(None, &[(user, rendered.answer.as_str())]).unwrap();
    assert_eq!(chat, rendered);
    let n = usizes(&case["num_img_tokens"]);
    let ex = training_example(tokenizer(), "row 0", &chat, &n, None).unwrap();
    assert_eq!(ex.labels, ids_i64(&case["labels"]));
    assert!(conversation(None, &[]).is_none());
}

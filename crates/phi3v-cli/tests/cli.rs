//! The `phi3v` command on the tiny reference model dir: `logits` reproduces the
//! reference's numbers through the real tokenizer and image processor, `generate`
//! produces the reference's greedy tokens, and bad input is an error, not a panic.

use std::path::PathBuf;
use std::process::Command;

use phi3v::nn::Weights;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../phi3v/tests/data")
}

fn ckpt() -> PathBuf {
    data().join("tiny_phi3v")
}

const ONE_IMAGE: &str = "<|user|>\n<|image_1|>What is shown in this image?<|end|>\n<|assistant|>\n";
const TWO_IMAGES: &str =
    "<|user|>\n<|image_1|>\n<|image_2|>\nCompare these two products.<|end|>\n<|assistant|>\n";

fn phi3v(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phi3v"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn logits_command_reproduces_the_reference() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("logits.safetensors");
    let ckpt = ckpt();
    let o = phi3v(&[
        "logits",
        "--model",
        ckpt.to_str().unwrap(),
        "--prompt",
        TWO_IMAGES,
        "--image",
        ckpt.join("coat.png").to_str().unwrap(),
        "--image",
        ckpt.join("scarf.png").to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = Weights::open(&file).unwrap();
    let want = Weights::open(data().join("expected.safetensors")).unwrap();
    let n = got.shape("input_ids").unwrap()[0];
    assert_eq!(
        got.read_i64("input_ids", &[n]).unwrap(),
        want.read_i64("two_images.input_ids", &[1, n]).unwrap(),
        "token ids (tokenizer + image token counts)"
    );
    let vocab = got.shape("logits").unwrap()[1];
    let logits = got.read_f32("logits", &[n, vocab]).unwrap();
    let last = want
        .read_f32("two_images.last_logits", &[1, 3, vocab])
        .unwrap();
    let worst = logits[(n - 3) * vocab..]
        .iter()
        .zip(&last)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-4,
        "logits differ from the reference by {worst:e}"
    );
}

/// `phi3v generate` on the fixture's one-image prompt and coat photo, printing the ids.
fn generate_one_image(max_new_tokens: usize, extra: &[&str]) -> std::process::Output {
    let ckpt = ckpt();
    let image = ckpt.join("coat.png");
    let tokens = max_new_tokens.to_string();
    let mut args = vec![
        "generate",
        "--model",
        ckpt.to_str().unwrap(),
        "--prompt",
        ONE_IMAGE,
        "--image",
        image.to_str().unwrap(),
        "--max-new-tokens",
        &tokens,
        "--print-ids",
    ];
    args.extend_from_slice(extra);
    phi3v(&args)
}

#[test]
fn generate_command_matches_reference_greedy_tokens() {
    let o = generate_one_image(8, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let want = Weights::open(data().join("expected.safetensors")).unwrap();
    let shape = want.shape("one_image.greedy").unwrap().to_vec();
    let greedy = want.read_i64("one_image.greedy", &shape).unwrap();
    let expected = format!("ids: {greedy:?}");
    assert!(
        stdout.contains(&expected),
        "stdout:\n{stdout}\nexpected line: {expected}"
    );
}

/// `--product-dtype bf16` says so when the model loads and generates; over a quantized
/// base it is refused before anything is loaded, naming both flags' values.
#[test]
fn bf16_products_are_stated_and_refused_over_a_quantized_base() {
    let generate =
        |base: &str| generate_one_image(4, &["--base-dtype", base, "--product-dtype", "bf16"]);
    let o = generate("bf16");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("matrices in bf16 (products in bf16, accumulated in f32)"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("ids: ["));

    let o = generate("q4");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("--product-dtype bf16") && stderr.contains("not q4"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("weights:"),
        "refused after loading: {stderr}"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let ckpt = ckpt();
    let o = phi3v(&["generate", "--model", "/no/such/model", "--prompt", "hi"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/model"));

    let o = phi3v(&[
        "generate",
        "--model",
        ckpt.to_str().unwrap(),
        "--prompt",
        "<|image_2|>only a second image",
        "--image",
        ckpt.join("coat.png").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("image") && !stderr.contains("panicked"),
        "{stderr}"
    );

    let o = phi3v(&[
        "generate",
        "--model",
        ckpt.to_str().unwrap(),
        "--prompt",
        "hi",
        "--image",
        "/no/such/picture.png",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/picture.png"));
}

#[test]
fn sample_data_command_writes_a_catalogue_that_reads_back() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("sample");
    let o = phi3v(&[
        "sample-data",
        "--rows",
        "12",
        "--seed",
        "5",
        "--out",
        dir.to_str().unwrap(),
        "--image-size",
        "64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("wrote 12 rows"));
    let catalogue = phi3v_data::catalogue::Catalogue::open(dir.join("catalogue.parquet")).unwrap();
    let rows: Vec<_> = catalogue.rows().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(rows.len(), 12);
    assert!(
        rows.iter().all(|r| r.problems.is_empty()),
        "generated rows must be clean"
    );
}

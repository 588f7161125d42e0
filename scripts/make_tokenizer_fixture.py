#!/usr/bin/env python3
# Regenerate the tokenizer and prompt fixtures of crates/phi3v-processor with:
#
#     ~/venv/bin/pip install gguf sentencepiece protobuf   # transformers' GGUF reader needs gguf
#     ~/venv/bin/python scripts/make_tokenizer_fixture.py
#
# (needs transformers and tokenizers too; network access to PyPI for one `pip download`).
#
# What it writes:
#   crates/phi3v-processor/tests/data/tokenizer/tokenizer.json   the Phi-3 tokenizer (see below)
#   crates/phi3v-processor/tests/data/prompt_ids.json            reference ids, labels, strings
#
# 1. The tokenizer. The released Phi-3-Vision tokenizer cannot be downloaded here (only PyPI,
#    crates.io and Debian are reachable), but llama.cpp ships the Phi-3 vocabulary as a GGUF
#    file for its tokenizer tests, and llama.cpp is vendored in the llama-cpp-python sdist:
#      pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36
#    (`--no-binary :all:` would also refuse wheels for the isolated metadata build and compile
#    CMake from source for half an hour; restricting it to the one package fetches the same
#    sdist.) From it we take `vendor/llama.cpp/models/ggml-vocab-phi-3.gguf` and its test
#    files `.gguf.inp` / `.gguf.out`, which llama.cpp wrote with the original Hugging Face
#    Phi-3 tokenizer (`encode(text, add_special_tokens=False)`).
#    transformers converts the GGUF to a `tokenizer.json` (LLaMA layout: normalizer
#    Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, BPE with byte fallback, and a
#    TemplateProcessing post-processor `<s> $A`, i.e. add_bos_token true, add_eos_token false).
#    Then we edit what the GGUF cannot carry or carries differently from the released file:
#      - ids 32001..32010 (`<|assistant|>` .. `<|user|>`) get `rstrip: true`, as in the released
#        Phi-3 tokenizer: the whitespace after them (the `\n` of the chat format) is swallowed;
#      - llama.cpp pads the vocabulary to 32064 with `[PAD32011]` .. `[PAD32063]` (normal
#        vocabulary entries, not added tokens). They are not in the released tokenizer: drop
#        them from the vocabulary (and any merge producing them);
#      - `<|image|>` = 32044 is added as a special token (the processor's
#        `special_image_token`; its id is taken from the project brief, unverified against the
#        released file; nothing in the prompt path uses it: image tags are split off by regex);
#      - the BPE model gets `unk_token: "<unk>"` as LLaMA conversions have it (with byte
#        fallback it is never produced).
#    The result is checked against llama.cpp's expected ids (55 texts) before it is written.
#
# 2. The reference ids. `reference_input_ids` below is the text logic of
#    `Phi3VProcessor._convert_images_texts_to_inputs` (processing_phi3_v.py of the released
#    model), line for line:
#      pattern = r"<\|image_\d+\|>"
#      prompt_chunks = [self.tokenizer(chunk).input_ids for chunk in re.split(pattern, texts)]
#      ... assert unique_image_ids == list(range(1, len(unique_image_ids)+1))
#      ... assert len(unique_image_ids) == len(images)
#      image_ids_pad = [[-iid]*num_img_tokens[iid-1] for iid in image_ids]
#      offset = 0
#      for x in insert_separator(prompt_chunks, image_ids_pad):
#          input_ids.extend(x[offset:])
#    `offset` is always 0: every text chunk keeps the BOS its own tokenization added (so the
#    chunk after an image starts with 1 again), and the image pad lists are not sliced.
#    The labels follow the Phi-3 Cookbook's vision fine-tuning collator
#    (finetune_hf_trainer_docvqa.py):
#      prompt = tokenizer.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
#      answer = f'{answer}<|end|>\n<|endoftext|>'
#      prompt_input_ids = processor(prompt, [image]).input_ids
#      answer_input_ids = tokenizer(answer, add_special_tokens=False).input_ids  # no BOS
#      input_ids = cat([prompt_input_ids, answer_input_ids])
#      labels = cat([[-100] * len(prompt_input_ids), answer_input_ids])
#    With `<|end|>` stripping on its right, the `\n` between `<|end|>` and `<|endoftext|>` is
#    swallowed: the trained tail is [..answer.., 32007, 32000].
import argparse
import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "crates", "phi3v-processor", "tests", "data")
TOKENIZER_DIR = os.path.join(DATA, "tokenizer")
SDIST = "llama-cpp-python==0.3.36"
GGUF_IN_SDIST = "vendor/llama.cpp/models/ggml-vocab-phi-3.gguf"

BOS = 1
IGNORE_INDEX = -100
RSTRIP_IDS = range(32001, 32011)
IMAGE_TOKEN = ("<|image|>", 32044)

# The Phi-3-Vision chat template (tokenizer_config.json of the released model):
# {% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content']
#  + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt and messages[-1]['role'] !=
#  'assistant' %}{{- '<|assistant|>\n' -}}{% endif %}
def chat(messages, add_generation_prompt):
    out = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
    if add_generation_prompt and messages[-1]["role"] != "assistant":
        out += "<|assistant|>\n"
    return out


# ----------------------------------------------------------------------------------------------
# 1. Tokenizer
# ----------------------------------------------------------------------------------------------


def fetch_gguf(work):
    dl = os.path.join(work, "dl")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
         SDIST, "-d", dl],
        check=True,
    )
    (sdist,) = glob.glob(os.path.join(dl, "llama_cpp_python-*.tar.gz"))
    out = os.path.join(work, "gguf")
    os.makedirs(out)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            for suffix in ("", ".inp", ".out"):
                if member.name.endswith(GGUF_IN_SDIST + suffix):
                    member.name = os.path.basename(member.name)
                    tar.extract(member, out)
    return out


def convert(gguf_dir, work):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file="ggml-vocab-phi-3.gguf")
    saved = os.path.join(work, "converted")
    shutil.rmtree(saved, ignore_errors=True)
    tok.save_pretrained(saved)
    with open(os.path.join(saved, "tokenizer.json"), encoding="utf-8") as f:
        j = json.load(f)

    # What the converted vocabulary holds above the SentencePiece range (for the record).
    vocab = j["model"]["vocab"]
    by_id = {v: k for k, v in vocab.items()}
    print("converted ids 32000..32012:", [by_id.get(i) for i in range(32000, 32013)])
    print("converted id 32044:", by_id.get(32044), " id 32063:", by_id.get(32063))

    pads = {k for k in vocab if re.fullmatch(r"\[PAD\d+\]", k)}
    assert pads == {f"[PAD{i}]" for i in range(32011, 32064)}, sorted(pads)[:5]
    for k in pads:
        del vocab[k]
    vocab[IMAGE_TOKEN[0]] = IMAGE_TOKEN[1]
    merges = j["model"]["merges"]
    keep = []
    for m in merges:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a + b not in pads:
            keep.append(m)
    print(f"merges: {len(merges)} -> {len(keep)}")
    j["model"]["merges"] = keep
    j["model"]["unk_token"] = "<unk>"

    added = j["added_tokens"]
    for t in added:
        if t["id"] in RSTRIP_IDS:
            t["rstrip"] = True
    added.append({
        "id": IMAGE_TOKEN[1], "content": IMAGE_TOKEN[0], "single_word": False, "lstrip": False,
        "rstrip": False, "normalized": False, "special": True,
    })
    added.sort(key=lambda t: t["id"])

    # BOS must come from the post-processor: the Rust `tokenizers` crate has no add_bos flag.
    pp = j["post_processor"]
    assert pp["type"] == "TemplateProcessing", pp
    assert pp["single"][0] == {"SpecialToken": {"id": "<s>", "type_id": 0}}, pp["single"]
    assert pp["special_tokens"]["<s>"]["ids"] == [BOS], pp["special_tokens"]
    assert len(pp["single"]) == 2, "add_eos_token must be false"
    return j


def load_tokenizer(path):
    """The tokenizer as the reference uses it: a fast tokenizer over tokenizer.json."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=path, bos_token="<s>", eos_token="<|endoftext|>", unk_token="<unk>",
        pad_token="<|endoftext|>",
    )


def check_against_llama_cpp(tok, gguf_dir):
    """llama.cpp's .inp/.out: texts and the ids the original HF Phi-3 tokenizer gave them."""
    with open(os.path.join(gguf_dir, "ggml-vocab-phi-3.gguf.inp"), encoding="utf-8") as f:
        texts = f.read().split("\n__ggml_vocab_test__\n")
    with open(os.path.join(gguf_dir, "ggml-vocab-phi-3.gguf.out"), encoding="utf-8") as f:
        outs = f.read().split("\n")
    # The .inp file ends with a separator line; the .out file has one line per text.
    if texts[-1].endswith("\n__ggml_vocab_test__\n"):
        texts[-1] = texts[-1][: -len("\n__ggml_vocab_test__\n")]
    if texts[-1] == "":
        texts.pop()
    outs = outs[: len(texts)]
    cases = []
    bad = 0
    for text, line in zip(texts, outs):
        want = [int(x) for x in line.split()]
        got = tok(text, add_special_tokens=False).input_ids
        if got != want:
            bad += 1
            print("MISMATCH", repr(text), got, want)
        cases.append({"text": text, "ids": want})
    assert bad == 0, f"{bad} of {len(cases)} llama.cpp cases differ"
    print(f"llama.cpp tokenizer cases: {len(cases)} match")
    return cases


# ----------------------------------------------------------------------------------------------
# 2. Reference text logic
# ----------------------------------------------------------------------------------------------


def reference_input_ids(tokenizer, texts, num_img_tokens):
    """Phi3VProcessor._convert_images_texts_to_inputs, text part; `len(images)` is the number
    of entries of `num_img_tokens` (one per image)."""
    pattern = r"<\|image_\d+\|>"
    prompt_chunks = [tokenizer(chunk).input_ids for chunk in re.split(pattern, texts)]
    image_tags = re.findall(pattern, texts)
    image_ids = [int(s.split("|")[1].split("_")[-1]) for s in image_tags]
    unique_image_ids = sorted(list(set(image_ids)))
    assert unique_image_ids == list(range(1, len(unique_image_ids) + 1)), (
        f"image_ids must start from 1, and must be continuous int, e.g. [1, 2, 3], cannot be "
        f"{unique_image_ids}")
    assert len(unique_image_ids) == len(num_img_tokens), (
        f"total images must be the same as the number of image tags, got "
        f"{len(unique_image_ids)} image tags and {len(num_img_tokens)} images")
    image_ids_pad = [[-iid] * num_img_tokens[iid - 1] for iid in image_ids]

    def insert_separator(X, sep_list):
        if len(X) > len(sep_list):
            sep_list.append([])
        return [ele for sublist in zip(X, sep_list) for ele in sublist]

    input_ids = []
    offset = 0
    for x in insert_separator(prompt_chunks, image_ids_pad):
        input_ids.extend(x[offset:])
    return input_ids


def cookbook_example(tokenizer, prompt, answer, num_img_tokens):
    """Phi-3 Cookbook vision collator: prompt through the processor, answer without BOS."""
    prompt_input_ids = reference_input_ids(tokenizer, prompt, num_img_tokens)
    answer_text = f"{answer}<|end|>\n<|endoftext|>"
    answer_input_ids = tokenizer(answer_text, add_special_tokens=False).input_ids
    input_ids = prompt_input_ids + answer_input_ids
    labels = [IGNORE_INDEX] * len(prompt_input_ids) + answer_input_ids
    return answer_text, input_ids, labels, len(prompt_input_ids)


def rle(ids):
    """Run-length view used only in the printout."""
    out = []
    for i in ids:
        if out and out[-1][0] == i:
            out[-1][1] += 1
        else:
            out.append([i, 1])
    return " ".join(f"{i}x{n}" if n > 1 else str(i) for i, n in out)


BURBERRY_USER = "<|image_1|>What is shown in this image?"
BURBERRY_ANSWER = "Product: {title}, Category: {category3_code}, Full Price: {full_price}"
ROWS = [
    {"title": "Check Cotton Shirt", "category3_code": "Shirts", "full_price": 890.0},
    {"title": "Vintage Check Cashmere Scarf \u2013 Archive Beige", "category3_code": "Scarves",
     "full_price": 1250.5},
    {"title": "Lola Bag  \u00e9t\u00e9 \u201cMini\u201d", "category3_code": "Crossbody Bags",
     "full_price": 2390.0},
]
# Prices as Python prints them (`str(float)` == `repr(float)`), the answer's `{full_price}`.
FLOATS = [
    890.0, 1250.5, 2390.0, 0.0, -0.0, 1.0, 0.1, 0.5, 1.5, 2.675, 19.99, 1234.5678, 0.3,
    1 / 3, 2 / 3, 1e15, 1e16, 1.5e16, 9007199254740993.0, 123456789.0, 1e-4, 1e-5, 1.25e-5,
    0.00012, 1e22, 1e100, 1.7976931348623157e308, 5e-324, 2.2250738585072014e-308, 100.0,
    99.95, 3999.0, 1e-7, 12345678901234567890.0, 0.1 + 0.2, -42.5, float("inf"),
    float("-inf"), float("nan"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", help="keep downloads here instead of a temporary directory")
    args = ap.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="phi3tok-")
    try:
        build(work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def build(work):
    if os.path.isdir(os.path.join(work, "gguf")):
        gguf_dir = os.path.join(work, "gguf")  # --work with an earlier download
    else:
        gguf_dir = fetch_gguf(work)
    j = convert(gguf_dir, work)
    os.makedirs(TOKENIZER_DIR, exist_ok=True)
    tok_path = os.path.join(TOKENIZER_DIR, "tokenizer.json")
    with open(tok_path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote", tok_path, os.path.getsize(tok_path), "bytes")

    tok = load_tokenizer(tok_path)
    llama_cases = check_against_llama_cpp(tok, gguf_dir)

    # The raw `tokenizers` library must agree with the transformers wrapper (the Rust crate is
    # the same library).
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(tok_path)

    special = {name: tok.convert_tokens_to_ids(name) for name in [
        "<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>",
        "<|user|>", "<|image|>"]}
    print("special ids:", special)
    assert special["<|endoftext|>"] == 32000 and special["<|end|>"] == 32007
    assert special["<|user|>"] == 32010 and special["<|image|>"] == 32044

    # Plain encodings (chunk tokenization: BOS from the post-processor).
    plain = []
    for text in ["", "\n", "<|user|>\n", "What is shown in this image?<|end|>\n<|assistant|>\n",
                 "Hello world", " Hello", "<|end|>\n<|endoftext|>", "<|endoftext|>\n",
                 "Price: 1250.5 USD \u2013 \u00e9t\u00e9 \U0001F600"]:
        with_bos = tok(text).input_ids
        without = tok(text, add_special_tokens=False).input_ids
        assert raw.encode(text).ids == with_bos, text
        assert raw.encode(text, add_special_tokens=False).ids == without, text
        assert with_bos == [BOS] + without, (text, with_bos, without)
        plain.append({"text": text, "ids": with_bos, "ids_no_special": without})

    cases = []

    def add_case(name, text, num_img_tokens):
        ids = reference_input_ids(tok, text, list(num_img_tokens))
        print(f"{name}: {len(ids)} ids: {rle(ids)}")
        cases.append({"name": name, "text": text, "num_img_tokens": list(num_img_tokens),
                      "input_ids": ids})
        return ids

    training = []
    for i, (row, n_img) in enumerate(zip(ROWS, [313, 2509, 757])):
        answer = BURBERRY_ANSWER.format(**row)
        # The original (seed) script's text: the whole conversation through the processor.
        full = (f"<|user|>\n{BURBERRY_USER}<|end|>\n<|assistant|>\n{answer}<|end|>\n"
                f"<|endoftext|>")
        full_ids = add_case(f"burberry_full_text_row{i}", full, [n_img])
        # The Cookbook recipe: generation prompt through the processor, then the answer.
        prompt = chat([{"role": "user", "content": BURBERRY_USER}], add_generation_prompt=True)
        answer_text, input_ids, labels, prompt_len = cookbook_example(tok, prompt, answer,
                                                                      [n_img])
        assert input_ids == full_ids, "cookbook ids differ from the whole-text ids"
        print(f"  labels tail: {labels[prompt_len:]}")
        training.append({
            "name": f"burberry_row{i}", "row": row, "prompt": prompt, "answer": answer,
            "answer_text": answer_text, "num_img_tokens": [n_img], "prompt_len": prompt_len,
            "input_ids": input_ids, "labels": labels,
        })

    add_case("generation_prompt_313", chat(
        [{"role": "user", "content": BURBERRY_USER}], add_generation_prompt=True), [313])
    add_case("generation_prompt_2509", chat(
        [{"role": "user", "content": BURBERRY_USER}], add_generation_prompt=True), [2509])
    add_case("two_images", chat([{"role": "user", "content":
        "<|image_1|>\n<|image_2|>\nWhich of these two products is the scarf?"}],
        add_generation_prompt=True), [313, 757])
    add_case("two_images_reversed_and_repeated", chat([{"role": "user", "content":
        "Compare <|image_2|> with <|image_1|>, then look at <|image_2|> again."}],
        add_generation_prompt=True), [313, 169])
    add_case("image_first_no_chat", "<|image_1|>", [5])
    add_case("system_and_two_turns", chat([
        {"role": "system", "content": "You are a catalogue assistant."},
        {"role": "user", "content": "<|image_1|>\nName the product."},
        {"role": "assistant", "content": "Check Cotton Shirt"},
        {"role": "user", "content": "And its price?"},
    ], add_generation_prompt=True), [313])
    add_case("no_images", chat([{"role": "user", "content": "Hello there"}], True), [])

    floats = []
    for x in FLOATS:
        bits = struct.unpack("<Q", struct.pack("<d", x))[0]
        floats.append({"bits": bits, "repr": repr(x)})

    fixture = {
        "about": "Written by scripts/make_tokenizer_fixture.py; see its header. input_ids follow "
                 "Phi3VProcessor._convert_images_texts_to_inputs (every chunk starts with BOS 1, "
                 "offset 0); labels follow the Phi-3 Cookbook vision collator.",
        "tokenizer": "tokenizer/tokenizer.json",
        "special_ids": special,
        "ignore_index": IGNORE_INDEX,
        "llama_cpp_cases": llama_cases,
        "plain": plain,
        "cases": cases,
        "training": training,
        "floats": floats,
    }
    out = os.path.join(DATA, "prompt_ids.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()

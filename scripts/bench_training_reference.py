#!/usr/bin/env python3
"""One LoRA training step in PyTorch + PEFT on the config of benches/training_step.rs.

    cargo bench --bench training_step            # writes target/bench-tiny-phi3v first
    ~/venv/bin/python scripts/bench_training_reference.py [--threads 2] [--batch 8] [--steps 10]

The model is the checkpoint the Rust bench writes (`TinySpec::default()`: hidden 64, MLP 128,
2 layers, 4 heads, vocab 32064; CLIP hidden 32, 3 layers, 56 px crops; f32) in
`target/bench-tiny-phi3v` or `$TRAIN_BENCH_MODEL_DIR`, built as scripts/phi3v_reference.py's
`build` (transformers' Phi3ForCausalLM, eager attention, plus the reference image embedding)
and wrapped by `peft.get_peft_model` with `LoraConfig(r=16, lora_alpha=32, lora_dropout=0,
init_lora_weights="gaussian")` on the reference recipe's targets (the decoder, lm_head, the CLIP
tower and the projection). The batch is the gradient-parity fixture's Burberry sequence
(crates/phi3v-train/tests/data/lora_step/inputs.safetensors: 67 tokens, one 2x2-crop image of 5
tiles) repeated `--batch` times. One step: zero_grad, forward, transformers' causal-LM loss,
backward, `clip_grad_norm_(1.0)`, `torch.optim.AdamW(lr=1e-4, betas=(0.9, 0.95), eps=1e-7,
weight_decay=0.01)`. CPU, f32, `torch.set_num_threads(--threads)`.

With `--photo`, the sample is instead examples/lora_step.rs's: one chat turn over the photo at
`--num-crops` (the same prompt and answer strings, tokenizer and processor), labels on the answer
only, batch 1, against the model folder `--model` (say the released widths cut to 2 decoder and
2 CLIP layers, `write_random_model --preset wide`), with LoRA rank `--rank` and
alpha twice that, lr 4e-5 as examples/lora_step.rs:

    ~/venv/bin/python scripts/bench_training_reference.py --model /tmp/wide \
        --photo benches/data/photo_800x1000.jpg --num-crops 4 --rank 64 --steps 3 --warmup 1

Prints the median and mean step time over `--steps` timed steps after `--warmup` steps,
tokens/s (every position of the batch, as the Rust bench counts them) from the median, and the
process's peak RSS (`ru_maxrss`) after setup and at the end.
"""
import argparse
import os
import resource
import statistics
import sys
import time

import torch
from PIL import Image
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoTokenizer

import phi3v_reference as ref

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
INPUTS = os.path.join(ROOT, "crates", "phi3v-train", "tests", "data", "lora_step", "inputs.safetensors")
RANK, ALPHA = 16, 32
TOKENIZER = os.path.join(ROOT, "crates", "phi3v-processor", "tests", "data", "tokenizer")
# examples/lora_step.rs's sample, character for character.
PROMPT = "<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n"
ANSWER = "Product: Vintage Check Cotton Trench Coat, Category: Coats, Full Price: 2290.0"
ANSWER_SUFFIX = "<|end|>\n<|endoftext|>"
TARGETS = ref.LORA_TARGETS
LR, BETAS, EPS, WEIGHT_DECAY, MAX_GRAD_NORM = 1e-4, (0.9, 0.95), 1e-7, 0.01, 1.0


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def photo_sample(folder, photo, num_crops):
    """examples/lora_step.rs's sample: ids [1, T], labels [1, T] (the answer only), tiles, grids."""
    _, clip_cfg, _ = ref.read_configs(folder)
    tiles, grids, num_tokens = ref.image_inputs([Image.open(photo).convert("RGB")], num_crops, clip_cfg)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    prompt = ref.phi3v_fixtures.tokenize(tokenizer, PROMPT, num_tokens)
    ids = ref.phi3v_fixtures.tokenize(tokenizer, PROMPT + ANSWER + ANSWER_SUFFIX, num_tokens)
    n = prompt.shape[1]
    assert torch.equal(ids[:, :n], prompt), "the answer continues the prompt's tokens"
    labels = ids.clone()
    labels[:, :n] = -100
    return ids, labels, tiles, torch.tensor(grids)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", help="a model folder (default: the Rust bench's tiny model)")
    parser.add_argument("--photo", help="train examples/lora_step.rs's one-photo sample instead")
    parser.add_argument("--num-crops", type=int, default=4)
    parser.add_argument("--rank", type=int, default=RANK)
    parser.add_argument(
        "--autocast-bf16",
        action="store_true",
        help="run the forward under torch.autocast('cpu', bfloat16), the counterpart of "
        "--product-dtype bf16",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.model or os.environ.get(
        "TRAIN_BENCH_MODEL_DIR", os.path.join(ROOT, "target", "bench-tiny-phi3v")
    )
    if not os.path.exists(os.path.join(folder, "config.json")):
        sys.exit(f"{folder} has no model: run `cargo bench --bench training_step` first")
    rank, alpha, lr = (args.rank, 2 * args.rank, 4e-5) if args.photo else (args.rank, ALPHA, LR)

    torch.manual_seed(0)
    model = get_peft_model(
        ref.build(folder),
        LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=0.0,
            target_modules=TARGETS,
            init_lora_weights="gaussian",
            bias="none",
        ),
    )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)

    if args.photo:
        b = 1
        input_ids, labels, pixel_values, image_grids = photo_sample(folder, args.photo, args.num_crops)
    else:
        inputs = load_file(INPUTS)
        b = args.batch
        input_ids = inputs["input_ids"].repeat(b, 1)
        labels = inputs["labels"].repeat(b, 1)
        pixel_values = inputs["pixel_values"].repeat(b, 1, 1, 1)
        image_grids = inputs["image_grids"].repeat(b, 1)
    tokens = input_ids.numel()
    setup_rss = peak_rss_mib()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast_bf16):
            loss = ref.forward(model, input_ids, pixel_values, image_grids, labels=labels).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        return loss, norm

    loss, norm = step()
    print(f"first step: loss {loss.item():.4f}, gradient norm {norm.item():.4f}")
    for _ in range(args.warmup - 1):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median, mean = statistics.median(times), statistics.mean(times)
    adapted = sum(1 for n, _ in model.named_parameters() if n.endswith("lora_A.default.weight"))
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
        f"{', bf16 autocast' if args.autocast_bf16 else ''}, batch {b} x "
        f"{input_ids.shape[1]} = {tokens} tokens, {adapted} adapted modules, "
        f"{sum(p.numel() for p in params)} trainable parameters"
    )
    print(
        f"step: median {median * 1000:.1f} ms, mean {mean * 1000:.1f} ms "
        f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}) over {len(times)} steps; "
        f"{tokens / median:.1f} tokens/s"
    )
    print(f"peak RSS: {setup_rss:.1f} MiB after setup, {peak_rss_mib():.1f} MiB at the end")


if __name__ == "__main__":
    main()

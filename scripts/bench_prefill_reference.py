#!/usr/bin/env python3
"""The reference's prefill on one photo: one f32 forward of Phi-3-V over an image prompt.

    ~/venv/bin/python scripts/bench_prefill_reference.py MODEL_DIR PHOTO [--threads 2] [--num-crops 16]

The PyTorch side of the "photo prefill" row of docs/benchmarks.md. `MODEL_DIR` is a
Hugging Face-layout folder (the full-size random checkpoint of
`write_random_model --preset full`, or `--preset wide`, the released widths cut to 2 decoder
and 2 CLIP layers, where the f32 full model does not fit); the model is
scripts/phi3v_reference.py's `build` (transformers' Phi3ForCausalLM, eager attention, f32).
The prompt is `<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n`,
processed by the reference processor logic at `--num-crops`.

Prints the prompt length, the time of the timed forward (vision tower, projection, decoder,
logits of the last position only as generation needs), the load time, and the peak RSS
(`ru_maxrss`) of the process.
"""
import argparse
import os
import resource
import sys
import time

import torch
from PIL import Image
from transformers import AutoTokenizer

import phi3v_reference as ref

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "crates", "phi3v-processor", "tests", "data", "tokenizer")
PROMPT = "<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("photo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num-crops", type=int, default=16)
    parser.add_argument(
        "--autocast-bf16",
        action="store_true",
        help="run under torch.autocast('cpu', bfloat16), the counterpart of --product-dtype bf16",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = ref.build(args.model)
    load = time.perf_counter() - start
    _, clip_cfg, _ = ref.read_configs(args.model)
    tiles, grids, num_tokens = ref.image_inputs([Image.open(args.photo).convert("RGB")], args.num_crops, clip_cfg)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    ids = ref.phi3v_fixtures.tokenize(tokenizer, PROMPT, num_tokens)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast_bf16)
    with torch.no_grad(), autocast:
        start = time.perf_counter()
        base = model
        embeds = base.model.embed_tokens(ids.clamp(min=0))
        feats = base.model.vision_embed_tokens(list(torch.split(tiles, [1 + h * w for h, w in grids])), grids)
        positions = torch.nonzero(ids < 0, as_tuple=True)
        embeds = embeds.index_put(positions, feats.to(embeds.dtype))
        hidden = base.model(inputs_embeds=embeds).last_hidden_state
        logits = base.lm_head(hidden[:, -1:])
        prefill = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print(
        f"torch {torch.__version__}, {args.threads} threads"
        f"{', bf16 autocast' if args.autocast_bf16 else ''}: prompt {ids.shape[1]} tokens "
        f"({tiles.shape[0]} tiles), load {load:.1f} s, prefill {prefill:.2f} s, "
        f"peak RSS {peak_gb:.2f} GB, last logit[0] {logits[0, -1, 0].item():.4f}"
    )


if __name__ == "__main__":
    sys.exit(main())

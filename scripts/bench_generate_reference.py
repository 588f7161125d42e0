#!/usr/bin/env python3
"""Hugging Face `generate` on the config of benches/generation.rs, for comparison.

    ~/venv/bin/python scripts/bench_generate_reference.py

Config: vocab 32064, hidden 256, 4 layers, 8 heads, MLP 1024, LongRoPE (factors as in the
bench); greedy, a 64-token prompt, 32 new tokens, KV cache, f32, torch on all cores of this
machine (set OMP_NUM_THREADS to change). Prints the median of 10 runs.
"""
import statistics
import time

import torch
from transformers import Phi3Config, Phi3ForCausalLM

PROMPT, NEW = 64, 32
half = 256 // 8 // 2
cfg = Phi3Config(
    vocab_size=32064,
    hidden_size=256,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    original_max_position_embeddings=4096,
    rope_scaling={
        "rope_type": "longrope",
        "short_factor": [1.0 + i * 0.1 for i in range(half)],
        "long_factor": [1.0 + i * 2.0 for i in range(half)],
    },
    pad_token_id=0,
    eos_token_id=2,
    bos_token_id=1,
)
model = Phi3ForCausalLM(cfg).eval()
ids = torch.tensor([[100 + i * 7 for i in range(PROMPT)]])
times = []
with torch.no_grad():
    for i in range(11):
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        elapsed = time.perf_counter() - start
        assert out.shape[1] == PROMPT + NEW
        if i:
            times.append(elapsed)
median = statistics.median(times)
print(f"torch {torch.__version__}, threads {torch.get_num_threads()}: "
      f"median {median * 1000:.1f} ms per generate, {NEW / median:.1f} new tokens/s")

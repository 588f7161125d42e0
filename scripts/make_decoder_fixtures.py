#!/usr/bin/env python3
"""Random tiny Phi-3 checkpoints and the reference's outputs on them.

Regenerate (needs torch + transformers, e.g. `python3 -m venv ~/venv &&
~/venv/bin/pip install torch transformers safetensors`):

    ~/venv/bin/python scripts/make_decoder_fixtures.py

Writes crates/phi3-decoder/tests/data/{tiny_a,tiny_b}/ (Hugging Face checkpoint layout) and
expected_{a,b}.safetensors. The oracle is transformers' `Phi3ForCausalLM` with rope type
`longrope` and eager attention, in float32.

- tiny_a: 2 layers, MHA, bf16 weights in one file, config written the old way
  (`rope_scaling.type = "su"`). Expected values come from the bf16 weights upcast to f32,
  so the Rust bf16 -> f32 path is checked too.
- tiny_b: 3 layers, grouped-query attention, a sliding window, f32 weights in several
  shards with `model.safetensors.index.json`, config written by transformers itself
  (`rope_parameters.rope_type = "longrope"`).

Cases per config:
- short: one sequence under original_max_position_embeddings (short factors);
- long: one sequence over it (long factors);
- padded: a left-padded batch of two, with its attention mask;
- decode: a prompt, then tokens fed one at a time through the KV cache (for tiny_a the
  steps cross original_max_position_embeddings, which exercises the reference's quirk:
  cached keys keep the rotation they were computed with).
"""
import json
import math
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import Phi3Config, Phi3ForCausalLM
from transformers.cache_utils import DynamicCache

ROOT = os.path.join(os.path.dirname(__file__), "..", "crates", "phi3-decoder", "tests", "data")


def factors(gen, n, lo, hi):
    return [round(lo + (hi - lo) * float(x), 4) for x in torch.rand(n, generator=gen)]


def scramble(model, gen):
    """Re-draw every weight at a scale that keeps activations O(1).

    Hugging Face's default init (std 0.02) gives near-zero logits, against which a 1e-4
    tolerance would prove nothing.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 2 and "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def run_cases(model, cfg, gen, decode_prompt, decode_steps):
    v = cfg.vocab_size
    omax = cfg.original_max_position_embeddings
    out = {}

    def record(case, ids, mask=None):
        with torch.no_grad():
            o = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        out[f"{case}.input_ids"] = ids.clone()
        if mask is not None:
            out[f"{case}.attention_mask"] = mask.clone()
        out[f"{case}.logits"] = o.logits.float().contiguous()
        out[f"{case}.hidden"] = o.hidden_states[-1].float().contiguous()

    record("short", torch.randint(0, v, (1, omax // 2), generator=gen))
    # Loss with ignore index -100 on a batch of two with masked prompt positions.
    ids = torch.randint(0, v, (2, 12), generator=gen)
    labels = ids.clone()
    labels[0, :5] = -100
    labels[1, :3] = -100
    labels[1, 10:] = -100
    with torch.no_grad():
        o = model(input_ids=ids, labels=labels)
    out["loss.input_ids"] = ids
    out["loss.labels"] = labels
    out["loss.value"] = o.loss.reshape(1).float()
    record("long", torch.randint(0, v, (1, omax + omax // 4), generator=gen))

    lens = [14, 9]
    width = max(lens)
    ids = torch.randint(0, v, (2, width), generator=gen)
    mask = torch.zeros(2, width, dtype=torch.int64)
    for row, n in enumerate(lens):
        ids[row, : width - n] = cfg.pad_token_id
        mask[row, width - n :] = 1
    record("padded", ids, mask)

    prompt = torch.randint(0, v, (1, decode_prompt), generator=gen)
    steps = torch.randint(0, v, (1, decode_steps), generator=gen)
    cache = DynamicCache(config=cfg)
    step_logits = []
    with torch.no_grad():
        o = model(input_ids=prompt, past_key_values=cache, use_cache=True)
        prompt_logits = o.logits.float()
        cache = o.past_key_values
        for i in range(decode_steps):
            o = model(input_ids=steps[:, i : i + 1], past_key_values=cache, use_cache=True)
            cache = o.past_key_values
            step_logits.append(o.logits.float())
    out["decode.prompt_ids"] = prompt
    out["decode.step_ids"] = steps
    out["decode.prompt_logits"] = prompt_logits.contiguous()
    out["decode.step_logits"] = torch.cat(step_logits, dim=1).contiguous()
    return out


def make(name, cfg_kwargs, seed, dtype, shard_size, decode_prompt, decode_steps, legacy_config):
    gen = torch.Generator().manual_seed(seed)
    head_dim = cfg_kwargs["hidden_size"] // cfg_kwargs["num_attention_heads"]
    rope = {
        "rope_type": "longrope",
        "short_factor": factors(gen, head_dim // 2, 1.0, 3.0),
        "long_factor": factors(gen, head_dim // 2, 1.0, 40.0),
    }
    cfg = Phi3Config(rope_scaling=dict(rope), attn_implementation="eager", **cfg_kwargs)
    cfg._attn_implementation = "eager"
    model = Phi3ForCausalLM(cfg).eval()
    scramble(model, gen)
    if dtype != torch.float32:
        # The checkpoint is stored in `dtype`; the reference computes on its f32 upcast.
        # Round the parameters only: `model.to(dtype)` would also round the rotary
        # frequency buffers, which the reference computes in f32 whatever the weights.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(dtype).float())

    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    state = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    model.save_pretrained(d, max_shard_size=shard_size, state_dict=state)
    if legacy_config:
        # The released Phi-3-V config.json predates rope_parameters: write it that way.
        with open(os.path.join(d, "config.json")) as f:
            c = json.load(f)
        params = c.pop("rope_parameters")
        c["rope_theta"] = params["rope_theta"]
        c["rope_scaling"] = {
            "type": "su",
            "short_factor": params["short_factor"],
            "long_factor": params["long_factor"],
        }
        c["torch_dtype"] = "bfloat16"
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=2)

    out = run_cases(model, cfg, gen, decode_prompt, decode_steps)
    save_file({k: t.contiguous() for k, t in out.items()}, os.path.join(ROOT, f"expected_{name[-1]}.safetensors"))
    print(name, "files:", sorted(os.listdir(d)))


def main():
    torch.manual_seed(0)
    common = dict(
        vocab_size=384,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    )
    make(
        "tiny_a",
        dict(
            common,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=256,
            original_max_position_embeddings=48,
            sliding_window=None,
        ),
        seed=1,
        dtype=torch.bfloat16,
        shard_size="10GB",
        decode_prompt=44,
        decode_steps=8,
        legacy_config=True,
    )
    make(
        "tiny_b",
        dict(
            common,
            hidden_size=96,
            intermediate_size=160,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            original_max_position_embeddings=32,
            sliding_window=20,
        ),
        seed=2,
        dtype=torch.float32,
        shard_size="300KB",
        decode_prompt=10,
        decode_steps=6,
        legacy_config=False,
    )


if __name__ == "__main__":
    main()

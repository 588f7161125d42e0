#!/usr/bin/env python3
"""One LoRA training step of the reference Phi-3-V with PyTorch + PEFT: a gradient-parity fixture.

Regenerate (needs torch, transformers, peft, safetensors, pillow; reads the committed tiny
checkpoint of scripts/make_phi3v_fixtures.py and the tokenizer fixture):

    ~/venv/bin/python scripts/make_lora_fixtures.py

Writes crates/phi3v-train/tests/data/lora_step/:
- adapter_init/: the adapter before the step, as PEFT's `save_pretrained` writes it
  (adapter_config.json, adapter_model.safetensors with `base_model.model.<module>.lora_A.weight`
  [r, in] and `.lora_B.weight` [out, r], f32);
- inputs.safetensors: `input_ids` i64 [1, T] (image placeholders -1), `labels` i64 [1, T]
  (-100 over the prompt), `pixel_values` f32 [1 + h*w, 3, S, S] (the real tiles only: global
  view, then the h*w crops row-major), `image_grids` i64 [1, 2] = (h, w);
- expected.safetensors: `loss` f32 [1], `grad_norm` f32 [1] (total L2 norm of the LoRA
  gradients, before clipping) and, for every LoRA parameter with PEFT name N, `grad.N` (the raw
  gradient, before clipping; zeros where PyTorch has none) and `updated.N` (the parameter after
  the clipped AdamW step);
- expected.json: hyperparameters, adapted modules (and those that get no gradient), sizes.

The model is scripts/phi3v_reference.py's `build` (f32 on the bf16 weights upcast), one
module whose names are the released ones, wrapped by `peft.get_peft_model` with
`LoraConfig(r=4, lora_alpha=8, lora_dropout=0, init_lora_weights="gaussian")` on the Phi-3-V
recipe's targets. A fresh B is zero (so A would get no gradient): every B is overwritten with
N(0, 0.02) before the adapter is saved. The example is the one-image Burberry training sequence,
built as the Phi-3 Cookbook's collator does: prompt ids from the processor logic (each text
chunk with BOS, `<|image_1|>` -> num_img_tokens copies of -1), answer
`{answer}<|end|>\\n<|endoftext|>` tokenized without special tokens and appended; labels -100 on
the prompt. Loss: transformers' causal-LM loss. Then `clip_grad_norm_(max_norm=1)` and one
`torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.95), eps=1e-7, weight_decay=0.01)` step.

Phi-3-V takes CLIP's hidden_states[-2]: the tower's last encoder layer (and post_layernorm)
runs but does not reach the loss. The checkpoint stores that layer and PEFT's suffix matching
adapts it like the others, as it would on the released model; its LoRA parameters get no
gradient (`None` in PyTorch: AdamW skips them, no weight decay either, so `updated` equals the
initial value). They are listed under `no_grad_modules` in expected.json.
"""
import json
import os
import shutil

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoTokenizer

import phi3v_reference as ref

phi3v_fixtures = ref.phi3v_fixtures

HERE = os.path.dirname(os.path.abspath(__file__))
CKPT = phi3v_fixtures.CKPT
OUT = os.path.join(HERE, "..", "crates", "phi3v-train", "tests", "data", "lora_step")
ANSWER = "Product: Long Beige Check Wool Coat, Category: Coats, Full Price: 1890.0"
PROMPT = phi3v_fixtures.PROMPTS["one_image"]
IMAGE = "coat.png"
NUM_CROPS = 4
IGNORE_INDEX = -100

RANK = 4
ALPHA = 8
TARGETS = ref.LORA_TARGETS
B_STD = 0.02
LR = 1e-3
BETAS = (0.9, 0.95)
EPS = 1e-7
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
SEED = 1234


def intended_modules(text_cfg, clip_cfg):
    """The modules the recipe means to adapt, named as in the released checkpoint."""
    names = []
    for i in range(text_cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        names += [p + "self_attn.qkv_proj", p + "self_attn.o_proj", p + "mlp.gate_up_proj", p + "mlp.down_proj"]
    names.append("lm_head")
    for j in range(clip_cfg.num_hidden_layers):
        p = f"model.vision_embed_tokens.img_processor.vision_model.encoder.layers.{j}."
        names += [p + f"self_attn.{x}" for x in ("q_proj", "k_proj", "v_proj", "out_proj")]
        names += [p + "mlp.fc1", p + "mlp.fc2"]
    names += ["model.vision_embed_tokens.img_projection.0", "model.vision_embed_tokens.img_projection.2"]
    return sorted(names)


def training_example(tokenizer, num_img_tokens):
    """(input_ids [1, T], labels [1, T], prompt_len) as the Cookbook's collator builds them."""
    prompt_ids = phi3v_fixtures.tokenize(tokenizer, PROMPT, num_img_tokens)
    answer = ANSWER + "<|end|>\n<|endoftext|>"
    answer_ids = torch.tensor([tokenizer(answer, add_special_tokens=False).input_ids], dtype=torch.long)
    input_ids = torch.cat([prompt_ids, answer_ids], dim=1)
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), answer_ids], dim=1)
    return input_ids, labels, prompt_ids.shape[1]


def peft_name(param_name):
    """`...qkv_proj.lora_A.default.weight` -> `...qkv_proj.lora_A.weight` (the saved form)."""
    return param_name.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def adam_step(inits, grads, max_norm=MAX_GRAD_NORM, weight_decay=WEIGHT_DECAY, decoupled=True):
    """One optimizer step on copies: the parameters after it. A grad of None is skipped."""
    params = [t.clone().requires_grad_(True) for t in inits]
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    cls(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=weight_decay).step()
    return [p.detach() for p in params]


def sensitivity(inits, grads, updated):
    """How far `updated` moves under common mistakes: tells what a tolerance can catch.

    Adam's first step is about lr * sign(g), so clipping only shows through eps, on entries
    whose clipped gradient is near eps or below (lm_head's lora_B has many), and AdamW's
    decoupled decay moves a parameter by lr * weight_decay * |p|.
    """
    variants = {
        "no_clipping": dict(max_norm=None),
        "no_weight_decay": dict(weight_decay=0.0),
        "adam_l2_instead_of_adamw": dict(decoupled=False),
        "zero_grads_instead_of_none": dict(),
    }
    out = {}
    for name, kwargs in variants.items():
        gs = [torch.zeros_like(t) if g is None and name.startswith("zero") else g for t, g in zip(inits, grads)]
        moved = adam_step(inits, gs, **kwargs)
        out[name] = max((a - b).abs().max().item() for a, b in zip(moved, updated))
    return out


def dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main():
    text_cfg, clip_cfg, _ = ref.read_configs(CKPT)
    model = ref.build(CKPT)

    # --- the adapter --------------------------------------------------------------------------
    torch.manual_seed(SEED)  # PEFT's gaussian init of A draws from the global generator
    config = LoraConfig(
        r=RANK,
        lora_alpha=ALPHA,
        lora_dropout=0.0,
        target_modules=TARGETS,
        init_lora_weights="gaussian",
        bias="none",
    )
    model = get_peft_model(model, config)
    prefix = "base_model.model."
    adapted = sorted(n[len(prefix) :] for n, m in model.named_modules() if isinstance(m, LoraLayer))
    intended = intended_modules(text_cfg, clip_cfg)
    if adapted != intended:
        raise SystemExit(
            f"PEFT matched the wrong modules:\n extra {sorted(set(adapted) - set(intended))}\n"
            f" missing {sorted(set(intended) - set(adapted))}"
        )
    print(f"PEFT adapted {len(adapted)} modules (exactly the intended ones):")
    for name in adapted:
        print("  ", name)

    gen = torch.Generator().manual_seed(SEED + 1)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with torch.no_grad():
        for n, p in params:
            if ".lora_B." in n:
                p.copy_(B_STD * torch.randn(p.shape, generator=gen))
    lora_names = [n for n, _ in params]
    assert all(".lora_A.default.weight" in n or ".lora_B.default.weight" in n for n in lora_names), lora_names
    assert len(lora_names) == 2 * len(adapted)

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    adapter_dir = os.path.join(OUT, "adapter_init")
    # "auto" would also save the whole lm_head, as lm_head is a target (an "embedding layer").
    model.save_pretrained(adapter_dir, save_embedding_layers=False)
    os.remove(os.path.join(adapter_dir, "README.md"))  # PEFT's model-card template
    # PEFT writes target_modules from a set, in hash order: sort it so reruns write the same file.
    config_path = os.path.join(adapter_dir, "adapter_config.json")
    with open(config_path) as f:
        adapter_config = json.load(f)
    adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
    with open(config_path, "w") as f:
        json.dump(adapter_config, f, indent=2, sort_keys=True)
    with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), framework="pt") as f:
        saved = set(f.keys())
    expected_saved = {prefix + peft_name(n)[len(prefix) :] for n in lora_names}
    if saved != expected_saved:
        raise SystemExit(f"unexpected adapter tensor names: {sorted(saved ^ expected_saved)[:8]}")

    # --- the example ----------------------------------------------------------------------------
    tokenizer = AutoTokenizer.from_pretrained(phi3v_fixtures.TOKENIZER)
    image = Image.open(os.path.join(CKPT, IMAGE))
    pixel_values, grids, num_tokens = ref.image_inputs([image], NUM_CROPS, clip_cfg)
    image_grids = torch.tensor(grids, dtype=torch.long)
    input_ids, labels, prompt_len = training_example(tokenizer, num_tokens)
    print(
        f"T = {input_ids.shape[1]} (prompt {prompt_len}, answer {input_ids.shape[1] - prompt_len}), "
        f"image tokens {num_tokens}, grid {grids}, tiles {tuple(pixel_values.shape)}"
    )
    save_file(
        {
            "input_ids": input_ids.contiguous(),
            "labels": labels.contiguous(),
            "pixel_values": pixel_values.contiguous(),
            "image_grids": image_grids.contiguous(),
        },
        os.path.join(OUT, "inputs.safetensors"),
    )

    # --- the step -------------------------------------------------------------------------------
    out = ref.forward(model, input_ids, pixel_values, image_grids, labels=labels)
    loss = out.loss
    # Cross-check transformers' loss against the definition.
    shift_logits, shift_labels = out.logits[0, :-1], labels[0, 1:]
    manual = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)
    assert torch.allclose(loss, manual, rtol=0, atol=1e-6), (loss.item(), manual.item())
    loss.backward()

    lora_params = [p for _, p in params]
    inits = [p.detach().clone() for p in lora_params]
    raw_grads = [None if p.grad is None else p.grad.detach().clone() for p in lora_params]
    no_grad = sorted({peft_name(n)[len(prefix) :].rsplit(".lora_", 1)[0] for n, p in params if p.grad is None})
    grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in params}
    manual_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))
    grad_norm = torch.nn.utils.clip_grad_norm_(lora_params, MAX_GRAD_NORM)
    assert abs(grad_norm.item() - manual_norm.item()) < 1e-4 * manual_norm.item()
    if grad_norm.item() <= MAX_GRAD_NORM:
        raise SystemExit(f"grad norm {grad_norm.item()} <= {MAX_GRAD_NORM}: clipping is not exercised")
    clip_coef = MAX_GRAD_NORM / (grad_norm.item() + 1e-6)
    small = sum(int((g.abs() * clip_coef < 1e-6).sum()) for g in grads.values())
    optimizer = torch.optim.AdamW(lora_params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    optimizer.step()
    updated = [p.detach().clone() for p in lora_params]
    assert all(torch.equal(a, b) for a, b in zip(adam_step(inits, raw_grads), updated))
    moves = sensitivity(inits, raw_grads, updated)

    expected = {
        "loss": loss.detach().reshape(1).float(),
        "grad_norm": grad_norm.detach().reshape(1).float(),
    }
    for n, p in params:
        expected["grad." + peft_name(n)] = grads[n].contiguous()
        expected["updated." + peft_name(n)] = p.detach().clone().contiguous()
    save_file(expected, os.path.join(OUT, "expected.safetensors"))

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(
            {
                "regenerate": "~/venv/bin/python scripts/make_lora_fixtures.py",
                "base": "crates/phi3v/tests/data/tiny_phi3v",
                "image": IMAGE,
                "num_crops": NUM_CROPS,
                "image_grid": list(grids[0]),
                "num_img_tokens": num_tokens,
                "seq_len": int(input_ids.shape[1]),
                "prompt_len": prompt_len,
                "prompt": PROMPT,
                "answer": ANSWER + "<|end|>\n<|endoftext|>",
                "r": RANK,
                "lora_alpha": ALPHA,
                "scaling": ALPHA / RANK,
                "lora_dropout": 0.0,
                "lora_A_init": f"N(0, 1/r) (PEFT gaussian, torch.manual_seed({SEED}))",
                "lora_B_init": f"N(0, {B_STD})",
                "lr": LR,
                "betas": list(BETAS),
                "eps": EPS,
                "weight_decay": WEIGHT_DECAY,
                "max_grad_norm": MAX_GRAD_NORM,
                "optimizer": "torch.optim.AdamW, one step from zero state, after clip_grad_norm_",
                "loss": loss.item(),
                "grad_norm": grad_norm.item(),
                "target_modules": TARGETS,
                "adapted_modules": adapted,
                "no_grad_modules": no_grad,
                "max_abs_change_of_updated_under_mistakes": moves,
            },
            f,
            indent=2,
        )

    print(f"loss {loss.item():.6f}  grad_norm {grad_norm.item():.6f}  (clip coefficient {clip_coef:.6f})")
    print(f"modules without gradient (CLIP's last layer, not used): {no_grad}")
    print(f"gradient entries below 1e-6 after clipping: {small} of {sum(g.numel() for g in grads.values())}")
    print("max |change| of the updated parameters under mistakes:", moves)
    print(f"wrote {OUT}: {dir_size(OUT) / 1e6:.3f} MB")


if __name__ == "__main__":
    main()

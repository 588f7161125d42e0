#!/usr/bin/env python3
"""A random tiny Phi-3-V checkpoint in the Hugging Face layout, and the reference's outputs.

Regenerate (needs torch + transformers, and the tokenizer fixture from
scripts/make_tokenizer_fixture.py):

    ~/venv/bin/python scripts/make_phi3v_fixtures.py

Writes crates/phi3v/tests/data/tiny_phi3v/ (config.json with `model_type = "phi3_v"` and an
`img_processor.vision_config` override, preprocessor_config.json, tokenizer.json, two bf16
safetensors shards with an index, two product images) and crates/phi3v/tests/data/
expected.safetensors.

The reference is assembled from transformers' `Phi3ForCausalLM` (longrope, eager) and
`CLIPVisionModel`, plus the glue of the released `image_embedding_phi3_v.py` written out in
scripts/make_vision_fixtures.py, the HD transform of scripts/make_processor_fixtures.py and
the prompt logic of the released `processing_phi3_v.py` (each text chunk is tokenized on its
own, BOS included; `<|image_k|>` becomes num_img_tokens copies of -k). The reference computes
in f32 on the bf16 weights upcast.

Cases: a text-only prompt, a one-image prompt, and a two-image prompt whose images have
different crop grids. For each: input ids, final hidden states at every position, logits at the
last positions, and 8 greedy tokens from a prefill + KV-cache decode loop.
"""
import importlib.util
import json
import math
import os
import re
import shutil

import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, Phi3Config, Phi3ForCausalLM
from transformers.cache_utils import DynamicCache

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "crates", "phi3v", "tests", "data")
CKPT = os.path.join(ROOT, "tiny_phi3v")
TOKENIZER = os.path.join(HERE, "..", "crates", "phi3v-processor", "tests", "data", "tokenizer")
NUM_CROPS = 4
GREEDY_STEPS = 8
STOP = {32000, 32007}


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


processor_ref = load_script("make_processor_fixtures")
vision_ref = load_script("make_vision_fixtures")

PROMPTS = {
    "text": "<|user|>\nWhat is a trench coat?<|end|>\n<|assistant|>\n",
    "one_image": "<|user|>\n<|image_1|>What is shown in this image?<|end|>\n<|assistant|>\n",
    "two_images": "<|user|>\n<|image_1|>\n<|image_2|>\nCompare these two products.<|end|>\n<|assistant|>\n",
}
IMAGES = {"text": [], "one_image": ["coat.png"], "two_images": ["coat.png", "scarf.png"]}


def tokenize(tokenizer, text, num_img_tokens):
    """The released processor's text logic (processing_phi3_v.py)."""
    pattern = r"<\|image_\d+\|>"
    chunks = [tokenizer(chunk).input_ids for chunk in re.split(pattern, text)]
    tags = re.findall(pattern, text)
    image_ids = [int(s.split("|")[1].split("_")[-1]) for s in tags]
    pads = [[-i] * num_img_tokens[i - 1] for i in image_ids]
    if len(chunks) > len(pads):
        pads.append([])
    ids = []
    for chunk, pad in zip(chunks, pads):
        ids.extend(chunk)
        ids.extend(pad)
    return torch.tensor([ids], dtype=torch.long)


def draw_images():
    """Two small product-like pictures: a landscape coat (2x2 crops) and a tall scarf (2x1)."""
    coat = Image.new("RGB", (100, 60), (245, 240, 230))
    for x in range(100):
        for y in range(60):
            if 30 < x < 70 and 5 < y < 55:
                check = ((x // 6) + (y // 6)) % 2
                coat.putpixel((x, y), (190, 150, 100) if check else (120, 80, 50))
    scarf = Image.new("RGB", (50, 120), (250, 250, 250))
    for x in range(10, 40):
        for y in range(120):
            scarf.putpixel((x, y), (200, 30, 40) if (y // 8) % 2 else (30, 30, 30))
    coat.save(os.path.join(CKPT, "coat.png"))
    scarf.save(os.path.join(CKPT, "scarf.png"))


def scramble(module, gen):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            else:
                p.copy_(torch.randn(p.shape, generator=gen))
            # The checkpoint is bf16: compute on exactly what it stores.
            p.copy_(p.to(torch.bfloat16).float())


def main():
    gen = torch.Generator().manual_seed(11)
    shutil.rmtree(CKPT, ignore_errors=True)
    os.makedirs(CKPT)

    hidden = 32
    head_dim = 16
    text_cfg = Phi3Config(
        vocab_size=32064,
        hidden_size=hidden,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        original_max_position_embeddings=128,
        rope_scaling={
            "rope_type": "longrope",
            "short_factor": [round(1.0 + 0.1 * i, 2) for i in range(head_dim // 2)],
            "long_factor": [round(1.0 + 3.0 * i, 2) for i in range(head_dim // 2)],
        },
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=32000,
        pad_token_id=32000,
        tie_word_embeddings=False,
        sliding_window=None,
        attn_implementation="eager",
    )
    text_cfg._attn_implementation = "eager"
    decoder = Phi3ForCausalLM(text_cfg).eval()
    scramble(decoder, gen)

    clip_cfg = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=3,
        image_size=56,
        patch_size=14,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attn_implementation="eager",
    )
    tower = CLIPVisionModel(clip_cfg).eval()
    scramble(tower, gen)
    c4 = 4 * clip_cfg.hidden_size
    proj0 = torch.nn.Linear(c4, hidden)
    proj2 = torch.nn.Linear(hidden, hidden)
    scramble(proj0, gen)
    scramble(proj2, gen)
    glb_gn = torch.randn(1, 1, c4, generator=gen).to(torch.bfloat16).float()
    sub_gn = torch.randn(1, 1, 1, c4, generator=gen).to(torch.bfloat16).float()

    # --- the checkpoint folder -------------------------------------------------------------
    state = {k: v for k, v in decoder.state_dict().items()}
    for k, v in tower.state_dict().items():
        if k.endswith("position_ids"):
            continue
        k = k if k.startswith("vision_model.") else "vision_model." + k
        state["model.vision_embed_tokens.img_processor." + k] = v
    state["model.vision_embed_tokens.img_projection.0.weight"] = proj0.weight.detach()
    state["model.vision_embed_tokens.img_projection.0.bias"] = proj0.bias.detach()
    state["model.vision_embed_tokens.img_projection.2.weight"] = proj2.weight.detach()
    state["model.vision_embed_tokens.img_projection.2.bias"] = proj2.bias.detach()
    state["model.vision_embed_tokens.glb_GN"] = glb_gn
    state["model.vision_embed_tokens.sub_GN"] = sub_gn
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}
    names = sorted(state)
    # Two shards: the big embedding matrices in the first, everything else in the second.
    first = {k for k in names if k in ("model.embed_tokens.weight", "lm_head.weight")}
    shards = {
        "model-00001-of-00002.safetensors": {k: state[k] for k in names if k in first},
        "model-00002-of-00002.safetensors": {k: state[k] for k in names if k not in first},
    }
    weight_map = {}
    for file, tensors in shards.items():
        save_file(tensors, os.path.join(CKPT, file), metadata={"format": "pt"})
        weight_map.update({k: file for k in tensors})
    with open(os.path.join(CKPT, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2, sort_keys=True)

    config = json.loads(text_cfg.to_json_string())
    params = config.pop("rope_parameters")
    config.update(
        {
            "model_type": "phi3_v",
            "architectures": ["Phi3VForCausalLM"],
            "rope_theta": params["rope_theta"],
            "rope_scaling": {
                "type": "su",
                "short_factor": params["short_factor"],
                "long_factor": params["long_factor"],
            },
            "embd_layer": {
                "embedding_cls": "image",
                "hd_transform_order": "sub_glb",
                "projection_cls": "mlp",
                "use_hd_transform": True,
                "with_learnable_separator": True,
            },
            "img_processor": {
                "image_dim_out": clip_cfg.hidden_size,
                "model_name": "openai/clip-vit-large-patch14-336",
                "name": "clip_vision_model",
                "num_img_tokens": 4,
                "vision_config": {
                    k: getattr(clip_cfg, k)
                    for k in [
                        "hidden_size",
                        "intermediate_size",
                        "num_attention_heads",
                        "num_hidden_layers",
                        "image_size",
                        "patch_size",
                        "layer_norm_eps",
                        "hidden_act",
                    ]
                },
            },
            "torch_dtype": "bfloat16",
        }
    )
    for key in ("transformers_version", "dtype", "output_attentions", "output_hidden_states"):
        config.pop(key, None)
    with open(os.path.join(CKPT, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    with open(os.path.join(CKPT, "preprocessor_config.json"), "w") as f:
        json.dump(
            {
                "image_processor_type": "Phi3VImageProcessor",
                "num_crops": NUM_CROPS,
                "image_mean": processor_ref.OPENAI_CLIP_MEAN,
                "image_std": processor_ref.OPENAI_CLIP_STD,
                "do_convert_rgb": True,
            },
            f,
            indent=2,
        )
    shutil.copy(os.path.join(TOKENIZER, "tokenizer.json"), os.path.join(CKPT, "tokenizer.json"))
    for extra in ("tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(TOKENIZER, extra)):
            shutil.copy(os.path.join(TOKENIZER, extra), os.path.join(CKPT, extra))
    draw_images()

    # --- the reference's outputs -------------------------------------------------------------
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    expected = {}
    for case, text in PROMPTS.items():
        images = [Image.open(os.path.join(CKPT, f)) for f in IMAGES[case]]
        tiles, grids, num_tokens = [], [], []
        if images:
            pixel_values, sizes, num_tokens, _ = processor_ref.preprocess(
                images, num_crops=NUM_CROPS, unit=clip_cfg.image_size, patch=clip_cfg.patch_size
            )
            for pv, (h, w) in zip(pixel_values, sizes):
                gh, gw = h // clip_cfg.image_size, w // clip_cfg.image_size
                tiles.append(pv[: 1 + gh * gw])
                grids.append((gh, gw))
        ids = tokenize(tokenizer, text, num_tokens)
        with torch.no_grad():
            embeds = decoder.model.embed_tokens(ids.clamp(min=0))
            if tiles:
                feats = torch.cat(vision_ref.embed(tower, proj0, proj2, glb_gn, sub_gn, tiles, grids))
                positions = torch.nonzero(ids < 0, as_tuple=True)
                embeds = embeds.index_put(positions, feats)
            out = decoder(inputs_embeds=embeds, output_hidden_states=True)
            # Greedy: prefill with the embeddings, then one token at a time with the cache.
            cache = DynamicCache(config=text_cfg)
            step = decoder(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
            greedy = []
            for _ in range(GREEDY_STEPS):
                token = int(step.logits[0, -1].argmax())
                greedy.append(token)
                if token in STOP:
                    break
                step = decoder(
                    input_ids=torch.tensor([[token]]), past_key_values=step.past_key_values, use_cache=True
                )
        expected[f"{case}.input_ids"] = ids
        expected[f"{case}.hidden"] = out.hidden_states[-1].float().contiguous()
        expected[f"{case}.last_logits"] = out.logits[:, -3:].float().contiguous()
        expected[f"{case}.greedy"] = torch.tensor([greedy], dtype=torch.long)
        if tiles:
            expected[f"{case}.tiles"] = torch.cat(tiles).contiguous()
            expected[f"{case}.grids"] = torch.tensor(grids, dtype=torch.long)
        print(case, "tokens:", ids.shape[1], "grids:", grids, "greedy:", greedy)
    save_file(expected, os.path.join(ROOT, "expected.safetensors"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The reference Phi-3-V as ONE PyTorch module, built from a Hugging Face-layout folder.

Not run on its own: scripts/make_lora_fixtures.py and scripts/check_peft_export.py import it
(both run as `~/venv/bin/python scripts/<name>.py`, so this folder is on `sys.path`).

`build(folder)` returns transformers' `Phi3ForCausalLM` (f32, eager attention) with a
`vision_embed_tokens` submodule attached to its `.model`, so every named module carries the
name it has in the released checkpoint:

    model.layers.{i}.self_attn.{qkv_proj,o_proj}, model.layers.{i}.mlp.{gate_up_proj,down_proj},
    lm_head,
    model.vision_embed_tokens.img_processor.vision_model.encoder.layers.{j}.self_attn.{q,k,v,out}_proj,
    model.vision_embed_tokens.img_processor.vision_model.encoder.layers.{j}.mlp.{fc1,fc2},
    model.vision_embed_tokens.img_projection.{0,2}, model.vision_embed_tokens.{glb_GN,sub_GN}.

transformers 5's `CLIPVisionModel` has no `vision_model` level of its own any more (its
modules are `embeddings.*`, `encoder.*`, ...), so `img_processor` is a plain container whose
`vision_model` is the tower: that restores the released names.

Weights are read as stored (bf16 in the tiny checkpoint, any float dtype elsewhere, one file or
sharded with `model.safetensors.index.json`) and upcast to f32, which is exactly what
scripts/make_phi3v_fixtures.py computes on (it rounds its random weights to bf16 and upcasts).
The image glue (2x2 merge, separators, projection) is `embed` of scripts/make_vision_fixtures.py;
the text logic (chunk tokenization, `-k` placeholders) is `tokenize` of
scripts/make_phi3v_fixtures.py; the HD transform is `preprocess` of
scripts/make_processor_fixtures.py.
"""
import glob
import json
import os

import torch
from safetensors import safe_open
from transformers import CLIPVisionConfig, CLIPVisionModel, Phi3Config, Phi3ForCausalLM

import make_phi3v_fixtures as phi3v_fixtures

vision_ref = phi3v_fixtures.vision_ref
processor_ref = phi3v_fixtures.processor_ref

# The released model's tower (openai/clip-vit-large-patch14-336), used when config.json has no
# `img_processor.vision_config` override (the tiny checkpoints have one).
CLIP_L14_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "image_size": 336,
    "patch_size": 14,
    "layer_norm_eps": 1e-5,
    "hidden_act": "quick_gelu",
}
# Tensors a checkpoint may carry that the module does not have.
IGNORED_KEYS = {"model.vision_embed_tokens.wte.weight"}  # alias of model.embed_tokens.weight
# The reference recipe's LoRA targets (docs section 6), vision tower and lm_head included.
LORA_TARGETS = [
    "qkv_proj",
    "o_proj",
    "gate_up_proj",
    "down_proj",
    "lm_head",
    "q_proj",
    "k_proj",
    "v_proj",
    "out_proj",
    "fc1",
    "fc2",
    "img_projection.0",
    "img_projection.2",
]


class ImgProcessor(torch.nn.Module):
    """Holds the CLIP tower as `vision_model`, the level transformers 5 dropped."""

    def __init__(self, clip_cfg):
        super().__init__()
        self.vision_model = CLIPVisionModel(clip_cfg)


class VisionEmbedding(torch.nn.Module):
    """`model.vision_embed_tokens` of the released model (HD transform, sub_glb, mlp projection)."""

    def __init__(self, clip_cfg, hidden_size):
        super().__init__()
        c4 = 4 * clip_cfg.hidden_size
        self.img_processor = ImgProcessor(clip_cfg)
        self.img_projection = torch.nn.Sequential(
            torch.nn.Linear(c4, hidden_size), torch.nn.GELU(), torch.nn.Linear(hidden_size, hidden_size)
        )
        self.glb_GN = torch.nn.Parameter(torch.zeros(1, 1, c4))
        self.sub_GN = torch.nn.Parameter(torch.zeros(1, 1, 1, c4))

    def forward(self, tiles, grids):
        """tiles: per image [1 + h*w, 3, S, S] (global first); returns [n_tokens, hidden]."""
        # The projection's Linear layers are looked up on every call: PEFT replaces them.
        outs = vision_ref.embed(
            self.img_processor.vision_model,
            self.img_projection[0],
            self.img_projection[2],
            self.glb_GN,
            self.sub_GN,
            tiles,
            grids,
        )
        return torch.cat(outs)


def read_configs(folder):
    """config.json of a Phi-3-V folder -> (Phi3Config, CLIPVisionConfig, the raw dict)."""
    with open(os.path.join(folder, "config.json")) as f:
        raw = json.load(f)
    scaling = raw.get("rope_scaling")
    rope = {"rope_type": "default"}
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind not in ("su", "longrope"):
            raise ValueError(f"unsupported rope_scaling type {kind!r}")
        rope = {
            "rope_type": "longrope",
            "short_factor": scaling["short_factor"],
            "long_factor": scaling["long_factor"],
        }
    keys = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "original_max_position_embeddings",
        "rms_norm_eps",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "hidden_act",
    ]
    text_cfg = Phi3Config(
        **{k: raw[k] for k in keys if k in raw},
        rope_scaling=rope,
        rope_theta=raw.get("rope_theta", 10000.0),
        tie_word_embeddings=raw.get("tie_word_embeddings", False),
        sliding_window=None,
        attention_dropout=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_implementation="eager",
    )
    text_cfg._attn_implementation = "eager"
    vision = dict(CLIP_L14_336)
    vision.update(raw.get("img_processor", {}).get("vision_config", {}))
    clip_cfg = CLIPVisionConfig(**vision, attn_implementation="eager")
    clip_cfg._attn_implementation = "eager"
    return text_cfg, clip_cfg, raw


def load_weights(folder):
    """Every tensor of the folder's safetensors (sharded or not), upcast to f32."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no safetensors in {folder}")
    state = {}
    for file in files:
        with safe_open(os.path.join(folder, file), framework="pt") as f:
            for key in f.keys():
                state[key] = f.get_tensor(key).float()
    return state


def build(folder):
    """The reference Phi-3-V of `folder`, f32, eval mode, weights loaded strictly."""
    text_cfg, clip_cfg, _ = read_configs(folder)
    model = Phi3ForCausalLM(text_cfg)
    model.model.vision_embed_tokens = VisionEmbedding(clip_cfg, text_cfg.hidden_size)
    model = model.float().eval()
    state = {k: v for k, v in load_weights(folder).items() if k not in IGNORED_KEYS}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KeyError(
            f"{folder}: missing {sorted(result.missing_keys)}, unexpected {sorted(result.unexpected_keys)}"
        )
    return model


def image_inputs(images, num_crops, clip_cfg):
    """PIL images -> (real tiles [sum(1 + h*w), 3, S, S], grids [(h, w)], num_img_tokens)."""
    pixel_values, sizes, num_tokens, _ = processor_ref.preprocess(
        images, num_crops=num_crops, unit=clip_cfg.image_size, patch=clip_cfg.patch_size, return_hd=False
    )
    tiles, grids = [], []
    for pv, (h, w) in zip(pixel_values, sizes):
        gh, gw = h // clip_cfg.image_size, w // clip_cfg.image_size
        tiles.append(pv[: 1 + gh * gw])  # drop the all-zero padding tiles
        grids.append((gh, gw))
    return torch.cat(tiles).contiguous(), grids, num_tokens


def forward(model, input_ids, pixel_values=None, image_grids=None, labels=None):
    """Phi-3-V forward on the fixture layout; `model` from `build`, bare or PEFT-wrapped.

    input_ids [1, T] with -k placeholders; pixel_values [sum(1 + h*w), 3, S, S], the real tiles
    of every image in order (global view first); image_grids [n_img, 2] = (h, w). Returns the
    transformers output (`logits` f32 [1, T, vocab]; `loss` when labels are given: mean shifted
    cross-entropy over labels != -100).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embeds = base.model.embed_tokens(input_ids.clamp(min=0))
    if pixel_values is not None and pixel_values.shape[0] > 0:
        grids = [tuple(int(x) for x in g) for g in image_grids]
        counts = [1 + h * w for h, w in grids]
        if sum(counts) != pixel_values.shape[0]:
            raise ValueError(f"grids {grids} need {sum(counts)} tiles, got {pixel_values.shape[0]}")
        tiles = list(torch.split(pixel_values, counts))
        feats = base.model.vision_embed_tokens(tiles, grids)
        positions = torch.nonzero(input_ids < 0, as_tuple=True)
        if positions[0].numel() != feats.shape[0]:
            raise ValueError(f"{positions[0].numel()} placeholders but {feats.shape[0]} image tokens")
        embeds = embeds.index_put(positions, feats.to(embeds.dtype))
    return base(inputs_embeds=embeds, labels=labels)

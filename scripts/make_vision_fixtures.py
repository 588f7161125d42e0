#!/usr/bin/env python3
"""A random tiny CLIP vision tower plus the Phi-3-V image-embedding glue, and their outputs.

Regenerate (needs torch + transformers):

    ~/venv/bin/python scripts/make_vision_fixtures.py

Writes crates/phi3v-vision/tests/data/:
- clip_plain/: the tower alone, as transformers' `CLIPVisionModel.save_pretrained` writes it;
- embedding.safetensors: the tower and the glue under the Phi-3-V names
  (`model.vision_embed_tokens.img_processor.vision_model.*`, `img_projection.{0,2}`,
  `glb_GN`, `sub_GN`);
- expected.safetensors: inputs and outputs.

The tower is transformers' `CLIPVisionModel` (eager attention, f32); features are
`hidden_states[-2]` with CLS dropped. The glue (2x2 merge, crop grid, separators, projection)
has no class in transformers, so it is written here from the reference's
`image_embedding_phi3_v.py` behaviour: sizes follow the tower (crop = image_size,
tokens per crop = (image_size / patch / 2)^2).
"""
import math
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

ROOT = os.path.join(os.path.dirname(__file__), "..", "crates", "phi3v-vision", "tests", "data")
PREFIX = "model.vision_embed_tokens."


def merge_2x2(features, h_crop, w_crop):
    """[n_img * h * w, L, C] -> [n_img, h * g, w * g, 4C], g = sqrt(L) / 2."""
    n, length, c = features.shape
    side = int(math.isqrt(length))
    half = side // 2
    num_images = n // (h_crop * w_crop)
    return (
        features.reshape(n, side, side, c)
        .reshape(n, half, 2, half, 2, c)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(n, -1, 4 * c)
        .reshape(num_images, h_crop, w_crop, half, half, -1)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(num_images, h_crop * half, w_crop * half, 4 * c)
    )


def add_newline(grid, sub_gn):
    """[n, H, W, D] -> [n, H * (W + 1), D]: sub_GN after every row."""
    n, h, w, d = grid.shape
    sep = sub_gn.expand(n, h, -1, -1)
    return torch.cat([grid, sep], dim=2).reshape(n, -1, d)


def embed(tower, proj0, proj2, glb_gn, sub_gn, tiles, grids):
    """tiles: per image [1 + h*w, 3, S, S] (global first); returns per-image projected tokens."""
    outs = []
    for pix, (h, w) in zip(tiles, grids):
        feats = tower(pixel_values=pix, output_hidden_states=True).hidden_states[-2][:, 1:]
        glob = add_newline(merge_2x2(feats[:1], 1, 1), sub_gn)[0]
        sub = add_newline(merge_2x2(feats[1 : 1 + h * w], h, w), sub_gn)[0]
        tokens = torch.cat([sub, glb_gn.squeeze(0), glob], dim=0)
        outs.append(proj2(torch.nn.functional.gelu(proj0(tokens))))
    return outs


def main():
    gen = torch.Generator().manual_seed(3)
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_hidden_layers=3,
        image_size=56,
        patch_size=14,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attn_implementation="eager",
    )
    tower = CLIPVisionModel(cfg).eval()
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            else:
                p.copy_(torch.randn(p.shape, generator=gen))

    c4 = 4 * cfg.hidden_size
    hidden = 48
    proj0 = torch.nn.Linear(c4, hidden)
    proj2 = torch.nn.Linear(hidden, hidden)
    with torch.no_grad():
        for lin in (proj0, proj2):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) / math.sqrt(lin.in_features))
            lin.bias.copy_(0.1 * torch.randn(lin.bias.shape, generator=gen))
    glb_gn = torch.randn(1, 1, c4, generator=gen)
    sub_gn = torch.randn(1, 1, 1, c4, generator=gen)

    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    tower.save_pretrained(os.path.join(ROOT, "clip_plain"))

    # The reference nests the tower as `img_processor.vision_model.*`; transformers 5 drops
    # the `vision_model.` level from CLIPVisionModel's own state dict, so put it back.
    weights = {
        PREFIX + "img_processor." + (k if k.startswith("vision_model.") else "vision_model." + k): v.contiguous()
        for k, v in tower.state_dict().items()
        if not k.endswith("position_ids")
    }
    weights[PREFIX + "img_projection.0.weight"] = proj0.weight.detach().contiguous()
    weights[PREFIX + "img_projection.0.bias"] = proj0.bias.detach().contiguous()
    weights[PREFIX + "img_projection.2.weight"] = proj2.weight.detach().contiguous()
    weights[PREFIX + "img_projection.2.bias"] = proj2.bias.detach().contiguous()
    weights[PREFIX + "glb_GN"] = glb_gn
    weights[PREFIX + "sub_GN"] = sub_gn
    save_file(weights, os.path.join(ROOT, "embedding.safetensors"))

    # Two images with different crop grids: 1x2 (landscape) and 2x2.
    grids = [(1, 2), (2, 2)]
    s = cfg.image_size
    tiles = [torch.randn(1 + h * w, 3, s, s, generator=gen) for h, w in grids]
    with torch.no_grad():
        all_tiles = torch.cat(tiles)
        feats = tower(pixel_values=all_tiles, output_hidden_states=True).hidden_states[-2][:, 1:]
        outs = embed(tower, proj0, proj2, glb_gn, sub_gn, tiles, grids)
    expected = {
        "pixel_values": all_tiles.contiguous(),
        "grids": torch.tensor(grids, dtype=torch.int64),
        "features": feats.contiguous(),
    }
    for i, o in enumerate(outs):
        expected[f"image{i}.embeddings"] = o.contiguous()
    save_file(expected, os.path.join(ROOT, "expected.safetensors"))
    print("plain CLIP files:", sorted(os.listdir(os.path.join(ROOT, "clip_plain"))))
    print("tokens per image:", [o.shape[0] for o in outs])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# Regenerate the image-processor fixtures of crates/phi3v-processor with:
#
#     ~/venv/bin/python scripts/make_processor_fixtures.py
#
# (needs torch, numpy and pillow; torchvision is NOT needed, see below).
#
# What it writes:
#   crates/phi3v-processor/tests/data/images/*.png          deterministic test images
#   crates/phi3v-processor/tests/data/processor_expected.safetensors
#
# The reference is the Phi-3-Vision Hugging Face remote code
# (`image_processing_phi3_v.py`: `HD_transform`, `padding_336`, `Phi3VImageProcessor.preprocess`).
# It calls four torchvision helpers on PIL images; each is a thin wrapper that we call directly
# so that torchvision does not have to be installed:
#   torchvision.transforms.functional.resize(pil, [h, w])   -> pil.resize((w, h), Image.BILINEAR)
#   torchvision.transforms.functional.pad(pil, ltrb, fill)   -> ImageOps.expand(pil, ltrb, fill)
#   ToTensor()                                               -> uint8 HWC -> float32 CHW, .div(255)
#   Normalize(mean, std)                                     -> t.sub_(mean).div_(std) in float32
#
# Fixture layout (keys of the safetensors file), kept small on purpose (see the crate's
# tests/image_processor.rs for how each key is used):
#   norm_table                    f32 [3, 256]  ToTensor+Normalize of every u8 value per channel
#   convert.<image>               u8 [H, W, 3]  Image.open(png).convert("RGB") for non-RGB images
#   <image>.nc<N>.image_size      i64 [2]       [H_pad, W_pad]
#   <image>.nc<N>.crops           i64 [2]       [H_pad / S, W_pad / S]
#   <image>.nc<N>.num_tokens      i64 [1]
#   <image>.nc<N>.hd_fnv1a64      i64 [1]       FNV-1a 64 of the whole padded u8 HD image (HWC bytes),
#                                               bit pattern stored as a signed int64
#   <image>.nc<N>.hd_row_index    i64 [R]       rows of the u8 HD image stored below
#   <image>.nc<N>.hd_rows         u8 [R, W, 3]  those rows, exact
#   <image>.nc<N>.pv_index        i64 [K]       flat indices into pixel_values [N+1, 3, S, S]
#   <image>.nc<N>.pv_values       f32 [K]       pixel_values at those indices
#   full.<image>.nc1.pixel_values f32 [2, 3, S, S]  one complete output tensor
#   full.<image>.nc16.global      f32 [3, S, S]     one complete global view (square: 4x4 crops)
#   resize.<i>.src / .out         u8 [h, w, 3] / [nh, nw, 3]  PIL Image.resize(BILINEAR) on small
#                                               random images: up/down scaling, one axis only,
#                                               and Pillow 13's vertical-first cases
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from safetensors.numpy import save_file

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "crates", "phi3v-processor", "tests", "data")
IMAGES = os.path.join(DATA, "images")


# ----------------------------------------------------------------------------------------------
# The reference algorithm (image_processing_phi3_v.py), with the crop size as a parameter.
# ----------------------------------------------------------------------------------------------
def padding_336(b, unit=336):
    width, height = b.size
    tar = int(np.ceil(height / unit) * unit)
    top_padding = int((tar - height) / 2)
    bottom_padding = tar - height - top_padding
    # torchvision pad(b, [left, top, right, bottom], fill=[255, 255, 255]) on a PIL image
    return ImageOps.expand(b, border=(0, top_padding, 0, bottom_padding), fill=(255, 255, 255))


def hd_transform(img, hd_num=16, unit=336):
    width, height = img.size
    trans = False
    if width < height:
        img = img.transpose(Image.TRANSPOSE)
        trans = True
        width, height = img.size
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_w = int(scale * unit)
    new_h = int(new_w / ratio)
    # torchvision resize(img, [new_h, new_w]) on a PIL image (bilinear, antialiased by PIL);
    # torchvision returns the image unchanged when the size already matches
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.BILINEAR)
    img = padding_336(img, unit)
    if trans:
        img = img.transpose(Image.TRANSPOSE)
    return img


def to_tensor_normalize(img, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
    # ToTensor: uint8 HWC -> float32 CHW / 255; Normalize: sub_(mean).div_(std)
    arr = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
    t = arr.permute(2, 0, 1).contiguous().to(dtype=torch.float32).div(255)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return t.sub_(mean_t).div_(std_t)


def preprocess(images, num_crops=16, unit=336, patch=14, return_hd=True):
    """Phi3VImageProcessor.preprocess for a list of PIL images.

    Returns (pixel_values [N, num_crops+1, 3, unit, unit], image_sizes, num_img_tokens, hd_u8s);
    hd_u8s (the padded uint8 HD images, HWC) is None unless return_hd.
    """
    images = [image.convert("RGB") for image in images]
    elems = [hd_transform(im, hd_num=num_crops, unit=unit) for im in images]
    hd_images = [to_tensor_normalize(im) for im in elems]
    global_image = [
        F.interpolate(im.unsqueeze(0).float(), size=(unit, unit), mode="bicubic").to(im.dtype)
        for im in hd_images
    ]
    shapes = [[im.size(1), im.size(2)] for im in hd_images]
    t = (unit // patch // 2) ** 2
    side = unit // patch // 2
    num_img_tokens = [
        int(((h // unit) * (w // unit) + 1) * t + 1 + (h // unit + 1) * side) for h, w in shapes
    ]
    reshaped = [
        im.reshape(1, 3, h // unit, unit, w // unit, unit)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(-1, 3, unit, unit)
        .contiguous()
        for im, (h, w) in zip(hd_images, shapes)
    ]
    reshaped = [torch.cat([g] + [im], dim=0) for g, im in zip(global_image, reshaped)]
    out = []
    for im in reshaped:
        b = im.shape[0]
        if b < num_crops + 1:
            pad = torch.zeros(num_crops + 1 - b, 3, unit, unit, dtype=im.dtype)
            im = torch.cat([im, pad], dim=0)
        out.append(im)
    hd_u8s = [np.array(e) for e in elems] if return_hd else None
    return torch.stack(out, dim=0), shapes, num_img_tokens, hd_u8s


# ----------------------------------------------------------------------------------------------
# Deterministic test images (integer arithmetic, so they do not depend on numpy's RNG).
# ----------------------------------------------------------------------------------------------
def pattern_rgb(w, h, seed):
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    # zone plate (high frequencies stress the resampler), gradients, a sharp-edged disc, and a
    # small hash-based texture
    zone = ((x - w // 3) ** 2 + (y - h // 2) ** 2) * (17 + seed) // 97
    zone = 127 + (np.round(110 * np.sin(zone / 7.0))).astype(np.int64)
    grad_x = x * 255 // max(w - 1, 1)
    grad_y = y * 255 // max(h - 1, 1)
    disc = (((x - 2 * w // 3) ** 2 + (y - h // 3) ** 2) < (min(w, h) // 4) ** 2) * 255
    noise = ((x * 73856093) ^ (y * 19349663) ^ (seed * 83492791)) % 29 - 14
    r = np.clip((zone + grad_x) // 2 + noise, 0, 255)
    g = np.clip((grad_y + disc) // 2 + noise, 0, 255)
    b = np.clip((255 - zone + disc) // 2 - noise, 0, 255)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def make_images():
    os.makedirs(IMAGES, exist_ok=True)
    imgs = {}
    imgs["portrait"] = Image.fromarray(pattern_rgb(180, 300, 1))
    imgs["landscape"] = Image.fromarray(pattern_rgb(300, 180, 2))
    imgs["square"] = Image.fromarray(pattern_rgb(200, 200, 3))
    imgs["tiny"] = Image.fromarray(pattern_rgb(40, 30, 4))
    imgs["wide"] = Image.fromarray(pattern_rgb(400, 40, 5))
    rgba = pattern_rgb(160, 120, 6)
    yy, xx = np.mgrid[0:120, 0:160]
    alpha = ((xx * 255) // 159).astype(np.uint8)
    alpha[yy < 20] = 0  # fully transparent band: its hidden colour must survive (no compositing)
    imgs["rgba"] = Image.fromarray(np.dstack([rgba, alpha]), mode="RGBA")
    imgs["gray"] = Image.fromarray(pattern_rgb(150, 190, 7)[:, :, 0], mode="L")
    pal_src = Image.fromarray(pattern_rgb(170, 130, 8))
    imgs["palette"] = pal_src.quantize(colors=37, method=Image.Quantize.MEDIANCUT, dither=0)
    # conversion-only images
    g16 = np.zeros((48, 64), dtype=np.uint16)
    yy, xx = np.mgrid[0:48, 0:64]
    g16[:] = (xx * 1031 + yy * 7) % 65536
    g16[:, :16] = (xx[:, :16] * 17 + yy[:, :16]) % 300  # values around the 255 clip point
    imgs["gray16"] = Image.fromarray(g16)  # mode I;16 -> 16-bit grayscale PNG
    la = pattern_rgb(64, 48, 9)
    imgs["la"] = Image.fromarray(np.dstack([la[:, :, 0], la[:, :, 1]]), mode="LA")
    bilevel = ((xx // 3 + yy // 5) % 2 * 255).astype(np.uint8)
    imgs["bilevel"] = Image.fromarray(bilevel, mode="L").convert("1")
    for name, im in imgs.items():
        im.save(os.path.join(IMAGES, f"{name}.png"), optimize=True)
    # 16-bit RGB PNG: PIL cannot write it, so write the PNG by hand (PIL reads it as RGB).
    write_png_rgb16(os.path.join(IMAGES, "rgb16.png"), rgb16_pixels())


def rgb16_pixels():
    yy, xx = np.mgrid[0:40, 0:56].astype(np.int64)
    r = (xx * 1171 + yy * 13) % 65536
    g = (yy * 1601 + xx * 5) % 65536
    b = ((xx + yy) * 977) % 65536
    return np.stack([r, g, b], axis=-1).astype(np.uint16)


def write_png_rgb16(path, arr):
    import struct
    import zlib

    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[row].astype(">u2").tobytes() for row in range(h))

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
    png += chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def fnv1a64(data: bytes) -> int:
    arr = np.frombuffer(data, dtype=np.uint8)
    h = 0xCBF29CE484222325
    prime = 0x100000001B3
    mask = 0xFFFFFFFFFFFFFFFF
    # plain sequential FNV-1a (a few seconds for all cases)
    for byte in arr.tobytes():
        h ^= byte
        h = (h * prime) & mask
    return h


def as_i64(u: int) -> int:
    return u - (1 << 64) if u >= (1 << 63) else u


PROCESSED = ["portrait", "landscape", "square", "tiny", "wide", "rgba", "gray", "palette"]
CONVERTED = ["rgba", "gray", "palette", "gray16", "la", "bilevel", "rgb16"]
NUM_CROPS = [1, 4, 16]
UNIT = 336
HD_ROWS_BYTES = 40_000  # budget per case for exactly stored HD rows
PV_SAMPLES = 768  # per part: global tile, and the rest


def make_expected():
    out = {}
    norm = to_tensor_normalize(
        Image.fromarray(np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (1, 1, 3)))
    )
    out["norm_table"] = norm[:, 0, :].numpy().astype(np.float32)
    for name in CONVERTED:
        im = Image.open(os.path.join(IMAGES, f"{name}.png"))
        out[f"convert.{name}"] = np.ascontiguousarray(np.array(im.convert("RGB"), dtype=np.uint8))
    for name in PROCESSED:
        im = Image.open(os.path.join(IMAGES, f"{name}.png"))
        for nc in NUM_CROPS:
            key = f"{name}.nc{nc}"
            pv, shapes, ntok, hds = preprocess([im], num_crops=nc, unit=UNIT)
            pv = pv[0].numpy()
            hd = np.ascontiguousarray(hds[0])
            h, w = shapes[0]
            assert hd.shape == (h, w, 3)
            out[f"{key}.image_size"] = np.array([h, w], dtype=np.int64)
            out[f"{key}.crops"] = np.array([h // UNIT, w // UNIT], dtype=np.int64)
            out[f"{key}.num_tokens"] = np.array([ntok[0]], dtype=np.int64)
            out[f"{key}.hd_fnv1a64"] = np.array([as_i64(fnv1a64(hd.tobytes()))], dtype=np.int64)
            step = max(1, -(-(h * w * 3) // HD_ROWS_BYTES))
            rows = np.arange((nc * 7) % step, h, step, dtype=np.int64)
            out[f"{key}.hd_row_index"] = rows
            out[f"{key}.hd_rows"] = np.ascontiguousarray(hd[rows])
            rng = np.random.default_rng(1000 + 17 * nc + PROCESSED.index(name))
            tile = 3 * UNIT * UNIT
            idx = np.concatenate(
                [
                    rng.integers(0, tile, PV_SAMPLES),
                    rng.integers(tile, pv.size, PV_SAMPLES),
                ]
            ).astype(np.int64)
            out[f"{key}.pv_index"] = idx
            out[f"{key}.pv_values"] = pv.reshape(-1)[idx].astype(np.float32)
            if name == "landscape" and nc == 1:
                out[f"full.{key}.pixel_values"] = np.ascontiguousarray(pv.astype(np.float32))
            if name == "square" and nc == 16:  # scale 4: real bicubic sums
                out[f"full.{key}.global"] = np.ascontiguousarray(pv[0].astype(np.float32))
    add_resize_cases(out)
    path = os.path.join(DATA, "processor_expected.safetensors")
    save_file(out, path)
    print(f"wrote {path}: {os.path.getsize(path) / 1e6:.2f} MB, {len(out)} tensors")


def add_resize_cases(out):
    """PIL bilinear resizes of small random RGB images, for the resampler on its own."""
    rng = np.random.default_rng(2024)
    specs = [
        (40, 30, 96, 72),  # upscale
        (48, 48, 13, 17),  # downscale
        (37, 41, 37, 9),  # vertical only
        (45, 20, 11, 20),  # horizontal only
        (30, 47, 25, 12),  # vertical first in Pillow 13: 47 - 12 > 2 * (30 - 25)
        (47, 30, 12, 25),  # horizontal first
        (1, 1, 7, 5),
        (64, 3, 5, 64),
    ]
    while len(specs) < 40:
        w, h = (int(v) for v in rng.integers(1, 49, 2))
        nw, nh = (int(v) for v in rng.integers(1, 65, 2))
        specs.append((w, h, nw, nh))
    for i, (w, h, nw, nh) in enumerate(specs):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out[f"resize.{i}.src"] = a
        out[f"resize.{i}.out"] = np.ascontiguousarray(
            np.array(Image.fromarray(a).resize((nw, nh), Image.BILINEAR), dtype=np.uint8)
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.parse_args()
    torch.manual_seed(0)
    make_images()
    make_expected()
    total = sum(os.path.getsize(os.path.join(IMAGES, f)) for f in os.listdir(IMAGES))
    print(f"images: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

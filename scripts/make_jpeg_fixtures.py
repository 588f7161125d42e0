#!/usr/bin/env python3
# Regenerate the JPEG decoding fixtures of crates/phi3v-processor with:
#
#     ~/venv/bin/python scripts/make_jpeg_fixtures.py
#
# (needs numpy and pillow; the arithmetic-coded and 4:4:0 / 4:1:1 files also need `jpegtran` and
# `cjpeg` from libjpeg-turbo, Debian package libjpeg-turbo-progs: without them those files are
# skipped and the manifest says so).
#
# Why: the reference processor opens images with PIL, whose JPEG decoder is libjpeg-turbo (islow
# IDCT, fancy upsampling), and then calls `.convert("RGB")`. The Rust decoder
# (src/image_processor/decode.rs) must produce the same bytes, and must refuse what PIL refuses.
# tests/jpeg_fidelity.rs compares against what this script records.
#
# What it writes, into crates/phi3v-processor/tests/data/jpeg/:
#   <name>.jpg       small JPEGs (a few KB), one per decoder path worth checking
#   <name>.rgb       for each file PIL decodes: `Image.open(f).convert("RGB")` as raw bytes,
#                    row-major RGB, `width * height * 3` bytes
#   manifest.json    the Pillow and libjpeg-turbo versions, and per file: its size, PIL's mode
#                    before conversion, and whether PIL decodes it (with PIL's error if not)
#
# Content: gradients + noise + sharp coloured edges, so that the IDCT rounding and the chroma
# upsampling both show up in the pixels (a flat image would decode identically anywhere).
import io
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import PIL
from PIL import Image, features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "phi3v-processor", "tests", "data", "jpeg")


def photo(width, height, seed):
    """A photo-like RGB test image: smooth gradients, noise, a saturated block with hard edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    a = np.stack(
        [255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 128 + 100 * np.sin(x / 3 + y / 5)],
        -1,
    )
    a += rng.normal(0, 18, a.shape)
    # A red/blue block with sharp edges: the worst case for chroma subsampling.
    a[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = [230, 20, 40]
    a[height // 3 : height // 2, width // 2 :] = [10, 40, 220]
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def encode(image, **options):
    buf = io.BytesIO()
    image.save(buf, "JPEG", **options)
    return buf.getvalue()


def entropy_start(data):
    """Offset of the first byte of entropy-coded data (after the first SOS header)."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def libjpeg_tool(args, stdin):
    """Runs cjpeg/jpegtran if installed; None when the tool is missing."""
    if shutil.which(args[0]) is None:
        return None
    return subprocess.run(args, input=stdin, stdout=subprocess.PIPE, check=True).stdout


def ppm(image):
    buf = io.BytesIO()
    image.save(buf, "PPM")
    return buf.getvalue()


def fixtures():
    """(name, bytes or None, what it checks). None: could not be produced here."""
    base = photo(40, 30, 1)
    baseline_420 = encode(base, quality=90, subsampling=2)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display; the pixels stay unrotated
    cmyk = np.random.default_rng(2).integers(0, 256, (30, 40, 4), dtype=np.uint8)
    cmyk[..., :3] = np.asarray(base)  # structure in C, M, Y; noise in K
    cmyk[..., 3] //= 3

    # Corruptions: a 0xFF byte makes the next byte read as a marker; PIL refuses an unknown
    # marker inside the scan ("broken data stream"). An EOI marker in the middle of the scan is
    # only a libjpeg *warning* (premature end of data segment, the rest is filled with zeros):
    # PIL accepts that file, the Rust decoder refuses it (warnings are errors there).
    start = entropy_start(baseline_420)
    corrupt_marker = bytearray(baseline_420)
    corrupt_marker[start + 40] = 0xFF
    if corrupt_marker[start + 41] in (0x00, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD9):
        corrupt_marker[start + 41] = 0x5A
    corrupt_eoi = bytearray(baseline_420)
    corrupt_eoi[start + 40 : start + 42] = b"\xff\xd9"

    return [
        ("baseline_420", baseline_420, "4:2:0 chroma, h2v2 fancy upsampling"),
        ("baseline_422", encode(base, quality=90, subsampling=1), "4:2:2, h2v1 fancy upsampling"),
        ("baseline_444", encode(base, quality=90, subsampling=0), "4:4:4, IDCT and colour only"),
        ("quality_50_420", encode(base, quality=50, subsampling=2), "coarse quantisation"),
        ("progressive_420", encode(base, quality=85, progressive=True), "progressive scans"),
        (
            "restart_420",
            encode(base, quality=90, restart_marker_blocks=2),
            "restart markers every 2 MCUs",
        ),
        ("rgb_444", encode(base, quality=90, keep_rgb=True), "RGB colour space (Adobe transform 0)"),
        ("gray", encode(base.convert("L"), quality=90), "grayscale, L replicated by convert"),
        ("cmyk_adobe", encode(Image.fromarray(cmyk, "CMYK"), quality=90), "Adobe inverted CMYK"),
        ("exif_orientation_6", encode(base, quality=90, exif=exif), "EXIF orientation not applied"),
        ("odd_33x17_420", encode(photo(33, 17, 3), quality=90, subsampling=2), "partial MCUs"),
        ("odd_17x33_422", encode(photo(17, 33, 4), quality=90, subsampling=1), "partial MCUs"),
        ("odd_1x1", encode(photo(1, 1, 5), quality=90), "a single pixel"),
        (
            "sampling_440",
            libjpeg_tool(["cjpeg", "-quality", "90", "-sample", "1x2,1x1,1x1"], ppm(base)),
            "4:4:0, h1v2 fancy upsampling (cjpeg)",
        ),
        (
            "sampling_411",
            libjpeg_tool(["cjpeg", "-quality", "90", "-sample", "4x1,1x1,1x1"], ppm(base)),
            "4:1:1, generic upsampling (cjpeg)",
        ),
        (
            "arithmetic_420",
            libjpeg_tool(["jpegtran", "-arithmetic"], baseline_420),
            "arithmetic coding (jpegtran -arithmetic)",
        ),
        (
            "arithmetic_progressive",
            libjpeg_tool(["jpegtran", "-arithmetic", "-progressive"], baseline_420),
            "progressive arithmetic coding (jpegtran)",
        ),
        ("truncated", baseline_420[: len(baseline_420) // 2], "cut in the middle of the scan"),
        ("truncated_no_eoi", baseline_420[:-2], "only the final EOI marker missing"),
        ("corrupt_marker", bytes(corrupt_marker), "0xFF in the scan: unknown marker"),
        ("corrupt_eoi_in_scan", bytes(corrupt_eoi), "EOI in the scan: libjpeg warning only"),
    ]


def main():
    if os.path.isdir(OUT):
        for name in os.listdir(OUT):
            if name.endswith((".jpg", ".rgb")) or name == "manifest.json":
                os.remove(os.path.join(OUT, name))
    os.makedirs(OUT, exist_ok=True)
    manifest = {
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "files": [],
        "skipped": [],
    }
    for name, data, checks in fixtures():
        if data is None:
            manifest["skipped"].append({"name": name, "why": "cjpeg/jpegtran not installed"})
            continue
        assert len(data) < 20_000, f"{name} is {len(data)} bytes"
        with open(os.path.join(OUT, f"{name}.jpg"), "wb") as f:
            f.write(data)
        entry = {"name": name, "checks": checks, "bytes": len(data)}
        try:
            with Image.open(io.BytesIO(data)) as im:
                mode = im.mode
                rgb = im.convert("RGB")
            entry.update(pil="ok", mode=mode, width=rgb.width, height=rgb.height)
            with open(os.path.join(OUT, f"{name}.rgb"), "wb") as f:
                f.write(rgb.tobytes())
        except Exception as e:  # PIL refuses the file: record why
            entry.update(pil="error", error=f"{type(e).__name__}: {e}")
        manifest["files"].append(entry)
        print(f"{name:24} {len(data):6} bytes  PIL {entry['pil']} {entry.get('error', '')}")
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks by hand that an exported LoRA adapter (or merged model dir) means what the Rust side thinks.

The Rust side is crates/phi3v-peft: `export_peft` writes ADAPTER_DIR (the trainer calls it at the
end of a run), `merge_adapter` (`phi3v merge`) writes MERGED_DIR.

Run by hand, not in CI (needs torch, transformers, peft, safetensors):

    ~/venv/bin/python scripts/check_peft_export.py --base DIR --adapter ADAPTER_DIR \\
        --inputs INPUTS.safetensors --logits RUST_LOGITS.safetensors [--merged MERGED_DIR]
    ~/venv/bin/python scripts/check_peft_export.py --merged MERGED_DIR --inputs ... --logits ...
    ~/venv/bin/python scripts/check_peft_export.py --self-test

- DIR: a Hugging Face-layout Phi-3-V folder (config.json + safetensors, one file or sharded);
- ADAPTER_DIR: what PEFT's `save_pretrained` writes (adapter_config.json +
  adapter_model.safetensors), loaded with `PeftModel.from_pretrained(model, ADAPTER_DIR)`;
- MERGED_DIR: a merged model dir in the same layout as DIR, run with no adapter;
- INPUTS: `input_ids` i64 [1, T] (image placeholders -k), `pixel_values` f32 [N, 3, S, S] (the
  real tiles of every image, global view first), `image_grids` i64 [n_img, 2]; `labels` optional
  (the format of crates/phi3v-train/tests/data/lora_step/inputs.safetensors);
- RUST_LOGITS: `logits` f32 [1, T, vocab]; if it also has `loss` f32 [1] and the inputs have
  labels, the loss is compared too.

The reference is scripts/phi3v_reference.py's model (f32; weights upcast from whatever dtype the
folder stores). Prints the max abs difference and PASS/FAIL at --tol (default 1e-4) for each
model checked; exits 1 if any check fails.

--self-test runs on the committed fixtures (tiny checkpoint, lora_step/adapter_init and
lora_step/inputs.safetensors), with PyTorch's own logits standing in for the Rust ones: the
adapter must PASS, a merged checkpoint written by PEFT's `merge_and_unload` (f32, two shards)
must PASS, and the bare base model must FAIL (the check sees the adapter).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

import phi3v_reference as ref

HERE = os.path.dirname(os.path.abspath(__file__))
LORA_STEP = os.path.join(HERE, "..", "crates", "phi3v-train", "tests", "data", "lora_step")
TINY = ref.phi3v_fixtures.CKPT


def reference(model, inputs):
    with torch.no_grad():
        return ref.forward(
            model,
            inputs["input_ids"],
            inputs.get("pixel_values"),
            inputs.get("image_grids"),
            labels=inputs.get("labels"),
        )


def compare(label, model, inputs, expected, tol):
    """Prints the differences of `model`'s outputs from `expected`; True if within tol."""
    out = reference(model, inputs)
    logits, want = out.logits.float(), expected["logits"].float()
    if logits.shape != want.shape:
        print(f"{label}: FAIL: logits shape {tuple(want.shape)}, reference {tuple(logits.shape)}")
        return False
    diff = (logits - want).abs().max().item()
    ok = diff <= tol
    line = f"{label}: logits max abs diff {diff:.3e}"
    if out.loss is not None:
        line += f"; reference loss {out.loss.item():.6f}"
        if "loss" in expected:
            loss_diff = abs(out.loss.item() - expected["loss"].float().reshape(-1)[0].item())
            ok = ok and loss_diff <= tol
            line += f" (diff {loss_diff:.3e})"
    print(f"{line} -> {'PASS' if ok else 'FAIL'} (tol {tol:g})")
    return ok


def ref_last_clip_layer(model):
    """Index of the CLIP encoder layer Phi-3-V never runs (its outputs are not used)."""
    layers = {int(n.split("encoder.layers.")[1].split(".")[0]) for n, _ in model.named_parameters() if "encoder.layers." in n}
    return max(layers) if layers else -1


def with_adapter(base, adapter):
    """base + adapter through PEFT; fails loudly if PEFT did not take every tensor of the file.

    (PEFT only warns about adapter tensors whose names match no module: the model would run with
    those LoRA weights left at their init, B = 0.)
    """
    model = PeftModel.from_pretrained(ref.build(base), adapter).eval()
    stored = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    # LoRA factors, and the layers trained in full (`modules_to_save`, saved without their
    # `modules_to_save.default.` infix).
    params = {
        n.replace("modules_to_save.default.", "").replace(".default.", "."): p
        for n, p in model.named_parameters()
        if ".lora_" in n or "modules_to_save.default." in n
    }
    unused, missing = sorted(set(stored) - set(params)), sorted(set(params) - set(stored))
    # Phi-3-V runs CLIP to its second-to-last layer, so the last layer's adapters change no
    # output; the Rust export (phi3v-peft) leaves them out and PEFT keeps them at B = 0.
    last = f"vision_model.encoder.layers.{ref_last_clip_layer(model)}."
    skipped = [n for n in missing if last in n]
    missing = [n for n in missing if last not in n]
    if skipped:
        print(f"  {len(skipped)} adapter tensors of the unused last CLIP layer are absent (no effect)")
    if unused or missing:
        raise SystemExit(f"adapter names do not match the model: unused {unused[:5]}, missing {missing[:5]}")
    for name, tensor in stored.items():
        if params[name].shape != tensor.shape or not torch.equal(params[name].detach(), tensor.float()):
            raise SystemExit(f"{name}: loaded {tuple(params[name].shape)}, file {tuple(tensor.shape)} (or values)")
    print(f"  adapter: {len(stored)} tensors, all taken by PEFT ({len(stored) // 2} modules)")
    return model


def write_merged(base, adapter, folder):
    """PEFT's merge_and_unload of base + adapter, saved in the base's layout (f32, two shards)."""
    merged = with_adapter(base, adapter).merge_and_unload()
    state = {k: v.detach().float().contiguous() for k, v in merged.state_dict().items()}
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(base, "config.json"), os.path.join(folder, "config.json"))
    names = sorted(state)
    first = {"model.embed_tokens.weight", "lm_head.weight"}
    shards = {
        "model-00001-of-00002.safetensors": {k: state[k] for k in names if k in first},
        "model-00002-of-00002.safetensors": {k: state[k] for k in names if k not in first},
    }
    weight_map = {}
    for file, tensors in shards.items():
        save_file(tensors, os.path.join(folder, file), metadata={"format": "pt"})
        weight_map.update({k: file for k in tensors})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2, sort_keys=True)


def self_test(args):
    base = args.base or TINY
    adapter = args.adapter or os.path.join(LORA_STEP, "adapter_init")
    inputs_path = args.inputs or os.path.join(LORA_STEP, "inputs.safetensors")
    inputs = load_file(inputs_path)
    print(f"self-test: base {base}\n  adapter {adapter}\n  inputs {inputs_path}")
    with tempfile.TemporaryDirectory() as tmp:
        logits_path = os.path.join(tmp, "logits.safetensors")
        out = reference(with_adapter(base, adapter), inputs)
        save_file({"logits": out.logits.float().contiguous()}, logits_path)
        merged_dir = os.path.join(tmp, "merged")
        write_merged(base, adapter, merged_dir)
        print(f"  stand-in logits {tuple(out.logits.shape)} in {logits_path}; merged checkpoint in {merged_dir}")
        expected = load_file(logits_path)
        adapter_ok = compare("adapter", with_adapter(base, adapter), inputs, expected, args.tol)
        merged_ok = compare("merged", ref.build(merged_dir), inputs, expected, args.tol)
        print("negative control (base without the adapter; must FAIL):")
        base_fails = not compare("base", ref.build(base), inputs, expected, args.tol)
    ok = adapter_ok and merged_ok and base_fails
    print(f"self-test {'PASS' if ok else 'FAIL'}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="HF-layout Phi-3-V folder the adapter applies to")
    parser.add_argument("--adapter", help="PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")
    parser.add_argument("--merged", help="merged HF-layout checkpoint folder, run without an adapter")
    parser.add_argument("--inputs", help="inputs safetensors (input_ids, pixel_values, image_grids[, labels])")
    parser.add_argument("--logits", help="Rust outputs safetensors (logits f32 [1, T, vocab][, loss])")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--self-test", action="store_true", help="check this script on the committed fixtures")
    args = parser.parse_args()

    if args.self_test:
        sys.exit(0 if self_test(args) else 1)
    if not args.inputs or not args.logits:
        parser.error("--inputs and --logits are required (or --self-test)")
    if args.adapter and not args.base:
        parser.error("--adapter needs --base")
    if not (args.base or args.merged):
        parser.error("give --base [--adapter] and/or --merged")
    inputs = load_file(args.inputs)
    expected = load_file(args.logits)
    results = []
    if args.base:
        if args.adapter:
            results.append(compare("adapter", with_adapter(args.base, args.adapter), inputs, expected, args.tol))
        else:
            results.append(compare("base", ref.build(args.base), inputs, expected, args.tol))
    if args.merged:
        results.append(compare("merged", ref.build(args.merged), inputs, expected, args.tol))
    ok = all(results)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

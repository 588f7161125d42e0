#!/usr/bin/env bash
# The checks that need a GPU, as one prepared script (issue 15; the GPU path issue extends it).
#
#   bash scripts/device_check.sh build   # where crates.io is reachable: builds the CUDA binaries
#                                        # into device/bin (git-ignored), stripped, to carry
#   bash scripts/device_check.sh run     # on the GPU machine, in the repo root: runs them
#   bash scripts/device_check.sh         # both, on a GPU machine that can also build
#
# The GPU machine this project is lent has no Rust toolchain and no network, so `build` runs
# here and `run` there, with device/bin carried (the device tool's `carry: ["device"]`).
#
# `run` prints, each step under its own time limit so that the whole stays under 8 minutes on
# an H100 (PHI3V_BACKEND=flex runs the same steps on the CPU, as a dry run of the script):
#  1. the GPU;
#  2. parity: `phi3v logits` on the committed tiny Phi-3-V (an image prompt, 2 crops) on the GPU
#     against the same binary on flex, whose logits the tests hold to the PyTorch reference
#     (1e-4): the largest absolute difference, which must stay within 1e-3 (GPU reductions
#     reorder sums);
#  3. training: 30 updates of the README's main job (the tiny model on the sample catalogue)
#     on the GPU and on flex: the losses of both, which must agree within 1e-3 relative;
#  4. the "Full size" rows of docs/benchmarks.md (scripts/full_size_bench.sh) on the GPU:
#     load, text, photo at num_crops 16, and one LoRA update at num_crops 16. Writing the
#     random 8.3 GB checkpoint first takes about 5 minutes (one core, 29 MB/s on the build
#     VM), so on a fresh machine this step may end at its 300 s limit before the rows:
#     FULL_SIZE_ROWS trims the rows, FULL_SIZE_DIR reuses a written checkpoint.
# Checked here as a dry run on flex (`PHI3V_BACKEND=flex`, python3 with numpy and
# safetensors on PATH); never yet on a GPU.
# A failed step prints FAILED with the tail of its log and the script goes on, so one run
# reports everything; the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."

phase=${1:-all}
backend=${PHI3V_BACKEND:-cuda}
bins=device/bin
out=${OUT:-target/device-check}
start=$(date +%s)
failures=0
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }
failed() {
  echo "FAILED: $1"
  [ -f "${2:-}" ] && tail -n 15 "$2" | sed 's/^/    /'
  failures=$((failures + 1))
}

build() {
  step "build: phi3v with the $backend backend, and the checkpoint writer"
  local target=target/device-$backend
  CARGO_TARGET_DIR=$target cargo build --release -p phi3v-cli --bin phi3v --features "$backend" || exit 1
  CARGO_TARGET_DIR=$target cargo build --release -p phi3v-testkit --example write_random_model || exit 1
  mkdir -p "$bins"
  cp "$target/release/phi3v" "$target/release/examples/write_random_model" "$bins/"
  strip "$bins"/* 2>/dev/null || true
  du -h "$bins"/*
}

run() {
  mkdir -p "$out"
  local phi3v=$bins/phi3v
  [ -x "$phi3v" ] || { echo "no $phi3v: run \`bash scripts/device_check.sh build\` first"; exit 1; }

  step "the device"
  if [ "$backend" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || failed "nvidia-smi"
  else
    echo "backend $backend: $(nproc) CPU cores"
  fi

  step "parity: the tiny Phi-3-V's logits on $backend against flex"
  local tiny=crates/phi3v/tests/data/tiny_phi3v
  local prompt=$'<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n'
  for b in flex "$backend"; do
    timeout 120 "$phi3v" --backend "$b" logits --model "$tiny" --prompt "$prompt" \
      --image "$tiny/coat.png" --out "$out/logits-$b.safetensors" --overwrite \
      >"$out/logits-$b.log" 2>&1 || failed "logits on $b" "$out/logits-$b.log"
  done
  python3 - "$out/logits-flex.safetensors" "$out/logits-$backend.safetensors" <<'EOF' || failed "logits parity"
import sys
from safetensors.numpy import load_file
a, b = (load_file(p) for p in sys.argv[1:3])
assert (a["input_ids"] == b["input_ids"]).all(), "the backends tokenized differently"
diff = abs(a["logits"] - b["logits"]).max()
scale = abs(a["logits"]).max()
print(f"{a['logits'].shape[0]} positions x {a['logits'].shape[1]} logits: max |difference| {diff:.3e} (logits up to {scale:.3f})")
sys.exit(0 if diff <= 1e-3 else f"max |difference| {diff:.3e} > 1e-3")
EOF

  step "training: 30 updates of the main job on $backend and on flex"
  for b in flex "$backend"; do
    rm -rf "$out/train-$b"
    timeout 240 "$phi3v" --backend "$b" train --run-dir "$out/train-$b" --steps 30 \
      --tokenizer crates/phi3v-processor/tests/data/tokenizer/tokenizer.json \
      --log-every 10 --eval-every 30 --eval-samples 4 --no-tensorboard \
      >"$out/train-$b.log" 2>&1 || failed "training on $b" "$out/train-$b.log"
  done
  python3 - "$out/train-flex" "$out/train-$backend" <<'EOF' || failed "training parity"
import json, sys
def losses(run):
    rows = (json.loads(line) for line in open(f"{run}/metrics.jsonl"))
    return {r["step"]: r["value"] for r in rows if r.get("split") == "train" and r.get("name") == "loss"}
a, b = (losses(r) for r in sys.argv[1:3])
steps = sorted(set(a) & set(b))
assert steps, "no common logged step"
worst = max(abs(a[s] - b[s]) / max(abs(a[s]), 1e-12) for s in steps)
for s in steps:
    print(f"step {s}: loss flex {a[s]:.6f}, {sys.argv[2].rsplit('-', 1)[-1]} {b[s]:.6f}")
print(f"largest relative difference {worst:.3e}")
sys.exit(0 if worst <= 1e-3 else f"relative difference {worst:.3e} > 1e-3")
EOF

  step "the full-size rows on $backend"
  PHI3V_BIN_DIR=$bins PHI3V_BACKEND=$backend FULL_SIZE_DIR=${FULL_SIZE_DIR:-$out/full-size} \
    timeout 300 bash scripts/full_size_bench.sh ${FULL_SIZE_ROWS:-load text photo train} \
    || failed "full-size rows"

  step "done: $failures failed step(s)"
  exit "$failures"
}

case $phase in
  build) build ;;
  run) run ;;
  all) build && run ;;
  *) echo "usage: bash scripts/device_check.sh [build|run]"; exit 2 ;;
esac

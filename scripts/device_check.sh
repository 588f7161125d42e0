#!/usr/bin/env bash
# The checks that need a GPU, as one prepared script (issues 15 and 18).
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
# an H100:
#  1. the GPU;
#  2. parity: `phi3v logits` on the committed tiny Phi-3-V (an image prompt, 2 crops) on the GPU
#     against the same binary on flex, whose logits the tests hold to the PyTorch reference
#     (1e-4): the largest absolute difference, which must stay within 1e-3 (GPU reductions
#     reorder sums);
#  3. training: 30 updates of the README's main job (the tiny model on the sample catalogue)
#     on the GPU and on flex. Each backend draws the adapters' initial values and the dropout
#     masks from its own generator, so the runs share a config, not numbers: both must learn
#     (the last logged loss under 0.7x the first) and end within 25% of each other. Exact
#     parity from shared adapters is what tests/wgpu_smoke.rs checks (1e-4, on lavapipe);
#  4. benches: `benches/attention.rs` (naive, burn's and the memory-efficient kernel, forward
#     and forward + backward, head_dim 96, up to ATTN_BENCH_MAX_LEN keys, 4096 by default;
#     on a GPU the memory-efficient kernel is our fused CubeCL forward and backward, and the
#     table gives its forward + backward at the longest length in TFLOP/s)
#     and `benches/training_step.rs` (LoRA updates of the tiny and the wide model;
#     TRAINING_BENCH_FILTER, a criterion filter, picks some);
#  5. the "Full size" rows of docs/benchmarks.md (scripts/full_size_bench.sh) on the GPU:
#     load, text, photo at num_crops 16, and one LoRA update at num_crops 16 over a bf16 and
#     over a q4 base, each with its host and GPU peaks. Writing the random 8.3 GB checkpoint
#     first takes about 5 minutes (one core, 29 MB/s on the build VM), so on a fresh machine
#     this step may end at its 300 s limit before the rows: FULL_SIZE_ROWS trims the rows,
#     FULL_SIZE_DIR reuses a written checkpoint;
#  6. a table: each step, its seconds, PASS or FAILED, and its figure.
#
# The dry run, on a machine without a GPU: PHI3V_BACKEND=wgpu on Mesa's lavapipe, at toy
# sizes (the tiny preset for the full-size rows, 1024 keys at most, the tiny model's training
# steps only):
#   PHI3V_BACKEND=wgpu FULL_SIZE_PRESET=tiny ATTN_BENCH_MAX_LEN=1024 \
#     TRAINING_BENCH_FILTER=/batch bash scripts/device_check.sh
# (python3 with numpy and safetensors on PATH). A failed step prints FAILED with the tail of
# its log and the script goes on, so one run reports everything; the exit status is the
# number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."

phase=${1:-all}
backend=${PHI3V_BACKEND:-cuda}
bins=device/bin
out=${OUT:-target/device-check}
start=$(date +%s)
failures=0
summary=()
step_start=$start
step() {
  step_start=$(date +%s)
  echo; echo "== $* ($(( step_start - start )) s)"
}
failed() {
  echo "FAILED: $1"
  [ -f "${2:-}" ] && tail -n 15 "$2" | sed 's/^/    /'
  failures=$((failures + 1))
}
# One line of the closing table: the step, its seconds since `step`, PASS or FAILED, a figure.
record() {
  summary+=("| $1 | $(( $(date +%s) - step_start )) | $2 | ${3:-} |")
}
# PASS when the failure count has not grown since `$1`.
verdict() { [ "$failures" -eq "$1" ] && echo PASS || echo FAILED; }

BENCHES=(attention training_step)

build() {
  step "build: phi3v and the benches with the $backend backend, and the checkpoint writer"
  local target=target/device-$backend
  CARGO_TARGET_DIR=$target cargo build --release -p phi3v-cli --bin phi3v --features "$backend" || exit 1
  CARGO_TARGET_DIR=$target cargo build --release -p phi3v-testkit --example write_random_model || exit 1
  mkdir -p "$bins"
  cp "$target/release/phi3v" "$target/release/examples/write_random_model" "$bins/"
  for bench in "${BENCHES[@]}"; do
    local exe
    exe=$(CARGO_TARGET_DIR=$target cargo bench --no-run --features "$backend" --bench "$bench" \
      --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("executable") and m.get("target", {}).get("kind") == ["bench"]:
        print(m["executable"])')
    [ -n "$exe" ] || { echo "no executable for bench $bench"; exit 1; }
    cp "$exe" "$bins/bench_$bench"
  done
  strip "$bins"/* 2>/dev/null || true
  du -h "$bins"/*
}

run() {
  mkdir -p "$out"
  local phi3v=$bins/phi3v
  [ -x "$phi3v" ] || { echo "no $phi3v: run \`bash scripts/device_check.sh build\` first"; exit 1; }
  local before device

  step "the device"
  if [ "$backend" = cuda ]; then
    device=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader) \
      || failed "nvidia-smi"
  else
    device="backend $backend on $(nproc) CPU cores"
  fi
  echo "$device"
  summary+=("| device | | | ${device:-unknown} |")

  step "parity: the tiny Phi-3-V's logits on $backend against flex"
  before=$failures
  local tiny=crates/phi3v/tests/data/tiny_phi3v
  local prompt=$'<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n'
  for b in flex "$backend"; do
    timeout 120 "$phi3v" --backend "$b" logits --model "$tiny" --prompt "$prompt" \
      --image "$tiny/coat.png" --out "$out/logits-$b.safetensors" --overwrite \
      >"$out/logits-$b.log" 2>&1 || failed "logits on $b" "$out/logits-$b.log"
  done
  python3 - "$out/logits-flex.safetensors" "$out/logits-$backend.safetensors" \
    <<'EOF' | tee "$out/parity.txt" || failed "logits parity"
import sys
from safetensors.numpy import load_file
a, b = (load_file(p) for p in sys.argv[1:3])
assert (a["input_ids"] == b["input_ids"]).all(), "the backends tokenized differently"
diff = abs(a["logits"] - b["logits"]).max()
scale = abs(a["logits"]).max()
print(f"{a['logits'].shape[0]} positions x {a['logits'].shape[1]} logits: max |difference| {diff:.3e} (logits up to {scale:.3f})")
sys.exit(0 if diff <= 1e-3 else f"max |difference| {diff:.3e} > 1e-3")
EOF
  record "logits parity (≤ 1e-3)" "$(verdict "$before")" "$(tail -n 1 "$out/parity.txt" 2>/dev/null)"

  step "training: 30 updates of the main job on $backend and on flex"
  before=$failures
  for b in flex "$backend"; do
    rm -rf "$out/train-$b"
    timeout 240 "$phi3v" --backend "$b" train --run-dir "$out/train-$b" --steps 30 \
      --tokenizer crates/phi3v-processor/tests/data/tokenizer/tokenizer.json \
      --log-every 10 --eval-every 30 --eval-samples 4 --no-tensorboard \
      >"$out/train-$b.log" 2>&1 || failed "training on $b" "$out/train-$b.log"
  done
  python3 - "$out/train-flex" "$out/train-$backend" <<'EOF' | tee "$out/training.txt" || failed "training parity"
import json, sys
def losses(run):
    rows = (json.loads(line) for line in open(f"{run}/metrics.jsonl"))
    return {r["step"]: r["value"] for r in rows if r.get("split") == "train" and r.get("name") == "loss"}
a, b = (losses(r) for r in sys.argv[1:3])
steps = sorted(set(a) & set(b))
assert len(steps) >= 2, "fewer than two common logged steps"
for s in steps:
    print(f"step {s}: loss flex {a[s]:.6f}, {sys.argv[2].rsplit('-', 1)[-1]} {b[s]:.6f}")
first, last = steps[0], steps[-1]
learned = all(run[last] < 0.7 * run[first] for run in (a, b))
gap = abs(a[last] - b[last]) / abs(a[last])
print(f"both learn: {learned}; last losses {gap:.1%} apart")
sys.exit(0 if learned and gap <= 0.25 else "a run did not learn, or the last losses are over 25% apart")
EOF
  local speed
  speed=$(grep -o '[0-9.]* tok/s' "$out/train-$backend.log" 2>/dev/null | tail -n 1)
  record "30 training updates, both learn, vs flex (≤ 25%)" "$(verdict "$before")" \
    "$(tail -n 1 "$out/training.txt" 2>/dev/null); ${speed:-no speed logged} on $backend"

  for bench in "${BENCHES[@]}"; do
    step "bench: $bench on $backend"
    before=$failures
    local filter=
    [ "$bench" = training_step ] && filter=${TRAINING_BENCH_FILTER:-}
    ATTN_BENCH_MAX_LEN=${ATTN_BENCH_MAX_LEN:-4096} timeout 150 "$bins/bench_$bench" --bench \
      --output-format bencher $filter >"$out/bench-$bench.log" 2>&1 \
      || failed "bench $bench" "$out/bench-$bench.log"
    grep '^test ' "$out/bench-$bench.log" | tee "$out/bench-$bench.txt"
    local rate=
    if [ "$bench" = attention ]; then
      # The memory-efficient kernel's forward + backward (the fused CubeCL kernels on a GPU)
      # as FLOP/s, by FlashAttention's count for a causal pass: 2 matmuls of 2 n^2 d FLOPs
      # forward, halved by causality, and 2.5 times that backward: 7 n^2 d per head.
      rate=$(awk -v heads="${ATTN_BENCH_HEADS:-2}" '
        $2 ~ /^attention_forward_backward\/.*\/tiled\// {
          n = $2; sub(/.*\//, "", n); ns = $5; gsub(/,/, "", ns)
          line = sprintf("; fused fwd+bwd, causal, %d keys, head_dim 96: %.3g TFLOP/s", n, 7 * n * n * 96 * heads / ns / 1e3)
        }
        END { printf "%s", line }' "$out/bench-$bench.txt")
      echo "${rate#; }"
    fi
    record "bench $bench" "$(verdict "$before")" \
      "$(wc -l <"$out/bench-$bench.txt") timings in $out/bench-$bench.txt$rate"
  done

  step "the full-size rows on $backend"
  before=$failures
  PHI3V_BIN_DIR=$bins PHI3V_BACKEND=$backend FULL_SIZE_DIR=${FULL_SIZE_DIR:-$out/full-size} \
    timeout 300 bash scripts/full_size_bench.sh ${FULL_SIZE_ROWS:-load text photo train train_q4} \
    | tee "$out/full-size.txt" || failed "full-size rows"
  grep -q FAILED "$out/full-size.txt" && failed "a full-size row (above)"
  record "full-size rows (${FULL_SIZE_PRESET:-full})" "$(verdict "$before")" \
    "$(grep -c '^| [a-z_0-9]* | peak' "$out/full-size.txt") rows in $out/full-size.txt"

  echo
  echo "== summary: $backend, $(date -u +%Y-%m-%d), $(( $(date +%s) - start )) s"
  echo "| step | seconds | result | figure |"
  echo "|---|---|---|---|"
  printf '%s\n' "${summary[@]}"
  echo "$failures failed step(s)"
  exit "$failures"
}

case $phase in
  build) build ;;
  run) run ;;
  all) build && run ;;
  *) echo "usage: bash scripts/device_check.sh [build|run]"; exit 2 ;;
esac

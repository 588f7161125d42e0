#!/usr/bin/env bash
# The "Full size" rows of docs/benchmarks.md, from a clean clone.
#
#   bash scripts/full_size_bench.sh [ROWS...]      # default: load text photo train
#
# Writes the random full-size checkpoint first (released config, names, shapes, bf16, two
# shards: 8.3 GB in target/full-size/model, once), then runs each row as its own process under
# GNU time, so that each peak is that row's alone:
#   load   `phi3v generate`, a one-line prompt, 1 new token: the load's peak against the
#          resident model;
#   text   `phi3v generate`, a one-line prompt, 32 new tokens, bf16-resident: peak and the
#          seconds per decoded token;
#   photo  `phi3v generate`, benches/data/photo_800x1000.jpg at num_crops 16, 4 new tokens:
#          peak and prefill time;
#   train  `phi3v train`, one LoRA update, r 64 on every reference target (vision tower
#          included), bf16 base, num_crops 16, one photo, batch 1, recomputation on: peak and
#          the step time;
#   load_q4, train_q4   `load` and `train` over a q4 base (QLoRA); not in the default rows.
# The PyTorch sides are scripts/bench_prefill_reference.py and
# scripts/bench_training_reference.py; the bandwidth bound is `cargo bench --bench
# mixed_matmul -- bandwidth`.
#
# Needs GNU time (/usr/bin/time), about 10 GB of disk and 24 GB of memory. FULL_SIZE_DIR
# moves the work folder; PHI3V_FEATURES (say `cuda`) and PHI3V_BACKEND run the rows on
# another backend; FULL_SIZE_PRESET=tiny (or wide) runs the same rows on a smaller random
# checkpoint, as scripts/device_check.sh's dry run does. On CUDA each row also reports the
# GPU's peak memory in use (nvidia-smi, sampled every 100 ms). PRODUCT_DTYPE=bf16 runs the
# generate and train rows with `--product-dtype bf16` (the q4 rows keep f32).
set -euo pipefail
cd "$(dirname "$0")/.."

work=${FULL_SIZE_DIR:-target/full-size}
backend=${PHI3V_BACKEND:-flex}
features=${PHI3V_FEATURES:-}
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(load text photo train)
mkdir -p "$work"

# PHI3V_BIN_DIR names a folder with prebuilt `phi3v` and `write_random_model` binaries (what
# scripts/device_check.sh carries to a machine without a Rust toolchain); without it they are
# built here.
if [ -n "${PHI3V_BIN_DIR:-}" ]; then
  bin=$PHI3V_BIN_DIR/phi3v
  writer=$PHI3V_BIN_DIR/write_random_model
else
  cargo build --release -q -p phi3v-cli --bin phi3v ${features:+--features "$features"}
  cargo build --release -q -p phi3v-testkit --example write_random_model
  bin=target/release/phi3v
  writer=target/release/examples/write_random_model
fi
preset=${FULL_SIZE_PRESET:-full}
# The rows' resident base: bf16, except on wgpu, which has none (WGSL has no bf16 type) and
# holds f32 (`auto`).
base_dtype=bf16
[ "$backend" = wgpu ] && base_dtype=auto
model=$work/model
[ "$preset" = full ] || model=$work/model-$preset
if [ ! -f "$model/config.json" ]; then
  "$writer" --preset "$preset" --seed 0 --out "$model" \
    --tokenizer crates/phi3v-processor/tests/data/tokenizer/tokenizer.json
fi
photo=benches/data/photo_800x1000.jpg
products=${PRODUCT_DTYPE:-f32}

# Runs one row under GNU time and prints its line of the table.
row() {
  local name=$1
  shift
  local err=$work/$name.err
  local sampler=
  if [ "$backend" = cuda ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 \
      >"$work/$name.gpu" 2>/dev/null &
    sampler=$!
  fi
  local status=0
  /usr/bin/time -v "$@" >"$work/$name.out" 2>"$err" || status=$?
  local gpu=
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    gpu=$(sort -n "$work/$name.gpu" | tail -n 1)
    gpu=" | GPU peak ${gpu:-?} MiB"
  fi
  if [ "$status" -ne 0 ]; then
    echo "| $name | FAILED (see $err)$gpu |"
    tail -n 5 "$err" | sed 's/^/    /'
    return 0
  fi
  local peak wall
  peak=$(awk '/Maximum resident set size/ { printf "%.2f", $6 / 1e6 }' "$err")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$err")
  local cpu
  cpu=$(awk -F': ' '/Percent of CPU/ { print $2 }' "$err")
  local notes
  notes=$(grep -E '^(weights:|prefill|[0-9]+ tokens in|step [0-9]+/)' "$err" | tr '\n' ';' | sed 's/;$//')
  echo "| $name | peak ${peak} GB | wall ${wall} | CPU ${cpu}${gpu} | ${notes} |"
}

echo "| row | peak RSS | wall | CPU | what the row printed |"
echo "|---|---|---|---|---|"
for r in "${rows[@]}"; do
  case $r in
    load)
      row load "$bin" --backend "$backend" generate --model "$model" --prompt "Hi" \
        --max-new-tokens 1 --base-dtype "$base_dtype" --product-dtype "$products" ;;
    text)
      row text "$bin" --backend "$backend" generate --model "$model" \
        --prompt "Describe the product in one sentence." --max-new-tokens 32 --base-dtype "$base_dtype" \
        --product-dtype "$products" ;;
    photo)
      row photo "$bin" --backend "$backend" generate --model "$model" --image "$photo" \
        --prompt "What is shown in this image?" --max-new-tokens 4 --base-dtype "$base_dtype" \
        --product-dtype "$products" ;;
    load_q4)
      row load_q4 "$bin" --backend "$backend" generate --model "$model" --prompt "Hi" \
        --max-new-tokens 1 --base-dtype q4 ;;
    train | train_q4)
      base=$base_dtype
      train_products=$products
      [ "$r" = train_q4 ] && base=q4 && train_products=f32
      rm -rf "$work/run_$base"
      row "$r" "$bin" --backend "$backend" train --model "$model" --sample-rows 4 \
        --val-fraction 0.25 --run-dir "$work/run_$base" --steps 1 --batch-size 1 --grad-accum 1 \
        --warmup-steps 0 --num-crops 16 --lora-rank 64 \
        --lora-alpha 128 --base-dtype "$base" --product-dtype "$train_products" --recompute true \
        --eval-samples 1 \
        --log-every 1 --no-tensorboard ;;
    *) echo "unknown row $r (load, text, photo, train, load_q4, train_q4)"; exit 2 ;;
  esac
done

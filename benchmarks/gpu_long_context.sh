#!/bin/bash
# Issue 15's GPU figures in one call on one GPU (about 9 minutes; the runs come in priority order and a run
# that no longer fits the time left is skipped and listed as such):
#   - full fine-tune of the 7B architecture at 32K with bf16 weights, Kahan AdamW and Liger (sft_full_1gpu.yaml)
#   - LoRA of the 12B Mistral-Nemo architecture at 32K and 64K (sft_lora.yaml, activation offload off)
#   - peak memory at a second length per setup, with and without activation offload (one step each)
#   - LoRA of the 12B architecture at 128K with activation offload (one step)
#   - the longest sequence each setup can train on this GPU, predicted by benchmarks/long_context_fit.py
#     from those points, then trained for one step at that length where the time allows
# Random weights of the real architectures; Liger and activation checkpointing on (the recipes').
#
# Prepare here, on a machine with PyPI (wheels for a CUDA image with python 3.12 and torch but no network):
#   bash ../shared/gpu/wheels.sh
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl torch-optimi==0.3.3
# Then on the GPU (the device tool): command "bash benchmarks/gpu_long_context.sh", carry [".whl"],
# timeout_s 600. Files come back in $OUT: results.jsonl, summary.md, logs.txt, gpu.txt. On this machine:
#   python benchmarks/long_context_fit.py <files_at>/results.jsonl
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/in2-long-context}
TOTAL=${TOTAL:-560}   # seconds for the whole script, wheels included
START=$(date +%s)
mkdir -p "$OUT"
R=$OUT/results.jsonl
LOGS=$OUT/logs.txt
: > "$R"
: > "$LOGS"

. .whl/env.sh >> "$LOGS" 2>&1 || { echo "wheels did not install (see logs.txt)"; exit 1; }
nvidia-smi > "$OUT/gpu.txt" 2>&1
python3 -c "import optimi, liger_kernel" >> "$LOGS" 2>&1 || echo "torch-optimi or liger-kernel missing" >> "$LOGS"
free -g >> "$OUT/gpu.txt"

TEMPLATES=src/in2/chat_templates
FULL7B=(--config recipes/film-7b/sft_full_1gpu.yaml --arch mistral-7b
        --chat_template_path $TEMPLATES/mistral-instruct.jinja)
LORA12B=(--config recipes/mistral-nemo-12b/sft_lora.yaml --arch mistral-nemo-12b
         --chat_template_path $TEMPLATES/mistral-tekken.jinja)

left() { echo $(( TOTAL - ($(date +%s) - START) )); }

# run NAME SECONDS_NEEDED ARGS...: one benchmark process, skipped when fewer seconds are left
run() {
  local name=$1 need=$2
  shift 2
  local budget
  budget=$(left)
  if (( budget < need )); then
    echo "{\"name\": \"$name\", \"skipped\": \"$budget s left, needs about $need s\"}" >> "$R"
    return
  fi
  echo "=== $name ($budget s left) $*" >> "$LOGS"
  local t0=$SECONDS
  timeout --kill-after=15 "$budget" python3 benchmarks/train_throughput.py "$@" --name "$name" --out "$R" \
    2>&1 | grep -v "it/s\]\|s/it\]" | tail -n 25 >> "$LOGS"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $(( SECONDS - t0 )) s" >> "$LOGS"
  if ! grep -q "\"name\": \"$name\"" "$R"; then
    echo "{\"name\": \"$name\", \"failed\": \"exit $rc, see logs.txt\"}" >> "$R"
  fi
}

# The issue's goals first: full 7B at 32K with the Kahan optimizer, LoRA 12B at 32K and 64K on one GPU
run full7b_32k 90 "${FULL7B[@]}" --seq-len 32768 --steps 2
run lora12b_32k 90 "${LORA12B[@]}" --seq-len 32768 --steps 2 --activation_offloading false
run lora12b_64k 120 "${LORA12B[@]}" --seq-len 65536 --steps 1 --activation_offloading false
# Second points for the memory lines (one step each)
run full7b_16k 45 "${FULL7B[@]}" --seq-len 16384 --steps 0
run full7b_offload_16k 45 "${FULL7B[@]}" --seq-len 16384 --steps 0 --activation_offloading true
run full7b_offload_32k 60 "${FULL7B[@]}" --seq-len 32768 --steps 0 --activation_offloading true
run lora12b_offload_32k 60 "${LORA12B[@]}" --seq-len 32768 --steps 0
# LoRA 12B at 128K: activation offload is what makes it fit 80 GB (one step)
run lora12b_offload_128k 180 "${LORA12B[@]}" --seq-len 131072 --steps 0
# The longest sequence on this GPU, as predicted by the lines above, trained for one step where time allows
CAPACITY=$(python3 -c "import torch; print(torch.cuda.get_device_properties(0).total_memory / 2**30)")
for setup in full7b lora12b; do
  n=$(python3 benchmarks/long_context_fit.py "$R" --predict "$setup" --capacity "$CAPACITY" 2>> "$LOGS") || continue
  (( n >= 1024 )) || continue
  if [ "$setup" = full7b ]; then args=("${FULL7B[@]}"); else args=("${LORA12B[@]}" --activation_offloading false); fi
  run "${setup}_longest_${n}" 120 "${args[@]}" --seq-len "$n" --steps 0
done

python3 benchmarks/long_context_fit.py "$R" > "$OUT/summary.md" 2>> "$LOGS"
cat "$OUT/summary.md"
echo "total $(( $(date +%s) - START )) s"

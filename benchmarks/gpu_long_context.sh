#!/bin/bash
# The long-context set on one GPU: peak memory (allocated and reserved) and step time of the recipes the docs
# place on one 80 GB GPU, and the points benchmarks/long_context_fit.py draws its lines through. Random weights
# of the real architectures; the recipes' own settings (Liger, activation checkpointing, tiled MLP for Nemo,
# the expandable-segments allocator that `in2 train` sets). Runs come in priority order; a run that no longer
# fits the time left (TOTAL seconds from START) is skipped and listed as such.
#
# Usually run by benchmarks/gpu_check.sh (the one prepared GPU call). Alone, on the GPU, from the repository
# root, after `. .whl/env.sh`:   OUT=/tmp/lc TOTAL=400 bash benchmarks/gpu_long_context.sh [memory|speed|RUN ...]
# Appends one JSON line per run to $OUT/results.jsonl and the runs' last lines to $OUT/logs.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/in2-long-context}
TOTAL=${TOTAL:-420}
START=${START:-$(date +%s)}
mkdir -p "$OUT"
R=$OUT/results.jsonl
LOGS=$OUT/logs.txt
touch "$R" "$LOGS"

TEMPLATES=src/in2/chat_templates
FULL7B=(--config recipes/film-7b/sft_full_1gpu.yaml --arch mistral-7b
        --chat_template_path $TEMPLATES/mistral-instruct.jinja)
LORA12B=(--config recipes/mistral-nemo-12b/sft_lora.yaml --arch mistral-nemo-12b
         --chat_template_path $TEMPLATES/mistral-tekken.jinja)
NO_OFFLOAD=(--activation_offloading false)

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
    2>&1 | grep -v "it/s\]\|s/it\]" | tail -n 12 >> "$LOGS"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $(( SECONDS - t0 )) s" >> "$LOGS"
  if ! grep -q "\"name\": \"$name\"" "$R"; then
    echo "{\"name\": \"$name\", \"failed\": \"exit $rc, see logs.txt\"}" >> "$R"
  fi
}

# one run by name: its time budget in seconds, then the benchmark's arguments
one() {
  case $1 in
    # the docs' 80 GB claims first: Nemo LoRA at 128K with activation offload, at 64K without
    lora12b_offload_128k) run "$1" 150 "${LORA12B[@]}" --seq-len 131072 --steps 0 ;;
    lora12b_64k) run "$1" 75 "${LORA12B[@]}" "${NO_OFFLOAD[@]}" --seq-len 65536 --steps 1 ;;
    # the lines' other points (one step each): three lengths per setup, so that each point is also predicted
    # from the other two (long_context_fit.py's "predicted" column)
    lora12b_32k) run "$1" 40 "${LORA12B[@]}" "${NO_OFFLOAD[@]}" --seq-len 32768 --steps 0 ;;
    lora12b_offload_64k) run "$1" 60 "${LORA12B[@]}" --seq-len 65536 --steps 0 ;;
    # where the memory went: 64K without the tiled MLP (the allocator setting kept)
    lora12b_untiled_64k) run "$1" 45 "${LORA12B[@]}" "${NO_OFFLOAD[@]}" --tiled_mlp_tokens null --seq-len 65536 --steps 0 ;;
    lora12b_16k) run "$1" 30 "${LORA12B[@]}" "${NO_OFFLOAD[@]}" --seq-len 16384 --steps 0 ;;
    lora12b_offload_32k) run "$1" 40 "${LORA12B[@]}" --seq-len 32768 --steps 0 ;;
    full7b_16k) run "$1" 40 "${FULL7B[@]}" --seq-len 16384 --steps 0 ;;
    # throughput goal (>= 6,200 tokens/s): alone on the GPU
    full7b_32k) run "$1" 90 "${FULL7B[@]}" --seq-len 32768 --steps 2 ;;
    full7b_8k) run "$1" 45 "${FULL7B[@]}" --seq-len 8192 --steps 0 ;;
    *) echo "unknown run: $1" >&2; return 1 ;;
  esac
}

# `memory` (beside the GPU tests), `speed` (alone on the GPU), or run names in the order given
case "${1:-memory}" in
  memory) names=(lora12b_offload_128k lora12b_64k lora12b_32k lora12b_offload_64k lora12b_untiled_64k lora12b_16k
                 lora12b_offload_32k full7b_16k) ;;
  speed) names=(full7b_32k full7b_8k) ;;
  *) names=("$@") ;;
esac
for name in "${names[@]}"; do
  one "$name" || exit 2
done

#!/bin/bash
# The GPU checks of issue 11 in one call on a CUDA machine without network (python 3.12, torch,
# accelerate): `make test-gpu PY=python3`, then the FILM-7B throughput rows on random Mistral-7B weights,
# printed as a table with the goals beside them (figures, not asserts).
#
# Prepare on a machine with package access, from the repository root:
#   bash ../shared/gpu/wheels.sh            # trl, transformers, datasets, peft, liger-kernel, ... into .whl/
#   bash benchmarks/gpu_check.sh --fetch    # + pytest, sentencepiece and protobuf, which such an image may lack
# .whl/ is gitignored: carry it to the GPU machine (the device tool: carry [".whl"], about 40 MB). There,
# from the repository root:
#   bash benchmarks/gpu_check.sh            # sources .whl/env.sh when it is there
#   bash benchmarks/gpu_check.sh tests      # only make test-gpu; `bench`: only the throughput rows
# Writes the test log, one JSON per row and results.md into $OUT (or /tmp/in2-gpu-check).
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fetch" ]; then
  mkdir -p .whl
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl pytest==9.2.0 sentencepiece==0.2.3 protobuf==7.36.2  # the versions make install tests with
  du -sh .whl
  exit
fi

OUT=${OUT:-/tmp/in2-gpu-check}
mkdir -p "$OUT"
if [ -f .whl/env.sh ]; then
  . .whl/env.sh || exit 1
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
missing=$(python3 -c "
from importlib.util import find_spec
print(' '.join(m for m in ('pytest', 'trl', 'peft', 'datasets', 'sentencepiece', 'liger_kernel') if find_spec(m) is None))")
[ -n "$missing" ] && echo "missing on this machine: $missing (bash benchmarks/gpu_check.sh --fetch, then carry .whl)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, trl, peft, accelerate; import importlib.metadata as m
print('python', __import__('sys').version.split()[0], {x.__name__: x.__version__ for x in (torch, transformers, trl, peft, accelerate)},
      'liger-kernel', m.version('liger-kernel') if __import__('importlib.util').util.find_spec('liger_kernel') else None)" \
  | tee "$OUT/versions.txt"

part=${1:-all}
# 1. the GPU test suite (under 5 minutes on one GPU)
if [ "$part" != bench ]; then
  start=$SECONDS
  if command -v make > /dev/null; then
    make test-gpu PY=python3 ARGS="-rs --durations=10" 2>&1 | tee "$OUT/test-gpu.log"
  else
    python3 -m pytest -q -m gpu tests/gpu -rs --durations=10 2>&1 | tee "$OUT/test-gpu.log"
  fi
  echo "make test-gpu: $((SECONDS - start)) s" | tee -a "$OUT/test-gpu.log"
fi
[ "$part" = tests ] && exit

# 2. throughput rows: the goals of issue 11 (full recipe at 32K with Liger, LoRA at 32K) and the full
# recipe without Liger as the same-machine baseline. Full rows use bf16 weights: one GPU stands in for a
# GPU of an FSDP job, where the fp32 master weights and AdamW states are sharded (116 GB / 8 GPUs).
bench() {  # name, then arguments
  local name=$1
  shift
  if ! timeout 600 python3 benchmarks/train_throughput.py --arch mistral-7b --steps 3 --json "$OUT/$name.json" "$@" \
    > "$OUT/$name.log" 2>&1; then
    echo "$name: failed; the end of $OUT/$name.log:"
    tail -5 "$OUT/$name.log"
  fi
}
bench full-32k-liger --config recipes/film-7b/sft_full.yaml --seq-len 32768 --dtype bfloat16
bench lora-32k-liger --config recipes/film-7b/sft_lora.yaml --seq-len 32768
bench full-32k-no-liger --config recipes/film-7b/sft_full.yaml --seq-len 32768 --dtype bfloat16 --use_liger_kernel false

python3 - "$OUT" <<'EOF' | tee "$OUT/results.md"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
goals = {"full-32k-liger": ">= 6,300 tokens/s, <= 60 GiB, MFU >= 60%", "lora-32k-liger": "<= 36 GiB"}
print("| row | device | Liger | tokens/s/GPU | s/step | peak GiB | MFU | goal |")
print("|---|---|---|---|---|---|---|---|")
for name in ("full-32k-liger", "lora-32k-liger", "full-32k-no-liger"):
    path = out / f"{name}.json"
    if not path.is_file():
        print(f"| {name} | failed | | | | | | {goals.get(name, 'baseline')} |")
        continue
    r = json.loads(path.read_text())
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (LoRA)"
    print(f"| {name} | {r['device']} | {'on' if r['liger_kernels'] else 'off'} | {r['tokens_per_s_per_device']:,.1f} "
          f"| {r['s_per_micro_step']} | {r['peak_memory_gib']} | {mfu} | {goals.get(name, 'baseline')} |")
print("\nMFU = tokens/s x (6 N + 12 L d S) / 989e12 (llm-foundry; N parameters, L layers, d hidden, S tokens)")
EOF

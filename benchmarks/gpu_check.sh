#!/bin/bash
# Every GPU check in one call of at most 9 minutes on one H200-class GPU without network: `make test-gpu
# PY=python3` from the source tree, beside it the long-context memory set (benchmarks/gpu_long_context.sh
# memory), then the full 7B throughput rows alone on the GPU; a summary table at the end. Measured on an H200
# (2026-12-04): the tests take 390-400 s beside the memory runs (DeepSpeed 93 s, FSDP 70 s each, Liger 65 s),
# so within TOTAL=470 the memory set reaches its first two runs (128K with offload 130-200 s, 64K 90 s) and
# skips the rest, which `bash benchmarks/gpu_long_context.sh RUN ...` takes in a call of its own (about 5 min
# for the 128K, 32K, untiled 64K and offloaded 64K runs with the 7B row).
#
# Prepare on a machine with PyPI, from the repository root, after `make install` (the DeepSpeed wheel is built
# with .venv):
#   bash ../shared/gpu/wheels.sh            # trl, transformers, datasets, peft, liger-kernel, deepspeed, openai,
#                                           # evaluate, torch-optimi ... into .whl/ (gitignored), with env.sh
#   bash benchmarks/gpu_check.sh --fetch    # + pytest, sentencepiece and protobuf, which such an image may lack
# Then on the GPU (the device tool): command `bash benchmarks/gpu_check.sh`, carry [".whl"] (about 46 MB),
# timeout_s 600. Writes 5 files into $OUT (or /tmp/in2-gpu-check): env.txt, test-gpu.log, results.jsonl,
# logs.txt, summary.md. Here: `python benchmarks/long_context_fit.py <files_at>/results.jsonl`.
#
# QLoRA (the sft_qlora case of tests/gpu, skipped without bitsandbytes) needs a call of its own: bitsandbytes'
# wheel (43 MB) and all of .whl (46 MB) exceed the 64 MB a call carries. Gather bitsandbytes and only the wheels
# that test imports (trl, transformers, datasets, peft, dill, multiprocess, fsspec, regex, pytest, iniconfig,
# pluggy, pygments, sentencepiece, protobuf: about 63 MB) into a folder of their own, carry it, install
# it as .whl/env.sh does, and run `python3 -m pytest -q -m gpu tests/gpu -k qlora`. Not run yet.
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--digest" ]; then  # sha256 over the sources, tests, recipes and configs that a run measures
  find src tests benchmarks recipes accelerate_configs -type f \( -name '*.py' -o -name '*.yaml' -o -name '*.sh' \
    -o -name '*.jinja' -o -name '*.j2' \) -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16
  exit
fi
if [ "${1:-}" = "--fetch" ]; then
  mkdir -p .whl
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl pytest==9.2.0 sentencepiece==0.2.3 protobuf==7.36.2  # the versions make install tests with
  du -sh .whl
  exit
fi

OUT=${OUT:-/tmp/in2-gpu-check}
TOTAL=${TOTAL:-530}   # seconds for the whole call; the long-context runs that no longer fit are skipped
START=$(date +%s)
export START
mkdir -p "$OUT"
if [ -f .whl/env.sh ]; then
  . .whl/env.sh > "$OUT/env.txt" 2>&1 || { cat "$OUT/env.txt"; exit 1; }
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, transformers, trl, peft, accelerate, datasets; import importlib.metadata as m
print('python', sys.version.split()[0], {x.__name__: x.__version__ for x in (torch, transformers, trl, peft, accelerate, datasets)})
for name in ('liger-kernel', 'deepspeed', 'torch-optimi', 'bitsandbytes', 'flash-attn'):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, 'not installed')"
  # the device tool's copy may carry an older .git than its working tree: name the sources by their digest,
  # which `bash benchmarks/gpu_check.sh --digest` prints for a checkout
  echo "source digest $(bash benchmarks/gpu_check.sh --digest)"
  free -g | head -2
} >> "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. the GPU test suite, in the background (tiny models: little memory beside the long-context runs)
(
  t0=$(date +%s)
  if command -v make > /dev/null; then
    make test-gpu PY=python3 ARGS="-rs -s --durations=12" > "$OUT/test-gpu.log" 2>&1
  else
    python3 -m pytest -q -m gpu tests/gpu -rs -s --durations=12 > "$OUT/test-gpu.log" 2>&1
  fi
  echo "make test-gpu: exit $?, $(( $(date +%s) - t0 )) s" >> "$OUT/test-gpu.log"
) &
tests=$!

# 2. memory: the long-context set (step times here share the GPU with the tests: memory is what they measure)
OUT=$OUT TOTAL=$(( TOTAL - 110 )) bash benchmarks/gpu_long_context.sh memory
wait $tests
# 3. speed: the full 7B rows alone on the GPU
OUT=$OUT TOTAL=$TOTAL bash benchmarks/gpu_long_context.sh speed

{
  echo "## make test-gpu PY=python3"
  grep -E "passed|failed|skipped|error|SKIPPED|FAILED|^Liger vs eager|probe answers equal|make test-gpu:" \
    "$OUT/test-gpu.log" | tail -n 20
  echo
  echo "## long-context runs"
  python3 benchmarks/long_context_fit.py "$OUT/results.jsonl"
  echo
  echo "total $(( $(date +%s) - START )) s"
} > "$OUT/summary.md" 2>&1
cat "$OUT/summary.md"

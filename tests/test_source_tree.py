"""in2 run from a plain copy of `src/`, with no in2 distribution anywhere on the path: how
`make test-gpu PY=python3` runs it on a CUDA machine. It failed there after training, in the model card
(`versions.in2` undefined), because versions came only from installed metadata."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import in2
from tests.conftest import write_recipe

ROOT = Path(__file__).resolve().parents[1]


def _environment(tmp_path: Path) -> dict:
    """PYTHONPATH with a copy of src/ and this venv's site-packages less in2's own distribution and .pth files
    (the interpreter runs with -S, so no site-packages or editable finder is added behind our back)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    site = tmp_path / "site"
    site.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.startswith(("in2-", "__editable__")) or entry.suffix == ".pth":
            continue
        (site / entry.name).symlink_to(entry)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(site)])}


def _python(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_training_from_a_source_copy_writes_its_card(tmp_path, tiny_model, dataset_folder):
    env = _environment(tmp_path)
    probe = "import importlib.metadata as m, in2\ntry:\n    m.version('in2')\nexcept m.PackageNotFoundError:\n    print(in2.__file__)"
    where = _python(env, "-c", probe, cwd=tmp_path)
    assert where.stdout.strip() == str(tmp_path / "src" / "in2" / "__init__.py"), where.stderr  # no distribution
    version = _python(env, "-m", "in2.cli", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"in2 {in2.__version__}", version.stderr
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, max_steps=1, save_strategy="no")
    run = _python(env, "-m", "in2.train.sft", "--config", str(recipe), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"Trained with **in2** {in2.__version__} on TRL" in card
    assert f"- in2 {in2.__version__}" in card  # the framework versions list

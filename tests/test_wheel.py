"""in2 installs like a library: the wheel, built offline from a copy of the checkout, holds every file of
src/in2 (templates, prompts, chat templates, built-in data) and the data card template, builds without a
setuptools warning, and, installed with the checkout off the path, runs every command from another folder
without writing into its own package folder. Files it writes follow the user's umask."""

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.conftest import MISTRAL
from tests.openai_server import CannedServer, canned_generator

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("src", "data_cards", "setup.cfg", "pyproject.toml", "README.md")  # what setuptools reads
JUNK = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of what setuptools reads: a build writes build/ and *.egg-info beside setup.cfg, and a stale
    build/lib would hide a file missing from the package data."""
    tree = tmp_path_factory.mktemp("project")
    for name in PROJECT:
        src = ROOT / name
        shutil.copytree(src, tree / name, symlinks=True, ignore=JUNK) if src.is_dir() else shutil.copy(src, tree / name)
    return tree


def _build(*command: str, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # else distutils warns of it
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _warnings(log: str) -> list[str]:
    """setuptools' warnings (`...: SetuptoolsDeprecationWarning: ...`, `...: InformationOnly: ...` in `!!`
    banners) and distutils' `warning:` lines; pip's notes about its configured indexes are not ours."""
    said = ("warn", "informationonly", "!!")
    return [ln for ln in log.splitlines() if any(w in ln.lower() for w in said) and "Location 'file:" not in ln]


@pytest.fixture(scope="module")
def built(project, tmp_path_factory) -> tuple[Path, str]:
    """(the wheel, the build's output)."""
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "wheel", "-v", "--no-index", "--no-deps", "--no-build-isolation"]
    log = _build(*pip, "-w", str(dist), str(project))
    (wheel,) = dist.glob("in2-*.whl")
    return wheel, log


def test_wheel_holds_every_file_of_the_package_and_builds_without_warnings(built):
    wheel, log = built
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "src" / "in2"
    expected = {
        f"in2/{p.relative_to(package).as_posix()}"
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    } | {"in2/data_cards/__init__.py", "in2/data_cards/in2_dataset.md.j2"}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    data = {n for n in expected if not n.endswith(".py")}
    assert {"in2/prompts/longbench_in2.json", "in2/synth/builtin/instructions.jsonl"} <= data  # what the runs read
    assert not _warnings(log), "\n".join(_warnings(log))


def test_editable_install_is_a_path_entry_and_says_no_warning(project, tmp_path):
    """`make install` (pip install -e): one source folder, so setuptools writes a .pth entry for src/
    instead of a meta path finder, which it warns about."""
    hook = f"from setuptools import build_meta; build_meta.build_editable({str(tmp_path)!r})"
    log = _build(sys.executable, "-c", hook, cwd=project)
    assert not _warnings(log), "\n".join(_warnings(log))
    (wheel,) = tmp_path.glob("in2-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "__editable__.in2-0.1.0.pth" in names and not [n for n in names if "finder" in n]


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    """`run(*args)`: a command in a fresh folder under umask 022, with the installed wheel first on the path
    (the venv's editable install only appends src/ after it) and a temporary HOME; it asserts the package
    folder is unchanged."""
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target)]
    subprocess.run([*pip, str(built[0])], check=True, capture_output=True, timeout=120)
    work, home = tmp_path_factory.mktemp("elsewhere"), tmp_path_factory.mktemp("home")
    env = {**os.environ, "PYTHONPATH": str(target), "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    package = target / "in2"
    before = _snapshot(package)

    def run(*args: str, **extra_env: str) -> str:
        command = [str(target / "bin" / args[0]), *args[1:]] if args[0] == "in2" else list(args)
        proc = subprocess.run(
            ["sh", "-c", 'umask 022 && exec "$@"', "sh", *command],
            cwd=work,
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}{proc.stderr[-4000:]}"
        assert _snapshot(package) == before, f"{args} wrote into the installed package"
        return proc.stdout

    run.work, run.target = work, target
    return run


def _snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _modes(folder: Path) -> set[str]:
    return {stat.filemode(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


def test_the_installed_package_is_the_wheels_not_the_checkout(installed):
    where = installed(sys.executable, "-c", "import in2, in2.data_cards as d; print(in2.__file__); print(d.__file__)")
    for line in where.split():
        assert Path(line).is_relative_to(installed.target), where
    assert installed("in2", "--version").strip() == f"in2 {metadata.version('in2')}"


def test_dry_run_with_a_recipe_copied_out(installed):
    recipe = installed.work / "in2_data.yaml"
    shutil.copy(ROOT / "recipes" / "demo" / "in2_data.yaml", recipe)
    out = installed("in2", "synth", "--config", recipe.name, "--dry-run", "--dry-run-sample", "20")
    assert "nothing was sent" in out and json.loads(out[: out.rindex("}") + 1])["requests"] > 0


def test_synth_over_http_writes_the_dataset_and_its_card(installed):
    with CannedServer() as s:
        cfg = {
            "corpus": {"source": "builtin:pydoc", "filler_pool_texts": 100},
            "tokenizer": MISTRAL,
            "generator": canned_generator(s.url),
            "context": {"min_context_tokens": 512, "max_context_tokens": 1024, "num_length_buckets": 2},
            "mixture": {"fine_grained": 4, "integration": 1, "short": 1, "general": 2, "validation_rows": 1},
            "general": {
                "source": "builtin:instructions",
                "instruction_field": "instruction",
                "response_field": "response",
            },
            "output_dir": "data/tiny",
        }
        (installed.work / "tiny.yaml").write_text(yaml.safe_dump(cfg))
        out = installed("in2", "synth", "--config", "tiny.yaml", OPENAI_API_KEY="sk-test")
    folder = installed.work / "data" / "tiny"
    assert f"dataset folder: {folder.relative_to(installed.work)}" in out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"]["rows"]["general"] == 2 and manifest["content_hash"] in (folder / "README.md").read_text()
    assert (folder / "README.md").read_text().startswith("---\n")  # the card's YAML header
    assert _modes(folder) == {"-rw-r--r--"}  # umask 022: every file of the folder is readable by all


def test_probe_build_eval_longbench_and_probe_score(installed):
    probe, lb = "database_forward_512", installed.work / "longbench"
    lb.mkdir()
    row = {"input": "What color is the sky?", "context": "The sky is blue.", "answers": ["blue"], "_id": "h0"}
    (lb / "hotpotqa.jsonl").write_text(json.dumps(row) + "\n")
    with CannedServer() as s:
        cfg = {
            "tokenizer": MISTRAL,
            "suites": ["probing", "longbench"],
            "probes": {"tasks": ["database"], "lengths": [512], "sets": 1, "span_size": 5, "output_dir": "probes"},
            "longbench": {
                "tasks": ["hotpotqa"],
                "data": "longbench",
                "prompts": "in2",
                "max_input_tokens": 200,
                "tokenizer": "eval",
            },
            "models": [
                {
                    "name": "reader",
                    "generator": {"backend": "openai", "model": "reader", "base_url": s.url, "max_tokens": 64},
                }
            ],
            "output_dir": "results",
        }
        (installed.work / "eval.yaml").write_text(yaml.safe_dump(cfg))
        installed("in2", "probe", "build", "--config", "eval.yaml")
        assert (installed.work / "probes" / f"{probe}.jsonl").is_file()
        installed("in2", "eval", "--config", "eval.yaml", OPENAI_API_KEY="sk-test")
        prompts = [b["messages"][0]["content"] for b in s.bodies]
    results = json.loads((installed.work / "results" / "results.json").read_text())
    assert results["longbench"]["prompts"]["prompts"] == "in2"
    assert any("What color is the sky?" in p and "The sky is blue." in p for p in prompts)
    predictions = "results/predictions/reader"
    scored = installed(
        "in2",
        "probe",
        "score",
        "--probes",
        "probes",
        "--predictions",
        predictions,
        "--names",
        probe,
        "--model",
        "reader",
    )
    assert "| reader | 100.0 / 0.0 |" in scored
    assert _modes(installed.work / "results") == {"-rw-r--r--"}

"""One install command for a GPU cluster (issue 22, item 2): the `film` extra holds every extra the FILM-7B and
Nemo recipes use, the docs name it and nothing else, and the tested-version table agrees with constraints.txt."""

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = {"offline", "short", "kahan", "gpu", "deepspeed", "track"}


def extras() -> dict[str, list[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    section = cfg["options.extras_require"]
    return {name: [r.strip() for r in section[name].strip().splitlines() if r.strip()] for name in section}


def test_the_film_extra_is_every_cluster_extra():
    found = extras()
    (film,) = found["film"]
    named = set(re.fullmatch(r"in2\[([a-z,]+)\]", film).group(1).split(","))
    assert named == CLUSTER and named <= set(found)
    assert found["track"] == ["trackio==0.43.*"]


def test_docs_name_one_install_command():
    """Every `pip install -e ".[...]"` in the README, docs and recipe READMEs is `.[film]` or one extra of it."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "recipes").glob("*/README.md"))]
    seen = []
    for doc in docs:
        for group in re.findall(r'pip install[^`\n]*-e "\.\[([^\]]*)\]"', doc.read_text()):
            names = group.split(",")
            assert names == ["film"] or (len(names) == 1 and names[0] in CLUSTER), f"{doc.name}: .[{group}]"
            seen.append(group)
    assert seen.count("film") >= 4  # README, reproducing-film-7b.md, both cluster recipe READMEs


def test_the_tested_version_table_matches_constraints():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    text = (ROOT / "docs/reproducing-film-7b.md").read_text()
    rows = re.findall(r"^\| ([a-z-]+) \| (\d[\w.+]*)[^|]* \| [^|]+ \|$", text, re.M)
    assert len(rows) >= 10
    for package, version in rows:
        if package != "python":
            assert pins[package] == version, f"{package}: table {version}, constraints.txt {pins[package]}"
    for package in ("torch", "transformers", "trl", "deepspeed", "lm-eval", "trackio", "torch-optimi"):
        assert package in dict(rows)

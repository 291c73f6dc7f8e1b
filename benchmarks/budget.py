"""The FILM-7B budget sheet of docs/reproducing-film-7b.md, computed (never typed) from a dry run's report, the
recipes' fields and the measured figures of src/in2/measured.py (in2.budget.sheet).

    python benchmarks/budget.py                  # print the sheet
    python benchmarks/budget.py --write          # replace it in docs/reproducing-film-7b.md
    python benchmarks/budget.py --refresh        # first rerun the dry run into benchmarks/film-7b-dry-run.json

The dry run reads Python's documentation in place of C4 (offline) and sends nothing."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from in2.budget import sheet

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "film-7b-dry-run.json"
DOC = ROOT / "docs" / "reproducing-film-7b.md"
BEGIN, END = "<!-- budget sheet: benchmarks/budget.py --write -->", "<!-- end of budget sheet -->"
DRY_RUN = ["synth", "--config", "recipes/film-7b/in2_data.yaml", "--dry-run", "--corpus.source", "builtin:pydoc"]


def refresh() -> None:
    in2 = Path(sys.executable).with_name("in2")
    out = subprocess.run([str(in2), *DRY_RUN], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    report = json.loads(out[: out.rindex("}") + 1])
    report["command"] = "in2 " + " ".join(DRY_RUN)
    REPORT.write_text(json.dumps(report, indent=1) + "\n")


def render() -> str:
    report = json.loads(REPORT.read_text())
    synth = yaml.safe_load((ROOT / "recipes/film-7b/in2_data.yaml").read_text())
    train = yaml.safe_load((ROOT / "recipes/film-7b/sft_full.yaml").read_text())
    return sheet(report, synth, train)


def with_sheet(doc: str, text: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r"\n.*?" + re.escape(END), re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{DOC}: no budget sheet markers ({BEGIN} ... {END})")
    return pattern.sub(lambda _: f"{BEGIN}\n{text}{END}", doc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--refresh", action="store_true", help="rerun the dry run first (offline, ~15 s)")
    p.add_argument("--write", action="store_true", help=f"replace the sheet in {DOC.relative_to(ROOT)}")
    args = p.parse_args()
    if args.refresh:
        refresh()
    text = render()
    if args.write:
        DOC.write_text(with_sheet(DOC.read_text(), text))
        print(f"budget sheet written to {DOC}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()

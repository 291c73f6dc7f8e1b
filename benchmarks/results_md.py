"""Recording a benchmark's rows in benchmarks/RESULTS.md: placed at the end of the script's own
section (appending at the end of the file put rows under whichever section came last)."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def record(text: str, section: str, path: Path = RESULTS) -> None:
    """Insert `text` at the end of the section whose heading starts with `## {section}` (a new section at the
    end of the file if there is none)."""
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"## {section}")), None)
    if start is None:
        lines += ["", f"## {section}", ""]
        end = len(lines)
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
    lines[end:end] = text.strip("\n").splitlines()
    path.write_text("\n".join(lines) + "\n")

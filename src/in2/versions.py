"""Versions a run records: in2's own from `in2.__version__` (the one source, also from a plain source tree with
no installed distribution), the others from their installed metadata."""

from __future__ import annotations

from importlib import metadata

import in2


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    """`packages` that are importable here, by name; in2 always, whether installed or run from `src/`."""
    out = {}
    for name in packages:
        if name == "in2":
            out[name] = in2.__version__
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out

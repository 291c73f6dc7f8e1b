"""Metrics shipped as local `evaluate` modules, so they load offline: `load("qa_f1")`, `load("rouge_l")`."""

from __future__ import annotations

import functools

from in2.assets import packaged_path

MODULES = {name: packaged_path(__name__, f"{name}.py") for name in ("qa_f1", "rouge_l")}


@functools.cache
def load(name: str):
    import evaluate

    if name not in MODULES:
        raise ValueError(f"unknown metric {name!r}: one of {', '.join(MODULES)}")
    return evaluate.load(str(MODULES[name]))

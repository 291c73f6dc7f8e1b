"""Fetch one file over HTTP(S) into a cache once (FILM's probing pools, LongBench's prompts).

The file is written under a `.partial` name and renamed when complete, so an interrupted download
starts again; a file already there is not asked for again.
"""

from __future__ import annotations

from pathlib import Path

from in2.files import partial_path, publish_once


def fetch(url: str, target: str | Path, field: str, what: str, hint: str) -> Path:
    """`target`, downloaded from `url` unless it is there; a failure is one error naming the config
    `field`, `what` was fetched and how to do without the download (`hint`)."""
    import urllib.request

    target = Path(target)
    if target.is_file():
        return target
    partial = partial_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (https URLs from the config; tests: local)
            partial.write_bytes(r.read())
    except OSError as e:  # URLError, HTTPError, timeouts, a folder we cannot write
        raise FileNotFoundError(f"{field}: cannot download {what} {url} ({getattr(e, 'reason', e)}); {hint}") from None
    return publish_once(partial, target)

"""Fetch one file over HTTP(S) into a cache once, and check it against a pinned sha256 on every use (FILM's
probing pools, LongBench's prompts, RULER's data files).

The file is written under a per-process partial name and renamed when complete, so an interrupted download
starts again; a file already there is not asked for again. A login in a URL never reaches a message.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from in2 import redact
from in2.errors import ConfigError
from in2.files import partial_path, publish_once

logger = logging.getLogger(__name__)


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
        shown = redact.userinfo(url)[0]
        raise FileNotFoundError(
            f"{field}: cannot download {what} {shown} ({getattr(e, 'reason', e)}); {hint}".replace(url, shown)
        ) from None
    return publish_once(partial, target)


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch_checked(
    url: str, target: str | Path, field: str, what: str, hint: str, sha256: str | None, sha256_field: str, pin: str = ""
) -> str:
    """`fetch`, then the file's sha256 checked against `sha256` (described by `pin`, e.g. whose file it is) on
    every call; returns it. `sha256` None: the digest of the first download, recorded beside the file
    (`<target>.sha256`), is the pin from then on. A mismatch is a ConfigError naming `sha256_field`, the file and
    both digests."""
    path = fetch(url, target, field, what, hint)
    digest = sha256_file(path)
    expected = sha256 or _recorded(path, digest, sha256_field)
    if digest != expected:
        raise ConfigError(
            f"{sha256_field}: {path} (from {redact.userinfo(url)[0]}) has sha256 {digest}, not {expected}"
            f"{pin or ('' if sha256 else ' (recorded at its first download)')}; delete it to download it again"
            + ("" if pin else f", or if the file at that URL is the one you want, set {sha256_field} to {digest}")
        )
    return digest


def _recorded(path: Path, digest: str, sha256_field: str) -> str:
    """The digest recorded beside `path` at its first download (recorded now if there is none)."""
    record = path.with_name(path.name + ".sha256")
    if not record.is_file():
        partial = partial_path(record)
        partial.write_text(digest + "\n")
        publish_once(partial, record)
        logger.warning("%s is not set: recorded %s of the first download; set it to pin the file", sha256_field, digest)
    return record.read_text().strip()

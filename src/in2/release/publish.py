"""Publish a dataset folder as a versioned Hub dataset repo: upload, then tag that commit."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from in2.errors import ConfigError

SEMVER = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
REQUIRED = ("README.md", "manifest.json", "data")


class PublishError(RuntimeError):
    """The Hub state forbids the publish as asked (e.g. the tag exists)."""


def plan(folder: str | Path, repo_id: str, version: str, private: bool = False) -> dict:
    """What would be uploaded, where, under which tag; validates the folder and the version."""
    root = Path(folder)
    missing = [name for name in REQUIRED if not (root / name).exists()]
    if missing:
        raise ConfigError(f"{root} is not an in2 dataset folder: missing {', '.join(missing)}")
    if not SEMVER.match(version):
        raise ConfigError(f"version {version!r} is not a semantic version such as v1.0.0 or 1.2.0")
    if "/" not in repo_id:
        raise ConfigError(f"repo id {repo_id!r} must look like org/name")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {
        "repo_id": repo_id,
        "repo_type": "dataset",
        "private": private,
        "tag": version,
        "files": [{"path": str(p.relative_to(root)), "bytes": p.stat().st_size} for p in files],
        "total_bytes": sum(p.stat().st_size for p in files),
        "load": f'load_dataset("{repo_id}", revision="{version}")',
    }


def publish(
    folder: str | Path,
    repo_id: str,
    version: str,
    *,
    private: bool = False,
    force: bool = False,
    keep_card: str | Path | None = None,
    api=None,
) -> dict:
    """Create the repo if needed, upload the folder, tag the commit with `version`.

    An existing tag is never moved unless `force`. Rerunning after an interrupted upload resumes:
    files already on the Hub are not sent again. The token comes from HF_TOKEN or the user's login.
    With `keep_card`, the released card is also copied there as `<org>--<name>-<version>.md` (e.g. a
    data_cards/ folder of one's own that keeps the card of every version).
    """
    report = plan(folder, repo_id, version, private)
    if api is None:
        from huggingface_hub import HfApi, get_token

        if not get_token():
            raise ConfigError("no Hugging Face token; set HF_TOKEN or run `hf auth login`")  # "token: x" is redacted
        api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    tags = {ref.name for ref in api.list_repo_refs(repo_id, repo_type="dataset").tags}
    if version in tags and not force:
        raise PublishError(f"{repo_id} already has tag {version}; publish a new version or pass --force to move it")
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type="dataset", commit_message=f"in2 dataset {version}"
    )
    if version in tags:
        api.delete_tag(repo_id, tag=version, repo_type="dataset")
    api.create_tag(repo_id, tag=version, revision=commit.oid, repo_type="dataset", tag_message=f"in2 dataset {version}")
    if keep_card is not None:
        Path(keep_card).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(folder) / "README.md", Path(keep_card) / f"{repo_id.replace('/', '--')}-{version}.md")
    return {**report, "commit": commit.oid, "moved_tag": version in tags}

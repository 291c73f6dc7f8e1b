"""Publishing against a stand-in for the Hub API (the HfApi methods we call), and decontamination."""

import hashlib
import json
from types import SimpleNamespace

import pytest

from in2.cli import main
from in2.errors import ConfigError
from in2.release import publish
from in2.synth.decontam import Decontaminator


class StandInHub:
    """The HfApi calls publish makes, holding repos, commits and tags in memory."""

    def __init__(self):
        self.repos: dict[str, dict] = {}

    def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
        if repo_id in self.repos and not exist_ok:
            raise RuntimeError("exists")
        self.repos.setdefault(repo_id, {"type": repo_type, "private": private, "commits": [], "tags": {}})

    def list_repo_refs(self, repo_id, repo_type=None):
        return SimpleNamespace(tags=[SimpleNamespace(name=t) for t in self.repos[repo_id]["tags"]])

    def upload_folder(self, repo_id, folder_path, repo_type=None, commit_message=None):
        files = {}
        from pathlib import Path

        for p in sorted(Path(folder_path).rglob("*")):
            if p.is_file():
                files[str(p.relative_to(folder_path))] = p.read_bytes()
        oid = hashlib.sha1(repr(sorted(files.items())).encode() + str(len(self.repos[repo_id]["commits"])).encode())
        self.repos[repo_id]["commits"].append((oid.hexdigest(), files))
        return SimpleNamespace(oid=oid.hexdigest())

    def create_tag(self, repo_id, tag, revision, repo_type=None, tag_message=None):
        if tag in self.repos[repo_id]["tags"]:
            raise RuntimeError("tag exists")
        self.repos[repo_id]["tags"][tag] = revision

    def delete_tag(self, repo_id, tag, repo_type=None):
        del self.repos[repo_id]["tags"][tag]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "ds"
    (root / "data" / "fine_grained").mkdir(parents=True)
    (root / "data" / "fine_grained" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 rows")
    (root / "README.md").write_text("---\nlicense: odc-by\n---\n# card v1\n")
    (root / "manifest.json").write_text(json.dumps({"content_hash": "abc"}))
    return root


def test_dry_run_prints_the_plan_and_touches_nothing(folder, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    assert main(["publish", str(folder), "--repo-id", "org/in2", "--version", "v1.0.0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "data/fine_grained/train-00000-of-00001.parquet" in out and "manifest.json" in out
    assert "3 files" in out and "org/in2" in out and "tag the commit v1.0.0" in out
    assert 'load_dataset("org/in2", revision="v1.0.0")' in out
    assert "hf_secret" not in out


def test_publish_uploads_then_tags_that_commit(folder, tmp_path):
    hub = StandInHub()
    cards = tmp_path / "cards"
    report = publish.publish(folder, "org/in2", "v1.0.0", keep_card=cards, api=hub)
    repo = hub.repos["org/in2"]
    assert repo["type"] == "dataset" and len(repo["commits"]) == 1
    oid, files = repo["commits"][0]
    assert repo["tags"] == {"v1.0.0": oid} == {"v1.0.0": report["commit"]}
    assert set(files) == {"README.md", "manifest.json", "data/fine_grained/train-00000-of-00001.parquet"}
    assert (cards / "org--in2-v1.0.0.md").read_text() == "---\nlicense: odc-by\n---\n# card v1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cards", "ds"]  # nothing written anywhere else


def test_existing_tag_is_refused_unless_forced(folder):
    hub = StandInHub()
    publish.publish(folder, "org/in2", "v1.0.0", api=hub)
    first = hub.repos["org/in2"]["tags"]["v1.0.0"]
    (folder / "README.md").write_text("# card v1 fixed\n")
    with pytest.raises(publish.PublishError, match="already has tag v1.0.0"):
        publish.publish(folder, "org/in2", "v1.0.0", api=hub)
    assert hub.repos["org/in2"]["tags"]["v1.0.0"] == first and len(hub.repos["org/in2"]["commits"]) == 1
    report = publish.publish(folder, "org/in2", "v1.0.0", api=hub, force=True)
    assert report["moved_tag"] and hub.repos["org/in2"]["tags"]["v1.0.0"] == report["commit"] != first
    publish.publish(folder, "org/in2", "v1.1.0", api=hub)
    assert set(hub.repos["org/in2"]["tags"]) == {"v1.0.0", "v1.1.0"}


@pytest.mark.parametrize("version", ["1.0", "latest", "v1.0.0.0", "01.0.0"])
def test_versions_must_be_semantic(folder, version):
    with pytest.raises(ConfigError, match="semantic version"):
        publish.plan(folder, "org/in2", version)


def test_not_a_dataset_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match="missing README.md, manifest.json, data"):
        publish.plan(tmp_path, "org/in2", "v1.0.0")


EVAL = "The committee agreed that the northern bridge would reopen to traffic after the spring floods receded."


def test_decontamination_catches_planted_overlaps_and_keeps_clean_texts():
    d = Decontaminator(10)
    d.add([EVAL, "short eval text"])
    words = EVAL.split()
    planted = "Local news. " + " ".join(words[2:12]).upper() + "!! and then other things happened."
    near_miss = "Local news. " + " ".join(words[2:11]) + " but nothing else matches here at all today."
    assert d.contaminated(planted)  # 10 shared words, case and punctuation ignored
    assert not d.contaminated(near_miss)  # 9 shared words are allowed
    assert not d.contaminated("An unrelated article about gardening tools and the best season to plant tulips.")
    assert d.stats["eval_texts"] == 2 and d.stats["eval_ngrams"] == len(words) - 10 + 1


def test_publish_without_a_token_ends_in_one_line_before_any_upload(folder, capsys, monkeypatch, tmp_path):
    """`in2 publish` (not --dry-run) with no HF_TOKEN and no stored login: exit 2 and one line naming both ways
    to log in; catches a traceback from huggingface_hub, or a token check after the upload began."""
    import huggingface_hub.constants

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-login" / "tokens"))
    assert main(["publish", str(folder), "--repo-id", "org/in2", "--version", "v1.0.0"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["in2: error: no Hugging Face token; set HF_TOKEN or run `hf auth login`"]
    assert "Traceback" not in captured.out

"""The streaming merge and release on a small scale rehearsal (benchmarks/scale_rehearsal.py's inputs):
merged shards give the same folder as one shard holding the same rows, every row arrives exactly once,
files are capped by rows and bytes, a killed merge reruns to the same folder, and an incomplete shard
is named, never merged.

Rows of a sharded job are not the rows of a one-shard job of the same config (each shard reads its own
slice of the corpus and draws its own fillers and lengths), so "equal" means: the release depends
only on the rows the shards hold, not on how many shards held them."""

import hashlib
import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmarks.scale_rehearsal import write_inputs
from in2.cli import main
from in2.synth import dataset, pipeline
from in2.synth.mixture import order_key
from tests.openai_server import CannedServer, in2_process, kill_when

SHARDS = 3
ROWS = 300
SMALL = {"min_context_tokens": 1024, "max_context_tokens": 4096, "max_length": 4608, "verify_rows": 16}
LIMITS = ["mixture.sort_buffer_mb=0.2", "mixture.max_file_mb=0.08", "mixture.rows_per_file=15"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """300 rows as 3 shards (each sorting through run files: a 0.2 MB sort buffer), then merged."""
    work = tmp_path_factory.mktemp("rehearsal")
    with pytest.MonkeyPatch.context() as mp, CannedServer() as server:
        mp.setenv("IN2_REHEARSAL_KEY", "local")
        config = write_inputs(work, ROWS, SHARDS, server.url, **SMALL)
        for i in range(SHARDS):
            assert main(["synth", "--config", str(config), "--num-shards", "3", "--shard-index", str(i), *LIMITS]) == 0
    assert main(["merge", "--config", str(config)]) == 0
    return work, config


def ids(files) -> list[str]:
    return [i for f in files for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_merge_equals_one_shard_of_the_same_rows_and_each_row_arrives_once(built):
    work, _ = built
    release, shards = work / "release", sorted((work / "release.shards").iterdir())
    m = json.loads((release / "manifest.json").read_text())
    shard_ids = ids(s / "rows.parquet" for s in shards)
    released = sorted((release / "data").rglob("*.parquet"))
    assert len(shard_ids) == len(set(shard_ids)) == sum(m["splits"].values()) == sum(m["counts"]["rows"].values())
    assert sorted(ids(released)) == sorted(shard_ids)  # every row once, none lost, none added
    assert m["counts"]["rows"] == m["requested"] and sum(m["requested"].values()) == ROWS
    seed = m["config"]["seed"]
    by_key = sorted(shard_ids, key=lambda i: order_key(seed, i))  # the released order: a seeded hash of the id
    assert sorted(ids(release.glob("data/*/validation-*.parquet"))) == sorted(by_key[: m["splits"]["validation"]])
    for part in m["counts"]["rows"]:
        train = ids(sorted(release.glob(f"data/{part}/train-*.parquet")))
        assert train == sorted(train, key=lambda i: order_key(seed, i))

    # The same rows as ONE shard, arriving in another order and sorted through run files: same release.
    rows = [r for s in shards for r in dataset.read_rows(s / "rows.parquet")]
    random.Random(1).shuffle(rows)
    one = work / "single.shards" / "shard-00000-of-00001"
    sink = dataset.SortedRows(one / "rows.parquet", seed, buffer_bytes=150_000)
    for r in rows:
        sink.add(r)
    assert sink.close() == Counter(m["counts"]["rows"]) and len(sink.runs) > 3
    shard_manifest = json.loads((shards[0] / "manifest.json").read_text())
    shard_manifest["config"]["num_shards"] = 1
    shard_manifest["counts"] = m["counts"]
    shard_manifest["rows_file"] = {"rows": len(rows), "bytes": (one / "rows.parquet").stat().st_size}
    (one / "manifest.json").write_text(json.dumps(shard_manifest))
    single = pipeline.merge(str(work / "single"))
    assert json.loads((single / "manifest.json").read_text())["content_hash"] == m["content_hash"]
    data = {k: v for k, v in file_digests(release).items() if k.startswith(("data/", "plots/"))}
    assert len(data) > 8 and data == {
        k: v for k, v in file_digests(single).items() if k.startswith(("data/", "plots/"))
    }


def test_release_files_are_capped_by_rows_and_bytes_and_load(built):
    from datasets import load_dataset

    work, _ = built
    release = work / "release"
    layout: dict[tuple[str, str], list[str]] = {}
    for f in sorted((release / "data").rglob("*.parquet")):
        split, i, n = f.stem.replace("-of-", "-").split("-")
        rows = pq.ParquetFile(f).metadata.num_rows
        layout.setdefault((f.parent.name, split), []).append((int(i), int(n), rows))
        assert f.stat().st_size <= 80_000 and rows <= 15
    for files in layout.values():  # <split>-0000i-of-0000N, i = 0..N-1
        assert [f[:2] for f in files] == [(i, len(files)) for i in range(len(files))]
    assert any(rows < 15 for files in layout.values() for *_, rows in files[:-1])  # closed for its size
    assert any(rows == 15 for files in layout.values() for *_, rows in files)  # closed for its rows
    ds = load_dataset(str(release))
    assert ds["train"].num_rows + ds["validation"].num_rows == ROWS


def test_killed_merge_reruns_to_the_same_folder(built):
    work, config = built
    release = work / "release"
    reference = file_digests(release)
    tmp = work / "release.tmp"

    def start():
        shutil.rmtree(tmp, ignore_errors=True)  # so progress counts this run's files only
        return in2_process("merge", "--config", str(config))

    def progress() -> int:
        return sum(1 for _ in (tmp / "data").rglob("*")) if (tmp / "data").is_dir() else 0

    kill_when(start, sorted(random.Random(5).sample(range(2, 12), 2)), progress)  # seeded points, in files
    assert tmp.is_dir() and file_digests(release) == reference  # the killed merge left the release as it was
    proc = in2_process("merge", "--config", str(config))
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    assert not tmp.exists() and file_digests(release) == reference


@pytest.mark.parametrize("damage", ["truncated", "left_as_tmp", "no_manifest", "no_rows"])
def test_an_incomplete_shard_is_named_never_merged(built, tmp_path, capsys, damage):
    work, config = built
    shards = tmp_path / "copy.shards"
    shutil.copytree(work / "release.shards", shards)
    victim = shards / "shard-00001-of-00003"
    if damage == "truncated":
        rows = victim / "rows.parquet"
        rows.write_bytes(rows.read_bytes()[: rows.stat().st_size // 2])
    elif damage == "left_as_tmp":  # killed before its folder was swapped in
        victim.rename(victim.with_name(victim.name + ".tmp"))
        victim = victim.with_name(victim.name + ".tmp")
    elif damage == "no_manifest":
        (victim / "manifest.json").unlink()
    else:
        (victim / "rows.parquet").unlink()
    assert main(["merge", "--config", str(config), "--output-dir", str(tmp_path / "copy")]) == 2
    err = capsys.readouterr().err
    assert f"shard folder {victim} is incomplete" in err and "rerun that shard" in err
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize(
    "edit, refused",
    [
        (
            {
                "config.generator.cache_dir": "/elsewhere/shard-1",
                "config.generator.concurrency": 3,
                "config.generator.max_cost_usd": 9.0,
                "config.generator.timeout_s": 5.0,
                "config.output_dir": "x",
            },
            None,
        ),
        ({"config.generator.temperature": 0.3}, "generator.temperature"),
        ({"prompts.fine_grained.txt": "0" * 64}, "prompt file fine_grained.txt (sha256)"),
        ({"tokenizer.sha256": "1" * 64}, "tokenizer as loaded (sha256)"),
        ({"in2_version": "0.0.1"}, "in2 version"),
    ],
)
def test_merge_ignores_runtime_fields_and_refuses_other_data(built, tmp_path, capsys, edit, refused):
    """Shards may differ in where they cache and how fast or how expensively they ask; never in what
    shapes their rows (settings, prompt files, tokenizer, in2 version)."""
    work, config = built
    shards = tmp_path / "copy.shards"
    shutil.copytree(work / "release.shards", shards)
    path = shards / "shard-00001-of-00003" / "manifest.json"
    m = json.loads(path.read_text())
    for dotted, value in edit.items():
        head, _, last = dotted.rpartition(".") if not dotted.startswith("prompts.") else ("prompts", "", dotted[8:])
        node = m
        for key in head.split(".") if head else []:
            node = node[key]
        node[last if head else dotted] = value
    path.write_text(json.dumps(m))
    code = main(["merge", "--config", str(config), "--output-dir", str(tmp_path / "copy")])
    err = capsys.readouterr().err
    if refused is None:
        assert code == 0, err
    else:
        assert code == 2 and f"shard-00001-of-00003 was built with {refused} = " in err, err
        assert not (tmp_path / "copy").exists()

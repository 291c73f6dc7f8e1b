"""recipes/film-7b/synth.slurm as shipped: 3 array tasks (the SLURM_* variables Slurm sets, no Slurm
needed) against the test server at toy size, one task killed and resubmitted alone, then the merge the
script's header gives and 2 training steps on the merged folder."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pyarrow.parquet as pq

from in2.cli import main
from tests.conftest import write_recipe
from tests.openai_server import CannedServer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "recipes" / "film-7b" / "synth.slurm"
SECRET = "sk-in2-slurm-test-4b1d"


def toy_size(url: str, evalset: Path) -> list[str]:
    """What a user appends to the script's command line ("$@") to run the FILM-7B recipe small and offline."""
    return [
        "corpus.source=builtin:pydoc",
        "corpus.name=null",
        "corpus.id_field=null",
        "corpus.max_texts=null",
        "corpus.filler_pool_texts=150",
        f"generator.base_url={url}",
        "generator.model=canned",
        "generator.api_key_env=IN2_SLURM_TEST_KEY",
        "generator.concurrency=1",
        "context.min_context_tokens=512",
        "context.max_context_tokens=1536",
        "context.num_length_buckets=4",
        "context.max_length=1792",
        "context.verify_rows=8",
        "mixture.fine_grained=12",
        "mixture.integration=3",
        "mixture.short=3",
        "mixture.general=3",
        "mixture.validation_rows=2",
        "general.source=builtin:instructions",
        "general.instruction_field=instruction",
        f"decontam.sources=[{{source: {evalset}, split: test, fields: [context]}}]",
    ]


def array_task(work: Path, index: int, extra: list[str], *more: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "SLURM_ARRAY_TASK_COUNT": "3",
        "NUM_SHARDS": "3",  # the shard count is the script's, not the array's
        "SLURM_ARRAY_TASK_ID": str(index),
        "SLURM_ARRAY_JOB_ID": "4242",
        "IN2_SLURM_TEST_KEY": SECRET,
        "TQDM_DISABLE": "1",
    }
    return subprocess.Popen(
        ["bash", str(SCRIPT), *extra, *more],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # scancel ends the whole task: the script and the in2 it started
    )


def test_the_shipped_slurm_array_merges_resumes_a_killed_task_and_trains(tmp_path, tiny_model, monkeypatch):
    work = tmp_path / "job"
    work.mkdir()
    for name in (".venv", "recipes"):  # the script runs from the repository root
        (work / name).symlink_to(ROOT / name)
    evalset = work / "eval.jsonl"
    evalset.write_text(json.dumps({"context": "one two three four five six seven eight nine ten eleven"}) + "\n")
    with CannedServer() as s:
        extra = toy_size(s.url, evalset)
        for i in (0, 2):  # tasks may differ in how they run: another concurrency and cap here
            proc = array_task(work, i, extra, *(["generator.concurrency=3", "generator.max_cost_usd=50"] * (i == 2)))
            assert proc.wait(timeout=300) == 0, proc.stdout.read()
        before = sum(s.answered.values())

        task = array_task(work, 1, extra)  # killed (scancel, a node lost) after 5 answers
        s.on_request = lambda answered: answered >= before + 5 and os.killpg(task.pid, signal.SIGKILL) is None
        assert task.wait(timeout=300) == -signal.SIGKILL
        s.on_request = None
        assert (work / "data/in2-film-7b.shards/shard-00001-of-00003.tmp").exists() or not (
            work / "data/in2-film-7b.shards/shard-00001-of-00003"
        ).exists()
        proc = array_task(work, 1, extra)  # resubmitted alone
        assert proc.wait(timeout=300) == 0, proc.stdout.read()
        assert max(s.answered.values()) == 1  # no request answered twice across tasks, the kill and the rerun
    for i in range(3):  # each task had its own cache folder, as the script says
        assert (work / f".cache/in2/llm/shard-{i}/requests.sqlite").is_file()

    monkeypatch.chdir(work)  # the merge of the script's header, from the same folder
    assert main(["merge", "--config", "recipes/film-7b/in2_data.yaml"]) == 0
    release = work / "data/in2-film-7b"
    m = json.loads((release / "manifest.json").read_text())
    assert m["counts"]["rows"] == m["requested"] == {"fine_grained": 12, "integration": 3, "short": 3, "general": 3}
    assert m["usage"]["spent_usd_all_runs"] > m["usage"]["spent_usd_this_run"]  # the killed run's spend too
    ids = [i for f in release.rglob("*.parquet") for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]
    assert len(ids) == len(set(ids)) == 21
    for f in work.rglob("*"):
        assert not f.is_file() or f.is_symlink() or SECRET not in f.read_text(errors="ignore")

    recipe = write_recipe(
        tmp_path, tiny_model, release.resolve(), max_steps=2, max_length=1792, per_device_train_batch_size=1
    )
    assert main(["train", "--config", str(recipe)]) == 0
    state = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and all(log["loss"] > 0 for log in state["log_history"] if "loss" in log)

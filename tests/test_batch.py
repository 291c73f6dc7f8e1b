"""Batch generation (in2.llm.batch_backend) against the batch endpoints of the real test server:
kill -9 at every stage, faults, bounded retries, and the released dataset of the batch backends."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.openai_server import CannedServer

ROOT = Path(__file__).resolve().parents[1]
N = 20


def _run(url: str, cache: Path, *fields: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.batch_run", url, str(cache), str(N), "batch_max_requests=8", *fields],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _result(proc: subprocess.Popen) -> dict:
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_kill9_at_every_batch_stage_answers_each_request_once_with_the_same_answers(tmp_path):
    from tests.batch_run import prompts

    reference = hashlib.sha256("\n".join(_expected(prompts(N))).encode()).hexdigest()  # what the server answers
    with CannedServer() as s:
        cache = tmp_path / "crash"
        start = lambda: _run(s.url, cache)  # noqa: E731
        s.kill_on(start, "upload", 2)  # batch 1 uploaded, batch 2's upload unanswered
        s.kill_on(start, "create", 1)  # batch 1 made on the server, its id never reaches the client
        s.kill_on(start, "retrieve", 2)  # polling
        s.kill_on(start, "content", 1)  # downloading outputs
        s.kill_on(lambda: _run(s.url, cache, "die_after_puts=4"), "never")  # kill -9 while answers go into the cache
        assert len(s.batches) == 3  # 20 requests, 8 a batch: the one made before its id was saved was found again
        result = _result(_run(s.url, cache))
    assert result["sha256"] == reference and result["failures"] == 0
    assert max(s.answered.values()) == 1 and len(s.answered) == N  # every request answered once
    assert result["usage"]["requests_sent"] + result["usage"]["requests_cached"] == N


def _engine(url: str, cache: Path, **fields):
    from in2.llm import Engine
    from in2.llm.config import GeneratorConfig

    cfg = GeneratorConfig(
        **{
            "backend": "openai_batch",
            "model": "canned",
            "base_url": url,
            "gguf_file": None,
            "cache_dir": str(cache),
            "batch_poll_s": 0.0,
            "batch_max_requests": 8,
            "max_retries": 0,
            **fields,
        }
    )
    return Engine(cfg, job="batch test")


def _expected(requests) -> list[str]:
    from in2.llm.batch_backend import body
    from tests.openai_server import canned_answer

    sampling = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 512}
    return [canned_answer(body(r, sampling, "canned")) for r in requests]


def test_failed_expired_error_and_slow_batches_end_with_every_request_answered_once(tmp_path, monkeypatch):
    from tests.batch_run import prompts

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    requests = prompts(N)
    with CannedServer() as s:
        s.batch_faults = {1: "failed", 2: "expired", 3: "errors", 4: "slow", 5: "cancelled"}
        engine = _engine(s.url, tmp_path / "c")
        out = engine.generate(requests)
        engine.close()
        assert [r.text for r in out] == _expected(requests)
        # 8 + 8 + 4 requests; then again what the failed batch (8), the expired one (4 of 8) and the error
        # lines (1 of 4) did not answer: 13 in 8 + 5; then the 3 of 5 the cancelled batch did not answer
        statuses = [b["status"] for b in s.batches.values()]
        assert statuses == ["failed", "expired", "completed", "completed", "cancelled", "completed"]
        assert [b["request_counts"]["total"] for b in s.batches.values()] == [8, 8, 4, 8, 5, 3]
        assert max(s.answered.values()) == 1 and len(s.answered) == N
        assert s.batches["batch_0004"]["polls"] >= s.slow_polls
        assert engine.usage.sent == N and not engine.usage.failed


def test_requests_no_batch_answers_fail_after_batch_attempts_and_refused_ones_are_not_resent(tmp_path, monkeypatch):
    from in2.llm.batch_backend import status
    from in2.synth.qa import FAILED, passing
    from tests.batch_run import prompts

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    requests = prompts(4)
    with CannedServer() as s:
        s.batch_faults = {1: "failed", 2: "failed", 3: "failed", 4: "failed", 5: "failed", 6: "failed"}
        engine = _engine(s.url, tmp_path / "c", batch_attempts=3)
        out = engine.generate(requests)
        engine.close()
        assert {r.error for r in out} == {"batch_attempts_exhausted"} and len(s.batches) == 3
        assert [row["status"] for row in status(engine.cfg)] == ["failed"] * 3
        # a whole batch that failed is not the requests' fault: a rerun (the quota raised, say) tries again,
        # batch_attempts more times, without resending the earlier batches...
        engine = _engine(s.url, tmp_path / "c", batch_attempts=3)
        assert {r.error for r in engine.generate(requests)} == {"batch_attempts_exhausted"} and len(s.batches) == 6
        engine.close()
        # ...and once the server answers, the rerun gets every answer in one new batch
        engine = _engine(s.url, tmp_path / "c", batch_attempts=3)
        assert [r.error for r in engine.generate(requests)] == [None] * 4 and len(s.batches) == 7
        engine.close()
    assert not passing(FAILED + "batch_attempts_exhausted")  # in2 synth: a reject in the manifest, not asked again

    with CannedServer() as s:
        s.batch_faults = {1: "refused"}  # every third line: HTTP 400, an answer about the request itself
        engine = _engine(s.url, tmp_path / "r")
        out = engine.generate(requests)
        engine.close()
        assert [r.error for r in out] == [None, "http_400", None, None] and len(s.batches) == 1


def manifest_usage(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["usage"]


def _hash(folder: Path) -> str:
    return json.loads((folder / "manifest.json").read_text())["content_hash"]


def test_both_batch_backends_release_the_same_dataset_as_the_synchronous_one(tmp_path, monkeypatch, capsys):
    """openai (synchronous), openai_batch (Batch API) and batch_files through the shipped Slurm script
    (vLLM run-batch: tests/vllm_stand_in.py) against one canned server: the same content hash."""
    from in2.cli import main
    from tests.test_synth import SECRET, write_config

    monkeypatch.setenv("IN2_TEST_API_KEY", SECRET)
    with CannedServer() as s:
        prices = ["generator.price_input_per_1m=10", "generator.price_output_per_1m=30"]
        assert main(["synth", "--config", str(write_config(tmp_path, s.url, name="sync")), *prices]) == 0
        synchronous = sum(s.answered.values())
        cfg = write_config(tmp_path, s.url, name="batch")
        batch = [
            "generator.backend=openai_batch",
            "generator.batch_poll_s=0",
            "generator.batch_max_requests=10",
            *prices,
        ]
        assert main(["synth", "--config", str(cfg), *batch]) == 0
        assert sum(s.answered.values()) == 2 * synchronous  # every request once more, all through batches
        assert len(s.batches) >= 2 and all(b["status"] == "completed" for b in s.batches.values())
        capsys.readouterr()
        assert main(["synth", "--config", str(cfg), *batch, "--batch-status"]) == 0
        status = capsys.readouterr().out.splitlines()
        rows = [json.loads(line) for line in status[:-1]]
        assert [r["batch_id"] for r in rows] == list(s.batches) and sum(r["answered"] for r in rows) == synchronous
        assert status[-1].startswith(f"{len(rows)} batches, {synchronous} requests answered")

    m = json.loads((tmp_path / "batch" / "manifest.json").read_text())
    assert _hash(tmp_path / "batch") == _hash(tmp_path / "sync")
    # the same requests through the Batch API cost batch_price_factor (0.5) of the synchronous price
    spent = {name: manifest_usage(tmp_path / name)["spent_usd_this_run"] for name in ("sync", "batch")}
    assert spent["sync"] > 0 and spent["batch"] == pytest.approx(spent["sync"] / 2, rel=1e-3)
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(spent["batch"], abs=1e-3)
    assert sum(sum(p["rejected"].values()) for p in m["qa_by_part"].values()) == sum(m["rejected"].values())
    assert sum(p["planned"] for p in m["qa_by_part"].values()) == m["counts"]["qa"]["planned"]

    # batch_files through the shipped Slurm script, its vLLM a stand-in: in2 stops (exit 5) saying what to run
    files = write_config(tmp_path, "http://127.0.0.1:9/v1", name="files")
    env = {
        **os.environ,
        "MODEL": "canned",
        "CONFIG": str(files),
        "CACHE": str(tmp_path / "files-cache"),
        "VENV": str(ROOT / ".venv"),
        "VLLM": f"{sys.executable} {ROOT / 'tests' / 'vllm_stand_in.py'}",
        "TQDM_DISABLE": "1",
        "FILE_REQUESTS": "10",  # several files per round here (the default, 200,000, makes one)
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "recipes/film-7b/synth_vllm_batch.slurm")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "in2: waiting:" in proc.stderr and "vllm run-batch -i " in proc.stderr and " --model canned" in proc.stderr
    assert _hash(tmp_path / "files") == _hash(tmp_path / "sync")
    inputs = list((tmp_path / "files-cache" / "batches").glob("*.input.jsonl"))
    assert len(inputs) >= 2 and max(len(f.read_text().splitlines()) for f in inputs) <= 10


def test_dry_run_prices_replies_at_a_pilots_length_counts_hours_batches_and_rejects_per_part(tmp_path, capsys):
    from in2.cli import main
    from tests.test_synth import write_config

    pilot = tmp_path / "pilot.json"  # what `in2 synth` writes: usage, counts.qa and qa_by_part
    pilot.write_text(
        json.dumps(
            {
                "usage": {"requests_sent": 90, "requests_cached": 10, "completion_tokens": 4000},
                "counts": {"qa": {"planned": 100}},
                "rejected": {"ungrounded": 6, "no_pieces": 10},
                "qa_by_part": {
                    "fine_grained": {"planned": 60, "rejected": {"ungrounded": 6}},
                    "integration": {"planned": 20, "rejected": {"no_pieces": 10}},
                    "short": {"planned": 20, "rejected": {}},
                },
            }
        )
    )
    cfg = write_config(tmp_path, "http://127.0.0.1:9/v1")
    fields = [
        "generator.price_input_per_1m=10",
        "generator.price_output_per_1m=30",
        "generator.requests_per_minute=60",
        "generator.tokens_per_minute=6000",
        "generator.batch_max_requests=5",
    ]

    def dry_run(*more: str) -> dict:
        assert main(["synth", "--config", str(cfg), "--dry-run", *fields, *more]) == 0
        out = capsys.readouterr().out
        return json.loads(out[: out.rindex("}") + 1])

    r = dry_run("--pilot", str(pilot))
    assert r["reply_tokens"]["value"] == 40 and r["reply_tokens"]["source"].startswith("measured: 100 answers")
    assert r["expected_reject_rate"] == {"fine_grained": 0.1, "integration": 0.5, "short": 0.0}
    waves = r["items_per_wave"]
    assert waves["integration"][:2] == [4, 2] and waves["short"] == [4]  # 3 rows x 1.3, half rejected
    assert r["expected_rejects"] == {p: round(sum(w) * r["expected_reject_rate"][p]) for p, w in waves.items()}
    n, prompt = r["requests"], r["prompt_tokens"]
    assert r["completion_tokens_realistic"] == 40 * n
    assert r["estimated_cost_usd_realistic"] == pytest.approx((prompt * 10 + 40 * n * 30) / 1e6, abs=0.01)
    assert r["batch"]["estimated_cost_usd_realistic"] == pytest.approx(r["estimated_cost_usd_realistic"] / 2, abs=0.01)
    assert r["hours_under_rate_limits"] == pytest.approx(max(n / 60, (prompt + 40 * n) / 6000) / 60, abs=0.01)
    rounds = [sum(w[k] for w in waves.values() if k < len(w)) for k in range(r["expected_waves"])]
    assert r["batch"]["waves"] == len(rounds) and r["batch"]["batches"] == sum(-(-k // 5) for k in rounds)

    r = dry_run()  # no pilot: the documented estimate
    assert r["reply_tokens"]["source"].startswith("estimate:") and r["reject_rate_source"] == "qa.expected_reject_rate"

    assert main(["synth", "--config", str(cfg), "--dry-run", "--pilot", str(tmp_path / "none.json")]) == 2
    assert "--pilot" in capsys.readouterr().err


def test_the_batch_benchmark_runs_at_toy_size(capsys):
    """benchmarks/batch_throughput.py as shipped, 300 requests; its figures are printed, not asserted."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("batch_throughput", ROOT / "benchmarks" / "batch_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--requests", "300", "--no-write"])
    engine, backend = results
    assert engine["answered"] == engine["ingested"] == backend["answered"] == 300
    assert engine["batches"] == 1 and engine["files"] == 4  # state, ids, requests, outputs
    assert capsys.readouterr().out.count("| batch path, ") == 2


def test_an_unreachable_batch_api_stops_with_one_line_and_keeps_the_written_files(tmp_path, monkeypatch):
    from in2.llm.base import FatalRequestError
    from tests.batch_run import prompts

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    engine = _engine("http://127.0.0.1:9/v1", tmp_path / "c")
    with pytest.raises(
        FatalRequestError, match=r"^http://127\.0\.0\.1:9/v1 batch API: Connection error\. \(the batches"
    ):
        engine.generate(prompts(3))
    engine.close()
    states = [json.loads(p.read_text()) for p in (tmp_path / "c" / "batches").glob("*.json")]
    assert [s["status"] for s in states] == ["written"]  # the next run uploads this file, it writes no other


def test_prefill_runs_one_round_of_batches_per_field_as_the_dry_run_counts(tmp_path, monkeypatch, capsys):
    """Prefill items need their fields in sequence (2 requests; 3 for integration): each field is a round of
    batches, answered before the next is written, and the dry run counts those rounds."""
    from in2.cli import main
    from tests.test_synth import SECRET, write_config

    monkeypatch.setenv("IN2_TEST_API_KEY", SECRET)
    with CannedServer() as s:
        cfg = write_config(tmp_path, s.url)
        fields = ["generator.backend=openai_batch", "generator.batch_poll_s=0", "generator.prefill=true"]
        assert main(["synth", "--config", str(cfg), "--dry-run", *fields, "qa.expected_reject_rate=0.0"]) == 0
        out = capsys.readouterr().out
        report = json.loads(out[: out.rindex("}") + 1])
        assert main(["synth", "--config", str(cfg), *fields]) == 0
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["counts"]["qa"]["waves"] == report["expected_waves"] == 1  # one wave: its rejects left no row missing
    assert len(s.batches) == report["batch"]["waves"] == report["batch"]["batches"] == 3  # one batch per field
    sizes = [b["request_counts"]["total"] for b in s.batches.values()]
    assert sizes[0] >= sizes[1] > sizes[2] > 0  # every item's question, answer, then integration items' pieces
    assert max(s.answered.values()) == 1


def test_batch_cancel_stops_live_batches_and_the_rerun_finishes_the_run(tmp_path, monkeypatch, capsys):
    """`in2 synth --batch-cancel` after a run killed while polling: its live batches are cancelled on the server
    (nothing else is), a second cancel finds none, and the rerun keeps what they answered and sends the rest
    once. Catches a cancel that misses a live batch, cancels an ended one, or whose batches the rerun waits on
    or sends again whole."""
    from in2.cli import main
    from tests.batch_run import prompts
    from tests.test_synth import SECRET, write_config

    monkeypatch.setenv("IN2_TEST_API_KEY", SECRET)
    with CannedServer() as s:
        cache = tmp_path / "run"
        s.slow_polls = 10**6
        s.batch_faults = {2: "slow", 3: "slow"}  # batch 1 ends at its 2nd poll; 2 and 3 stay in progress
        s.kill_on(lambda: _run(s.url, cache), "retrieve", 6)
        assert [b["status"] for b in s.batches.values()] == ["completed", "in_progress", "in_progress"]
        cfg = write_config(tmp_path, s.url)
        fields = ["generator.backend=openai_batch", f"generator.cache_dir={cache}"]
        capsys.readouterr()
        assert main(["synth", "--config", str(cfg), *fields, "--batch-cancel"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert [json.loads(line)["batch_id"] for line in out[:-1]] == ["batch_0002", "batch_0003"]
        assert out[-1].startswith("2 live batches cancelled")
        assert [b["status"] for b in s.batches.values()] == ["completed", "cancelled", "cancelled"]
        assert main(["synth", "--config", str(cfg), *fields, "--batch-cancel"]) == 0
        assert capsys.readouterr().out.startswith("0 live batches cancelled")
        answered_before = dict(s.answered)
        result = _result(_run(s.url, cache))
    assert result["failures"] == 0 and len(s.answered) == N
    assert max(s.answered.values()) == 1 and set(answered_before) < set(s.answered)  # the rest sent once
    assert len(s.batches) == 4  # one new batch for what the two cancelled ones did not answer
    expected = hashlib.sha256("\n".join(_expected(prompts(N))).encode()).hexdigest()
    assert result["sha256"] == expected


def test_openais_file_limits_bind_its_batch_api_only():
    """batch_files feeds `vllm run-batch`, which loads the model once per file: its files may be far larger."""
    from in2.errors import ConfigError
    from in2.llm.config import GeneratorConfig, generator_checks
    from in2.recipes import raise_first

    big = {"batch_max_requests": 200_000, "batch_max_mb": 4000.0}
    raise_first(generator_checks(GeneratorConfig(backend="batch_files", **big), "generator"))
    with pytest.raises(ConfigError, match=r"generator.batch_max_requests must be at most 50000 .* openai_batch"):
        raise_first(generator_checks(GeneratorConfig(backend="openai_batch", **big), "generator"))

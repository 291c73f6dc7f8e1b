"""Servers managed by `in2 eval` (in2.evaluation.serve), with a stand-in for `vllm serve` that serves the
project's test server (tests/vllm_serve_stand_in.py): started on a free port, waited for, used by every suite,
stopped on success, error, Ctrl-C, SIGTERM and kill -9 of in2, never left behind."""

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from in2.errors import ConfigError
from in2.evaluation import serve
from in2.evaluation.config import EvalConfig
from in2.recipes import from_dict
from tests.conftest import MISTRAL
from tests.openai_server import in2_process

STAND_IN = [sys.executable, str(Path(__file__).with_name("vllm_serve_stand_in.py"))]


ENTITIES = [("Q101", "heapq.heappush", "Push item onto heap"), ("Q202", "operator.truth", "Return True if a is true"),
            ("Q303", "typing.Optional", "Optional type"), ("Q404", "ntpath.isabs", "Test whether a path is absolute"),
            ("Q505", "glob.escape", "Escape all special characters")]  # fmt: skip


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    return write_probes(tmp_path_factory.mktemp("probes"))


def write_probes(folder: Path) -> Path:
    """A VaL database probe in FILM's layout (one set of 5 entities, every position queried), used as built."""
    folder.mkdir(exist_ok=True)
    context = "\n".join(f"<id: {i}, label: {label}, description: {d}>" for i, label, d in ENTITIES)
    rows = [
        {
            "prompt": "[INST] Below is a context and an instruction. Based on the information provided in the context, "
            f"write a response for the instruction.\n\n### Context:\n{context}\n\n### Instruction:\nIn above "
            f"context , what is the label and description for the query where the id is {i} ? [/INST]",
            "label": label,
            "description": d,
            "position_id": p,
            "set_id": 0,
        }
        for p, (i, label, d) in enumerate(ENTITIES)
    ]
    (folder / "database_forward_512.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "database_forward_512_skip_list.json").write_text("[]")
    return folder


def _recipe(tmp_path: Path, probes: Path, models: list[dict], **fields) -> dict:
    return {
        "tokenizer": MISTRAL,
        "probes": {"tasks": ["database"], "lengths": [512], "span_size": 5, "prebuilt": str(probes)},
        "models": models,
        "output_dir": str(tmp_path / "results"),
        **fields,
    }


def _served(tmp_path: Path, name: str = "served", model: str = "org/model-7b", args=(), **serve_fields) -> dict:
    return {
        "name": name,
        "generator": {"backend": "openai", "model": model, "cache_dir": str(tmp_path / "cache"), "concurrency": 2},
        "serve": {"command": STAND_IN, "args": list(args), "startup_timeout_s": 60, **serve_fields},
    }


def stand_in_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"^stand-in pid (\d+)", log.read_text(), re.M)]


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_managed_server_answers_every_suite_and_is_stopped(tmp_path, probes):
    """vLLM's command line on a free port, the log in results/servers/, full marks through it, and the server
    gone afterwards: here one that ignores SIGTERM, so the group is SIGKILLed after stop_timeout_s."""
    from in2.evaluation import suite

    model = _served(tmp_path, args=["--max-model-len", "4096", "--ignore-sigterm"], stop_timeout_s=0.5)
    out = suite.evaluate(from_dict(EvalConfig, _recipe(tmp_path, probes, [model])))
    log = out / "servers" / "served.log"
    argv = json.loads(re.search(r"argv (\[.*\])", log.read_text()).group(1))
    assert argv[:4] == ["serve", "org/model-7b", "--host", "127.0.0.1"] and argv[6:] == model["serve"]["args"]
    assert "request 1" in log.read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["probing"]["models"]["served"]["all"]["512"]["avg"] == pytest.approx(100.0)
    assert results["config"]["models"][0]["generator"]["base_url"] is None  # the recipe as written
    (pid,) = stand_in_pids(log)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the server was left running")

    # a rerun (another free port) is answered from the cache: the cache names the command, not the port
    again = suite.evaluate(
        from_dict(EvalConfig, _recipe(tmp_path, probes, [model], output_dir=str(tmp_path / "again")))
    )
    log2 = (again / "servers" / "served.log").read_text()
    assert json.loads(re.search(r"argv (\[.*\])", log2).group(1))[5] != argv[5]  # not the same port
    assert "request 1" not in log2  # nothing asked again
    assert (
        json.loads((again / "results.json").read_text())["probing"]["models"]["served"]
        == (results["probing"]["models"]["served"])
    )
    with serve.socket.socket() as taken:  # a fixed port in use: one line before anything starts
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        fixed = _served(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(ConfigError, match=rf"served: serve.port {fixed['serve']['port']} is in use"):
            suite.evaluate(from_dict(EvalConfig, _recipe(tmp_path, probes, [fixed], output_dir=str(tmp_path / "x"))))


def test_an_api_key_in_the_servers_arguments_reaches_it_by_environment_and_never_its_log(tmp_path, probes):
    """`--api-key` moves to VLLM_API_KEY (not on a command line `ps` shows) and what the server prints is
    redacted line by line: vLLM echoes its arguments, the key among them."""
    import hashlib

    from in2.evaluation import suite

    key = "sk-in2test-" + "q7" * 12
    model = _served(tmp_path, args=["--api-key", key, "--fail-at-start"])
    cfg = from_dict(EvalConfig, _recipe(tmp_path, probes, [model]))
    with pytest.raises(serve.ServerError) as e:
        suite.evaluate(cfg)
    log = (Path(cfg.output_dir) / "servers" / "served.log").read_text()
    assert f"sha256 {hashlib.sha256(key.encode()).hexdigest()[:12]}" in log  # the server got the key
    assert "--api-key" not in log and key not in log and key not in str(e.value)
    assert "non-default args" in log and "the model does not fit" in log  # the rest of what it printed


def test_a_server_that_fails_to_start_is_reported_with_its_log(tmp_path, probes):
    from in2.evaluation import suite

    cfg = from_dict(EvalConfig, _recipe(tmp_path, probes, [_served(tmp_path, args=["--fail-at-start"])]))
    start = time.monotonic()
    with pytest.raises(serve.ServerError) as e:
        suite.evaluate(cfg)
    assert time.monotonic() - start < 30  # the exit is noticed, not waited out (startup_timeout_s is 60)
    log = Path(cfg.output_dir) / "servers" / "served.log"
    assert "served: the server exited with status 1" in str(e.value) and str(log) in str(e.value)
    assert "the model does not fit" in str(e.value)  # the log's last lines
    cfg = from_dict(EvalConfig, _recipe(tmp_path, probes, [_served(tmp_path, args=["--never-ready"])]))
    cfg.models[0].serve.startup_timeout_s = 1.0
    with pytest.raises(serve.ServerError, match=r"did not answer .*/models within 1 s .*startup_timeout_s") as e:
        suite.evaluate(cfg)
    assert "--never-ready" in str(e.value)
    assert not any(alive(p) for p in stand_in_pids(log))


def test_serve_fields_are_checked(tmp_path, probes):
    from in2.errors import ConfigError

    model = _served(tmp_path)
    model["generator"]["base_url"] = "http://localhost:8000/v1"
    with pytest.raises(ConfigError, match=r"models\[0\].generator.base_url must be left out with serve"):
        from_dict(EvalConfig, _recipe(tmp_path, probes, [model])).validate()
    model = _served(tmp_path, engine="sglang")
    with pytest.raises(ConfigError, match=r"models\[0\].serve.engine must be one of vllm"):
        from_dict(EvalConfig, _recipe(tmp_path, probes, [model])).validate()


def test_a_lora_folder_is_served_with_its_base(tmp_path):
    folder = tmp_path / "film-7b-lora"
    folder.mkdir()
    config = {"base_model_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2", "r": 64, "peft_type": "LORA"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    cmd = serve.command(serve.ServeConfig(args=["--max-model-len", "32768"]), str(folder), 8123)
    assert cmd == [
        "vllm", "serve", "mistralai/Mistral-7B-Instruct-v0.2", "--host", "127.0.0.1", "--port", "8123",
        "--enable-lora", "--lora-modules", f"{folder}={folder}", "--max-lora-rank", "64", "--max-model-len", "32768",
    ]  # fmt: skip
    named = serve.command(serve.ServeConfig(model="/models/film-7b"), "In2Training/FILM-7B", 8000)
    assert named[2] == "/models/film-7b" and named[-2:] == ["--served-model-name", "In2Training/FILM-7B"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_server_is_left_when_in2_eval_is_interrupted(tmp_path, probes, sig):
    """Ctrl-C and SIGTERM: in2's cleanup stops the server (one that ignores SIGTERM, so only the cleanup's
    SIGKILL can end it); kill -9 of in2: the death signal the server was started with (Linux)."""
    ignore = ["--ignore-sigterm"] if sig != signal.SIGKILL else []
    model = _served(tmp_path, args=["--latency", "0.5", *ignore], stop_timeout_s=0.5)
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(_recipe(tmp_path, probes, [model])))
    proc = in2_process("eval", "--config", str(tmp_path / "eval.yaml"))
    log = tmp_path / "results" / "servers" / "served.log"
    deadline = time.monotonic() + 120
    while not (log.is_file() and "request 1" in log.read_text()):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (pid,) = stand_in_pids(log)
    try:
        proc.send_signal(sig)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 10  # kill -9: the server's own SIGTERM handling takes a moment
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
        assert proc.returncode != 0 and not (tmp_path / "results" / "results.json").exists()
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)

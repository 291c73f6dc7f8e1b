"""Servers started and stopped by `in2 eval`: a model entry with `serve: {engine: vllm, args: [...]}` gets an
OpenAI-compatible server of its own for the time its suites run.

in2 picks a free port (or `serve.port`), starts `vllm serve MODEL --host 127.0.0.1 --port PORT ARGS` in a
process group of its own with its output in `<output_dir>/servers/<model>.log`, waits until GET /v1/models
answers (at most `serve.startup_timeout_s`; a server that exits or never answers is one error naming the
log and quoting its last lines), points the model's generator at it, and stops the whole group (SIGTERM,
then SIGKILL after `serve.stop_timeout_s`) when the model's suites end: on success, on an error, on Ctrl-C
and on SIGTERM. On Linux the server is also told to stop (SIGTERM) if `in2 eval` itself is killed -9.

A LoRA or QLoRA checkpoint (a folder with adapter_config.json) is served with its base:
`vllm serve BASE --enable-lora --lora-modules NAME=FOLDER --max-lora-rank R`, where NAME is the entry's
`generator.model` (the folder), the name the requests ask for; or merge it first with `in2 export`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from in2 import redact
from in2.errors import ConfigError
from in2.llm.config import GeneratorConfig
from in2.recipes import option

ENGINES = ("vllm",)
LOG_LINES = 20  # of the server's log quoted in an error


class ServerError(RuntimeError):
    """A managed server did not start (it exited, or never answered in time)."""


@dataclass
class ServeConfig:
    """How `in2 eval` starts this model's server (in2.evaluation.serve)."""

    engine: str = option("vllm", "The server: vllm (`vllm serve`, OpenAI-compatible).")
    args: list[str] = option(
        factory=list, doc="More arguments for the server, e.g. [--max-model-len, '32768', --tensor-parallel-size, '1']."
    )
    model: str | None = option(
        None,
        "What the server loads; None: generator.model, or for a LoRA/QLoRA folder (adapter_config.json) the "
        "base model its adapter_config.json names.",
    )
    command: list[str] | None = option(
        None,
        "The executable (with leading arguments) run instead of `vllm`, e.g. [python, -m, vllm.entrypoints.cli.main]; "
        "in2 appends `serve MODEL --host --port` and `args`.",
    )
    port: int | None = option(None, "Port to serve on; None: a free one. A fixed port must be free when in2 starts.")
    startup_timeout_s: float = option(
        1800.0, "Seconds to wait for GET /v1/models to answer (loading 7B weights and CUDA graphs takes minutes)."
    )
    stop_timeout_s: float = option(60.0, "Seconds between SIGTERM and SIGKILL when stopping the server.")
    env: dict[str, str] = option(
        factory=dict, doc="Environment variables for the server, e.g. {CUDA_VISIBLE_DEVICES: '0'}."
    )


def serve_checks(serve: ServeConfig, generator: GeneratorConfig, where: str) -> list[tuple[bool, str, str]]:
    return [
        (serve.engine not in ENGINES, f"{where}.serve.engine", f"must be one of {', '.join(ENGINES)}"),
        (
            generator.backend != "openai",
            f"{where}.generator.backend",
            "must be openai with serve (in2 starts a server)",
        ),
        (
            generator.base_url is not None,
            f"{where}.generator.base_url",
            "must be left out with serve: in2 starts the server and sets it",
        ),
        (serve.startup_timeout_s <= 0, f"{where}.serve.startup_timeout_s", "must be > 0"),
        (serve.stop_timeout_s <= 0, f"{where}.serve.stop_timeout_s", "must be > 0"),
        (serve.command is not None and not serve.command, f"{where}.serve.command", "must name an executable"),
        (serve.port is not None and not 0 < serve.port < 65536, f"{where}.serve.port", "must be 1-65535"),
    ]


def adapter(folder: str) -> dict | None:
    """adapter_config.json of a PEFT adapter folder, or None."""
    path = Path(folder) / "adapter_config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def command(serve: ServeConfig, model: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """The server's command line for `model` (the name requests ask for)."""
    lora = adapter(model)
    loads = serve.model or (lora["base_model_name_or_path"] if lora else model)
    cmd = [*(serve.command or ["vllm"]), "serve", loads, "--host", host, "--port", str(port)]
    if not lora and loads != model:
        cmd += ["--served-model-name", model]
    if lora:
        cmd += ["--enable-lora", "--lora-modules", f"{model}={model}", "--max-lora-rank", str(_lora_rank(lora["r"]))]
    return cmd + list(serve.args)


def _lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of rank `r` (at least 16)."""
    return next((n for n in LORA_RANKS if n >= max(16, r)), max(16, r))


def free_port(host: str = "127.0.0.1", port: int = 0) -> int:
    """`port` if nothing listens on it (0: one the system picks); OSError if it is taken."""
    with socket.socket() as s:
        s.bind((host, port))
        return s.getsockname()[1]


LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The --max-lora-rank values vLLM accepts."""


def tail(log: Path, lines: int = LOG_LINES) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    return redact.text("\n".join(text.rstrip("\n").split("\n")[-lines:]))


def _death_signal():
    """A function for the child to run before exec (Linux): SIGTERM when in2 dies. libc is loaded here, in the
    parent: the child of a process with threads may only call what needs no import or lock."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """One server process group: `start()`, `wait_ready()`, `stop()`."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str], url: str):
        self.name, self.cmd, self.log, self.env, self.url = name, cmd, log, env, url
        self.proc: subprocess.Popen | None = None
        self.copier: threading.Thread | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        cmd, env = key_to_env(self.cmd, self.env)  # not on a command line every user of the node can list
        out = open(self.log, "w")  # noqa: SIM115 (the copying thread closes it)
        out.write(f"$ {redact.text(shlex.join(cmd))}\n")
        out.flush()
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
                start_new_session=True,  # its own process group: stop() takes its workers down with it
                preexec_fn=_death_signal() if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        except OSError:
            out.close()
            raise
        # vLLM prints its arguments and environment: every line is redacted on its way to the log
        self.copier = threading.Thread(target=_copy_redacted, args=(self.proc.stdout, out), daemon=True)
        self.copier.start()

    def models(self) -> list[str] | None:
        """The model names the server lists, or None while it does not answer."""
        try:
            with urllib.request.urlopen(self.url + "/models", timeout=5) as r:  # noqa: S310 (our own server)
                return [m["id"] for m in json.loads(r.read()).get("data", [])]
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout_s: float) -> list[str]:
        start, pause = time.monotonic(), 0.05
        while True:
            if self.proc.poll() is not None:
                self.drain()
                raise ServerError(
                    f"{self.name}: the server exited with status {self.proc.returncode} before answering; its log {self.log} "
                    f"ends:\n{tail(self.log)}"
                )
            served = self.models()
            if served is not None:
                return served
            if time.monotonic() - start > timeout_s:
                raise ServerError(
                    f"{self.name}: the server did not answer {self.url}/models within {timeout_s:g} s (serve.startup_timeout_s); "
                    f"its log {self.log} ends:\n{tail(self.log)}"
                )
            time.sleep(pause)
            pause = min(2.0, pause * 1.5)

    def stop(self, timeout_s: float) -> None:
        """SIGTERM to the whole group, SIGKILL to whatever is left after `timeout_s`; returns when none is left."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 30.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()  # reap the leader
                if not _group_alive(pgid):
                    self.drain()
                    return
                time.sleep(0.05)
        self.proc.wait(timeout=5)

    def drain(self) -> None:
        """Wait (briefly) until what the server printed is in its log."""
        if self.copier is not None:
            self.copier.join(timeout=5)


def key_to_env(cmd: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """`--api-key KEY` (or `--api-key=KEY`) in a server's command moved to VLLM_API_KEY, which vLLM reads the
    same way."""
    out, env = [], dict(env)
    i = 0
    while i < len(cmd):
        if cmd[i] == "--api-key" and i + 1 < len(cmd):
            env["VLLM_API_KEY"] = cmd[i + 1]
            i += 2
            continue
        if cmd[i].startswith("--api-key="):
            env["VLLM_API_KEY"] = cmd[i].split("=", 1)[1]
        else:
            out.append(cmd[i])
        i += 1
    return out, env


def _copy_redacted(stream, out) -> None:
    with stream, out:
        for line in iter(stream.readline, b""):
            out.write(redact.text(line.decode("utf-8", errors="replace")))
            out.flush()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (so `finally` stops the server) instead of ending
    the process on the spot."""

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def serving(name: str, generator: GeneratorConfig, serve: ServeConfig | None, logs: Path) -> Iterator[GeneratorConfig]:
    """The generator to use for a model: its own without `serve`; with it, a copy pointed at a server started
    here and stopped when the block ends, however it ends."""
    if serve is None:
        yield generator
        return
    host = "127.0.0.1"
    try:
        port = free_port(host, serve.port or 0)
    except OSError:
        raise ConfigError(
            f"{name}: serve.port {serve.port} is in use on {host}: free it, or leave serve.port out"
        ) from None
    url = f"http://{host}:{port}/v1"
    log = logs / f"{''.join(c if c.isalnum() or c in '-_.' else '-' for c in name)}.log"
    server = Server(name, command(serve, generator.model, port, host), log, serve.env, url)
    with _sigterm_interrupts():
        try:
            server.start()
        except OSError as e:
            raise ServerError(f"{name}: cannot start the server {server.cmd[0]!r} ({e}); see serve.command") from None
        try:
            served = server.wait_ready(serve.startup_timeout_s)
            if generator.model not in served:
                raise ConfigError(
                    f"{name}: the server serves {', '.join(served) or 'no model'}, not generator.model "
                    f"{generator.model!r}; its log: {log}"
                )
            print(f"in2: {name}: serving at {url} (log {log})", file=sys.stderr)
            # the answer cache names what was started, not its port (a new one each run), so a rerun resumes
            started = redact.text(shlex.join(command(serve, generator.model, 0, host)[1:]))
            yield dataclasses.replace(generator, base_url=url, server_id=generator.server_id or f"in2 serve: {started}")
        finally:
            server.stop(serve.stop_timeout_s)

"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: canned answers derived from the
prompt (deterministic), optional faults per request, and a log of what was answered."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def canned_generator(url: str, **fields) -> dict:
    """The `generator` section of a recipe that asks a CannedServer at `url` (model `canned`), plus `fields`."""
    return {"backend": "openai", "model": "canned", "base_url": url, "gguf_file": None, **fields}


def probe_answer(prompt: str) -> str | None:
    """The right answer to a VaL probe question (found by reading the context), or None."""
    m = re.search(r"### Context:\n(.*)\n\n### Instruction:\n(In above context.*)", prompt, re.S)
    if not m:
        return None
    context, question = m.groups()
    if "which sentence contains the piece" in question:
        piece = question.split('contains the piece "', 1)[1].rsplit('"?', 1)[0]
        at = context.find(piece)  # the sentence lies within 400 characters of its piece (sentences <= 40 words)
        return context[max(0, at - 400) : at + 400] if at >= 0 else ""
    if "which function contains the code snip" in question:
        piece = question.split('contains the code snip "', 1)[1].rsplit('" ?', 1)[0]
        for block in re.split(r"\n(?=def )", context):
            if piece in block:
                return f"The function is {block[4:].split(':', 1)[0]}."
        return ""
    qid = question.split("the id is ")[1].split(" ?")[0]
    hit = re.search(rf"<id: {qid}, label: (.*?), description: (.*?)>", context)
    return f"The label is {hit.group(1)} and the description is {hit.group(2)}." if hit else ""


def ruler_answer(prompt: str) -> str | None:
    """The right answer to a RULER needle-in-a-haystack question (the needles' values for the queried keys,
    read from the context) or common-words question (the 10 words the last list repeats most), or None for
    any other prompt."""
    if "What are the 10 most common words in the above list?" in prompt:
        listing = prompt.rsplit("Below is a numbered list of words.", 1)[1].split("Question:", 1)[0]
        counts = Counter(re.findall(r"\d+\. (\S+)", listing))
        return " " + " ".join(f"{i + 1}. {w}" for i, (w, _) in enumerate(counts.most_common(10)))
    m = re.search(r"What (?:are all|is) the special magic \w+ for (.+?) mentioned in the provided text\?", prompt)
    if not m:
        return None
    keys = re.split(r", and |, ", m.group(1))
    values = [
        v for k in keys for v in re.findall(rf"One of the special magic \w+ for {re.escape(k)} is: (\S+?)\.", prompt)
    ]
    return " " + ", ".join(values) + "."


def canned_answer(body: dict) -> str:
    """A well-formed, grounded reply for the in2 QA prompts and VaL probes (or a fixed string otherwise)."""
    prompt = body["messages"][0]["content"] if "messages" in body else body["prompt"]
    if not isinstance(prompt, str):  # token ids (lm-eval's tokenized requests)
        return "ok"
    probe = probe_answer(prompt)
    if probe is not None:
        return probe
    ruler = ruler_answer(prompt)
    if ruler is not None:
        return ruler
    m = re.search(r"### Context ###\n(.*)\n\nReply with", prompt, re.S)
    if not m:
        return "ok"
    context = m.group(1)
    integration = "[Piece 1]" in context
    words = re.sub(r"\[Piece \d+\]", " ", context).split()
    question = f"What is said about {' '.join(words[:3])}?"
    answer = " ".join(words[3:15])
    reply = f"Question: {question}\nAnswer: {answer}"
    if integration:
        reply += "\nPieces: [Piece 1], [Piece 2]"
    messages = body.get("messages", [])
    prefix = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else ""
    if prefix:  # continue_final_message: return the rest of the current line only
        rest = reply[len(prefix) :] if reply.startswith(prefix) else ""
        return rest.split("\n", 1)[0]
    return reply


def body_key(body: dict) -> str:
    return hashlib.sha256(json.dumps(body.get("messages", body.get("prompt")), sort_keys=True).encode()).hexdigest()[
        :16
    ]


CHAOS = ("429", "500", "hang", "invalid_json", "truncated_json", "empty", "refusal", "drop")
TRANSIENT = tuple(k for k in CHAOS if k != "refusal")  # faults a retry cures; a refusal is an answer
REFUSAL = "I'm sorry, but I can't help with that request."


class _QuietServer(ThreadingHTTPServer):
    """Says nothing when a client hangs up before its answer is written (timeouts, killed runs)."""

    request_queue_size = 1024  # benchmarks open hundreds of connections at once

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class CannedServer:
    """`faults` maps a request's attempt number (1-based, per distinct body) to an HTTP status.
    `chaos_rate` makes that share of attempts fail in one of `chaos_kinds` (default CHAOS), chosen by a
    hash of the body and attempt number (so a rerun meets the same faults); a `hang` sleeps `hang_s`,
    past the client's timeout. An empty reply does not count as answered."""

    def __init__(
        self,
        faults: dict[int, int] | None = None,
        status_for_all: int | None = None,
        latency_s: float = 0.0,
        chaos_rate: float = 0.0,
        hang_s: float = 3.0,
        chaos_kinds: tuple[str, ...] = CHAOS,
        error_code: str | None = None,
        port: int = 0,
        models: tuple[str, ...] = ("canned",),
    ):
        self.faults = faults or {}
        self.error_code = (
            error_code  # the `code` of injected error bodies (default: the status), e.g. insufficient_quota
        )
        self.latency_s = latency_s
        self.chaos_rate, self.hang_s, self.chaos_kinds = chaos_rate, hang_s, chaos_kinds
        self.chaos: Counter = Counter()
        self.status_for_all = status_for_all
        self.attempts: Counter = Counter()
        self.answered: Counter = Counter()
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.auth: list[str | None] = []
        self.on_request = None  # callable(n_answered_so_far) -> True to drop the request unanswered
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # /v1/models: `models` (default the model every canned_generator names)
                outer.paths.append(self.path)
                if not self.path.rstrip("/").endswith("/models"):
                    self.send_error(404)
                    return
                data = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.paths.append(self.path)
                outer.auth.append(self.headers.get("Authorization"))
                key = body_key(body)
                with outer.lock:
                    outer.attempts[key] += 1
                    attempt = outer.attempts[key]
                    outer.bodies.append(body)
                    hook, answered = outer.on_request, sum(outer.answered.values())
                if hook and hook(answered):
                    return
                if outer.latency_s:
                    time.sleep(outer.latency_s)
                fault = outer.pick_fault(key, attempt)
                if fault in ("hang", "drop", "invalid_json", "truncated_json"):
                    with outer.lock:
                        outer.chaos[fault] += 1
                    if fault == "hang":
                        time.sleep(outer.hang_s)
                    if fault in ("hang", "drop"):
                        self.close_connection = True
                        return
                    payload = b"{not json" if fault == "invalid_json" else b'{"id": "x", "choices": [{"index": 0, "mess'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault in ("429", "500"):
                    with outer.lock:
                        outer.chaos[fault] += 1
                status = (
                    outer.status_for_all
                    or outer.faults.get(attempt)
                    or (int(fault) if fault in ("429", "500") else None)
                )
                if status:
                    payload = json.dumps(
                        {"error": {"message": "injected", "type": "test", "code": outer.error_code or status}}
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("retry-after-ms", "5")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                text = canned_answer(body)
                if fault in ("empty", "refusal"):
                    with outer.lock:
                        outer.chaos[fault] += 1
                    text = "" if fault == "empty" else REFUSAL
                completion = "messages" not in body  # /v1/completions: a raw prompt
                choice = {"index": 0, "finish_reason": "stop"}
                choice.update({"text": text} if completion else {"message": {"role": "assistant", "content": text}})
                prompt_tokens = len(json.dumps(body.get("messages", body.get("prompt")))) // 4
                payload = json.dumps(
                    {
                        "id": "cmpl-" + key,
                        "object": "text_completion" if completion else "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [choice],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": len(text) // 4,
                            "total_tokens": prompt_tokens + len(text) // 4,
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                if fault != "empty":
                    with outer.lock:
                        outer.answered[key] += 1

        self.httpd = _QuietServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def kill_at(self, start, points: list[int]) -> None:
        """For each count in `points`, start a process with `start()` and kill -9 it once this server has
        answered that many requests (the request arriving then goes unanswered)."""
        for kill_at in points:
            proc = start()

            def hook(answered, proc=proc, kill_at=kill_at):
                if answered >= kill_at:
                    proc.send_signal(signal.SIGKILL)
                    return True
                return False

            self.on_request = hook
            assert proc.wait(timeout=300) == -signal.SIGKILL, f"the run ended before {kill_at} answers"
        self.on_request = None

    def pick_fault(self, key: str, attempt: int) -> str | None:
        if not self.chaos_rate:
            return None
        h = int(hashlib.sha256(f"{key}:{attempt}".encode()).hexdigest()[:8], 16)
        if (h % 10000) / 10000 >= self.chaos_rate:
            return None
        return self.chaos_kinds[(h // 10000) % len(self.chaos_kinds)]

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def in2_process(*args: str, **env: str) -> subprocess.Popen:
    """`python -m in2.cli ARGS` in its own process (the checkout on PYTHONPATH), output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "in2.cli", *args],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_when(start, points: list[int], progress, timeout: float = 300) -> None:
    """For each value in `points`, start a process with `start()` and kill -9 it as soon as `progress()`
    (polled every 2 ms) reaches that value: for runs that send no request, such as a merge."""
    for point in points:
        proc = start()
        deadline = time.monotonic() + timeout
        while progress() < point:
            assert proc.poll() is None, f"the run ended before progress {point}"
            assert time.monotonic() < deadline, f"no progress {point} after {timeout} s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, f"the run ended before progress {point}"
